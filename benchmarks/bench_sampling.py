#!/usr/bin/env python3
"""Sampling speed and quality per sampler on the demo model: which sampler should be the default?

For each sampler/steps pair (DDPM-1000 as the thesis sampled, DDIM-50/100, DPM-Solver++-10/25/50)
it samples ``--n`` volumes with the same seeds, times them, and scores them against the real
cohort with ``eval``'s ``frd``, ``kid`` and the ``noise_sd`` ratio (generated / real). Writes a
JSON file, a Markdown table and a plot of quality vs number of network evaluations.

    python benchmarks/bench_sampling.py --run workspace/demo/run --real workspace/demo/real --n 4
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ctdiff.atomic import write_json  # noqa: E402

# cheapest first: the JSON is rewritten after every row, so an interrupted run keeps what it measured
DEFAULT_GRID = ["dpmpp:10", "dpmpp:25", "ddim:50", "dpmpp:50", "ddim:100", "ddpm:1000"]
# frd, kid and the noise SD ratio are the quality columns; hu_wasserstein and nps_distance
# are cheap first-order checks (intensity histogram, noise texture) that separate samplers too
DEFAULT_METRICS = ["frd", "kid", "noise_sd", "hu_wasserstein", "nps_distance"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", help="run dir or checkpoint (the demo model)")
    p.add_argument("--real", help="real cohort to score against")
    p.add_argument("--n", type=int, default=4, help="volumes per sampler (same seeds for every sampler)")
    p.add_argument("--grid", nargs="+", default=DEFAULT_GRID, help="sampler:steps pairs")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--metrics", nargs="+", default=DEFAULT_METRICS, help="eval metrics to score each sampler with")
    p.add_argument("--workers", type=int, default=None, help="eval feature-extraction processes (default: all cores)")
    p.add_argument(
        "--cache-dir",
        default=None,
        help="eval feature cache (default: eval's user cache, so the real cohort is extracted once)",
    )
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--work", default=None, help="keep samples here (default: a temp folder)")
    p.add_argument("--json", default="benchmarks/results/sampling.json")
    p.add_argument("--plot", default="docs/benchmarks-sampling.png")
    p.add_argument(
        "--from-json", action="store_true", help="only redraw the table and plot from --json (e.g. of a run cut short)"
    )
    args = p.parse_args()
    if args.from_json:
        rows = json.loads(Path(args.json).read_text())["rows"]
        metrics = [m for m in args.metrics if all(m in r for r in rows)]
        print("\n".join(markdown_table(rows, metrics)))
        _plot(rows, metrics, Path(args.plot))
        return 0

    if not (args.run and args.real):
        p.error("--run and --real are required (unless --from-json)")
    import torch

    from ctdiff.diffusion.sample import load_bundle, sample, write_samples
    from eval.report import build_report

    if args.threads:
        torch.set_num_threads(args.threads)
    bundle = load_bundle(args.run, device="cpu")
    work = Path(args.work or tempfile.mkdtemp(prefix="ctdiff-bench-sampling-"))
    rows = []
    for item in args.grid:
        sampler, steps = item.split(":")
        steps = int(steps)
        t0 = time.perf_counter()
        vols = sample(bundle, args.n, sampler=sampler, steps=steps, seed=0, batch_size=args.batch_size)
        seconds = (time.perf_counter() - t0) / args.n
        out = work / f"{sampler}-{steps}"
        write_samples(vols, out, force=True)
        t1 = time.perf_counter()
        rep = build_report(
            args.real,
            out,
            metrics=args.metrics,
            cache_dir=args.cache_dir,
            workers=args.workers,
            settings={"n_bootstrap": 0},
        )
        m = rep["metrics"]
        row = {
            "sampler": sampler,
            "steps": steps,
            "nfe": steps,
            "seconds_per_volume": round(seconds, 2),
            "eval_seconds": round(time.perf_counter() - t1, 1),
        }
        for name in args.metrics:
            row[name] = m[name]["value"]
            if m[name].get("reason"):
                row[f"{name}_reason"] = m[name]["reason"]
        noise = m.get("noise_sd", {})
        row["noise_sd_ratio"] = (
            noise["generated"] / noise["real"] if noise.get("real") and noise.get("generated") else None
        )
        rows.append(row)
        print(row, flush=True)
        _write_json(args, bundle, torch, rows)
    print()
    print("\n".join(markdown_table(rows, args.metrics)))
    _plot(rows, args.metrics, Path(args.plot))
    return 0


def _write_json(args, bundle, torch, rows) -> None:
    result = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average": [round(x, 1) for x in os.getloadavg()],
        "checkpoint": bundle.checkpoint,
        "checkpoint_step": bundle.step,
        "n": args.n,
        "real": str(args.real),
        "command": " ".join(["python", "benchmarks/bench_sampling.py", *sys.argv[1:]]),
        "complete": len(rows) == len(args.grid),
        "rows": rows,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    write_json(args.json, result)


def markdown_table(rows: list[dict], metrics: list[str]) -> list[str]:
    cols = [m for m in metrics if m != "noise_sd"]
    lines = [
        "| sampler | steps (network evaluations) | s / volume | " + " | ".join(cols) + " | noise SD gen/real |",
        "|---" * (len(cols) + 4) + "|",
    ]
    for r in rows:
        vals = ["n/a" if r.get(c) is None else f"{r[c]:.4g}" for c in cols]
        ratio = "n/a" if r.get("noise_sd_ratio") is None else f"{r['noise_sd_ratio']:.2f}"
        lines.append(
            f"| {r['sampler']} | {r['steps']} | {r['seconds_per_volume']:.1f} | " + " | ".join(vals) + f" | {ratio} |"
        )
    return lines


def _plot(rows, metrics: list[str], path: Path) -> None:
    """Quality vs network evaluations: one panel per metric (lower is better for every one)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = [m for m in metrics if m != "noise_sd"] + ["noise_sd_ratio"]
    fig, axes = plt.subplots(1, len(cols), figsize=(3.2 * len(cols), 3.2), squeeze=False)
    for ax, name in zip(axes[0], cols):
        for sampler in dict.fromkeys(r["sampler"] for r in rows):
            pts = sorted((r["nfe"], r[name]) for r in rows if r["sampler"] == sampler and r.get(name) is not None)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=sampler)
        if name == "noise_sd_ratio":
            ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_xlabel("network evaluations per volume")
        ax.set_title(name if name == "noise_sd_ratio" else f"{name} (lower is better)", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
