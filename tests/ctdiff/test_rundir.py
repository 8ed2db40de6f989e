"""RunDir owns the run dir's layout: paths, history and split round trips, checkpoints, previews."""

from __future__ import annotations

import math

import pytest

from ctdiff.errors import InputError
from ctdiff.training.rundir import HISTORY_COLUMNS, RunDir, read_history_file


def test_paths(tmp_path):
    run = RunDir(tmp_path / "r")
    assert run.config == tmp_path / "r" / "config.yaml" and run.split.name == "split.json"
    assert run.history.name == "history.csv" and run.loss_plot.name == "loss.png"
    assert run.checkpoint("best.pt") == tmp_path / "r" / "checkpoints" / "best.pt"
    assert run.checkpoint() == tmp_path / "r" / "checkpoints" / "last.pt"
    assert run.preview(7) == tmp_path / "r" / "previews" / "epoch_0007"
    assert run.sample_dir("ddpm", 50, 3) == tmp_path / "r" / "samples" / "ddpm-50-seed3"
    with pytest.raises(ValueError):
        run.sample_dir("../x", 1, 0)
    with pytest.raises(ValueError):
        run.checkpoint("other.pt")
    assert not run.is_run_dir()
    run.checkpoints.mkdir(parents=True)
    assert run.is_run_dir()


def test_history_round_trip_and_half_written_line(tmp_path):
    run = RunDir(tmp_path)
    rows = [
        {"epoch": 1, "step": 4, "train_loss": 0.9, "val_loss": float("nan"), "lr": 1e-5, "seconds": 3.0},
        {"epoch": 2, "step": 8, "train_loss": 0.7, "val_loss": 0.6, "lr": 2e-5, "seconds": 6.5},
    ]
    run.write_history(rows)
    assert run.history.read_text().splitlines()[0] == ",".join(HISTORY_COLUMNS)
    back = run.read_history()
    assert [r["epoch"] for r in back] == [1, 2] and isinstance(back[0]["step"], int)
    assert math.isnan(back[0]["val_loss"]) and back[1]["val_loss"] == 0.6 and back[1]["seconds"] == 6.5
    run.history.write_text(run.history.read_text() + "3,12,0.5")  # the trainer is writing this line
    assert [r["epoch"] for r in run.read_history()] == [1, 2]
    with pytest.raises(InputError, match="cannot read history"):
        read_history_file(tmp_path / "missing.csv")


def test_split_round_trip_and_errors(tmp_path):
    run = RunDir(tmp_path)
    with pytest.raises(InputError, match="split file missing"):
        run.read_split()
    run.write_split(4, ["a.nii.gz"], ["b.nii.gz"], data_dir=tmp_path)
    assert run.read_split() == {
        "seed": 4,
        "train": ["a.nii.gz"],
        "val": ["b.nii.gz"],
        "data_dir": str(tmp_path.resolve()),
    }
    run.split.write_text('{"seed": 1}')
    with pytest.raises(InputError, match="needs seed, train and val"):
        run.read_split()


def test_find_checkpoint_is_resolve_checkpoint(tmp_path):
    run = RunDir(tmp_path)
    assert run.find_checkpoint() is None
    run.checkpoints.mkdir()
    run.checkpoint("last.pt").write_bytes(b"x")
    assert run.find_checkpoint() == run.checkpoint("last.pt")
    run.checkpoint("best.pt").write_bytes(b"x")
    assert run.find_checkpoint() == run.checkpoint("best.pt")
