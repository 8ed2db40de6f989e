"""Sample synthetic CT volumes from a trained model and write them as HU NIfTI.

Python API (used by the Streamlit app)::

    from ctdiff.diffusion.sample import load_bundle, sample, write_samples
    bundle = load_bundle("runs/demo")                 # run dir -> best.pt (else last.pt), EMA weights
    volumes = sample(bundle, n=4, sampler="ddpm", steps=50, seed=0, callback=lambda done, total: ...)
    write_samples(volumes, "samples/demo", info={"note": "..."})

A bundle is rebuilt from the checkpoint alone (its config, weights and data geometry). Case i is
drawn from seed ``seed + i`` and does not depend on the batch size. Generated tensors are cropped
back to the training slice count (undoing ``data.pad_slices_to``), mapped from [-1, 1] back to HU
through the config's fixed window and given the training data's affine. Models of the wavelet or
latent space (``model.space``) sample the space's tensors, which the space then decodes (inverse
Haar transform; the carried autoencoder's decoder, tiled) before the crop.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ctdiff.atomic import write_json
from ctdiff.config import Config, SampleConfig
from ctdiff.data.dataset import crop_slices, pad_before
from ctdiff.data.tensors import model_to_hu, tensor_to_array
from ctdiff.data.volume import Volume
from ctdiff.diffusion.schedule import Diffusion, run_sampler
from ctdiff.distributed import add_device_arguments, apply_threads, resolve_device
from ctdiff.errors import ConfigError, InputError
from ctdiff.model import condition as conditions
from ctdiff.model.checkpoint import (
    checkpoint_config,
    load_checkpoint,
    load_weights,
    require_finite_weights,
    require_keys,
    resolve_checkpoint,
)
from ctdiff.model.spaces import PixelSpace, Space, build_space
from ctdiff.model.unet import build_model
from ctdiff.outputs import staged_output
from ctdiff.samplers import SAMPLER_NAMES, help_text, sampler_error

MANIFEST = "manifest.json"


@dataclass
class ModelBundle:
    """Everything sampling needs: the network (eval mode), config, schedule, device and geometry."""

    model: torch.nn.Module
    config: Config
    diffusion: Diffusion
    device: torch.device
    geometry: dict[str, Any]  # shape (x, y, z), depth (network slices), affine, spacing
    checkpoint: str | None = None
    step: int | None = None
    weights: str = "ema"
    space: Space = dataclasses.field(default_factory=PixelSpace)
    # a Gaussian fitted to the training data (python -m ctdiff fit-start; ctdiff.diffusion.gaussian_start)
    gaussian_start: dict[str, Any] | None = None
    # a correction of the samples' spread along the training data's principal axes (python -m ctdiff
    # fit-spread; ctdiff.diffusion.spread)
    spread: dict[str, Any] | None = None
    # the training scans' body histogram (python -m ctdiff fit-histogram; ctdiff.diffusion.histogram)
    histogram: dict[str, Any] | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.geometry["shape"])

    @property
    def affine(self) -> np.ndarray:
        return np.asarray(self.geometry["affine"], dtype=np.float64)


def load_bundle(path: str | os.PathLike, device: str | torch.device = "auto", use_ema: bool = True) -> ModelBundle:
    """Load a checkpoint file or a run dir (its best.pt, falling back to last.pt) for sampling."""
    ckpt_path = resolve_checkpoint(path)
    ckpt = load_checkpoint(ckpt_path)
    config = checkpoint_config(ckpt, ckpt_path)
    dev = resolve_device(device)
    # checkpoints from before model.space have no "space" entry: pixel space
    space = build_space(config, ckpt.get("space")).to(dev)
    model = build_model(config.model, space.channels)
    weights = "ema" if use_ema else "model"
    if not use_ema and ckpt.get("exported_from"):
        # a demo export (ctdiff_app.demo) keeps only the EMA weights, stored under both keys
        raise InputError(
            f"a sampling-only export of {ckpt['exported_from']} carries only its EMA weights; "
            "sample it without --no-ema, or use the run's own checkpoint",
            ckpt_path,
        )
    require_keys(ckpt, (weights, "geometry", "step"), ckpt_path)
    start_record = ckpt.get("gaussian_start")
    if start_record is not None:
        from ctdiff.diffusion.gaussian_start import check_record

        problem = check_record(start_record)
        if problem:
            raise InputError(problem, ckpt_path)
    spread_record = ckpt.get("spread_correction")
    if spread_record is not None:
        from ctdiff.diffusion import spread

        problem = spread.check_record(spread_record)
        if problem:
            raise InputError(problem, ckpt_path)
    histogram_record = ckpt.get("histogram_reference")
    if histogram_record is not None:
        from ctdiff.diffusion import histogram

        problem = histogram.check_record(histogram_record)
        if problem:
            raise InputError(problem, ckpt_path)
    if config.model.condition is not None:
        problem = conditions.check_record(ckpt.get("geometry", {}).get("condition"))
        if problem:
            raise InputError(problem, ckpt_path)
    load_weights(model, ckpt[weights], ckpt_path)
    require_finite_weights(model, ckpt_path, weights)
    # channels-last: 1.29x faster network evaluations on CPU for the demo model (docs/benchmarks.md)
    fmt = torch.channels_last_3d if config.train.channels_last else torch.contiguous_format
    model.to(dev, memory_format=fmt).eval().requires_grad_(False)
    return ModelBundle(
        model,
        config,
        Diffusion(config.diffusion, clip_sample=space.clip_sample),
        dev,
        dict(ckpt["geometry"]),
        str(ckpt_path.resolve()),
        int(ckpt["step"]),
        weights,
        space,
        start_record,
        spread_record,
        histogram_record,
    )


def sample_meta(
    bundle: ModelBundle,
    sampler: str,
    steps: int,
    seed: int,
    seconds: float,
    resynthesised: bool,
    z_margin: int = 0,
    keep_slices: int | None = None,
    refine_steps: int | None = None,
    decode_z_pad: int = 0,
    gaussian_start: float | None = None,
    spread_correction: bool = False,
    condition: float | list[float] | None = None,
    histogram_match: bool = False,
    guidance: float = 1.0,
    condition_draw: str | None = "bootstrap",
) -> dict[str, Any]:
    """A generated volume's metadata: marked synthetic, and how it was drawn (manifest.json's cases)."""
    return {
        "synthetic": True,
        "source_kind": "generated",
        "modality": "CT",
        "sampler": sampler,
        "steps": int(steps),
        "seed": int(seed),
        "seconds": round(seconds, 3),
        "checkpoint": bundle.checkpoint,
        "checkpoint_step": bundle.step,
        "weights": bundle.weights,
        "noise_resynthesis": resynthesised,
        "z_margin": int(z_margin),
        "decode_z_pad": int(decode_z_pad),
        "keep_slices": None if keep_slices is None else int(keep_slices),
        "refiner_steps": None if refine_steps is None else int(refine_steps),
        "gaussian_start": gaussian_start,
        "spread_correction": bool(spread_correction),
        "histogram_match": bool(histogram_match),
        **(
            {
                "condition": {
                    "name": bundle.config.model.condition,
                    "value": _rounded(condition),
                    "guidance": float(guidance),
                    "draw": condition_draw,  # None: a fixed value (--condition), not drawn
                }
            }
            if condition is not None
            else {}
        ),
        "config": bundle.config.summary(),
    }


def _rounded(value):
    """A condition value for the manifest: a number, or a list of numbers (a vector condition), to 6 places."""
    if isinstance(value, (list, tuple)):
        return [round(float(a), 6) for a in value]
    return round(float(value), 6)


def sample(
    bundle: ModelBundle,
    n: int,
    sampler: str = SampleConfig.sampler,
    steps: int = SampleConfig.steps,
    seed: int = 0,
    batch_size: int = 1,
    callback: Callable[[int, int], None] | None = None,
    noise: bool = True,
    z_margin: int | None = None,
    keep_slices: int | None = None,
    refine_steps: int | None = None,
    decode_z_pad: int | None = None,
    gaussian_start: float | None = None,
    spread_correction: bool | None = None,
    condition: float | None = None,
    histogram_match: bool | None = None,
    guidance: float | None = None,
    condition_draw: str | None = None,
) -> list[Volume]:
    """Generate ``n`` volumes (HU, training geometry). ``callback(done, total)`` counts network evaluations.

    ``noise``: a space that carries a noise model (a latent space's autoencoder's, or a pixel or wavelet
    space's from ``fit-noise --samples``) adds that noise after decoding (seeded per volume;
    :mod:`ctdiff.model.noise_resynthesis`).
    ``z_margin`` (default: the config's ``sample.z_margin``): that many extra slices are sampled at
    each end and cropped after decoding (and after the noise), so the network's and the decoder's
    boundaries fall outside the volume (:func:`check_z_margin` says which multiples a model takes).
    ``decode_z_pad`` (default: the config's ``sample.decode_z_pad``; latent space only): the latent is
    reflect-padded by that many slices at each end for decoding only, and cropped back before the noise
    (:meth:`ctdiff.model.spaces.LatentSpace.decode`).
    ``keep_slices`` (default: the config's ``sample.keep_slices``; null keeps all): only the middle
    ``keep_slices`` slices of each volume are returned, with the affine of where they lie in the
    training geometry (a model trained on longer volumes than it is asked for).
    A latent checkpoint that carries a residual refiner (``python -m ctdiff train-refiner``) refines
    each decoded volume, floored at air and cropped, with ``refine_steps`` Euler steps (default: the
    refiner's own) in place of the noise model; ``noise=False`` leaves both out. The callback then
    counts the refiner's network evaluations too.
    ``gaussian_start`` (default: the config's ``sample.gaussian_start``; 1 = none): the level s at which
    Euler sampling starts from the closed-form flow of the Gaussian the checkpoint carries
    (:func:`check_gaussian_start`); the grid's steps above s are skipped.
    ``spread_correction`` (default: the config's ``sample.spread_correction``): the sampled tensors are
    given the training data's mean and variance along its principal axes before decoding, by the
    correction the checkpoint carries (:mod:`ctdiff.diffusion.spread`; :func:`check_spread_correction`).
    ``condition`` (a conditioned model only, ``model.condition``): the value every volume is drawn
    with; by default each seed draws its own from the training cases' values (:func:`condition_values`).
    ``histogram_match`` (default: the config's ``sample.histogram_match``): each volume's body is mapped
    onto the training scans' body histogram the checkpoint carries, on the noise-free estimate with the
    noise added back unchanged (:func:`ctdiff.diffusion.histogram.match`); only with ``noise``, since the
    mapping is fitted to the volume as drawn with its noise (``noise=False`` returns the raw estimate).
    Without a noise model, or with a residual refiner, there is no separate estimate: the volume is
    matched as a whole.
    ``guidance`` (default: the config's ``sample.guidance``; a conditioned model only): classifier-free
    guidance scale w, every network evaluation ``u + w (c - u)`` (:func:`ctdiff.diffusion.schedule.guided`;
    1 = the conditional flow alone; any other w doubles the network's work per step).
    ``condition_draw`` (default: the config's ``sample.condition_draw``): how each seed's condition is drawn
    from the training cases' values, ``bootstrap`` or ``gaussian`` (:func:`ctdiff.model.condition.draw`)."""
    problem = sampler_error(sampler, bundle.diffusion.kind)
    if problem:
        raise ConfigError(problem)
    if n < 1 or steps < 1 or batch_size < 1:
        raise ConfigError(f"n, steps and batch_size must be >= 1 (got {n}, {steps}, {batch_size})")
    margin = check_z_margin(bundle, bundle.config.sample.z_margin if z_margin is None else z_margin)
    keep = check_keep_slices(bundle, bundle.config.sample.keep_slices if keep_slices is None else keep_slices)
    zpad = check_decode_z_pad(
        bundle, bundle.config.sample.decode_z_pad if decode_z_pad is None else decode_z_pad, margin
    )
    level = check_gaussian_start(
        bundle,
        sampler,
        steps,
        bundle.config.sample.gaussian_start if gaussian_start is None else gaussian_start,
        margin,
    )
    correct = check_spread_correction(
        bundle, bundle.config.sample.spread_correction if spread_correction is None else spread_correction, margin
    )
    fixed = check_condition(bundle, condition)
    scale = check_guidance(bundle, bundle.config.sample.guidance if guidance is None else guidance)
    method = check_condition_draw(
        bundle, bundle.config.sample.condition_draw if condition_draw is None else condition_draw
    )
    match = noise and check_histogram_match(
        bundle, bundle.config.sample.histogram_match if histogram_match is None else histogram_match
    )
    if match:
        from ctdiff.diffusion import histogram
    x, y, z = bundle.shape
    kept = keep if keep is not None else z
    affine = kept_affine(bundle.affine, z, kept)
    depth = int(bundle.geometry["depth"])
    window = bundle.config.data.hu_window
    refiner = getattr(bundle.space, "refiner", None) if noise else None
    r_steps = check_refine_steps(refiner, refine_steps)
    if refiner is not None:
        refiner.check_shape((depth, y, x))
    n_batches = math.ceil(n / batch_size)
    per_batch = evaluations(bundle, sampler, steps, level) + (r_steps or 0)
    total = n_batches * per_batch
    was_training = bundle.model.training
    bundle.model.eval()
    volumes: list[Volume] = []
    try:
        for b in range(n_batches):
            seeds = list(range(seed + b * batch_size, seed + min(n, (b + 1) * batch_size)))
            done_before = b * per_batch
            step_cb = None if callback is None else (lambda i, _t, d=done_before: callback(d + i, total))
            started = time.perf_counter()
            shape = bundle.space.encoded_shape((depth + 2 * margin, y, x))
            start = None if level is None else (bundle.gaussian_start, level)
            conds = condition_values(bundle, seeds, fixed, method)
            out = run_sampler(
                sampler,
                bundle.model,
                shape,
                bundle.diffusion,
                steps,
                seeds,
                bundle.device,
                step_cb,
                gaussian_start=start,
                condition=conds,
                guidance=scale,
            )
            if correct:
                from ctdiff.diffusion.spread import apply as apply_spread

                out = apply_spread(bundle.spread, out)
            resynthesised = noise and refiner is None and bundle.space.noise_model is not None
            # z_pad only when asked: pixel and wavelet spaces decode nothing and take no padding
            estimate = bundle.space.decode(out, None, z_pad=zpad) if zpad else bundle.space.decode(out, None)
            out = estimate
            if resynthesised:
                from ctdiff.model.autoencoder import air_floor

                out = bundle.space.add_noise(estimate, seeds)
                estimate = air_floor(estimate, window)  # what add_noise put its noise on
            out = out[:, :, margin : margin + depth]
            if refiner is not None:
                from ctdiff.model.autoencoder import air_floor

                ref_cb = None if callback is None else (lambda i, d=done_before + steps: callback(d + i, total))
                out = refiner(air_floor(out, window), seeds, r_steps, ref_cb)
            estimate = out if not resynthesised else estimate[:, :, margin : margin + depth]
            seconds = (time.perf_counter() - started) / len(seeds)
            out = crop_slices(crop_slices(out, z), kept)
            estimate = crop_slices(crop_slices(estimate, z), kept)
            if not torch.isfinite(out).all():
                # a diverged model or a sampler/step combination that blows up: never written as HU
                raise InputError(
                    f"sampling produced non-finite values (NaN/inf) with {sampler}, {steps} steps, "
                    f"seeds {seeds[0]}..{seeds[-1]}; the checkpoint or these settings are unusable",
                    bundle.checkpoint,
                )
            for i, (s, t) in enumerate(zip(seeds, out)):
                array = tensor_to_array(model_to_hu(t.float().cpu(), window))
                if match:
                    est = tensor_to_array(model_to_hu(estimate[i].float().cpu(), window))
                    # clipped to the window as every sample is (the noise added back can cross it)
                    array = np.clip(histogram.match(est, array, bundle.histogram), *(float(w) for w in window))
                meta = sample_meta(
                    bundle,
                    sampler,
                    steps,
                    s,
                    seconds,
                    resynthesised,
                    margin,
                    keep,
                    r_steps,
                    zpad,
                    level,
                    correct,
                    None if conds is None else conds[i],
                    match,
                    scale,
                    None if fixed is not None else method,
                )
                volumes.append(Volume(array, affine, meta))
    finally:
        bundle.model.train(was_training)
    return volumes


def check_gaussian_start(bundle: ModelBundle, sampler: str, steps: int, level, margin: int = 0) -> float | None:
    """The level on the sampler's grid at which a Gaussian start at ``level`` hands over (None: none,
    for None or 1); ConfigError (one line) for a bad level, sampler or ``z_margin``, InputError naming the
    checkpoint when it carries no fitted Gaussian."""
    from ctdiff.diffusion.schedule import start_grid_level
    from ctdiff.samplers import gaussian_start_error

    if level is None:
        return None
    problem = gaussian_start_error(level, bundle.diffusion.kind, sampler, bundle.diffusion.cfg.noise)
    if problem:
        raise ConfigError(f"gaussian_start: {problem}")
    if float(level) >= 1.0:
        return None
    if bundle.gaussian_start is None:
        raise InputError(
            "carries no fitted Gaussian for a Gaussian start; add one with 'python -m ctdiff fit-start' "
            "or sample with --gaussian-start 1",
            bundle.checkpoint,
        )
    if margin:
        raise ConfigError(
            "a Gaussian start is fitted to the training geometry and cannot sample z_margin extra slices; "
            "set z_margin 0 (decode_z_pad pads for decoding only and is fine)"
        )
    try:
        return start_grid_level(bundle.diffusion, sampler, steps, float(level))
    except ValueError as exc:  # a grid too coarse to reach the level: 1 step from 1.0 with a start at 0.6
        raise ConfigError(f"gaussian_start: {exc}; take more steps") from None


def check_condition(bundle: ModelBundle, value) -> float | None:
    """A requested condition value, checked against the model: ConfigError for a model without
    ``model.condition`` or a value out of its range; None when none is asked for."""
    if value is None:
        return None
    name = bundle.config.model.condition
    if name is None:
        raise ConfigError("this model is not conditioned (model.condition is null); sample it without a condition")
    try:
        return conditions.check_value(name, value)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def check_guidance(bundle: ModelBundle, value) -> float:
    """A classifier-free guidance scale as a float: ConfigError (one line) for a non-finite or out-of-range
    scale, or a scale other than 1 for a model without ``model.condition``."""
    from ctdiff.config import GUIDANCE_MAX

    try:
        w = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"guidance must be a number, got {value!r}") from None
    if isinstance(value, bool) or not (math.isfinite(w) and 0.0 <= w <= GUIDANCE_MAX):
        raise ConfigError(f"guidance must be a finite scale in [0, {GUIDANCE_MAX:g}], got {value!r}")
    if w != 1.0 and bundle.config.model.condition is None:
        raise ConfigError(
            f"guidance {w:g} needs a conditioned model (model.condition is null); sample it with guidance 1"
        )
    return w


def check_condition_draw(bundle: ModelBundle, method) -> str:
    """A condition draw's name, or ConfigError (one line) for an unknown one, or one other than the
    default for a model without ``model.condition``."""
    if method not in conditions.DRAWS:
        raise ConfigError(f"condition draw must be one of {', '.join(conditions.DRAWS)}, got {method!r}")
    if method != "bootstrap" and bundle.config.model.condition is None:
        raise ConfigError(f"condition draw {method} needs a conditioned model (model.condition is null)")
    return method


def condition_values(
    bundle: ModelBundle, seeds: Sequence[int], fixed: float | None = None, method: str | None = None
) -> list | None:
    """A conditioned model's value per seed: ``fixed``, or each seed's draw from the checkpoint's training
    values by ``method`` (default: the config's ``sample.condition_draw``; :func:`ctdiff.model.condition.draw`;
    a list per seed for a vector condition, latent_pcs); None for a model without ``model.condition``."""
    if bundle.config.model.condition is None:
        return None
    if fixed is not None:
        return [float(fixed)] * len(seeds)
    method = check_condition_draw(bundle, bundle.config.sample.condition_draw if method is None else method)
    return [conditions.draw(bundle.geometry["condition"], s, method) for s in seeds]


def check_spread_correction(bundle: ModelBundle, on, margin: int = 0) -> bool:
    """Whether sampling applies the checkpoint's spread correction; InputError naming the checkpoint when
    ``on`` and it carries none, ConfigError (one line) with ``z_margin``."""
    if not on:
        return False
    if bundle.spread is None:
        raise InputError(
            "carries no spread correction; add one with 'python -m ctdiff fit-spread' or sample with "
            "--no-spread-correction",
            bundle.checkpoint,
        )
    if margin:
        raise ConfigError(
            "a spread correction is fitted to the training geometry and cannot correct z_margin extra slices; "
            "set z_margin 0 (decode_z_pad pads for decoding only and is fine)"
        )
    return True


def check_histogram_match(bundle: ModelBundle, on) -> bool:
    """Whether sampling matches the body histogram; InputError naming the checkpoint when ``on`` and it
    carries no histogram reference."""
    if not on:
        return False
    if bundle.histogram is None:
        raise InputError(
            "carries no histogram reference; add one with 'python -m ctdiff fit-histogram' or sample with "
            "--no-histogram-match",
            bundle.checkpoint,
        )
    return True


def evaluations(bundle: ModelBundle, sampler: str, steps: int, level: float | None = None) -> int:
    """Network evaluations per batch of ``steps`` sampler steps (fewer after a Gaussian start at ``level``)."""
    if level is None or level >= 1.0:
        return steps
    from ctdiff.samplers import euler_grid

    return len(euler_grid(bundle.diffusion.scheduler(sampler), steps, level))


def check_refine_steps(refiner, steps) -> int | None:
    """The refiner's Euler steps (its own default when ``steps`` is None); None without a refiner."""
    if refiner is None:
        return None
    if steps is None:
        return refiner.steps
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 10_000:
        raise ConfigError(f"refiner steps must be an integer from 1 to 10000, got {steps!r}")
    return int(steps)


def check_z_margin(bundle: ModelBundle, margin) -> int:
    """``margin`` as an int, or ConfigError: not negative, at most the volume's depth, and such that the
    longer volume is whole slices of the space's grid that the U-Net can halve as often as it does
    (a multiple of the space's z shrink times the U-Net's z divisor, over 2 as the margin comes twice)."""
    depth, fz = int(bundle.geometry["depth"]), int(bundle.space.factor[0])
    mz = int(getattr(bundle.model, "multiple", (1, 1, 1))[0])
    step = fz * mz // math.gcd(2, mz)
    if isinstance(margin, bool) or not isinstance(margin, (int, np.integer)):
        raise ConfigError(f"z_margin must be a whole number of slices, got {margin!r}")
    if margin < 0 or margin > depth:
        raise ConfigError(f"z_margin must be between 0 and the volume's {depth} slices, got {margin}")
    if margin % step:
        raise ConfigError(
            f"z_margin {margin} is not a multiple of {step}: the {bundle.space.kind} space shrinks z {fz}x and "
            f"this model's U-Net needs a z length divisible by {mz} (e.g. {step * max(1, round(margin / step))})"
        )
    return int(margin)


def check_decode_z_pad(bundle: ModelBundle, pad, margin: int = 0) -> int:
    """``pad`` as an int, or ConfigError: 0 for a pixel or wavelet model (nothing is decoded), else from 0
    to one less than the latent's slices (reflect padding), the sampled length counting ``margin``."""
    if isinstance(pad, bool) or not isinstance(pad, (int, np.integer)):
        raise ConfigError(f"decode_z_pad must be a whole number of latent slices, got {pad!r}")
    if pad and bundle.space.kind != "latent":
        raise ConfigError(f"decode_z_pad applies to latent-space models only; this one is {bundle.space.kind}")
    latent = (int(bundle.geometry["depth"]) + 2 * margin) // int(bundle.space.factor[0])
    if not 0 <= pad < latent:
        raise ConfigError(f"decode_z_pad must be from 0 to {latent - 1} (the latent has {latent} slices), got {pad}")
    return int(pad)


def check_keep_slices(bundle: ModelBundle, keep) -> int | None:
    """``keep`` as an int (None stays None: all slices), or ConfigError: between 1 and the volume's slices."""
    if keep is None:
        return None
    z = bundle.shape[2]
    if isinstance(keep, bool) or not isinstance(keep, (int, np.integer)):
        raise ConfigError(f"keep_slices must be a whole number of slices, got {keep!r}")
    if not 1 <= keep <= z:
        raise ConfigError(f"keep_slices must be between 1 and the model's {z} slices, got {keep}")
    return int(keep)


def kept_affine(affine: np.ndarray, n_slices: int, keep: int) -> np.ndarray:
    """The affine of the middle ``keep`` of ``n_slices`` slices (where :func:`crop_slices` cuts): the
    origin moves along the slice axis by the slices cut before them; spacing and direction stay."""
    out = np.array(affine, dtype=np.float64, copy=True)
    out[:3, 3] += out[:3, 2] * pad_before(keep, n_slices)
    return out


def write_samples(
    volumes: Sequence[Volume], out_dir: str | os.PathLike, info: dict[str, Any] | None = None, force: bool = False
) -> Path:
    """Write ``case_000.nii.gz``... (int16 HU) and ``manifest.json``; returns the manifest path.

    The manifest holds the checkpoint and its step, sampler, steps, weights, a config summary and per
    case its file, seed and seconds; ``info`` entries are added at the top level.
    """

    if not volumes:
        raise ConfigError("no volumes to write")
    inputs = {"--checkpoint": volumes[0].meta.get("checkpoint")}
    # all cases and the manifest appear under ``out_dir`` in one rename, or none
    with staged_output(out_dir, command="sample", force=force, inputs=inputs) as tmp:
        _write_samples_into(tmp, volumes, info)
    return Path(out_dir) / MANIFEST


def _write_samples_into(out: Path, volumes: Sequence[Volume], info: dict[str, Any] | None) -> Path:
    from ctdiff.data.io import write_nifti

    first = volumes[0].meta
    cases = []
    for i, vol in enumerate(volumes):
        name = f"case_{i:03d}.nii.gz"
        write_nifti(vol, out / name, force=False)
        cases.append(
            {
                "file": name,
                "seed": vol.meta.get("seed"),
                "seconds": vol.meta.get("seconds"),
                "shape": list(vol.shape),
                "spacing": [round(s, 6) for s in vol.spacing],
                # a conditioned model (model.condition): the value this case was drawn with
                **({"condition": vol.meta["condition"]} if "condition" in vol.meta else {}),
            }
        )
    manifest = {
        "kind": "ctdiff samples",
        "synthetic": True,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "checkpoint": first.get("checkpoint"),
        "checkpoint_step": first.get("checkpoint_step"),
        "sampler": first.get("sampler"),
        "steps": first.get("steps"),
        "weights": first.get("weights"),
        "noise_resynthesis": first.get("noise_resynthesis", False),
        "z_margin": first.get("z_margin", 0),
        "decode_z_pad": first.get("decode_z_pad", 0),
        "keep_slices": first.get("keep_slices"),
        "refiner_steps": first.get("refiner_steps"),
        "gaussian_start": first.get("gaussian_start"),
        "spread_correction": first.get("spread_correction", False),
        "histogram_match": first.get("histogram_match", False),
        "config": first.get("config"),
        **(info or {}),
        "cases": cases,
    }
    return write_json(out / MANIFEST, manifest)  # the completion mark: written last


# ------------------------------------------------------------------------------------------ CLI
EXAMPLES = """\
  python -m ctdiff sample --run runs/demo --n 4 --out samples/demo     # the config's sampler (ddpm, 50 steps by default)
  python -m ctdiff sample --run runs/demo --n 4 --sampler dpmpp --steps 25 --out samples/dpmpp
  python -m ctdiff sample --checkpoint runs/demo/checkpoints/last.pt --n 8 --sampler ddim --steps 50 --seed 7 --out samples/ddim
  python -m ctdiff sample --run runs/thesis --n 2 --sampler ddpm --steps 1000 --out samples/thesis-ddpm   # as the thesis did
  python -m ctdiff sample --run runs/rflow --n 4 --sampler euler --steps 25 --out samples/rflow   # a diffusion.kind rflow model
  python -m ctdiff sample --checkpoint runs/latent/best-refined.pt --n 4 --refine-steps 8 --out samples/refined   # train-refiner's
"""


def add_arguments(parser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="run dir (uses checkpoints/best.pt, else last.pt)")
    src.add_argument("--checkpoint", help="a checkpoint file")
    parser.add_argument("--out", required=True, help="output folder (must be empty or absent unless --force)")
    parser.add_argument("--n", type=int, default=8, help="number of volumes (default 8)")
    parser.add_argument(
        "--sampler",
        choices=SAMPLER_NAMES,
        help=f"default: the config's (ddpm for diffusion.kind ddpm, euler for rflow). {help_text()}",
    )
    parser.add_argument(
        "--steps",
        type=int,
        help="sampler steps (default: the config's; the library default is 25 for rflow, 50 for ddpm)",
    )
    parser.add_argument("--seed", type=int, default=0, help="case i uses seed + i (default 0)")
    parser.add_argument(
        "--z-margin",
        type=int,
        help="extra slices sampled at each end and cropped after decoding (default: the config's "
        "sample.z_margin; a multiple of what the model's space and U-Net take: 8 for the demo model)",
    )
    parser.add_argument(
        "--decode-z-pad",
        type=int,
        help="latent space: latent slices reflect-padded at each end for decoding only, cropped back before "
        "the noise (default: the config's sample.decode_z_pad; the demo model decodes with 2 and z_margin 0)",
    )
    parser.add_argument(
        "--keep-slices",
        type=int,
        help="keep only the middle N slices of each volume (default: the config's sample.keep_slices; "
        "all when unset), for a model trained on longer volumes than are wanted",
    )
    parser.add_argument(
        "--gaussian-start",
        type=float,
        help="rectified flow, Euler: start at this noise level s in (0, 1] from the closed-form flow of the "
        "Gaussian the checkpoint carries (python -m ctdiff fit-start), skipping the grid's steps above s "
        "(default: the config's sample.gaussian_start; 1: pure noise)",
    )
    parser.add_argument(
        "--no-spread-correction",
        action="store_true",
        help="leave out the spread correction the checkpoint carries (python -m ctdiff fit-spread; on when "
        "the config's sample.spread_correction is)",
    )
    parser.add_argument(
        "--no-histogram-match",
        action="store_true",
        help="leave out the body histogram matching the checkpoint carries (python -m ctdiff fit-histogram; "
        "on when the config's sample.histogram_match is; --no-noise leaves it out too)",
    )
    parser.add_argument(
        "--condition",
        type=float,
        help="a model trained with model.condition body_share (the share of voxels above -500 HU, 0-1): draw "
        "every volume with this value (default: each seed draws its own from the training cases' values; "
        "a latent_pcs model always does)",
    )
    parser.add_argument(
        "--guidance",
        type=float,
        help="a conditioned model: classifier-free guidance scale w in [0, 20], each network evaluation "
        "u + w (c - u) of the conditional and unconditional flows (default: the config's sample.guidance, "
        "1 = the conditional flow alone; any other w doubles the network's work per step)",
    )
    parser.add_argument(
        "--condition-draw",
        choices=conditions.DRAWS,
        help="a conditioned model: draw each seed's condition as one training case's value plus a "
        "variance-preserving jitter (bootstrap) or from the Gaussian of the training values (gaussian, "
        "which names no training case); default: the config's sample.condition_draw",
    )
    parser.add_argument("--batch-size", type=int, default=1, help="volumes per network call (default 1)")
    parser.add_argument(
        "--no-ema",
        action="store_true",
        help="use the raw weights instead of the EMA weights (a run's checkpoints; a demo export carries only "
        "its EMA weights)",
    )
    parser.add_argument(
        "--no-noise",
        action="store_true",
        help="do not add the noise model (fit-noise; a latent space's is its autoencoder's) or a latent space's "
        "residual refiner, when the checkpoint has one",
    )
    parser.add_argument(
        "--refine-steps",
        type=int,
        help="a checkpoint with a residual refiner (train-refiner): its Euler steps per volume (default: "
        "the refiner's own)",
    )
    parser.add_argument("--force", action="store_true", help="empty and reuse a non-empty output folder")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_device_arguments(parser)


def run(args) -> int:
    from tqdm import tqdm

    from ctdiff import validate
    from ctdiff.outputs import check_output

    n = validate.integer(args.n, "--n", low=1, high=100_000)
    batch_size = validate.integer(args.batch_size, "--batch-size", low=1, high=4096)
    validate.seed(args.seed, count=n)
    validate.threads(args.threads)
    device = validate.device(args.device)
    if args.steps is not None:
        validate.integer(args.steps, "--steps", low=1)  # the upper bound needs the checkpoint's schedule
    if args.refine_steps is not None:
        validate.integer(args.refine_steps, "--refine-steps", low=1, high=10_000)
    ckpt_path = resolve_checkpoint(args.run or args.checkpoint)
    # --out must not be or hold the checkpoint (--force would delete the run); checked before anything else
    check_output(args.out, command="sample", force=args.force, inputs={"--run/--checkpoint": ckpt_path})
    apply_threads(args)
    bundle = load_bundle(ckpt_path, device=device, use_ema=not args.no_ema)
    sampler = args.sampler or bundle.config.sample.sampler
    steps = validate.steps(
        args.steps if args.steps is not None else bundle.config.sample.steps, bundle.diffusion.timesteps
    )
    out = Path(args.out)
    refiner = getattr(bundle.space, "refiner", None) if not args.no_noise else None
    r_steps = check_refine_steps(refiner, args.refine_steps) or 0
    margin = check_z_margin(bundle, bundle.config.sample.z_margin if args.z_margin is None else args.z_margin)
    start = bundle.config.sample.gaussian_start if args.gaussian_start is None else args.gaussian_start
    level = check_gaussian_start(bundle, sampler, steps, start, margin)
    spread = bundle.config.sample.spread_correction and not args.no_spread_correction
    check_spread_correction(bundle, spread, margin)
    fixed = check_condition(bundle, args.condition)
    check_guidance(bundle, bundle.config.sample.guidance if args.guidance is None else args.guidance)
    matched = bundle.config.sample.histogram_match and not args.no_histogram_match
    check_histogram_match(bundle, matched and not args.no_noise)
    if fixed is not None:
        values = bundle.geometry["condition"]["values"]
        if not min(values) <= fixed <= max(values):
            import sys

            print(
                f"warning: --condition {fixed:g} lies outside the training cases' {bundle.config.model.condition} "
                f"({min(values):.3f}-{max(values):.3f}): the network extrapolates",
                file=sys.stderr,
            )
    per_batch = evaluations(bundle, sampler, steps, level) + r_steps
    bar = None
    if not args.no_progress:
        bar = tqdm(total=math.ceil(n / batch_size) * per_batch, desc=f"sample {sampler}", unit="eval")

    def progress(done: int, total: int) -> None:
        bar.update(done - bar.n)

    try:
        volumes = sample(
            bundle,
            n,
            sampler=sampler,
            steps=steps,
            seed=args.seed,
            batch_size=batch_size,
            callback=None if bar is None else progress,
            noise=not args.no_noise,
            z_margin=args.z_margin,
            keep_slices=args.keep_slices,
            refine_steps=args.refine_steps,
            decode_z_pad=args.decode_z_pad,
            gaussian_start=start,
            spread_correction=spread,
            condition=args.condition,
            histogram_match=matched,
            guidance=args.guidance,
            condition_draw=args.condition_draw,
        )
    finally:
        if bar is not None:
            bar.close()
    manifest = write_samples(volumes, out, {"device": str(bundle.device)}, force=args.force)
    print(f"wrote {len(volumes)} volume(s) and {manifest}")
    return 0
