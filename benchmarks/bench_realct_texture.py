#!/usr/bin/env python3
"""Real-CT texture (issue 20, benchmark c): train on body crops of one block of slices, judge on another.

The real chest/abdomen scan (512x512x133, 0.703x0.703x2.5 mm; ``python -m ctdiff real-ct``) is
split along z into a training block (the first, inferior slices: abdomen, liver, lung bases) and a
held-out block (the last, superior slices: chest, lung apices), with ``--gap`` unused slices between
them (:func:`ctdiff.data.crops.slice_blocks`). Random crops at native spacing (default 64x64x16 =
45x45x40 mm), each at least ``--min-body-fraction`` inside the body mask, are written from each
block as NIfTI cohorts with the scan's world coordinates (:func:`ctdiff.data.crops.body_crops`).
Then the ordinary commands run, each recorded with its wall clock and the machine's load:

1. ``crops``: OUT/crops/train (``--n-train`` crops) and OUT/crops/held_out (``--n-eval``), crops.json;
2. ``train``: ``python -m ctdiff train`` on the training crops, stopped with SIGTERM (the trainer
   saves ``last.pt``) when the ``--budget-min`` wall clock is spent;
3. ``sample``: ``python -m ctdiff sample --run OUT/run --n N_EVAL`` (the run's best checkpoint);
4. ``report``: ``python -m eval report --real held_out --generated samples --train crops/train``:
   generated vs held-out-block crops, with the training-block crops as the reference floor and the
   memorisation set;
5. ``floor`` (a check of the floor): the same report with ``--train`` a random ``--n-eval`` of the
   training crops, so that the floor compares as many crops as the generated-vs-held-out distance
   (pooled distances fall with the number of crops; memorisation there checks only that subset).

``OUT/bench.json`` collects the stages (commands, seconds, load averages), and
``--results FILE`` writes it together with the report.json subset of the chosen metrics.

    python benchmarks/bench_realct_texture.py --out /work/bench-c/full --scan data/real-ct/chest_abdomen.nii.gz \
        --threads 1 --budget-min 35 --results benchmarks/results/realct-texture.json
    python benchmarks/bench_realct_texture.py --out /tmp/c-tiny --scan S --n-train 8 --n-eval 4 \
        --budget-min 1 --set train.epochs=1 --steps 4            # a smoke run of the whole pipeline
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STAGES = ("crops", "train", "sample", "report", "floor")
# The texture and intensity families of the eval report; radiomics (FRD) is left out by default:
# 3D radiomics of a few dozen crops costs tens of minutes on the shared 2-core machine.
METRICS = (
    "hu_wasserstein,contrast_rms,cnr_soft_tissue_fat,noise_sd,nps_peak_frequency,nps_mean_frequency,"
    "nps_distance,glcm_distance,memorization"
)
# Demo preset (configs/demo.yaml) on the Haar sub-bands: [0, 1, 1] keeps the 16 slices and halves
# x and y, so the U-Net sees 4 channels of 32x32x16 (its 2d-3d-3d-3d levels divide that). No zoom
# augmentation: a 0.9-1.1 zoom would rescale the noise texture (NPS) that this benchmark measures.
DEFAULT_SETS = (
    "model.space=wavelet",
    "model.wavelet_levels=[0,1,1]",
    "data.zoom_prob=0.0",
    "train.epochs=10000",
)
SIGTERM_GRACE_S = 600  # the trainer finishes its step and saves last.pt


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _record(out: Path, stage: str, entry: dict) -> dict:
    path = out / "bench.json"
    data = json.loads(path.read_text()) if path.exists() else {"stages": {}}
    data["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()}
    data["stages"][stage] = entry
    path.write_text(json.dumps(data, indent=2) + "\n")
    return data


def _py(*args: str) -> list[str]:
    return [sys.executable, *args]


def _shown(cmd: list[str], nice: int) -> str:
    words = ["python" if w == sys.executable else w for w in cmd]
    return (f"nice -n {nice} " if nice else "") + " ".join(words)


def _run(cmd: list[str], nice: int, log: Path, budget_s: float | None = None) -> tuple[int, float, bool]:
    """Run ``cmd`` (niced) with its output in ``log``; stop it with SIGTERM after ``budget_s`` seconds.
    Returns (exit code, wall seconds, whether the budget stopped it)."""
    started = time.perf_counter()
    with open(log, "a") as f:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, preexec_fn=lambda: os.nice(nice))
        stopped = False
        try:
            proc.wait(timeout=budget_s)
        except subprocess.TimeoutExpired:
            stopped = True
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=SIGTERM_GRACE_S)
    return proc.returncode, time.perf_counter() - started, stopped


def stage_crops(args) -> dict:
    from ctdiff.data.body import body_mask
    from ctdiff.data.crops import crop, crop_starts, slice_blocks
    from ctdiff.data.io import read_volume, write_nifti

    if (args.out / "crops").exists() and not args.force:
        raise SystemExit(f"{args.out / 'crops'} exists; pass --force to write the crops again")
    started = time.perf_counter()
    scan = read_volume(args.scan)
    mask = body_mask(scan.array)
    train_z, held_z = slice_blocks(scan.shape[2], args.train_fraction, args.gap)
    blocks = {"train": (train_z, args.n_train, args.seed), "held_out": (held_z, args.n_eval, args.seed + 1)}
    listing = {}
    for name, (z_range, n, seed) in blocks.items():
        starts = crop_starts(mask, tuple(args.shape), n, z_range, args.min_body_fraction, seed)
        folder = args.out / "crops" / name
        folder.mkdir(parents=True, exist_ok=True)
        rows, body_frac = [], []
        for k, start in enumerate(starts):
            box = tuple(slice(int(s), int(s) + w) for s, w in zip(start, args.shape, strict=True))
            write_nifti(crop(scan, start, args.shape), folder / f"{name}_{k:03d}.nii.gz")
            rows.append({"file": f"{name}_{k:03d}.nii.gz", "start_xyz": [int(s) for s in start]})
            body_frac.append(float(mask[box].mean()))
        listing[name] = {
            "slices": list(z_range),
            "n": n,
            "seed": seed,
            "min_body_fraction_found": min(body_frac),
            "crops": rows,
        }
    info = {
        "scan": str(args.scan),
        "scan_shape": list(scan.shape),
        "spacing_mm": [round(s, 4) for s in scan.spacing],
        "crop_shape": list(args.shape),
        "gap_slices": args.gap,
        "min_body_fraction": args.min_body_fraction,
        **{f"{k}_block": v for k, v in listing.items()},
    }
    (args.out / "crops" / "crops.json").write_text(json.dumps(info, indent=2) + "\n")
    return {
        "seconds": round(time.perf_counter() - started, 1),
        "train_slices": list(train_z),
        "held_out_slices": list(held_z),
        "gap_slices": args.gap,
        "n_train": args.n_train,
        "n_held_out": args.n_eval,
        "min_body_fraction_found": {k: v["min_body_fraction_found"] for k, v in listing.items()},
    }


def stage_train(args) -> dict:
    run = args.out / "run"
    resume = (run / "checkpoints" / "last.pt").exists()
    cmd = _py("-m", "ctdiff", "train", "--out", str(run), "--no-progress")
    if resume:
        cmd.append("--resume")
    else:
        cmd += ["--config", str(args.config), "--data", str(args.out / "crops" / "train")]
        for s in (*DEFAULT_SETS, *args.set):
            cmd += ["--set", s]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    load0 = _load()
    rc, seconds, stopped = _run(cmd, args.nice, args.out / "train.log", args.budget_min * 60)
    history = run / "history.csv"
    steps = None
    if history.exists():
        import csv

        rows = list(csv.DictReader(history.open()))
        steps = int(float(rows[-1]["step"])) if rows and "step" in rows[-1] else None
    if rc not in (0, 130) and not stopped:
        raise SystemExit(f"training failed (exit {rc}); see {args.out / 'train.log'}")
    return {
        "command": _shown(cmd, args.nice),
        "resumed": resume,
        "budget_min": args.budget_min,
        "wall_seconds": round(seconds, 1),
        "stopped_by_budget": stopped,
        "exit_code": rc,
        "last_logged_step": steps,
        "load_avg_1_5_15_start": load0,
        "load_avg_1_5_15_end": _load(),
    }


def _run_stage(cmd: list[str], args, log_name: str, what: str) -> dict:
    """Run one stage's command; stop the benchmark on failure; its command, wall time and load."""
    load0 = _load()
    rc, seconds, _ = _run(cmd, args.nice, args.out / log_name)
    if rc != 0:
        raise SystemExit(f"{what} failed (exit {rc}); see {args.out / log_name}")
    return {
        "command": _shown(cmd, args.nice),
        "wall_seconds": round(seconds, 1),
        "load_avg_1_5_15_start": load0,
        "load_avg_1_5_15_end": _load(),
    }


def stage_sample(args) -> dict:
    cmd = _py("-m", "ctdiff", "sample", "--run", str(args.out / "run"), "--n", str(args.n_eval))
    cmd += ["--out", str(args.out / "samples"), "--seed", str(args.seed), "--force"]
    if args.steps:
        cmd += ["--steps", str(args.steps)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    return _run_stage(cmd, args, "sample.log", "sampling")


def _report(args, train: Path, out: Path) -> dict:
    crops = args.out / "crops"
    cmd = _py("-m", "eval", "report", "--real", str(crops / "held_out"), "--generated", str(args.out / "samples"))
    cmd += ["--train", str(train), "--out", str(out), "--metrics", args.metrics]
    cmd += ["--workers", str(args.threads or 1), "--device", "cpu", "--seed", str(args.seed), "--force"]
    cmd += ["--cache-dir", str(args.out / "feature-cache")]
    if args.bootstrap is not None:
        cmd += ["--bootstrap", str(args.bootstrap)]
    return _run_stage(cmd, args, "report.log", "eval report")


def stage_report(args) -> dict:
    return _report(args, args.out / "crops" / "train", args.out / "report")


def stage_floor(args) -> dict:
    import shutil

    files = sorted((args.out / "crops" / "train").glob("*.nii.gz"))
    subset = args.out / "crops" / "train_subset"
    if subset.exists() and not args.force:
        raise SystemExit(f"{subset} exists; pass --force to draw it again")
    shutil.rmtree(subset, ignore_errors=True)
    subset.mkdir(parents=True)
    pick = np.random.default_rng(args.seed + 2).choice(len(files), size=min(args.n_eval, len(files)), replace=False)
    for k in sorted(pick):
        shutil.copy2(files[k], subset / files[k].name)
    entry = _report(args, subset, args.out / "report-floor-equal-n")
    return {**entry, "train_subset": [files[k].name for k in sorted(pick)]}


KEEP = (
    "value",
    "ci95",
    "real",
    "generated",
    "reference",
    "floor",
    "floor_basis",
    "gap",
    "status",
    "better",
    "unit",
    "reason",
)


def results(out: Path) -> dict:
    """bench.json plus the chosen metrics of report.json (their value, CI, floor, gap, status)."""
    bench = json.loads((out / "bench.json").read_text())
    report = json.loads((out / "report" / "report.json").read_text())
    metrics = {name: {k: m.get(k) for k in KEEP} for name, m in report["metrics"].items()}
    settings = {k: report["settings"].get(k) for k in ("reference", "n_bootstrap", "seed", "grid", "roi_mm")}
    settings.update({k: report["inputs"].get(k) for k in ("n_real", "n_generated", "n_train", "skipped")})
    crops = json.loads((out / "crops" / "crops.json").read_text())
    for block in ("train_block", "held_out_block"):
        crops[block] = {k: v for k, v in crops[block].items() if k != "crops"}
    result = {**bench, "crops": crops, "report_settings": settings, "metrics": metrics}
    equal_n = out / "report-floor-equal-n" / "report.json"
    if equal_n.exists():
        floor_report = json.loads(equal_n.read_text())
        result["floor_with_equal_n"] = {
            "n_train": floor_report["inputs"]["n_train"],
            "metrics": {name: {k: m.get(k) for k in KEEP} for name, m in floor_report["metrics"].items()},
        }
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scan", type=Path, required=True, help="chest_abdomen.nii.gz from python -m ctdiff real-ct")
    p.add_argument("--out", type=Path, required=True, help="work folder (crops/, run/, samples/, report/, bench.json)")
    p.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset of " + ",".join(STAGES))
    p.add_argument("--shape", type=int, nargs=3, default=[64, 64, 16], metavar=("X", "Y", "Z"))
    p.add_argument("--n-train", type=int, default=128, help="training-block crops")
    p.add_argument("--n-eval", type=int, default=32, help="held-out-block crops, and generated crops")
    p.add_argument(
        "--train-fraction", type=float, default=0.6, help="share of the non-gap slices in the training block"
    )
    p.add_argument("--gap", type=int, default=8, help="slices between the blocks")
    p.add_argument("--min-body-fraction", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--config", type=Path, default=REPO / "configs" / "demo.yaml")
    p.add_argument("--set", action="append", default=[], help="extra ctdiff train --set (after the defaults)")
    p.add_argument("--budget-min", type=float, default=35.0, help="training wall clock, minutes (then SIGTERM)")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: the config's)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--nice", type=int, default=5)
    p.add_argument("--metrics", default=METRICS)
    p.add_argument("--bootstrap", type=int, default=None)
    p.add_argument("--force", action="store_true", help="write the crops again over an existing OUT/crops")
    p.add_argument("--results", type=Path, default=None, help="write bench.json + the report subset here")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    for s in stages:
        if s not in STAGES:
            p.error(f"unknown stage {s!r}; choose from {', '.join(STAGES)}")
    for s in stages:
        print(f"[{time.strftime('%H:%M:%S')}] {s} ...", flush=True)
        run = {"crops": stage_crops, "train": stage_train, "sample": stage_sample, "report": stage_report}
        run["floor"] = stage_floor
        entry = run[s](args)
        _record(args.out, s, entry)
        print(json.dumps(entry, indent=2), flush=True)
    if args.results:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps(results(args.out), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
