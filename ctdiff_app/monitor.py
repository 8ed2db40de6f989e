"""Reading a training run dir for display: loss history, previews, checkpoints, samples folders.

The run dir's layout and its readers belong to :class:`ctdiff.training.rundir.RunDir`; this module
shapes what it reads for the pages (DataFrames, block means, the headline summary).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ctdiff.config import SampleConfig
from ctdiff.training.rundir import HISTORY_COLUMNS, RunDir, read_history_file


def read_history(path: str | os.PathLike) -> pd.DataFrame:
    """history.csv as a DataFrame (:func:`ctdiff.training.rundir.read_history_file`: a truncated last
    line is dropped; InputError when the file is missing, empty or lacks epoch/train_loss)."""
    rows = read_history_file(path)
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=list(HISTORY_COLUMNS))


def block_mean(df: pd.DataFrame, column: str, every: int = 10) -> pd.DataFrame:
    """Mean of ``column`` over consecutive blocks of ``every`` epochs (as the thesis plots).

    Epochs 1-10 form the first block, 11-20 the second, ...; each block is placed at its last
    epoch. Rows where ``column`` is missing (e.g. epochs without validation) are ignored.
    Returns columns ``epoch`` and ``column``.
    """
    if every < 1:
        raise ValueError("every must be >= 1")
    if column not in df.columns:
        return pd.DataFrame({"epoch": [], column: []})
    d = df[["epoch", column]].dropna()
    if d.empty:
        return pd.DataFrame({"epoch": [], column: []})
    # a run may log several rows per epoch (per step); average within an epoch first
    per_epoch = d.groupby("epoch", as_index=False)[column].mean()
    block = ((per_epoch["epoch"] - 1) // every).astype(int)
    out = per_epoch.groupby(block).agg(epoch=("epoch", "max"), value=(column, "mean"))
    return out.rename(columns={"value": column}).reset_index(drop=True)


def is_active(path: str | os.PathLike, within_s: float = 120.0, now: float | None = None) -> bool:
    """True when ``path`` (history.csv) was modified in the last ``within_s`` seconds."""
    try:
        mtime = Path(path).stat().st_mtime
    except OSError:
        return False
    return ((time.time() if now is None else now) - mtime) <= within_s


def list_previews(run_dir: str | os.PathLike) -> dict[int, Path]:
    """{epoch: preview PNG}, sorted by epoch (:meth:`RunDir.list_previews`)."""
    return RunDir(run_dir).list_previews()


def find_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """``checkpoints/best.pt``, else ``last.pt``, else None (:meth:`RunDir.find_checkpoint`)."""
    return RunDir(run_dir).find_checkpoint()


def read_split(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The run's split (:meth:`RunDir.read_split`), or None when it has no split.json."""
    run = RunDir(run_dir)
    return run.read_split() if run.split.exists() else None


DEFAULT_SAMPLING = (SampleConfig.sampler, SampleConfig.steps)


def sampling_defaults(run_dir: str | os.PathLike) -> tuple[str, int]:
    """The run's own ``sample.sampler`` / ``sample.steps`` from its config.yaml, else the library's (DDPM, 50 steps).

    A damaged or partial config falls back to the defaults: the Generate form must always open.
    """
    import yaml

    try:
        cfg = yaml.safe_load(RunDir(run_dir).config.read_text()) or {}
        sample = cfg.get("sample") or {}
        sampler = str(sample.get("sampler", DEFAULT_SAMPLING[0]))
        steps = int(sample.get("steps", DEFAULT_SAMPLING[1]))
    except (OSError, ValueError, TypeError, AttributeError, yaml.YAMLError):
        return DEFAULT_SAMPLING
    return (sampler, steps) if steps >= 1 else (sampler, DEFAULT_SAMPLING[1])


def samples_dir(run_dir: str | os.PathLike, sampler: str, steps: int, seed: int) -> Path:
    """Where the app's Generate panel writes (:meth:`RunDir.sample_dir`)."""
    return RunDir(run_dir).sample_dir(sampler, steps, seed)


def summarise_history(df: pd.DataFrame) -> dict[str, Any]:
    """Last epoch, best validation loss (and its epoch), training wall time: the monitor's headline.

    ``seconds`` is the total over all epochs, ``seconds_per_epoch`` the median epoch and
    ``slowest_epoch_seconds`` the longest one.
    """
    out: dict[str, Any] = {"epochs": int(df["epoch"].max()) if len(df) else 0}
    if "val_loss" in df.columns and df["val_loss"].notna().any():
        i = int(np.nanargmin(df["val_loss"].to_numpy(dtype=float)))
        out.update(best_val_loss=float(df["val_loss"].iloc[i]), best_epoch=int(df["epoch"].iloc[i]))
    if "train_loss" in df.columns and df["train_loss"].notna().any():
        out["last_train_loss"] = float(df["train_loss"].dropna().iloc[-1])
    if "seconds" in df.columns and df["seconds"].notna().any():
        # history.csv's "seconds" is each epoch's own wall time (training + validation), not a running
        # total: the run's time is their sum (the last row of each epoch, if a run logs several)
        per_epoch = df.dropna(subset=["seconds"]).groupby("epoch")["seconds"].last()
        out["seconds"] = float(per_epoch.sum())
        out["seconds_per_epoch"] = float(per_epoch.median())
        out["slowest_epoch_seconds"] = float(per_epoch.max())
    return out
