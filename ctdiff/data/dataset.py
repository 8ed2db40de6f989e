"""Training data: reading a prepared dataset into memory, the seeded split, augmentation, padding.

Pipeline per case: read the NIfTI (HU) once -> ``ctdiff.data.tensors`` (1, z, y, x) -> fixed HU window to
[-1, 1] -> cached in memory. Per training item: MONAI ``RandFlip`` (one in-plane axis) and
``RandZoom`` (0.9-1.1), as in the thesis, then the slice axis is padded to what the model needs
(``data.pad_slices_to``); sampling crops the padding off again (:func:`crop_slices`).

Randomness never comes from global state: the epoch order is a function of ``(seed, epoch)`` and
each item's augmentation of ``(seed, epoch, case index)``, so an interrupted run resumes exactly and
DataLoader workers need no seeding.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from monai.transforms import Compose, RandFlip, RandZoom, SpatialPad, pad_nd
from monai.utils import convert_to_tensor

from ctdiff.config import DataConfig
from ctdiff.data.io import find_cases, read_volume
from ctdiff.data.tensors import array_to_tensor, hu_to_model
from ctdiff.errors import ConfigError, InputError

# tensor spatial axes are (D, H, W) = (z, y, x); MONAI spatial_axis counts from 0 after the channel
FLIP_SPATIAL_AXIS = {"x": 2, "y": 1}


def seed_from(*parts: int) -> int:
    """A 32-bit seed derived from integers (numpy SeedSequence), for independent per-use streams."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint32)[0])


# ------------------------------------------------------------------------------------------ split
def make_split(paths: Sequence[str | os.PathLike], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Seeded random train/validation split of case paths (validation = int(n * fraction), the thesis' 23/5 of 28).

    At least one case always stays in training. Paths are returned as given (sorted within each set).
    """
    items = sorted(str(p) for p in paths)
    n_val = min(int(len(items) * val_fraction), len(items) - 1)
    order = np.random.default_rng(seed).permutation(len(items))
    val = sorted(items[i] for i in order[:n_val])
    train = sorted(items[i] for i in order[n_val:])
    return train, val


def dataset_files(data_dir: str | os.PathLike) -> list[str]:
    """The case files of a prepared dataset folder (absolute paths, sorted)."""
    return [str(p.resolve()) for p in find_cases(data_dir)]


# ------------------------------------------------------------------------------------- loading
@dataclass
class CaseSet:
    """Volumes scaled to [-1, 1] as (1, z, y, x) tensors, all of one (x, y, z) shape."""

    paths: list[str]
    tensors: list[torch.Tensor]
    shape: tuple[int, int, int]  # (x, y, z) of the volumes
    affine: np.ndarray  # of the first case: what generated volumes are written with
    spacing: tuple[float, float, float]
    # per case: the fraction of its voxels just outside the HU window (see window_clipped_fraction)
    clipped: list[float] = field(default_factory=list)


# A voxel this close outside the HU window (a fraction of the window's width: 126 HU for -1024..1500)
# is most likely the scan's own noise clipped (air at -1000 HU with 25 HU of noise dips below -1024),
# not padding outside the field of view (-2048, -3024) or metal far above it. Clipping such noise
# leaves a plateau of identical values the model learns and reproduces: in the phantoms, 6 % of the
# voxels sit just below -1024, and samples from a [-1024, 1500] window had 40 % of their voxels at
# exactly -1024, which run-length radiomics tell from the real scans by hundreds of SDs.
CLIP_BAND = 0.05
CLIP_WARN_FRACTION = 0.005  # warn when more than 0.5 % of a volume's voxels are in that band


def window_clipped_fraction(array, window: Sequence[float]) -> float:
    """The fraction of ``array``'s voxels (HU) within ``CLIP_BAND`` of the window's width outside it."""
    lo, hi = float(window[0]), float(window[1])
    band = CLIP_BAND * (hi - lo)
    a = np.asarray(array)
    near = ((a < lo) & (a >= lo - band)) | ((a > hi) & (a <= hi + band))
    return float(np.count_nonzero(near)) / max(a.size, 1)


def window_clip_warning(
    cases: Sequence[CaseSet | None], window: Sequence[float], setting: str = "data.hu_window"
) -> str | None:
    """One line when any case has more than ``CLIP_WARN_FRACTION`` of its voxels clipped just
    outside ``window`` (None otherwise): how many, the worst case, and what to do (``setting``: the
    window's key for --set, ``hu_window`` in train-autoencoder)."""
    pairs = [(f, p) for c in cases if c is not None for p, f in zip(c.paths, c.clipped)]
    bad = [(f, p) for f, p in pairs if f > CLIP_WARN_FRACTION]
    if not bad:
        return None
    f, p = max(bad)
    lo, hi = float(window[0]), float(window[1])
    band = CLIP_BAND * (hi - lo)
    return (
        f"warning: {len(bad)} of {len(pairs)} volume(s) have voxels just outside {setting} "
        f"[{lo:g}, {hi:g}] (most: {Path(p).name}, {100 * f:.1f}% of its voxels within {band:g} HU outside): "
        f"the window clips the scans' own noise into a plateau the model will reproduce; widen {setting} "
        f"(e.g. --set {setting}=[{10 * np.floor((lo - 2 * band) / 10):g},{hi:g}] for noise in air)"
    )


def warn_window_clipping(
    cases: Sequence[CaseSet | None], window: Sequence[float], setting: str = "data.hu_window"
) -> None:
    """Print :func:`window_clip_warning`'s line to stderr, if any."""
    line = window_clip_warning(cases, window, setting)
    if line is not None:
        print(line, file=sys.stderr)


def load_cases(
    paths: Sequence[str | os.PathLike],
    cfg: DataConfig,
    expected_shape: Sequence[int] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> CaseSet:
    """Read and scale every case; a volume whose shape differs from the others (or from
    ``cfg.shape``/``expected_shape``) raises InputError naming the file."""
    want = tuple(cfg.shape) if cfg.shape is not None else (tuple(expected_shape) if expected_shape else None)
    tensors, first_path, affine, spacing, clipped = [], None, None, None, []
    for i, p in enumerate(paths):
        vol = read_volume(p)
        if want is None:
            want, first_path = vol.shape, p
        if vol.shape != want:
            source = f"case {Path(first_path).name}" if first_path else "the config (data.shape)"
            raise InputError(
                f"has shape {vol.shape} but {source} has {want}; every training volume needs one "
                f"(x, y, z) shape: resample them with 'python -m ctdiff prepare --shape X Y Z'",
                p,
            )
        if affine is None:
            affine, spacing = vol.affine, vol.spacing
        clipped.append(window_clipped_fraction(vol.array, cfg.hu_window))
        tensors.append(hu_to_model(array_to_tensor(vol.array), cfg.hu_window))
        if progress is not None:
            progress(i + 1, len(paths))
    if not tensors:
        raise InputError("no training volumes")
    return CaseSet([str(p) for p in paths], tensors, tuple(int(s) for s in want), affine, spacing, clipped)


# ----------------------------------------------------------------------------- padding / cropping
def padded_depth(n_slices: int, cfg: DataConfig) -> int:
    if cfg.pad_slices_to is None:
        return n_slices
    if cfg.pad_slices_to < n_slices:
        raise ConfigError(f"data.pad_slices_to ({cfg.pad_slices_to}) is smaller than the data's {n_slices} slices")
    return cfg.pad_slices_to


def pad_before(n: int, size: int) -> int:
    """Where ``n`` centred voxels start in ``size`` (floor): the voxels a centred pad from ``n`` to
    ``size`` adds before (the rest goes after), and where a centred crop from ``size`` to ``n`` starts."""
    return (size - n) // 2


def fit_centred(t, spatial_size: Sequence[int], mode: str = "constant", value: float = 0.0):
    """A ``(C, *spatial)`` array or tensor (returned as the same type) padded and/or cropped to
    ``spatial_size`` (-1 keeps an axis), centred; padding repeats the edge (``mode="edge"``) or adds
    ``value`` (``"constant"``).

    The pad widths are MONAI ``SpatialPad(method="symmetric")``'s (``compute_pad_width``: the smaller
    half before) and the padding is MONAI's ``pad_nd``, the function that ``SpatialPad`` runs; calling
    the transform itself gives the same values (tested) but wraps the data in a MetaTensor and
    records the operation, which made padding a training item ~30x slower than ``F.pad``, against
    ~2.6x this way (``benchmarks/bench_padding.py``, docs/benchmarks.md). The crop slices at the same
    :func:`pad_before` offset, so cropping undoes padding. Not MONAI's ``CenterSpatialCrop`` (nor
    ``ResizeWithPadOrCrop``, which uses it): it starts at ``size // 2 - n // 2``, one voxel after the
    pad's offset when ``size`` is even and ``n`` odd (``test_centre_spatial_crop_does_not_undo_symmetric_pad``).
    """
    size = [int(n) if int(s) == -1 else int(s) for s, n in zip(spatial_size, t.shape[1:])]
    widths = SpatialPad(size, method="symmetric").compute_pad_width(t.shape[1:])
    if any(before or after for before, after in widths):
        t = pad_nd(t, list(widths), mode, **({"value": float(value)} if mode == "constant" else {}))
    box = tuple(slice(pad_before(s, n), pad_before(s, n) + s) for s, n in zip(size, t.shape[1:]))
    return t[(slice(None), *box)]


def pad_slices(t: torch.Tensor, depth: int, mode: str = "edge") -> torch.Tensor:
    """Pad a (C, D, H, W) tensor along D to ``depth``: "edge" repeats end slices, "constant" adds -1 (air)."""
    if depth == t.shape[1]:
        return t
    return fit_centred(t, (depth, -1, -1), mode, value=-1.0)


def crop_slices(t: torch.Tensor, n_slices: int) -> torch.Tensor:
    """Undo :func:`pad_slices` on a (..., D, H, W) tensor.

    Plain slicing, not :func:`fit_centred`: sampling crops whole ``(N, C, D, H, W)`` batches and MONAI's
    transforms take one channel-first item; the offset is the same :func:`pad_before`.
    """
    before = pad_before(n_slices, t.shape[-3])
    return t[..., before : before + n_slices, :, :]


# ----------------------------------------------------------------------------------- augmentation
class Augment:
    """The thesis' augmentation: MONAI RandFlip of one in-plane axis and RandZoom, seeded per call."""

    def __init__(self, cfg: DataConfig):
        self.enabled = cfg.flip_prob > 0 or cfg.zoom_prob > 0
        self.transform = Compose(
            [
                RandFlip(prob=cfg.flip_prob, spatial_axis=FLIP_SPATIAL_AXIS[cfg.flip_axis]),
                RandZoom(
                    prob=cfg.zoom_prob,
                    min_zoom=cfg.zoom_range[0],
                    max_zoom=cfg.zoom_range[1],
                    mode="trilinear",
                    align_corners=False,
                    padding_mode="edge",
                    keep_size=True,
                ),
            ]
        )

    def __call__(self, t: torch.Tensor, seed: int) -> torch.Tensor:
        if not self.enabled:
            return t
        self.transform.set_random_state(seed=seed)
        out = self.transform(t)
        return convert_to_tensor(out, track_meta=False).to(torch.float32).contiguous()


class TrainDataset(torch.utils.data.Dataset):
    """Items are addressed by ``(epoch, index)`` so augmentation is a pure function of the pair."""

    def __init__(self, cases: CaseSet, cfg: DataConfig, seed: int, augment: bool = True):
        self.cases, self.cfg, self.seed = cases, cfg, seed
        self.augment = Augment(cfg) if augment else None
        self.depth = padded_depth(cases.shape[2], cfg)

    def __len__(self) -> int:
        return len(self.cases.tensors)

    def __getitem__(self, key: tuple[int, int]) -> torch.Tensor:
        epoch, index = key
        t = self.cases.tensors[index]
        if self.augment is not None:
            t = self.augment(t, seed_from(self.seed, 1, epoch, index))
        return pad_slices(t, self.depth, self.cfg.pad_mode)


def epoch_batches(
    n: int, epoch: int, seed: int, batch_size: int, rank: int = 0, world_size: int = 1
) -> list[list[tuple[int, int]]]:
    """This rank's batches of ``(epoch, index)`` keys for one epoch.

    The permutation depends on ``(seed, epoch)`` only; as in ``DistributedSampler`` it is padded by
    repetition to a multiple of ``world_size`` and rank r takes every world_size-th index from r.
    """
    order = np.random.default_rng(seed_from(seed, 2, epoch)).permutation(n).tolist()
    total = -(-n // world_size) * world_size
    order = (order * (-(-total // n)))[:total]
    mine = order[rank::world_size]
    keys = [(epoch, i) for i in mine]
    return [keys[i : i + batch_size] for i in range(0, len(keys), batch_size)]
