"""Training checkpoints: one file holds everything needed to resume or to sample.

A checkpoint (``torch.save`` of a plain dict, written atomically) holds the config (as a dict),
model weights, EMA weights, optimizer and LR-scheduler state, the step/epoch position (down to the
batch within an epoch, so Ctrl-C mid-epoch resumes exactly), RNG states and the data geometry
(volume shape, slice padding, affine) that sampling writes generated volumes with.
It loads with ``weights_only=True``: no pickled code runs when a checkpoint is opened.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ctdiff.atomic import atomic_path
from ctdiff.config import Config, config_from_dict, diff_sections, saved_config_values
from ctdiff.errors import ConfigError, InputError

FORMAT = "ctdiff-checkpoint-1"
CHECKPOINT_DIR = "checkpoints"
LAST, BEST = "last.pt", "best.pt"


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` (see :func:`ctdiff.training.train.Trainer.state`) atomically; returns the path."""
    with atomic_path(path, force=True) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint; InputError (naming the file) for a missing, corrupt or foreign file."""
    p = Path(path)
    if not p.is_file():
        raise InputError("checkpoint not found", p)
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for truncated/foreign files
        first = str(exc).splitlines()[0][:200] if str(exc).strip() else "no details"
        raise InputError(f"not a readable checkpoint ({type(exc).__name__}: {first})", p) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise InputError(f"not a ctdiff checkpoint (expected format {FORMAT})", p)
    return ckpt


def require_keys(ckpt: dict[str, Any], keys, path: str | os.PathLike | None = None) -> None:
    """InputError naming the entries an incomplete checkpoint lacks."""
    missing = [k for k in ("config", *keys) if k not in ckpt]
    if missing:
        raise InputError(f"incomplete checkpoint: no {', '.join(missing)} entry", path)


def require_finite_weights(
    module: torch.nn.Module, path: str | os.PathLike | None = None, which: str = "weights"
) -> None:
    """InputError when a loaded module holds NaN/inf parameters (a diverged run): it would sample noise or zeros."""
    for name, tensor in module.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise InputError(
                f"checkpoint {which} hold non-finite values (NaN/inf), e.g. in {name}; "
                "the run diverged: use an earlier checkpoint",
                path,
            )


def checkpoint_config(ckpt: dict[str, Any], path: str | os.PathLike | None = None) -> Config:
    if not isinstance(ckpt.get("config"), dict):
        raise InputError("incomplete checkpoint: no config entry", path)
    return config_from_dict(saved_config_values(ckpt["config"]), where=path)


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint file, or a run dir -> its ``checkpoints/best.pt``, falling back to ``last.pt``."""
    p = Path(path)
    if p.is_dir():
        for name in (BEST, LAST):
            candidate = p / CHECKPOINT_DIR / name
            if candidate.is_file():
                return candidate
        raise InputError(
            f"run dir holds no {CHECKPOINT_DIR}/{BEST} or {CHECKPOINT_DIR}/{LAST} yet: training saves the first at "
            "the end of its first epoch (a run stopped before that has none)",
            p,
        )
    if not p.exists():
        raise InputError("no such checkpoint file or run dir", p)
    return p


def check_same_model(saved: Config, wanted: Config, path: str | os.PathLike | None = None) -> None:
    """ConfigError listing the data/model/diffusion keys where ``wanted`` differs from a checkpoint's config."""
    diffs = diff_sections(saved, wanted)
    if diffs:
        raise ConfigError(
            "checkpoint was trained with another configuration (checkpoint -> requested): " + "; ".join(diffs),
            path,
        )


def load_weights(
    module: torch.nn.Module, state_dict: dict[str, torch.Tensor], path: str | os.PathLike | None = None
) -> None:
    """``load_state_dict`` (strict) with a one-line ConfigError naming the first mismatch."""
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [k for k in own if k in state_dict and tuple(own[k].shape) != tuple(state_dict[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            k = shapes[0]
            parts.append(
                f"{len(shapes)} weight shape(s) differ, e.g. {k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
            )
        if missing:
            parts.append(f"{len(missing)} weight(s) missing from the checkpoint, e.g. {missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected weight(s), e.g. {unexpected[0]}")
        raise ConfigError(
            "checkpoint does not fit this model (trained with another config?): " + "; ".join(parts), path
        )
    module.load_state_dict(state_dict)
