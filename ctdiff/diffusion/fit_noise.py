"""Fit the noise a model's volumes lack and write a copy of the model (autoencoder or checkpoint) that adds it back.

``train-autoencoder`` fits the noise model itself when it finishes (``noise_resynthesis: true``, the
default). This command gives one to an autoencoder or a latent diffusion checkpoint made before
that, or refits it on other volumes: it reconstructs up to 8 of ``--data``'s volumes through the
autoencoder, fits :func:`ctdiff.model.noise_resynthesis.fit`, and writes ``--out``: the same file
with the noise model added (weights unchanged). ``ctdiff sample`` and the app's Generate form then
add that noise after decoding (``ctdiff sample --no-noise`` leaves it out). With ``--samples N``
(any diffusion checkpoint) the model is fitted instead against N of the checkpoint's own samples, decoded
without noise (drawn as ``ctdiff sample`` draws them: the config's sampler, steps, ``z_margin``,
``decode_z_pad``, ``guidance`` and ``condition_draw``, or those given by ``--z-margin`` / ``--decode-z-pad``
/ ``--guidance`` / ``--condition-draw``, which ``--out``'s config then gets):
the noise the samples lack against the training volumes, each measured in its own homogeneous ROIs
(a diffusion model's samples can be smoother than its autoencoder's reconstructions). A pixel- or
wavelet-space checkpoint has no autoencoder, so ``--samples`` is the only way to fit it; its space then
carries the model (``space.noise_model``, :mod:`ctdiff.model.spaces`) and adds it after the inverse
transform, as a latent space adds its autoencoder's (an x_0-predicting wavelet model's samples are
smoother than its training scans; docs/benchmarks.md). A checkpoint
that matches its samples' body histogram (``fit-histogram``, ``sample.histogram_match``) is measured on
the matched estimates T(estimate), the volumes its noise is added to, with T fitted as ``sample`` fits
it (on the samples drawn with the checkpoint's current noise model; that costs a second draw). With
``--per-class`` the model measures air and body apart and scales the body's noise by the decoded
intensity (:func:`ctdiff.model.noise_resynthesis.fit_classes`). The input is never changed; ``--out`` must be a new file unless ``--force``,
which replaces only a ctdiff autoencoder or checkpoint file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ctdiff.config import CONDITION_DRAWS
from ctdiff.errors import ConfigError, InputError, OverwriteError

EXAMPLES = """\
  python -m ctdiff fit-noise --model runs/ae-128/autoencoder.pt --data data/phantom-128 --out runs/ae-128/autoencoder-noise.pt
  python -m ctdiff fit-noise --model runs/latent/checkpoints/best.pt --data data/phantom-128 --out runs/latent/best-noise.pt
  python -m ctdiff fit-noise --model runs/latent/checkpoints/best.pt --data data/phantom-128 --samples 8 --out runs/latent/best-samples-noise.pt
  python -m ctdiff fit-noise --model runs/latent/checkpoints/best.pt --data data/phantom-128 --samples 8 --per-class --out runs/latent/best-cnoise.pt
  python -m ctdiff fit-noise --model runs/latent/checkpoints/best.pt --data data/phantom-128 --samples 8 --z-margin 0 --decode-z-pad 2 --out runs/latent/best-zpad.pt
  python -m ctdiff fit-noise --model runs/wavelet/checkpoints/best.pt --data data/phantom-128 --samples 8 --per-class --max-gain 1 --out runs/wavelet/best-cnoise.pt
  python -m ctdiff sample --checkpoint runs/latent/best-noise.pt --n 4 --out samples/latent-noise
"""


def load_model_file(path: Path, voxel_spaces: bool = False) -> tuple[str, dict[str, Any], dict[str, Any] | None]:
    """("autoencoder" | "checkpoint", the file's dict, the autoencoder record inside it). ``voxel_spaces``:
    pixel- and wavelet-space checkpoints are read too, with no autoencoder record (None)."""
    from ctdiff.model.autoencoder import FORMAT as AE_FORMAT
    from ctdiff.model.checkpoint import FORMAT as CKPT_FORMAT

    if not path.is_file():
        raise InputError("model file not found (an autoencoder.pt or a latent diffusion checkpoint)", path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated/foreign files
        raise InputError(f"not a readable model file ({type(exc).__name__})", path) from None
    fmt = ckpt.get("format") if isinstance(ckpt, dict) else None
    if fmt == AE_FORMAT:
        return "autoencoder", ckpt, {"config": ckpt["config"], "state": ckpt["autoencoder"]}
    if fmt == CKPT_FORMAT:
        space = ckpt.get("space") or {}
        if voxel_spaces and space.get("kind", "pixel") in ("pixel", "wavelet"):
            return "checkpoint", ckpt, None
        if space.get("kind") != "latent":
            raise InputError(
                f"a {space.get('kind', 'pixel')}-space checkpoint has no autoencoder (only latent checkpoints carry one)",
                path,
            )
        return "checkpoint", ckpt, space["autoencoder"]
    raise InputError("not a ctdiff autoencoder or diffusion checkpoint", path)


def check_new_model_file(
    model: Path, out: Path, force: bool, reader=None, what: str = "ctdiff autoencoder or checkpoint"
) -> None:
    """``out`` may be written: not the input ``model``, not a folder, new or (``force``) a file ``reader``
    (default :func:`load_model_file`) reads, i.e. a ``what``."""
    from ctdiff.outputs import resolved

    reader = reader or load_model_file

    if resolved(out, "--out") == resolved(model, "--model"):
        raise ConfigError(f"--out {out} is the input --model; write a new file (--force never replaces an input)")
    if out.is_dir():
        raise InputError("is a folder; --out names the new model file", out)
    if out.exists() and not force:
        raise OverwriteError("already exists; pass --force to overwrite", out)
    if out.exists():
        try:
            reader(out)
        except InputError:
            raise OverwriteError(f"exists and is not a {what}; --force replaces only that", out) from None


def _fit_from_samples(
    path: Path,
    files: list[str],
    n: int,
    seed: int,
    progress: bool,
    per_class: bool = False,
    sampling: dict[str, Any] | None = None,
    max_gain: float | None = None,
) -> dict[str, Any]:
    """The unpaired noise model of a latent checkpoint: the training volumes' NPS minus that of ``n`` of
    its samples, decoded without noise (seeds ``seed``.., the config's sampler and steps, and its
    ``z_margin``, ``decode_z_pad``, ``guidance`` and ``condition_draw`` unless ``sampling`` gives them)."""
    from ctdiff.data.io import read_volume
    from ctdiff.diffusion.sample import load_bundle, sample
    from ctdiff.model import noise_resynthesis

    bundle = load_bundle(path, device="cpu")
    cfg = bundle.config.sample
    sampling = {
        "z_margin": cfg.z_margin,
        "decode_z_pad": cfg.decode_z_pad,
        "guidance": cfg.guidance,
        "condition_draw": cfg.condition_draw,
        **(sampling or {}),
    }
    # a checkpoint that matches its samples' body histogram (fit-histogram, sample.histogram_match) adds
    # its noise to T(estimate), not to the estimate: fit the noise against that
    matched = bundle.histogram is not None and cfg.histogram_match and getattr(bundle.space, "refiner", None) is None
    bar = None
    if progress:
        from tqdm import tqdm

        total = n * bundle.config.sample.steps * (2 if matched else 1)
        bar = tqdm(total=total, desc="fit-noise: sample", unit="eval")

    def draw(offset: int, **kwargs):
        cb = None if bar is None else (lambda done, total: bar.update(offset + done - bar.n))
        kwargs = {"sampler": cfg.sampler, "steps": cfg.steps, "seed": seed, "callback": cb, **sampling, **kwargs}
        return sample(bundle, n, **kwargs)

    try:
        vols = draw(0, noise=False)
        decoded = [np.asarray(v.array, dtype=np.float64) for v in vols]
        if matched:
            decoded = _matched_estimates(bundle, decoded, draw(n * cfg.steps, histogram_match=False))
    finally:
        if bar is not None:
            bar.close()
    originals = [np.asarray(read_volume(f).array, dtype=np.float64).transpose(2, 1, 0) for f in files]
    decoded = [d.transpose(2, 1, 0) for d in decoded]
    if per_class:
        model = noise_resynthesis.fit_classes(originals, decoded, paired=False, max_gain=max_gain)
    else:
        model = noise_resynthesis.fit_unpaired(originals, decoded)
    model["samples"] = {
        "n": n,
        "seed": seed,
        "sampler": bundle.config.sample.sampler,
        "steps": bundle.config.sample.steps,
        "gaussian_start": bundle.config.sample.gaussian_start,  # the level its samples started from (fit-start)
        "spread_correction": bundle.config.sample.spread_correction,  # corrected as drawn (fit-spread)
        "histogram_match": matched,  # fitted against T(estimate) (fit-histogram)
        **sampling,
    }
    return model


def _matched_estimates(bundle, estimates: list[np.ndarray], drawn) -> list[np.ndarray]:
    """T(estimate) for each sample: the body-histogram map ``sample()`` applies (fitted on the volume
    drawn with the checkpoint's current noise model, or on the estimate itself without one) applied to
    the noise-free estimate, without the noise it then adds back (:func:`ctdiff.diffusion.histogram.match`)."""
    from ctdiff.diffusion import histogram
    from ctdiff.model.autoencoder import AIR_HU

    out = []
    for est, vol in zip(estimates, drawn):
        d = np.asarray(vol.array, dtype=np.float64)
        # sample() floors the estimate at air where it adds noise (what the noise went onto)
        e = np.maximum(est, AIR_HU) if bundle.space.noise_model is not None else est
        out.append(histogram.match(e, d, bundle.histogram).astype(np.float64) - (d - e))
    return out


def fit_noise(
    model: str | Path,
    data: str | Path,
    out: str | Path,
    force: bool = False,
    samples: int = 0,
    seed: int = 100_000,
    progress: bool = False,
    per_class: bool = False,
    sampling: dict[str, Any] | None = None,
    max_gain: float | None = None,
) -> dict[str, Any]:
    """Write ``out``: ``model`` with a noise model fitted on ``data``'s volumes; returns the model's summary.

    ``samples`` > 0 (latent checkpoints only): fitted against that many of the model's own samples
    (:func:`ctdiff.model.noise_resynthesis.fit_unpaired`) instead of the autoencoder's reconstructions.
    ``per_class``: a per-class model (air and body apart, the body's gain by intensity;
    :func:`ctdiff.model.noise_resynthesis.fit_classes`) instead of one stationary spectrum.
    ``sampling``: ``sample`` settings (``z_margin``, ``decode_z_pad``, ``guidance``, ``condition_draw``) to
    draw those samples with in place of the checkpoint's; ``out``'s config gets them, so that it samples
    as its noise model was fitted.
    ``max_gain`` (``per_class`` only): the cap on the body noise's gain per intensity bin (default
    ``noise_resynthesis.MAX_AMPLITUDE``)."""
    from ctdiff.atomic import atomic_path
    from ctdiff.config import DataConfig
    from ctdiff.data.dataset import dataset_files, load_cases
    from ctdiff.model import noise_resynthesis
    from ctdiff.model.autoencoder import build_autoencoder, fit_noise_model

    model, out = Path(model), Path(out)

    def reader(path: Path):
        return load_model_file(path, voxel_spaces=True)

    check_new_model_file(model, out, force, reader=reader, what="ctdiff autoencoder or checkpoint")
    kind, ckpt, record = reader(model)
    if samples and kind != "checkpoint":
        raise ConfigError("--samples needs a diffusion checkpoint (an autoencoder alone cannot sample)")
    if record is None and not samples:
        space = (ckpt.get("space") or {}).get("kind", "pixel")
        raise ConfigError(
            f"a {space}-space checkpoint has no autoencoder to fit on; give --samples N to fit the noise its "
            "own samples lack against --data"
        )
    if max_gain is not None and not per_class:
        raise ConfigError("--max-gain caps the per-class model's gains; give --per-class too")
    if sampling and not samples:
        raise ConfigError(
            "--z-margin, --decode-z-pad, --guidance and --condition-draw set how --samples are drawn; give --samples N too"
        )
    if sampling:
        from ctdiff.config import config_from_dict

        config = {**ckpt["config"], "sample": {**(ckpt["config"].get("sample") or {}), **sampling}}
        config_from_dict(config)  # a bad setting: ConfigError before sampling
        ckpt = {**ckpt, "config": config}
    files = dataset_files(data)[: noise_resynthesis.MAX_VOLUMES]
    try:
        if samples:
            noise_model = _fit_from_samples(model, files, samples, seed, progress, per_class, sampling, max_gain)
        else:
            ae, cfg = build_autoencoder(record["config"])
            ae.load_state_dict(record["state"])
            volumes = load_cases(files, DataConfig(hu_window=cfg.hu_window)).tensors
            noise_model = fit_noise_model(ae, cfg, volumes, tile=(16, 32, 32), per_class=per_class, max_gain=max_gain)
    except ValueError as exc:  # no homogeneous soft tissue in the data, or in the samples
        raise InputError(str(exc), model if "decoded" in str(exc) else data) from None
    noise_model["fitted_on"] = [str(Path(f)) for f in files]
    if kind == "autoencoder":
        noise_model["step"] = int(ckpt["step"])
        ckpt = {**ckpt, "noise_model": noise_model}
    elif record is None:  # pixel or wavelet: the space itself carries it (ctdiff.model.spaces)
        ckpt = {**ckpt, "space": {**(ckpt.get("space") or {"kind": "pixel"}), "noise_model": noise_model}}
    else:
        space = dict(ckpt["space"])
        space["autoencoder"] = {**space["autoencoder"], "noise_model": noise_model}
        ckpt = {**ckpt, "space": space}
    with atomic_path(out, force=True) as tmp:
        torch.save(ckpt, tmp)
    return summary(noise_model)


def summary(noise_model: dict[str, Any]) -> dict[str, Any]:
    """The model without its spectra and file list (what fit-noise prints)."""
    skip = ("nps_xy_hu2", "fitted_on", "air", "body")
    out = {k: v for k, v in noise_model.items() if k not in skip}
    for part in ("air", "body"):
        if part in noise_model:
            out[part] = summary(noise_model[part])
    return out


def add_arguments(parser) -> None:
    parser.add_argument(
        "--model",
        required=True,
        help="an autoencoder.pt or a diffusion checkpoint file (pixel and wavelet: with --samples)",
    )
    parser.add_argument("--data", required=True, help="volumes to fit on (the autoencoder's training data)")
    parser.add_argument("--out", required=True, help="the new file (the input is never changed)")
    parser.add_argument(
        "--samples",
        type=int,
        default=0,
        help="diffusion checkpoints: fit against this many of the model's own samples (decoded without noise; "
        "body-histogram matched when the checkpoint's sample.histogram_match is on, drawn twice) "
        "instead of the autoencoder's reconstructions of --data (default 0: reconstructions; pixel- and "
        "wavelet-space checkpoints need it)",
    )
    parser.add_argument("--seed", type=int, default=100_000, help="first seed of those samples (default 100000)")
    parser.add_argument(
        "--per-class",
        action="store_true",
        help="fit air and body apart, the body's noise scaled by intensity (fat, soft tissue, dense, bone) "
        "instead of one stationary soft-tissue spectrum everywhere",
    )
    parser.add_argument(
        "--max-gain",
        type=float,
        help="with --per-class: cap the body noise's gain per intensity bin at this (>= 1; default 3). "
        "1 gives dense tissue and bone the soft tissue's noise: right for stationary noise, such as the "
        "phantoms' (docs/benchmarks.md)",
    )
    parser.add_argument(
        "--z-margin",
        type=int,
        help="with --samples: draw them with this sample.z_margin (default: the checkpoint's); --out's "
        "config gets it, so it samples as its noise was fitted",
    )
    parser.add_argument(
        "--decode-z-pad",
        type=int,
        help="with --samples: draw them with this sample.decode_z_pad (default: the checkpoint's); --out's "
        "config gets it",
    )
    parser.add_argument(
        "--guidance",
        type=float,
        help="with --samples, a conditioned model: draw them with this classifier-free guidance scale "
        "(sample.guidance, 0-20; default: the checkpoint's); --out's config gets it",
    )
    parser.add_argument(
        "--condition-draw",
        choices=CONDITION_DRAWS,
        help="with --samples, a conditioned model: draw their conditions so (sample.condition_draw; default: "
        "the checkpoint's); --out's config gets it",
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing --out (never the input)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--threads", type=int, help="torch CPU threads")


def run(args) -> int:
    from ctdiff import validate

    if validate.threads(args.threads):
        torch.set_num_threads(args.threads)
    samples = validate.integer(args.samples, "--samples", low=0, high=10_000)
    validate.seed(args.seed, count=max(samples, 1))
    result = fit_noise(
        args.model,
        args.data,
        args.out,
        force=args.force,
        samples=samples,
        seed=args.seed,
        progress=not args.no_progress,
        per_class=args.per_class,
        max_gain=None if args.max_gain is None else validate.number(args.max_gain, "--max-gain", low=1.0),
        sampling={
            **{
                key: validate.integer(value, flag, low=0, high=100_000)
                for key, value, flag in (
                    ("z_margin", args.z_margin, "--z-margin"),
                    ("decode_z_pad", args.decode_z_pad, "--decode-z-pad"),
                )
                if value is not None
            },
            **({} if args.guidance is None else {"guidance": validate.number(args.guidance, "--guidance", low=0.0)}),
            **({} if args.condition_draw is None else {"condition_draw": args.condition_draw}),
        },
    )
    print(json.dumps(result))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0
