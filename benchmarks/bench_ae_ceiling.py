#!/usr/bin/env python3
"""The latent space's ceiling (issue 20): how close can a latent model's samples get, at best?

A latent diffusion model's samples are decoded by its autoencoder, so they can be no closer to the
real scans than the autoencoder's own *reconstructions* of real scans are. This benchmark measures
that ceiling: each autoencoder (``train-autoencoder``'s ``autoencoder.pt``, or a latent checkpoint,
which carries its autoencoder) encodes and decodes every held-out scan (posterior mean, tiled as
``ctdiff sample`` decodes), the reconstructions are written as HU NIfTI with the scans' affines, and
``python -m eval report`` compares them with the held-out scans themselves, with the same floor as
benchmark (a) (held-out vs the training cohort). A metric that is "far" here is far for every
sample the autoencoder can decode. ``--tile 4 16 16`` codes in windows of the autoencoder's training
patch instead (MONAI's sliding window, Gaussian blending): a decoder trained on patches and never
tuned on whole volumes shifts its levels when it decodes a whole volume (GroupNorm statistics), and
the windows judge what it learned without that shift.

``--histogram-match`` (a checkpoint from ``fit-histogram``) matches each reconstruction's body to the
histogram the checkpoint carries, as ``ctdiff sample`` matches a sample, so the ceiling is that of the
whole decode path: decoder, noise model and matching. ``--decode-z-pad N`` decodes as
``sample.decode_z_pad`` does: the latent reflect-padded by N slices at each end, cropped back.

Each coder's reconstructions are also judged as images, without noise (``judged`` in the JSON:
``autoencoder.evaluate``'s PSNR, SSIM, mean absolute error and the noise kept, decoded whole and in
windows of ``--tile``, and the whole decode's mean HU error in air, fat and soft tissue), so one run
says both how accurate a coder is and where that leaves it in the report.

    python benchmarks/bench_ae_ceiling.py --held-out data/ph128-held --train-data data/ph128-train \\
        --autoencoder demo=ctdiff_app/demo/assets/model.pt --autoencoder lc8=runs/ae-lc8/autoencoder.pt \\
        --work runs/ae-ceiling --radiomics --json benchmarks/results/ae-ceiling.json

Every stage is skipped when its output is complete, so the command resumes after an interruption.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import runpy
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

_quality = runpy.run_path(str(REPO / "benchmarks" / "bench_quality.py"), run_name="bench_quality")
_run, _metrics, median_gap, report_metrics = (
    _quality["_run"],
    _quality["_metrics"],
    _quality["median_gap"],
    _quality["report_metrics"],
)


def load_record(path: Path) -> tuple[dict, dict]:
    """(autoencoder record, facts) from an ``autoencoder.pt`` or a latent checkpoint that carries one."""
    from ctdiff.errors import InputError
    from ctdiff.model.autoencoder import autoencoder_record
    from ctdiff.model.checkpoint import load_checkpoint

    try:
        record = autoencoder_record(path)
        return record, {"source": "autoencoder file", "steps": record.get("step")}
    except InputError:
        pass
    ckpt = load_checkpoint(path)
    space = ckpt.get("space") or {}
    if space.get("kind") != "latent":
        raise SystemExit(f"bench_ae_ceiling: {path}: neither an autoencoder file nor a latent checkpoint")
    return space["autoencoder"], {"source": "carried by a latent checkpoint", "checkpoint_step": ckpt.get("step")}


@torch.no_grad()
def reconstruct(
    record: dict,
    scans: list[Path],
    out: Path,
    tile=(16, 32, 32),
    noise: bool = True,
    histogram: dict | None = None,
    clean: Path | None = None,
    z_pad: int = 0,
) -> list[str]:
    """Write ``decode(encode_mean(scan))`` for every scan into ``out`` (same names, same affines), plus
    the autoencoder's re-synthesised noise (scan i: noise seed i) when it has a noise model and ``noise``.
    ``histogram`` (a checkpoint's ``histogram_reference``, fit-histogram): each reconstruction's body is
    then matched to it as ``ctdiff sample`` matches a sample (:func:`ctdiff.diffusion.histogram.match` on
    the noise-free estimate floored at air, the noise added back, clipped to the window).

    ``clean`` (the structure test): a folder of the same scans without their noise (same names and
    grids, e.g. ``ctdiff phantom --noise-method none`` with the same seeds). Each noise-free scan is
    reconstructed and given back the scan's *own* noise (scan minus noise-free scan, in HU), clipped to
    the window; no noise model, no matching. What the report then tells apart from the scans is the
    coder's structure alone.

    ``z_pad`` (``sample.decode_z_pad``): the latent is reflect-padded by that many slices at each end for
    the decoder and cropped back, as ``ctdiff sample`` decodes a sample."""
    from ctdiff.data.io import case_name, read_volume, write_nifti
    from ctdiff.data.tensors import array_to_tensor, hu_to_model, model_to_hu, tensor_to_array
    from ctdiff.data.volume import Volume
    from ctdiff.diffusion import histogram as hist
    from ctdiff.model.autoencoder import air_floor
    from ctdiff.model.spaces import LatentSpace

    space = LatentSpace(record, 1.0, tile)  # scale 1: encode then decode, no diffusion in between
    window = space.ae_config.hu_window
    out.mkdir(parents=True, exist_ok=True)
    names = []
    for i, path in enumerate(scans):
        vol = read_volume(path)
        name = f"{case_name(path)}.nii.gz"
        if clean is not None:
            free = _clean_twin(vol, path, clean)
            x = hu_to_model(array_to_tensor(free.array), window)[None]
            space.check_shape(x.shape[2:])
            estimate = tensor_to_array(
                model_to_hu(space.decode(space.encode(x), z_pad=z_pad)[0].clamp(-1.0, 1.0), window)
            )
            array = np.clip(estimate + (vol.array - free.array), *(float(w) for w in window))
            write_nifti(Volume(array.astype(np.float32), vol.affine), out / name, force=True)
            names.append(name)
            continue
        x = hu_to_model(array_to_tensor(vol.array), window)[None]
        space.check_shape(x.shape[2:])
        estimate = space.decode(space.encode(x), z_pad=z_pad)
        resynthesised = noise and space.noise_model is not None
        y = space.add_noise(estimate, [i]) if resynthesised else estimate
        array = tensor_to_array(model_to_hu(y[0].clamp(-1.0, 1.0), window))
        if histogram is not None:
            est = tensor_to_array(model_to_hu((air_floor(estimate, window) if resynthesised else estimate)[0], window))
            array = np.clip(hist.match(est, array, histogram), *(float(w) for w in window))
        write_nifti(Volume(array, vol.affine), out / name, force=True)
        names.append(name)
    return names


def _clean_twin(vol, path: Path, clean: Path):
    """The noise-free twin of scan ``path`` in folder ``clean``: same file name, shape and grid."""
    from ctdiff.data.io import read_volume

    twin = clean / path.name
    if not twin.is_file():
        raise SystemExit(f"bench_ae_ceiling: --clean {clean}: no {path.name} (the noise-free twin of {path})")
    free = read_volume(twin)
    if free.array.shape != vol.array.shape or not np.allclose(free.affine, vol.affine, atol=1e-4):
        raise SystemExit(f"bench_ae_ceiling: {twin}: not on the grid of {path} (shape or affine differs)")
    return free


def load_histogram(path: Path) -> dict:
    """The body-histogram reference a checkpoint carries (``fit-histogram``); SystemExit when it has none."""
    from ctdiff.diffusion import histogram as hist
    from ctdiff.model.checkpoint import load_checkpoint

    try:
        record = load_checkpoint(path).get("histogram_reference")
    except Exception:  # an autoencoder file, or no checkpoint at all: no reference either way
        record = None
    problem = "it carries none (python -m ctdiff fit-histogram)" if record is None else hist.check_record(record)
    if problem:
        raise SystemExit(f"bench_ae_ceiling: {path}: --histogram-match needs a histogram reference; {problem}")
    return record


JUDGED = ("psnr_db", "ssim", "l1_hu", "noise_sd_hu", "noise_sd_recon_hu", "noise_sd_ratio", "nps_distance")


@torch.no_grad()
def judge(record: dict, scans: list[Path], tile=(16, 32, 32)) -> dict:
    """The reconstructions of ``scans`` against the scans, without noise (``autoencoder.evaluate``):
    ``whole`` decoded in one piece, as sampling decodes a volume of up to ``16 x 32 x 32`` latent voxels,
    with the mean HU error in air, fat and soft tissue (what ``tune-decoder --eval`` reports); ``windows`` coded
    in sliding windows of ``tile`` latent voxels, as the reconstructions above are."""
    from ctdiff.data.io import read_volume
    from ctdiff.data.tensors import array_to_tensor, hu_to_model
    from ctdiff.diffusion.tune_decoder import _judge  # what `tune-decoder --eval` reports, whole
    from ctdiff.model.autoencoder import build_autoencoder, evaluate

    ae, cfg = build_autoencoder(record["config"])
    ae.load_state_dict({k: v.float() for k, v in record["state"].items()})  # a checkpoint may carry fp16
    ae.eval()
    volumes = [hu_to_model(array_to_tensor(read_volume(p).array), cfg.hu_window) for p in scans]
    started = time.perf_counter()
    out = {"whole": {**_judge(ae, cfg, volumes), "seconds": round(time.perf_counter() - started, 1)}}
    started = time.perf_counter()
    result = evaluate(ae, cfg, volumes, tile=tuple(tile))
    out["windows"] = {**{k: result[k] for k in JUDGED}, "seconds": round(time.perf_counter() - started, 1)}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--held-out", type=Path, required=True, help="real scans to reconstruct and compare with")
    p.add_argument("--train-data", type=Path, required=True, help="the training cohort (the report's floor)")
    p.add_argument(
        "--autoencoder",
        action="append",
        required=True,
        metavar="NAME=PATH",
        help="an autoencoder.pt or a latent checkpoint (repeatable)",
    )
    p.add_argument("--work", type=Path, required=True, help="reconstructions and reports (resumable)")
    p.add_argument("--radiomics", action="store_true", help="report FRD, KID, PRDC too (minutes per dozen scans)")
    p.add_argument("--cache-dir", type=Path, default=None, help="eval's feature cache (default: eval's)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--tile",
        type=int,
        nargs=3,
        default=[16, 32, 32],
        metavar=("Z", "Y", "X"),
        help="decode (and encode) in sliding windows of this many latent voxels (default 16 32 32, as "
        "`ctdiff sample` decodes: a 128x128x32 scan in one piece); the autoencoder's training patch in "
        "latent voxels (e.g. 4 16 16) judges a coder whose decoder was never tuned on whole volumes",
    )
    p.add_argument(
        "--no-noise",
        action="store_true",
        help="leave out the noise re-synthesis of autoencoders that have a noise model",
    )
    p.add_argument(
        "--histogram-match",
        action="store_true",
        help="match each reconstruction's body to the histogram reference its checkpoint carries "
        "(fit-histogram), as `ctdiff sample` matches a sample: the ceiling of the whole decode path",
    )
    p.add_argument(
        "--clean",
        type=Path,
        default=None,
        metavar="DIR",
        help="the structure test: the held-out scans without their noise (same names); each noise-free scan "
        "is reconstructed and given back the scan's own noise (no noise model, no matching)",
    )
    p.add_argument(
        "--decode-z-pad",
        type=int,
        default=0,
        metavar="N",
        help="reflect-pad the latent by N slices at each end for decoding only, as `ctdiff sample` does with "
        "sample.decode_z_pad (default 0)",
    )
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if args.decode_z_pad < 0:
        p.error(f"--decode-z-pad {args.decode_z_pad}: must be 0 or more latent slices")
    if args.clean is not None and args.histogram_match:
        p.error("--clean judges the coder's structure with the scans' own noise: leave out --histogram-match")
    if args.clean is not None and not args.clean.is_dir():
        p.error(f"--clean {args.clean}: not a folder")
    if min(args.tile) < 1:
        p.error(f"--tile {' '.join(map(str, args.tile))}: every window size must be at least 1 latent voxel")
    torch.set_num_threads(args.threads)
    from ctdiff.data.io import is_nifti

    scans = sorted(f for f in args.held_out.iterdir() if is_nifti(f))
    if not scans:
        p.error(f"--held-out {args.held_out}: no NIfTI scans")
    metrics = report_metrics(args.radiomics)
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "held_out": str(args.held_out),
        "train_data": str(args.train_data),
        "report_metrics": metrics,
        "autoencoders": {},
    }
    for item in args.autoencoder:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            p.error(f"--autoencoder wants NAME=PATH, got {item!r}")
        record, facts = load_record(Path(path))
        work = args.work / name
        state_file = work / "state.json"
        state = json.loads(state_file.read_text()) if state_file.is_file() else {}
        noise_model = None if args.no_noise else record.get("noise_model")
        noise = None if noise_model is None else {k: noise_model.get(k) for k in ("sd_hu", "rois", "z_correlation")}
        histogram = load_histogram(Path(path)) if args.histogram_match else None
        matched = (
            None if histogram is None else hashlib.sha256(json.dumps(histogram["quantiles_hu"]).encode()).hexdigest()
        )
        if args.clean is not None:
            noise = "the scans' own (--clean)"
        clean = None if args.clean is None else str(args.clean.resolve())
        same = state.get("sha256") == record.get("sha256") and state.get("noise_resynthesis") == noise
        same = same and state.get("clean") == clean
        same = same and state.get("decode_z_pad", 0) == args.decode_z_pad
        if not same or state.get("tile", [16, 32, 32]) != args.tile or state.get("histogram_sha256") != matched:
            # another autoencoder, noise model, window, matching, z padding or structure test under this name: start over
            state = {"sha256": record.get("sha256"), "noise_resynthesis": noise, "tile": args.tile}
            state["histogram_sha256"] = matched  # the reference's quantiles; None: not matched
            state["clean"] = clean  # the structure test's noise-free scans; None: not that test
            state["decode_z_pad"] = args.decode_z_pad
        if "reconstructed" not in state:
            t0 = time.perf_counter()
            state["reconstructed"] = reconstruct(
                record,
                scans,
                work / "reconstructions",
                tile=tuple(args.tile),
                noise=not args.no_noise,
                histogram=histogram,
                clean=args.clean,
                z_pad=args.decode_z_pad,
            )
            state["reconstruct_s"] = round(time.perf_counter() - t0, 1)
        if "judged" not in state:
            state["judged"] = judge(record, scans, tile=tuple(args.tile))
        if state.get("report_metrics") != metrics:
            cache = f" --cache-dir {args.cache_dir}" if args.cache_dir else ""
            cmd = (
                f"-m eval report --real {args.held_out} --generated {work / 'reconstructions'} "
                f"--train {args.train_data} --out {work / 'report'} --metrics {metrics} "
                f"--workers {args.threads}{cache} --force"
            )
            _run([sys.executable, *cmd.split()], work / "log.txt", args.threads)
            state["report"] = _metrics(work / "report" / "report.json")
            state["report_metrics"] = metrics
        work.mkdir(parents=True, exist_ok=True)
        state_file.write_text(json.dumps(state, indent=1))
        config = record.get("config", {})
        result["autoencoders"][name] = {
            "path": path,
            **facts,
            "latent_channels": config.get("latent_channels"),
            "channels": config.get("channels"),
            **state,
            "median_gap": median_gap(state["report"]),
            # the median leaves these out: a coder whose noise cannot be measured scores a *lower* median
            "not_measured": sorted(k for k, m in state["report"].items() if m.get("status") == "n/a"),
        }
        entry = result["autoencoders"][name]
        missing = f" (not measured: {', '.join(entry['not_measured'])})" if entry["not_measured"] else ""
        print(f"{name}: median gap {entry['median_gap']:.3g}{missing}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
