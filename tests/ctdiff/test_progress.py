"""ctdiff.progress.counted: the one progress loop of the batch commands (prepare, phantom)."""

from __future__ import annotations

import pytest

from ctdiff.progress import counted


def test_callback_counts_after_each_body_and_bar_closes_on_error(capsys):
    calls, seen = [], []
    for item in counted(["a", "b", "c"], lambda done, total: calls.append((done, total, list(seen))), "x", "case"):
        seen.append(item)
    # called after each item's body ran, never before the first
    assert calls == [(1, 3, ["a"]), (2, 3, ["a", "b"]), (3, 3, ["a", "b", "c"])]
    assert list(counted(range(2), False, "x", "case")) == [0, 1]
    with pytest.raises(RuntimeError):
        for i in counted(range(5), True, "bar-desc", "case"):
            if i == 2:
                raise RuntimeError("stop")
    err = capsys.readouterr().err
    assert "bar-desc" in err and "2/5" in err  # the bar counted two finished items and was closed
