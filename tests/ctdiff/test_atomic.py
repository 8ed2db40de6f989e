"""Atomic writes: all-or-nothing, refusal without force, normal file permissions."""

from __future__ import annotations

import os
import stat

import pytest

from ctdiff.atomic import atomic_path, prepare_output_dir, write_json, write_text
from ctdiff.errors import OverwriteError


def test_written_files_get_umask_permissions_not_private(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_text(tmp_path / "a.txt", "hello")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert path.read_text() == "hello"


def test_failure_leaves_old_file_and_no_temp(tmp_path):
    target = write_json(tmp_path / "m.json", {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("crash")
    assert target.read_text().strip().startswith("{") and '"a": 1' in target.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_refuses_overwrite_without_force(tmp_path):
    write_text(tmp_path / "x", "1")
    with pytest.raises(OverwriteError, match="--force"):
        write_text(tmp_path / "x", "2", force=False)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep").write_text("k")
    with pytest.raises(OverwriteError, match="not empty"):
        prepare_output_dir(tmp_path / "out", force=False)
    assert (tmp_path / "out" / "keep").exists()
    prepare_output_dir(tmp_path / "out", force=True)
    assert list((tmp_path / "out").iterdir()) == []


def test_plain_json_is_the_one_sanitiser(tmp_path):
    """numpy types, NaN/inf, tuples, paths and non-str keys become plain JSON; write_json uses it."""
    import json
    import math
    from pathlib import Path

    import numpy as np

    from ctdiff.atomic import plain_json, write_json

    obj = {
        1: (np.float32(1.5), np.int64(3), np.bool_(True)),
        "a": np.array([1.0, np.nan]),
        "p": Path("x/y"),
        "f": [math.inf, -math.inf, 2.0],
        "s": "t",
        "n": None,
    }
    want = {"1": [1.5, 3, True], "a": [1.0, None], "p": "x/y", "f": [None, None, 2.0], "s": "t", "n": None}
    assert plain_json(obj) == want
    assert type(plain_json(np.int64(3))) is int and type(plain_json(np.bool_(False))) is bool
    path = write_json(tmp_path / "o.json", obj)
    assert json.loads(path.read_text()) == want  # strict JSON: no NaN literal
    import eval.report.build as build
    import eval.review.export as export

    assert build.plain_json is plain_json and export.plain_json is plain_json
