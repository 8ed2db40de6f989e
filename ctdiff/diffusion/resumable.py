"""The progress file of a command that fine-tunes or trains from a model file (``tune-decoder``,
``train-refiner``): written atomically, checked on ``--resume`` against the input model's sha256,
and refused in one line when a new start would overwrite it without ``--force``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ctdiff.errors import InputError, OverwriteError


def save_state(path: Path, state: dict[str, Any]) -> None:
    from ctdiff.atomic import atomic_path

    with atomic_path(path, force=True) as tmp:
        torch.save(state, tmp)


def open_state(path: Path, fmt: str, model_sha: str, model: Path, what: str, resume: bool, force: bool):
    """The saved state to resume from (``resume``), else None after clearing the way for a new start.

    ``what`` names the work in messages ("tuning", "refiner training")."""
    if resume:
        if not path.is_file():
            raise InputError(f"no unfinished {what} to resume (expected {path.name} next to --out)", path)
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(saved, dict) or saved.get("format") != fmt:
            raise InputError(f"not a ctdiff {what} state file", path)
        if saved["model_sha256"] != model_sha:
            raise InputError(f"was started from another --model ({saved['model']}), not {model}", path)
        return saved
    if path.exists():
        if not force:
            raise OverwriteError(f"an unfinished {what} for this --out exists; pass --resume or --force", path)
        path.unlink()
    return None
