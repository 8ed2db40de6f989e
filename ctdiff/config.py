"""The one typed configuration of a training run: data, model, diffusion, training, sampling.

A :class:`Config` is loaded from YAML (``configs/*.yaml``), overridden from the command line with
``--set section.key=value``, validated, and saved into the run dir (``config.yaml``) and into every
checkpoint (as a plain dict), so sampling and the app rebuild everything from a checkpoint alone.

Every value is type-checked when loaded; an unknown key raises :class:`~ctdiff.errors.ConfigError`
naming it (a typo never silently falls back to a default).
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from ctdiff.errors import ConfigError
from ctdiff.samplers import (
    DEFAULT_SAMPLER,
    DEFAULT_STEPS,
    DIFFUSION_KINDS,
    SAMPLER_NAMES,
    gaussian_start_error,
    sampler_error,
)

BLOCK_KINDS = ("2d", "3d")
PREDICTIONS = ("epsilon", "v_prediction", "sample")
BETA_SCHEDULES = ("linear", "scaled_linear", "cosine")
TIME_SAMPLINGS = ("uniform", "logit-normal")
NOISE_KINDS = ("gaussian", "pyramid")
SAMPLERS = SAMPLER_NAMES  # every registered sampler (ctdiff.samplers); which fit a model depends on diffusion.kind
SPACES = ("pixel", "wavelet", "latent")
CONDITIONS = ("body_share", "latent_pcs")  # model.condition (ctdiff.model.condition)
CONDITION_DRAWS = ("bootstrap", "gaussian")  # sample.condition_draw (ctdiff.model.condition.draw)
GUIDANCE_MAX = 20.0  # sample.guidance's upper bound: far past any useful scale, but finite
MAX_WAVELET_LEVELS = 2
WAVELET_SCALES = ("lowpass", "band")
PAD_MODES = ("edge", "constant")
FLIP_AXES = ("x", "y")
# each copy is a whole encoded training case held in memory (0.5 MB per case for the demo model)
MAX_LATENT_AUGMENT_COPIES = 64


@dataclasses.dataclass
class DataConfig:
    # Fixed HU window mapped to [-1, 1]; HU outside are clipped. -1024 is air as stored by scanners,
    # 1500 keeps trabecular and most cortical bone; soft tissue then spans ~1.3 % of the range per 30 HU.
    hu_window: tuple[float, float] = (-1024.0, 1500.0)
    # Expected (x, y, z) shape of every training volume; null = whatever the dataset has (all equal).
    shape: tuple[int, int, int] | None = None
    # Pad the slice (z) axis to this many slices before the network (null = no padding); sampling
    # crops back to the data's slice count. The thesis' 26 slices need 32 for its 16x z-downsampling.
    pad_slices_to: int | None = None
    # "edge" repeats the first/last slice, "constant" pads with the window's lower end (air).
    pad_mode: str = "edge"
    val_fraction: float = 0.2
    split_seed: int = 0
    # Augmentation (MONAI RandFlip / RandZoom), as in the thesis: flip one in-plane axis, zoom 0.9-1.1.
    flip_prob: float = 0.5
    flip_axis: str = "x"
    zoom_prob: float = 0.5
    zoom_range: tuple[float, float] = (0.9, 1.1)
    # model.space latent: a latent run encodes its training cases once, so the flip and zoom above
    # never reach it unless this is above 0: that many augmented versions of each training case
    # (flip/zoom as above, seeded) are encoded at the start besides the case itself, and every epoch
    # draws one of the 1 + N per case. The scale factor still comes from the un-augmented latents.
    latent_augment_copies: int = 0
    num_workers: int = 0


@dataclasses.dataclass
class ModelConfig:
    # One entry per resolution level.
    channels: tuple[int, ...] = (32, 64, 64, 128, 256, 512, 512)
    # "3d": 3x3x3 convolutions, downsampling by 2 along x, y and z after the level;
    # "2d": per-slice 1x3x3 convolutions, downsampling by 2 along x and y only.
    # The last level is followed by no downsampling (as in diffusers' UNet2DModel).
    block_kinds: tuple[str, ...] = ("3d", "2d", "3d", "2d", "3d", "3d", "3d")
    attention: tuple[bool, ...] = (False, False, False, False, False, True, False)
    mid_attention: bool = True
    res_blocks: int = 2
    norm_groups: int = 32
    head_channels: int = 64
    # size of the sinusoidal timestep embedding (its MLP is 4x wider); null = channels[0], as in
    # diffusers' UNet2DModel. Tiny models want more than their first level's few channels.
    time_channels: int | None = None
    dropout: float = 0.0
    gradient_checkpointing: bool = False
    # What the U-Net diffuses (ctdiff.model.spaces): "pixel" = the HU volume; "wavelet" = its 3D Haar
    # sub-bands (lossless, channels x 2^levels, every axis-level halves that axis); "latent" = a KL
    # autoencoder's latent (carried in checkpoints). The default is latent, the equal-cost benchmark's
    # pick (docs/benchmarks.md, issue 20 benchmark a). Checkpoints saved before this key existed are
    # pixel (SAVED_BEFORE_KEYS).
    space: str = "latent"
    # Haar levels along (z, y, x), each 0-2; thin slabs can skip z, e.g. [0, 1, 1]
    wavelet_levels: tuple[int, int, int] = (1, 1, 1)
    # how the wavelet sub-bands are scaled for the U-Net: "lowpass" = all by 2^(-levels/2), so the
    # low-pass band stays in [-1, 1] (detail bands then carry a few hundredths: fine texture is a tiny
    # signal under the diffusion noise); "band" = each band by 1 / its SD over the training set (as
    # the latent scale factor), so every band has unit variance; the samplers then do not clip
    wavelet_scale: str = "lowpass"
    # the autoencoder.pt of `train-autoencoder` (space: latent); its weights are copied into the
    # diffusion checkpoints together with the file's sha256. null with space latent: `train` first
    # trains one in the run dir (<run>/autoencoder/, train.autoencoder_steps steps, the run's split)
    autoencoder: str | None = None
    # A scalar the U-Net is conditioned on (ctdiff.model.condition): null = none (every checkpoint
    # before the key existed); "body_share" = the share of the training item's voxels above -500 HU
    # (how much of the field of view the body fills). Training computes it for every item (after
    # augmentation), drops it for condition_dropout of the items (the network then also learns the
    # unconditional flow), and the checkpoint carries the training cases' values; sampling draws one
    # per seed from them (a smoothed bootstrap) unless a value is given (ctdiff sample --condition).
    # "latent_pcs" (space latent) = the item's latent's coordinates along the first
    # condition_components principal axes of the training cases' latents; drawn per seed, no fixed value.
    condition: str | None = None
    condition_components: int = 4
    # latent_pcs: average each latent channel to this many cells per (z, y, x) before the PCA (its
    # coarse layout, as benchmarks/latent_diversity.py measures it); null = the whole latent
    condition_grid: tuple[int, int, int] | None = None
    condition_dropout: float = 0.1
    # Gaussian noise added to each training item's condition value, as a share of the training cases'
    # SD (0 = none), so that a size no longer names one training case exactly; measured at 0.5 it did
    # not keep the samples away from the training scans (docs/benchmarks.md), hence off by default
    condition_jitter: float = 0.0


@dataclasses.dataclass
class DiffusionConfig:
    # "ddpm": the variance-preserving DDPM process (prediction: epsilon, v_prediction, or sample: the
    # network predicts x_0 itself, as WDM trains its wavelet-space model);
    # "rflow": rectified flow (MONAI RFlowScheduler), the network predicts the velocity x_0 - noise.
    # The default is rflow, the benchmark's pick; checkpoints saved before this key existed are ddpm.
    kind: str = "rflow"
    timesteps: int = 1000
    beta_schedule: str = "linear"
    beta_start: float = 1e-4
    beta_end: float = 0.02
    prediction: str = "epsilon"
    # (kind rflow only) how training draws the noise level t/T: "uniform" (MONAI's default), or
    # "logit-normal" (MONAI RFlowScheduler's sample_method), sigmoid of N(time_loc, time_scale^2):
    # time_loc > 0 puts more of the training on high noise, where the coarse layout is decided
    time_sampling: str = "uniform"
    time_loc: float = 0.0
    time_scale: float = 1.0
    # (kind rflow only) the flow's source noise: "gaussian" (white, the default), or "pyramid": white
    # noise plus white noise drawn on grids halved per level (while more than one voxel), upsampled
    # trilinearly, less its channel mean, level i weighted noise_discount^i, the sum scaled to unit SD
    # (multi-resolution noise; ctdiff.diffusion.schedule.pyramid_noise). More of its energy is at
    # coarse scales, meant to put off the coarse layout's decision to lower noise levels (on the demo
    # recipe it did not spread the samples: docs/benchmarks.md)
    noise: str = "gaussian"
    noise_discount: float = 0.8


@dataclasses.dataclass
class TrainConfig:
    epochs: int = 2000
    max_steps: int | None = None  # stop after this many optimizer steps (null = run all epochs)
    batch_size: int = 1
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.01  # torch's AdamW default, which the thesis used
    warmup_steps: int = 1000
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    amp: bool = True  # bf16 autocast on CUDA; always fp32 on CPU
    compile: bool = False
    # channels-last 3D memory format for the weights and batches (training and sampling): on CPU for
    # the demo model 1.07x faster training steps, 1.29x faster sampling (docs/benchmarks.md)
    channels_last: bool = True
    seed: int = 0
    val_every: int = 1  # epochs
    val_timesteps: int = 8  # fixed timesteps (and fixed noise) per validation case
    preview_every: int = 5  # epochs; 0 = no previews
    preview_sampler: str = "ddpm"
    preview_steps: int = 25
    checkpoint_every: int = 1  # epochs between writes of last.pt
    # model.space latent with model.autoencoder null: steps of the autoencoder `train` trains first
    # (python -m ctdiff train-autoencoder's defaults otherwise; its settings: ctdiff/model/autoencoder.py)
    autoencoder_steps: int = 2000


@dataclasses.dataclass
class SampleConfig:
    # Unset, both follow diffusion.kind (DEFAULT_SAMPLER, DEFAULT_STEPS): rflow -> Euler, 25 steps
    # (the demo model's); ddpm -> ancestral DDPM with 50 of the 1000 training timesteps, as good as
    # DDPM-1000 on the old pixel demo model, where DPM-Solver++/DDIM were not (docs/benchmarks.md, "Sampling")
    sampler: str = "ddpm"
    steps: int = 50
    # latent space: the autoencoder decodes tiles of this many latent voxels (z, y, x) with MONAI's
    # SlidingWindowInferer (25 % overlap, Gaussian blending) so large volumes decode within memory
    decode_tile: tuple[int, int, int] = (16, 32, 32)
    # extra slices sampled at each end of the volume and cropped after decoding (whole slices of the
    # space's grid that the U-Net can still halve: multiples of 8 for the demo model). The network's and the decoder's zero
    # padding then falls outside the kept volume: on the demo model 16 (4 latent slices) removed the
    # samples' slice banding and brought their soft-tissue/fat CNR inside the real CI
    # (docs/benchmarks.md, "Sampling past the volume's ends"); costs (D + 2 z_margin) / D the time
    z_margin: int = 0
    # latent space: latent slices reflect-padded at each end for decoding only, the decoded volume cropped
    # back before the noise model adds its noise. The decoder's z borders fall outside the kept slices
    # while the diffusion model samples only the length it was trained on; z_margin instead has the
    # network sample the extra slices too, and on the demo model its 16 slices left the samples too
    # smooth along z (z-edge p99 124 HU against the phantoms' 207). The demo model decodes with 2 and
    # z_margin 0: FRD 9.28 against 9.53 (docs/benchmarks.md, "Where the wavelet bands' gap sits")
    decode_z_pad: int = 0
    # keep only the middle N slices of each drawn volume (null: all of the training depth), with the
    # affine of where they lie: for a model trained on longer volumes than are wanted, so that every kept
    # slice is the middle of what it learned, never its ends (docs/sampling.md)
    keep_slices: int | None = None
    # rectified flow (Euler): sampling starts at this noise level s in (0, 1] from the closed-form flow of
    # a Gaussian fitted to the training data, which the checkpoint must carry (`python -m ctdiff
    # fit-start`); the Euler grid's steps above s are skipped. null (or 1) starts from pure noise. The
    # demo model's own flow at high noise kept too little of its phantoms' variation
    # (docs/benchmarks.md, "A Gaussian start"; ctdiff/diffusion/gaussian_start.py)
    gaussian_start: float | None = None
    # after sampling, before decoding: the sampled tensors' mean and variance along the training data's
    # first principal axes set to the training data's, from a correction fitted to the model's own
    # samples, which the checkpoint must carry (`python -m ctdiff fit-spread`; ctdiff/diffusion/spread.py).
    # The demo model's samples varied 0.19-0.64x as much as its phantoms along those axes
    # (docs/benchmarks.md, "A spread correction")
    spread_correction: bool = False
    # after decoding: each volume's body (voxels above -500 HU) mapped onto the training scans' body
    # histogram, which the checkpoint must carry (`python -m ctdiff fit-histogram`), on the decoder's
    # noise-free estimate with the noise added back unchanged (ctdiff/diffusion/histogram.py). The
    # conditioned cosine-coder recipe's samples went from precision 0.17 to 0.58 with it
    # (docs/benchmarks.md, "Histogram matching of the body")
    histogram_match: bool = False
    # a conditioned model (model.condition) only: classifier-free guidance (Ho & Salimans 2022). Each
    # network evaluation becomes u + w (c - u), c the flow given the drawn condition and u the
    # unconditional flow (the condition_dropout share of training items taught it): 1 = the conditional
    # flow alone (no extra cost), 0 = the unconditional flow, w > 1 moves the sample further the way its
    # condition points, at twice the network's work per step. The latent_pcs recipe's network moved its
    # samples only 0.17-0.69x as far as their drawn coordinates along the 2nd-4th axes (docs/generator.md)
    guidance: float = 1.0
    # a conditioned model: how each seed's condition value is drawn from the training cases' values the
    # checkpoint carries. bootstrap: one case's value(s) plus a variance-preserving jitter (values between
    # the cases'); gaussian: the Gaussian with their mean and covariance, which names no training case
    # (ctdiff/model/condition.py, draw)
    condition_draw: str = "bootstrap"


@dataclasses.dataclass
class Config:
    name: str = "custom"
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = dataclasses.field(default_factory=DiffusionConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    sample: SampleConfig = dataclasses.field(default_factory=SampleConfig)

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    def summary(self) -> dict[str, Any]:
        """The few facts a sample manifest or the app shows about a model."""
        return {
            "name": self.name,
            "hu_window": list(self.data.hu_window),
            "channels": list(self.model.channels),
            "block_kinds": list(self.model.block_kinds),
            "timesteps": self.diffusion.timesteps,
            "beta_schedule": self.diffusion.beta_schedule,
            "prediction": self.diffusion.prediction,
            "space": self.model.space,
            "diffusion_kind": self.diffusion.kind,
            "source_noise": self.diffusion.noise,
        }


# ------------------------------------------------------------------------------ typed construction
def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str, where: str | None) -> Any:
    """Check ``value`` against annotation ``tp`` (after the few safe conversions) or raise ConfigError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, where)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}", where)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]", where) for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key} must have {len(args)} entries, got {len(value)} ({list(value)})", where)
        return tuple(_coerce(v, a, f"{key}[{i}]", where) for i, (v, a) in enumerate(zip(value, args)))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}", where)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be an integer, got {value!r}", where)
    if tp is float:
        # PyYAML reads "1e-4" (no dot) as a string, so numeric strings are accepted for floats
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key} must be a number, got {value!r}", where)
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} must be a string, got {value!r}", where)
    raise ConfigError(f"{key}: unsupported type {_type_name(tp)}", where)  # pragma: no cover


def _build(cls: type, values: Any, prefix: str, where: str | None) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix or 'config'} must be a mapping of keys to values, got {values!r}", where)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in values if k not in fields]
    if unknown:
        key = f"{prefix}{unknown[0]}"
        raise ConfigError(f"unknown config key '{key}' (known in this section: {', '.join(fields)})", where)
    kwargs = {}
    for name, value in values.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value if value is not None else {}, f"{prefix}{name}.", where)
        else:
            kwargs[name] = _coerce(value, tp, f"{prefix}{name}", where)
    return cls(**kwargs)


# Keys whose library default changed after configs were saved with it left out: a checkpoint (or a
# run's config.yaml) written before the key existed meant this value, not today's default.
SAVED_BEFORE_KEYS = {("model", "space"): "pixel", ("diffusion", "kind"): "ddpm"}


def saved_config_values(values: Any) -> Any:
    """A saved config dict (checkpoint, run config.yaml) with the keys it predates filled as it meant them.

    ``model.space`` and ``diffusion.kind`` did not exist before the 2026-11 spaces; their defaults
    have since become latent / rflow, so a checkpoint without them is pixel / DDPM (the old demo model
    ``tests/data/pixel-demo-64-before-spaces.pt``). Anything that is not a dict is returned as is.
    """
    if not isinstance(values, dict):
        return values
    out = dict(values)
    for (section, key), meant in SAVED_BEFORE_KEYS.items():
        part = out.get(section)
        if part is None:
            part = {}
        if isinstance(part, dict) and key not in part:
            out[section] = {**part, key: meant}
    return out


def config_from_dict(values: dict[str, Any], where: str | os.PathLike | None = None) -> Config:
    """A validated :class:`Config` from a (possibly partial) nested dict; missing keys get defaults."""
    where = None if where is None else os.fspath(where)
    config = _build(Config, values or {}, "", where)
    _default_samplers(config, values or {})
    validate(config, where)
    return config


def _default_samplers(config: Config, values: dict[str, Any]) -> None:
    """A config whose sampler is unset, or still the library default (``ddpm``, as every saved config
    carries it, e.g. before ``--set diffusion.kind=rflow``) where that does not fit its diffusion kind,
    gets its kind's default (``euler`` for rflow). Any other sampler that does not fit is left for
    :func:`validate` to report."""
    default = DEFAULT_SAMPLER.get(config.diffusion.kind)
    if default is None:
        return
    values = values if isinstance(values, dict) else {}
    for section, key, library_default in (
        ("sample", "sampler", SampleConfig.sampler),
        ("train", "preview_sampler", TrainConfig.preview_sampler),
    ):
        given = values.get(section) if isinstance(values.get(section), dict) else {}
        obj = getattr(config, section)
        value = getattr(obj, key)
        if key not in given or (value == library_default and sampler_error(value, config.diffusion.kind)):
            setattr(obj, key, default)
    given = values.get("sample") if isinstance(values.get("sample"), dict) else {}
    if "steps" not in given:
        config.sample.steps = DEFAULT_STEPS[config.diffusion.kind]


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> Config:
    """Load a YAML config, apply ``section.key=value`` overrides, validate."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("config file not found", p)
    try:
        values = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML ({str(exc).splitlines()[0]})", p) from None
    return config_from_dict(apply_overrides(values, overrides), p)


def apply_overrides(values: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of a config dict with ``section.key=value`` strings applied (values parsed as YAML)."""
    out = _plain(values)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects section.key=value, got {item!r}")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        node = out
        cls: Any = Config
        for i, part in enumerate(parts):
            names = {f.name: f for f in dataclasses.fields(cls)}
            if part not in names:
                raise ConfigError(f"unknown config key '{'.'.join(parts[: i + 1])}' in --set {item}")
            tp = typing.get_type_hints(cls)[part]
            if i == len(parts) - 1:
                if dataclasses.is_dataclass(tp):
                    raise ConfigError(f"--set {item}: '{key}' is a section; set one of its keys")
                node[part] = value
            else:
                if not dataclasses.is_dataclass(tp):
                    raise ConfigError(f"--set {item}: '{'.'.join(parts[: i + 1])}' is not a section")
                node = node.setdefault(part, {})
                cls = tp
    return out


# --------------------------------------------------------------------------------------- validation
def validate(config: Config, where: str | None = None) -> None:
    """Cross-field checks; raise ConfigError naming the key."""
    d, m, f, t, s = config.data, config.model, config.diffusion, config.train, config.sample

    def bad(msg: str) -> None:
        raise ConfigError(msg, where)

    if not d.hu_window[1] > d.hu_window[0]:
        bad(f"data.hu_window must be [low, high] with low < high, got {list(d.hu_window)}")
    if d.shape is not None and min(d.shape) < 1:
        bad(f"data.shape must be positive, got {list(d.shape)}")
    if d.pad_slices_to is not None and d.pad_slices_to < 1:
        bad(f"data.pad_slices_to must be a positive slice count or null, got {d.pad_slices_to}")
    if d.shape is not None and d.pad_slices_to is not None and d.pad_slices_to < d.shape[2]:
        bad(f"data.pad_slices_to ({d.pad_slices_to}) is smaller than data.shape's {d.shape[2]} slices")
    if d.pad_mode not in PAD_MODES:
        bad(f"data.pad_mode must be one of {PAD_MODES}, got {d.pad_mode!r}")
    if not 0.0 <= d.val_fraction < 1.0:
        bad(f"data.val_fraction must be in [0, 1), got {d.val_fraction}")
    for key in ("flip_prob", "zoom_prob"):
        if not 0.0 <= getattr(d, key) <= 1.0:
            bad(f"data.{key} must be in [0, 1], got {getattr(d, key)}")
    if d.flip_axis not in FLIP_AXES:
        bad(f"data.flip_axis must be one of {FLIP_AXES}, got {d.flip_axis!r}")
    if not 0.0 < d.zoom_range[0] <= d.zoom_range[1]:
        bad(f"data.zoom_range must be [min, max] with 0 < min <= max, got {list(d.zoom_range)}")
    if d.num_workers < 0:
        bad("data.num_workers must be >= 0")
    if not 0 <= d.latent_augment_copies <= MAX_LATENT_AUGMENT_COPIES:
        bad(f"data.latent_augment_copies must be in [0, {MAX_LATENT_AUGMENT_COPIES}], got {d.latent_augment_copies}")
    if d.latent_augment_copies and m.space != "latent":
        bad(
            f"data.latent_augment_copies applies to model.space latent only ({m.space} augments every step); "
            "leave it at 0"
        )
    if d.latent_augment_copies and d.flip_prob == 0 and d.zoom_prob == 0:
        bad("data.latent_augment_copies needs data.flip_prob or data.zoom_prob above 0 (the copies would be identical)")

    n = len(m.channels)
    if n < 1:
        bad("model.channels needs at least one level")
    for key in ("block_kinds", "attention"):
        if len(getattr(m, key)) != n:
            bad(f"model.{key} has {len(getattr(m, key))} entries but model.channels has {n} levels")
    for kind in m.block_kinds:
        if kind not in BLOCK_KINDS:
            bad(f"model.block_kinds entries must be one of {BLOCK_KINDS}, got {kind!r}")
    for c in m.channels:
        if c < 1 or c % m.norm_groups:
            bad(f"model.channels entry {c} is not a positive multiple of model.norm_groups ({m.norm_groups})")
    if m.res_blocks < 1:
        bad("model.res_blocks must be >= 1")
    if m.head_channels < 1:
        bad("model.head_channels must be >= 1")
    if m.time_channels is not None and (m.time_channels < 2 or m.time_channels % 2):
        bad(f"model.time_channels must be an even number >= 2 or null, got {m.time_channels}")
    if not 0.0 <= m.dropout < 1.0:
        bad("model.dropout must be in [0, 1)")
    if m.space not in SPACES:
        bad(f"model.space must be one of {SPACES}, got {m.space!r}")
    if m.condition is not None and m.condition not in CONDITIONS:
        bad(f"model.condition must be null or one of {CONDITIONS}, got {m.condition!r}")
    if m.condition == "latent_pcs" and m.space != "latent":
        bad(f"model.condition latent_pcs needs model.space latent (it is measured on the latents), got {m.space!r}")
    if m.condition_grid is not None and (len(m.condition_grid) != 3 or min(m.condition_grid) < 1):
        bad(f"model.condition_grid must be null or 3 positive cell counts (z, y, x), got {list(m.condition_grid)}")
    if not 1 <= m.condition_components <= 64:
        bad(f"model.condition_components must be 1-64, got {m.condition_components}")
    if not 0.0 <= m.condition_dropout < 1.0:
        bad(f"model.condition_dropout must be in [0, 1), got {m.condition_dropout}")
    if not (math.isfinite(m.condition_jitter) and 0.0 <= m.condition_jitter <= 5.0):
        bad(f"model.condition_jitter must be in [0, 5] (a share of the training values' SD), got {m.condition_jitter}")
    if any(not 0 <= k <= MAX_WAVELET_LEVELS for k in m.wavelet_levels):
        bad(f"model.wavelet_levels entries must be 0-{MAX_WAVELET_LEVELS}, got {list(m.wavelet_levels)}")
    if m.wavelet_scale not in WAVELET_SCALES:
        bad(f"model.wavelet_scale must be one of {WAVELET_SCALES}, got {m.wavelet_scale!r}")
    if m.space == "wavelet" and not any(m.wavelet_levels):
        bad("model.wavelet_levels needs at least one level for model.space wavelet")

    if f.kind not in DIFFUSION_KINDS:
        bad(f"diffusion.kind must be one of {DIFFUSION_KINDS}, got {f.kind!r}")
    if f.timesteps < 2:
        bad("diffusion.timesteps must be >= 2")
    if f.beta_schedule not in BETA_SCHEDULES:
        bad(f"diffusion.beta_schedule must be one of {BETA_SCHEDULES}, got {f.beta_schedule!r}")
    if not 0.0 < f.beta_start < f.beta_end < 1.0:
        bad(f"diffusion needs 0 < beta_start < beta_end < 1, got {f.beta_start}, {f.beta_end}")
    if f.prediction not in PREDICTIONS:
        bad(f"diffusion.prediction must be one of {PREDICTIONS}, got {f.prediction!r}")
    if f.time_sampling not in TIME_SAMPLINGS:
        bad(f"diffusion.time_sampling must be one of {TIME_SAMPLINGS}, got {f.time_sampling!r}")
    if f.time_sampling != "uniform" and f.kind != "rflow":
        bad(f"diffusion.time_sampling {f.time_sampling!r} needs diffusion.kind rflow, got {f.kind!r}")
    if not math.isfinite(f.time_loc):
        bad(f"diffusion.time_loc must be a finite number, got {f.time_loc}")
    if not (math.isfinite(f.time_scale) and f.time_scale > 0):
        bad(f"diffusion.time_scale must be a finite number > 0, got {f.time_scale}")
    if f.noise not in NOISE_KINDS:
        bad(f"diffusion.noise must be one of {NOISE_KINDS}, got {f.noise!r}")
    if f.noise != "gaussian" and f.kind != "rflow":
        bad(f"diffusion.noise {f.noise!r} needs diffusion.kind rflow, got {f.kind!r}")
    if not (math.isfinite(f.noise_discount) and 0.0 < f.noise_discount < 1.0):
        bad(f"diffusion.noise_discount must be a number in (0, 1), got {f.noise_discount}")

    for key in (
        "epochs",
        "batch_size",
        "grad_accum",
        "val_every",
        "val_timesteps",
        "preview_steps",
        "checkpoint_every",
        "autoencoder_steps",
    ):
        if getattr(t, key) < 1:
            bad(f"train.{key} must be >= 1, got {getattr(t, key)}")
    if t.max_steps is not None and t.max_steps < 1:
        bad("train.max_steps must be >= 1 or null")
    if not (t.lr > 0 and math.isfinite(t.lr)):
        bad(f"train.lr must be a positive number, got {t.lr}")
    if t.warmup_steps < 0 or t.preview_every < 0 or t.weight_decay < 0 or t.grad_clip < 0:
        bad("train.warmup_steps, preview_every, weight_decay and grad_clip must be >= 0")
    if not 0.0 <= t.ema_decay < 1.0:
        bad(f"train.ema_decay must be in [0, 1), got {t.ema_decay}")
    for key, sampler in (("train.preview_sampler", t.preview_sampler), ("sample.sampler", s.sampler)):
        problem = sampler_error(sampler, f.kind)
        if problem:
            bad(f"{key}: {problem}")
    if s.steps < 1:
        bad("sample.steps must be >= 1")
    if min(s.decode_tile) < 1:
        bad(f"sample.decode_tile must be positive, got {list(s.decode_tile)}")
    if s.z_margin < 0:
        bad(f"sample.z_margin must be >= 0, got {s.z_margin}")
    if s.decode_z_pad < 0:
        bad(f"sample.decode_z_pad must be >= 0, got {s.decode_z_pad}")
    if s.decode_z_pad and m.space != "latent":
        bad(f"sample.decode_z_pad applies to model.space latent only (this model is {m.space}); set it to 0")
    if s.keep_slices is not None and s.keep_slices < 1:
        bad(f"sample.keep_slices must be >= 1 or null, got {s.keep_slices}")
    if not (isinstance(s.guidance, (int, float)) and math.isfinite(s.guidance) and 0.0 <= s.guidance <= GUIDANCE_MAX):
        bad(f"sample.guidance must be a finite scale in [0, {GUIDANCE_MAX:g}], got {s.guidance}")
    elif s.guidance != 1.0 and m.condition is None:
        bad(f"sample.guidance {s.guidance:g} needs a conditioned model (model.condition is null); set it to 1")
    if s.condition_draw not in CONDITION_DRAWS:
        bad(f"sample.condition_draw must be one of {CONDITION_DRAWS}, got {s.condition_draw!r}")
    elif s.condition_draw != "bootstrap" and m.condition is None:
        bad(f"sample.condition_draw {s.condition_draw} needs a conditioned model (model.condition is null)")
    if s.gaussian_start is not None:
        problem = gaussian_start_error(s.gaussian_start, f.kind, s.sampler, f.noise)
        if problem:
            bad(f"sample.gaussian_start: {problem}")


def diff_sections(a: Config, b: Config, sections: Sequence[str] = ("data", "model", "diffusion")) -> list[str]:
    """``section.key: a -> b`` for every differing key in the named sections (what a checkpoint fixes)."""
    out = []
    da, db = a.to_dict(), b.to_dict()
    for section in sections:
        for key, va in da[section].items():
            vb = db[section][key]
            if va != vb:
                out.append(f"{section}.{key}: {va} -> {vb}")
    return out
