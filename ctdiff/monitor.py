"""Reading a training run dir for display: loss history, previews, checkpoints, samples folders.

Run dir layout (written by ``python -m ctdiff train``): ``config.yaml``, ``split.json``,
``history.csv`` (``epoch,step,train_loss,val_loss,lr,seconds``), ``loss.png``,
``checkpoints/{last,best}.pt``, ``previews/epoch_0005.png`` (+ ``.nii.gz``). Training appends to
history.csv while the app reads it, so a half-written last line is tolerated.
"""

from __future__ import annotations

import io
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ctdiff.config import SampleConfig
from ctdiff.errors import InputError

HISTORY_COLUMNS = ("epoch", "step", "train_loss", "val_loss", "lr", "seconds")
PREVIEW_RE = re.compile(r"^epoch_(\d+)\.png$")


def read_history(path: str | os.PathLike) -> pd.DataFrame:
    """history.csv as a DataFrame with numeric columns; a truncated last line is dropped.

    Raises InputError when the file is missing, empty, or lacks the ``epoch``/``train_loss`` columns.
    """
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise InputError(f"cannot read history ({type(exc).__name__})", p) from None
    lines = text.splitlines()
    if text and not text.endswith("\n") and len(lines) > 1:
        lines = lines[:-1]  # the trainer is writing this line right now
    if not lines:
        raise InputError("history is empty (training has not finished an epoch yet)", p)
    try:
        df = pd.read_csv(io.StringIO("\n".join(lines) + "\n"), on_bad_lines="skip")
    except (ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"history is not a readable CSV ({type(exc).__name__})", p) from None
    missing = [c for c in ("epoch", "train_loss") if c not in df.columns]
    if missing:
        raise InputError(f"history lacks column(s) {missing}; expected {list(HISTORY_COLUMNS)}", p)
    for col in df.columns:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    return df.dropna(subset=["epoch"]).reset_index(drop=True)


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
    """{epoch: preview PNG} from ``run_dir/previews/epoch_NNNN.png``, sorted by epoch."""
    folder = Path(run_dir) / "previews"
    if not folder.is_dir():
        return {}
    found = {}
    for p in folder.iterdir():
        m = PREVIEW_RE.match(p.name)
        if m:
            found[int(m.group(1))] = p
    return dict(sorted(found.items()))


def find_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """``checkpoints/best.pt``, else ``checkpoints/last.pt``, else None."""
    for name in ("best.pt", "last.pt"):
        p = Path(run_dir) / "checkpoints" / name
        if p.is_file():
            return p
    return None


def read_split(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """split.json ({"seed", "train", "val"}) or None when absent; InputError when unreadable."""
    p = Path(run_dir) / "split.json"
    if not p.exists():
        return None
    try:
        split = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"split is not readable JSON ({type(exc).__name__})", p) from None
    if not isinstance(split, dict):
        raise InputError("split.json must hold an object with 'train' and 'val' lists", p)
    return split


DEFAULT_SAMPLING = (SampleConfig.sampler, SampleConfig.steps)


def sampling_defaults(run_dir: str | os.PathLike) -> tuple[str, int]:
    """The run's own ``sample.sampler`` / ``sample.steps`` from its config.yaml, else the library's (DDPM, 50 steps).

    A damaged or partial config falls back to the defaults: the Generate form must always open.
    """
    import yaml

    try:
        cfg = yaml.safe_load((Path(run_dir) / "config.yaml").read_text()) or {}
        sample = cfg.get("sample") or {}
        sampler = str(sample.get("sampler", DEFAULT_SAMPLING[0]))
        steps = int(sample.get("steps", DEFAULT_SAMPLING[1]))
    except (OSError, ValueError, TypeError, AttributeError, yaml.YAMLError):
        return DEFAULT_SAMPLING
    return (sampler, steps) if steps >= 1 else (sampler, DEFAULT_SAMPLING[1])


def samples_dir(run_dir: str | os.PathLike, sampler: str, steps: int, seed: int) -> Path:
    """Where the app's Generate panel writes: ``run_dir/samples/<sampler>-<steps>-seed<seed>``."""
    if not re.fullmatch(r"[A-Za-z0-9_+.-]+", sampler):
        raise ValueError(f"sampler name {sampler!r} is not a plain name")
    return Path(run_dir) / "samples" / f"{sampler}-{int(steps)}-seed{int(seed)}"


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
