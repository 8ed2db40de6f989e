"""ctdiff_app.workspace: workspace discovery, checks of typed paths, cohort summaries."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ctdiff.data.io import write_nifti
from ctdiff.data.volume import Volume
from ctdiff.errors import InputError
from ctdiff_app.workspace import (
    DEFAULT_WORKSPACE,
    check_generated,
    check_report_dir,
    check_run_dir,
    check_volume_folder,
    cohort_summary,
    read_workspace_info,
    sample_dirs,
    selection_from_workspace,
    volume_facts,
    workspace_path,
)


def _vol(path, value=0.0, shape=(6, 5, 4), spacing=(1.0, 1.0, 2.0)):
    arr = np.full(shape, value, dtype=np.float32)
    arr[0, 0, 0] = value - 100
    write_nifti(Volume.from_spacing(arr, spacing), path)
    return path


def test_workspace_path_env_and_default(tmp_path):
    assert workspace_path({"CTDIFF_WORKSPACE": str(tmp_path)}) == (tmp_path, True)
    assert workspace_path({"CTDIFF_WORKSPACE": "  "}) == (DEFAULT_WORKSPACE, False)
    assert workspace_path({}) == (DEFAULT_WORKSPACE, False)
    assert DEFAULT_WORKSPACE.parts[-2:] == ("workspace", "demo")


def test_selection_from_a_full_and_a_partial_workspace(tmp_path):
    ws = tmp_path / "ws"
    _vol(ws / "real" / "a.nii.gz")
    (ws / "run" / "samples" / "dpmpp-25-seed0").mkdir(parents=True)
    (ws / "run" / "history.csv").write_text("epoch,train_loss\n1,0.5\n")
    assert selection_from_workspace(ws) == {
        "real_dir": str(ws / "real"),
        "generated_dir": None,
        "report_dir": None,
        "run_dir": str(ws / "run"),
    }
    # no generated/ folder: the newest samples folder of the run holding volumes stands in
    _vol(ws / "run" / "samples" / "dpmpp-25-seed0" / "s0.nii.gz")
    assert selection_from_workspace(ws)["generated_dir"] == str(ws / "run" / "samples" / "dpmpp-25-seed0")
    _vol(ws / "generated" / "g.nii.gz")
    (ws / "report").mkdir()
    (ws / "report" / "report.json").write_text(json.dumps({"metrics": {}}))
    sel = selection_from_workspace(ws)
    assert sel["generated_dir"] == str(ws / "generated") and sel["report_dir"] == str(ws / "report")
    assert selection_from_workspace(tmp_path / "nothing") == dict.fromkeys(sel)


def test_check_volume_folder_messages(tmp_path):
    with pytest.raises(InputError, match="no folder given"):
        check_volume_folder("  ")
    with pytest.raises(InputError, match="no such folder") as e:
        check_volume_folder(tmp_path / "missing")
    assert str(tmp_path / "missing") in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no NIfTI"):
        check_volume_folder(tmp_path / "empty")
    _vol(tmp_path / "ok" / "a.nii.gz")
    assert [p.name for p in check_volume_folder(tmp_path / "ok")] == ["a.nii.gz"]


def test_check_generated_accepts_a_run_dir(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    assert check_generated(run) == (None, str(run))
    _vol(run / "samples" / "ddim-50-seed1" / "s.nii.gz")
    assert check_generated(run) == (str(run / "samples" / "ddim-50-seed1"), str(run))
    _vol(tmp_path / "gen" / "g.nii.gz")
    assert check_generated(tmp_path / "gen") == (str(tmp_path / "gen"), None)


def test_sample_dirs_newest_first(tmp_path):
    import os

    run = tmp_path / "run"
    old = _vol(run / "samples" / "old" / "s.nii.gz").parent
    new = _vol(run / "samples" / "new" / "s.nii.gz").parent
    (run / "samples" / "empty").mkdir()
    os.utime(old, (1_000_000, 1_000_000))
    assert sample_dirs(run) == [new, old]


def test_check_report_and_run_dir(tmp_path):
    rep = tmp_path / "rep"
    rep.mkdir()
    with pytest.raises(InputError, match="holds no report.json"):
        check_report_dir(rep)
    (rep / "report.json").write_text("{not json")
    with pytest.raises(InputError, match="not readable JSON"):
        check_report_dir(rep)
    (rep / "report.json").write_text(json.dumps({"schema": "x"}))
    with pytest.raises(InputError, match="no 'metrics'"):
        check_report_dir(rep)
    (rep / "report.json").write_text(json.dumps({"metrics": {}}))
    assert check_report_dir(rep / "report.json") == rep
    with pytest.raises(InputError, match="not a training run dir"):
        check_run_dir(rep)
    (rep / "config.yaml").write_text("a: 1\n")
    assert check_run_dir(rep) == rep


def test_volume_facts_and_cohort_summary(tmp_path):
    a = volume_facts(_vol(tmp_path / "a.nii.gz", value=40))
    b = volume_facts(_vol(tmp_path / "b.nii.gz", value=-20, shape=(6, 5, 3), spacing=(0.5, 0.5, 3.0)))
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"garbage")
    c = volume_facts(bad)
    assert a == {
        "file": str(tmp_path / "a.nii.gz"),
        "shape": [6, 5, 4],
        "spacing": [1.0, 1.0, 2.0],
        "hu_min": -60.0,
        "hu_max": 40.0,
    }
    assert "error" in c and "bad.nii.gz" not in c["error"]  # the file is named by the caller
    s = cohort_summary([a, b, c])
    assert s["count"] == 2
    assert s["shapes"] == [[6, 5, 3], [6, 5, 4]]
    assert s["spacings"] == [[0.5, 0.5, 3.0], [1.0, 1.0, 2.0]]
    assert s["hu_range"] == [-120.0, 40.0]
    assert s["unreadable"] == [(str(bad), c["error"])]
    assert cohort_summary([])["hu_range"] is None


def test_read_workspace_info(tmp_path):
    assert read_workspace_info(tmp_path) == {}
    (tmp_path / "workspace.json").write_text(json.dumps({"name": "demo"}))
    assert read_workspace_info(tmp_path) == {"name": "demo"}
    (tmp_path / "workspace.json").write_text("[1, 2]")
    assert read_workspace_info(tmp_path) == {}


def test_real_ct_folder_is_relative_to_the_workspace_or_kept_absolute(tmp_path):
    from ctdiff_app.workspace import real_ct_folder

    assert real_ct_folder(tmp_path / "ws", {"real_ct_cohort": {"folder": "real-ct"}}) == tmp_path / "ws" / "real-ct"
    old = {"real_ct_cohort": {"folder": str(tmp_path / "old" / "real-ct")}}  # a workspace built before
    assert real_ct_folder(tmp_path / "ws", old) == tmp_path / "old" / "real-ct"
    assert real_ct_folder(tmp_path / "ws", {"real_ct_cohort": {"missing": "offline"}}) is None
    assert real_ct_folder(tmp_path / "ws", {}) is None
