"""ctdiff_app.monitor: reading a run dir that a trainer is still writing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ctdiff.errors import InputError
from ctdiff_app.monitor import (
    block_mean,
    find_checkpoint,
    is_active,
    list_previews,
    read_history,
    read_split,
    samples_dir,
    summarise_history,
)

HEADER = "epoch,step,train_loss,val_loss,lr,seconds\n"


def test_read_history_drops_a_half_written_last_line(tmp_path):
    p = tmp_path / "history.csv"
    p.write_text(HEADER + "1,4,0.9,0.8,1e-5,3.0\n2,8,0.7,,2e-5,6.0\n3,12,0.6")
    df = read_history(p)
    assert df["epoch"].tolist() == [1, 2]
    assert df["train_loss"].tolist() == [0.9, 0.7]
    assert np.isnan(df["val_loss"].iloc[1])
    p.write_text(HEADER + "1,4,0.9,0.8,1e-5,3.0\n2,8,0.7,0.6,2e-5,6.0\n")
    assert read_history(p)["val_loss"].tolist() == [0.8, 0.6]


def test_read_history_errors(tmp_path):
    with pytest.raises(InputError, match="cannot read history"):
        read_history(tmp_path / "missing.csv")
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(InputError, match="empty"):
        read_history(tmp_path / "e.csv")
    (tmp_path / "w.csv").write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match=r"lacks column\(s\) \['epoch', 'train_loss'\]"):
        read_history(tmp_path / "w.csv")


def test_block_mean_matches_numpy():
    rng = np.random.default_rng(0)
    loss = rng.uniform(0.1, 1.0, size=25)
    df = pd.DataFrame({"epoch": np.arange(1, 26), "train_loss": loss})
    m = block_mean(df, "train_loss", 10)
    assert m["epoch"].tolist() == [10, 20, 25]
    np.testing.assert_allclose(m["train_loss"], [loss[:10].mean(), loss[10:20].mean(), loss[20:].mean()])
    # validation logged every 5 epochs: missing values are not zeros
    df["val_loss"] = [v if (e % 5 == 0) else np.nan for e, v in zip(df["epoch"], loss)]
    mv = block_mean(df, "val_loss", 10)
    np.testing.assert_allclose(mv["val_loss"], [loss[[4, 9]].mean(), loss[[14, 19]].mean(), loss[24]])
    # several rows per epoch are averaged within the epoch first
    multi = pd.DataFrame({"epoch": [1, 1, 2], "train_loss": [1.0, 3.0, 5.0]})
    assert block_mean(multi, "train_loss", 2)["train_loss"].tolist() == [3.5]
    assert block_mean(df, "missing", 10).empty


def test_summarise_history():
    df = pd.DataFrame(
        {"epoch": [1, 2, 3], "train_loss": [0.9, 0.5, 0.4], "val_loss": [np.nan, 0.3, 0.35], "seconds": [1.0, 2.0, 3.5]}
    )
    assert summarise_history(df) == {
        "epochs": 3,
        "best_val_loss": 0.3,
        "best_epoch": 2,
        "last_train_loss": 0.4,
        "seconds": 6.5,
        "seconds_per_epoch": 2.0,
        "slowest_epoch_seconds": 3.5,
    }


def test_training_time_is_the_sum_of_epoch_times_not_the_slowest_epoch():
    # as in the demo run: epochs of ~30 s with one slow epoch of 297 s; 390 epochs add up to hours
    secs = [30.0] * 389 + [297.0]
    df = pd.DataFrame({"epoch": range(1, 391), "train_loss": [0.1] * 390, "seconds": secs})
    head = summarise_history(df)
    assert head["seconds"] == pytest.approx(sum(secs)) and head["seconds"] > 3 * 3600
    assert head["slowest_epoch_seconds"] == 297.0 and head["seconds_per_epoch"] == 30.0


def test_is_active(tmp_path):
    import os

    p = tmp_path / "history.csv"
    p.write_text(HEADER)
    os.utime(p, (1000.0, 1000.0))
    assert is_active(p, within_s=60, now=1030.0)
    assert not is_active(p, within_s=60, now=1100.0)
    assert not is_active(tmp_path / "missing.csv")


def test_previews_checkpoints_split_and_samples_dir(tmp_path):
    (tmp_path / "previews").mkdir()
    for name in ("epoch_0010.png", "epoch_0005.png", "epoch_0005.nii.gz", "notes.txt"):
        (tmp_path / "previews" / name).write_bytes(b"x")
    assert list(list_previews(tmp_path)) == [5, 10]
    assert list_previews(tmp_path / "nope") == {}
    assert find_checkpoint(tmp_path) is None
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"x")
    assert find_checkpoint(tmp_path).name == "last.pt"
    (tmp_path / "checkpoints" / "best.pt").write_bytes(b"x")
    assert find_checkpoint(tmp_path).name == "best.pt"
    assert read_split(tmp_path) is None
    (tmp_path / "split.json").write_text('{"seed": 3, "train": ["a"], "val": ["b"]}')
    assert read_split(tmp_path) == {"seed": 3, "train": ["a"], "val": ["b"]}
    (tmp_path / "split.json").write_text("[")
    with pytest.raises(InputError, match="split is not readable JSON"):
        read_split(tmp_path)
    assert samples_dir(tmp_path, "dpmpp", 25, 0) == tmp_path / "samples" / "dpmpp-25-seed0"
    with pytest.raises(ValueError):
        samples_dir(tmp_path, "../x", 25, 0)
