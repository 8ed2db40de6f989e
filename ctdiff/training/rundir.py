"""The run directory's layout, owned by one type: :class:`RunDir`.

A run dir, written by ``python -m ctdiff train`` and read by ``sample``, the app and the demo::

    config.yaml                 the full typed config (ctdiff.config)
    split.json                  {"seed", "train": [files], "val": [files], "data_dir"}
    history.csv                 epoch,step,train_loss,val_loss,lr,seconds (val_loss empty without validation)
    loss.png                    the loss plot
    checkpoints/{last,best}.pt  weights + optimizer + config (ctdiff.model.checkpoint)
    previews/epoch_NNNN.png     a preview sample every train.preview_every epochs (+ .nii.gz)
    samples/SAMPLER-STEPS-seedS the app's Generate panel output

The trainer writes through this type and the app reads through it; no other module spells a file
name of the run dir. The history reader tolerates a half-written last line, because the app reads
history.csv while the trainer appends to it.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ctdiff.atomic import write_json, write_text
from ctdiff.errors import InputError
from ctdiff.model.checkpoint import BEST, CHECKPOINT_DIR, LAST, resolve_checkpoint

HISTORY_COLUMNS = ("epoch", "step", "train_loss", "val_loss", "lr", "seconds")
_INT_COLUMNS = ("epoch", "step")
_PREVIEW_RE = re.compile(r"^epoch_(\d+)\.png$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.+-]+$")


def _number(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


class RunDir:
    """Paths and readers/writers of one training run dir (the folder need not exist yet)."""

    CONFIG = "config.yaml"
    SPLIT = "split.json"
    HISTORY = "history.csv"
    LOSS_PLOT = "loss.png"
    CHECKPOINTS = CHECKPOINT_DIR
    PREVIEWS = "previews"
    SAMPLES = "samples"
    MARKERS = (HISTORY, CONFIG, CHECKPOINTS)  # any of them makes a folder a run dir

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # ------------------------------------------------------------------------------ paths
    @property
    def config(self) -> Path:
        return self.path / self.CONFIG

    @property
    def split(self) -> Path:
        return self.path / self.SPLIT

    @property
    def history(self) -> Path:
        return self.path / self.HISTORY

    @property
    def loss_plot(self) -> Path:
        return self.path / self.LOSS_PLOT

    @property
    def checkpoints(self) -> Path:
        return self.path / self.CHECKPOINTS

    @property
    def previews(self) -> Path:
        return self.path / self.PREVIEWS

    @property
    def samples(self) -> Path:
        return self.path / self.SAMPLES

    def checkpoint(self, name: str = LAST) -> Path:
        """``checkpoints/<name>`` (``last.pt`` or ``best.pt``)."""
        if name not in (LAST, BEST):
            raise ValueError(f"checkpoint name must be {LAST} or {BEST}, got {name!r}")
        return self.checkpoints / name

    def preview(self, epoch: int) -> Path:
        """``previews/epoch_NNNN`` without suffix (the trainer adds .png and .nii.gz)."""
        return self.previews / f"epoch_{int(epoch):04d}"

    def sample_dir(self, sampler: str, steps: int, seed: int) -> Path:
        """``samples/<sampler>-<steps>-seed<seed>``: where the app's Generate panel writes."""
        if not _NAME_RE.match(str(sampler)):
            raise ValueError(f"not a usable sampler name for a folder: {sampler!r}")
        return self.samples / f"{sampler}-{int(steps)}-seed{int(seed)}"

    # ------------------------------------------------------------------------------ queries
    def is_run_dir(self) -> bool:
        return self.path.is_dir() and any((self.path / m).exists() for m in self.MARKERS)

    def find_checkpoint(self) -> Path | None:
        """``best.pt``, else ``last.pt`` (:func:`ctdiff.model.checkpoint.resolve_checkpoint`), else None."""
        try:
            return resolve_checkpoint(self.path)
        except InputError:
            return None

    def list_previews(self) -> dict[int, Path]:
        """{epoch: preview PNG}, sorted by epoch ({} without previews/)."""
        if not self.previews.is_dir():
            return {}
        found = {int(m.group(1)): p for p in self.previews.iterdir() if (m := _PREVIEW_RE.match(p.name))}
        return dict(sorted(found.items()))

    # ------------------------------------------------------------------------------ history
    def write_history(self, rows: Sequence[dict[str, Any]]) -> Path:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(HISTORY_COLUMNS)
        for row in rows:
            val = row["val_loss"]
            w.writerow(
                [
                    row["epoch"],
                    row["step"],
                    f"{row['train_loss']:.8g}",
                    "" if val is None or math.isnan(val) else f"{val:.8g}",
                    f"{row['lr']:.6g}",
                    f"{row['seconds']:.2f}",
                ]
            )
        return write_text(self.history, buf.getvalue())

    def read_history(self) -> list[dict[str, Any]]:
        """history.csv as rows of numbers: see :func:`read_history_file`."""
        return read_history_file(self.history)

    # ------------------------------------------------------------------------------ split
    def write_split(self, seed: int, train: Sequence[str], val: Sequence[str], data_dir=None) -> Path:
        obj = {"seed": int(seed), "train": list(train), "val": list(val)}
        if data_dir is not None:
            obj["data_dir"] = str(Path(data_dir).resolve())
        return write_json(self.split, obj)

    def read_split(self) -> dict[str, Any]:
        """split.json as ``{"seed": int, "train": [...], "val": [...]}`` (plus ``data_dir`` when recorded)."""
        p = self.split
        try:
            obj = json.loads(p.read_text())
        except FileNotFoundError:
            raise InputError("split file missing", p) from None
        except (OSError, ValueError) as exc:
            raise InputError(f"split is not readable JSON ({type(exc).__name__})", p) from None
        try:
            split = {**obj, "seed": int(obj["seed"]), "train": list(obj["train"]), "val": list(obj["val"])}
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(
                f"not a valid split file: needs seed, train and val ({type(exc).__name__}: {exc})", p
            ) from None
        return split


def read_history_file(path: str | os.PathLike) -> list[dict[str, Any]]:
    """A history CSV as rows of numbers (epoch/step int; a missing val_loss is NaN).

    A half-written last line (the trainer is appending) and unreadable lines are dropped.
    InputError when the file is missing, empty or lacks the ``epoch``/``train_loss`` columns.
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
    reader = csv.DictReader(lines)
    missing = [c for c in ("epoch", "train_loss") if c not in (reader.fieldnames or [])]
    if missing:
        raise InputError(f"history lacks column(s) {missing}; expected {list(HISTORY_COLUMNS)}", p)
    rows = []
    for raw in reader:
        row = {k: _number(v) for k, v in raw.items() if k is not None}
        if math.isnan(row["epoch"]):
            continue
        for col in _INT_COLUMNS:
            if col in row and not math.isnan(row[col]):
                row[col] = int(row[col])
        rows.append(row)
    return rows
