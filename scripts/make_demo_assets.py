#!/usr/bin/env python3
"""Write ctdiff_app/demo/assets/ from a demo training run: fp16 EMA checkpoint, run files, samples.

The shipped demo model (issue 20: 128 x 128 x 32, latent space, rectified flow) is the latent-rflow arm
of the quality benchmark, trained with ``python -m ctdiff`` on the 28-phantom cohort (seed 0):

    python -m ctdiff phantom --out data/ph128-train --n 28 --shape 128 128 32 --seed 0
    python -m ctdiff phantom --out data/ph128-held --n 12 --shape 128 128 32 --seed 1
    python benchmarks/bench_quality.py --train-data data/ph128-train --held-out data/ph128-held \\
        --work runs/quality --budget-min 20 --arms latent,pixel,wavelet   # then latent-rflow, the best space
    scripts/make_demo_assets.py --run runs/quality/latent-rflow/run \\
        --bench-state runs/quality/latent-rflow/state.json --sampler euler --steps 25 --force

(every command the benchmark ran is recorded in assets.json). The earlier 64 x 64 x 32 pixel-space demo
model (now tests/data/pixel-demo-64-before-spaces.pt) was trained with:

    python -m ctdiff phantom --out data/demo-train --n 28 --shape 64 64 32 --seed 0
    python -m ctdiff train --config configs/demo.yaml --data data/demo-train --out runs/demo \\
        --threads 1 --set train.lr=5e-4 --set train.epochs=200
    python -m ctdiff train --out runs/demo --resume --threads 2 --set train.epochs=450   # train longer
    scripts/make_demo_assets.py --run runs/demo --force --resumed-to 450

The training command and the step count are recorded in ctdiff_app/demo/assets/assets.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ctdiff.config import load_config  # noqa: E402
from ctdiff_app.demo import ASSETS, export_assets, export_report, resample_assets  # noqa: E402


def command_from_bench(state_file: Path, cohort: dict, data: Path, run: Path) -> str:
    """The commands a bench_quality.py arm ran (its state.json), as one line a user can run: this machine's
    python, repo, data, autoencoder and run paths become ``python``, relative paths, DATA, AE and RUN."""
    state = json.loads(Path(state_file).read_text())
    ae = Path(state_file).resolve().parent / "ae"
    swaps = [  # the longest paths first: the work dir may lie inside the repo
        (f"{sys.executable} ", "python "),
        (str(ae.resolve()), "AE"),
        (str(Path(run).resolve()), "RUN"),
        (str(Path(data).resolve()), "DATA"),
        (str(data), "DATA"),
        (f"{REPO}/", ""),
        (" --no-progress", ""),
    ]
    steps = []
    for cmd in state["commands"]:
        for old, new in swaps:
            cmd = cmd.replace(old, new)
        steps.append(cmd)
    phantom = (
        f"python -m ctdiff phantom --out DATA --n {cohort['n']} --shape {' '.join(map(str, cohort['shape']))} "
        f"--seed {cohort['seed']}"
    )
    return " && ".join([phantom, *steps])


def _kept_cohort(cohort: dict, manifest: dict, keep: int) -> dict:
    """The cohort the workspace renders for a model that keeps the middle ``keep`` slices: the same
    phantoms (n, seed, noise), ``keep`` slices over the default field of view, which must give the
    training render's spacing; the training render itself goes under ``trained_on``."""
    from ctdiff.data.phantom.cohort import DEFAULT_FOV_MM

    shape = [int(n) for n in cohort["shape"]]
    fov = [float(f) for f in manifest.get("fov_mm") or DEFAULT_FOV_MM]
    kept_fov = [DEFAULT_FOV_MM[0], DEFAULT_FOV_MM[1], DEFAULT_FOV_MM[2]]
    if fov[:2] != kept_fov[:2] or abs(fov[2] / shape[2] - kept_fov[2] / keep) > 1e-6:
        raise SystemExit(
            f"make_demo_assets: --keep-slices {keep}: the training phantoms ({shape}, fov {fov} mm) do not have "
            f"the spacing of {keep} slices over the default field of view {kept_fov} mm"
        )
    return {**cohort, "shape": [*shape[:2], int(keep)], "trained_on": {"shape": shape, "fov_mm": fov}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--run", help="demo training run dir (uses checkpoints/best.pt); required unless --report-only or --resample"
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="only recompute the shipped report (after a phantom or metric change) from the shipped "
        "samples and the recorded training cohort",
    )
    parser.add_argument(
        "--resample",
        action="store_true",
        help="draw the shipped samples anew from the shipped model.pt (the sampler, steps and seed "
        "assets.json records), after a change to sampling, then recompute the report",
    )
    parser.add_argument(
        "--checkpoint",
        help="ship this checkpoint of the run instead of checkpoints/best.pt (e.g. fit-noise's output)",
    )
    parser.add_argument("--data", help="the phantom cohort it trained on (default: from the run's split.json)")
    parser.add_argument("--n", type=int, default=12, help="samples to ship")
    parser.add_argument(
        "--sampler",
        default="ddpm",
        help="default ddpm: on the 64x64x32 DDPM demo model it beat the deterministic samplers "
        "(docs/benchmarks.md); a rectified flow takes euler",
    )
    parser.add_argument(
        "--steps", type=int, default=50, help="default 50: as good as 1000 DDPM steps on the 64x64x32 demo model"
    )
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--z-margin", type=int, help="the shipped model's sample.z_margin (default: the run's)")
    parser.add_argument(
        "--keep-slices",
        type=int,
        help="the shipped model's sample.keep_slices, for a run trained on longer phantoms than it samples: "
        "the workspace's phantom cohorts are then rendered this many slices deep over the default field of "
        "view (the training spacing), and assets.json records the training render as train_cohort.trained_on",
    )
    parser.add_argument("--out", default=str(ASSETS))
    parser.add_argument("--force", action="store_true")
    parser.add_argument(
        "--resumed-to",
        type=int,
        metavar="EPOCHS",
        help="the run was trained for 200 epochs, then resumed with --set train.epochs=EPOCHS "
        "(recorded in the command in assets.json)",
    )
    parser.add_argument("--resume-threads", type=int, default=2, help="--threads of that resumed run (default 2)")
    parser.add_argument(
        "--bench-state",
        type=Path,
        help="the run was trained by benchmarks/bench_quality.py: record the commands in this arm's state.json "
        "(paths written as DATA, AE, RUN)",
    )
    parser.add_argument(
        "--command",
        help="record this training command in assets.json instead of the one built from "
        "the options above (for a run with a more complicated history)",
    )
    args = parser.parse_args()
    if args.report_only or args.resample:
        if args.resample:
            print(resample_assets(args.out))
        print(export_report(args.out))
        return 0
    if not args.run:
        parser.error("--run is required (or --report-only, or --resample)")

    run = Path(args.run)
    data = Path(args.data) if args.data else Path(json.loads((run / "split.json").read_text())["train"][0]).parent
    manifest = json.loads((data / "manifest.json").read_text())
    first = manifest["cases"][0]
    cohort = {
        "n": len(manifest["cases"]),
        "seed": manifest.get("seed", manifest.get("options", {}).get("seed")),
        "shape": first["shape"],
        "noise_hu": manifest.get("noise_hu", manifest.get("options", {}).get("noise_hu")),
    }
    if args.keep_slices:
        cohort = _kept_cohort(cohort, manifest, args.keep_slices)
    # the run's learning rate, written out where it is not the preset's (configs/demo.yaml changed
    # from 5e-4 to 1e-3 after the shipped model was trained), so the command reproduces the run
    run_lr = load_config(run / "config.yaml").train.lr
    preset_lr = load_config(REPO / "configs" / "demo.yaml").train.lr
    lr = "" if run_lr == preset_lr else f"--set train.lr={run_lr:g} "
    command = (
        f"python -m ctdiff phantom --out DATA --n {cohort['n']} --shape {' '.join(map(str, cohort['shape']))} "
        f"--seed {cohort['seed']} && python -m ctdiff train --config configs/demo.yaml --data DATA --out RUN "
        f"--threads 1 {lr}--set train.epochs=200 (resumed with --resume where interrupted)"
    )
    if args.resumed_to:
        command += (
            f", then python -m ctdiff train --out RUN --resume --threads {args.resume_threads} "
            f"--set train.epochs={args.resumed_to}"
        )
    if args.bench_state:
        command = command_from_bench(args.bench_state, cohort, data, run)
    if args.command:
        command = args.command
    from tqdm import tqdm

    bar = tqdm(desc="sampling", unit="eval")

    def progress(done, total, message=""):
        bar.total = total
        bar.n = done
        bar.refresh()

    out = export_assets(
        run,
        cohort,
        out=args.out,
        n_samples=args.n,
        sampler=args.sampler,
        steps=args.steps,
        seed=args.seed,
        command=command,
        force=args.force,
        progress=progress,
        checkpoint=args.checkpoint,
        sample_settings={
            k: v for k, v in (("z_margin", args.z_margin), ("keep_slices", args.keep_slices)) if v is not None
        },
    )
    bar.close()
    print(json.dumps(json.loads((out / "assets.json").read_text()), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
