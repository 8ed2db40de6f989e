#!/usr/bin/env python3
"""Channels-last 3D vs the default (contiguous) layout for the demo model, side by side.

Times a training step (forward, v-loss, backward, AdamW; batch 2 of 64 x 64 x 32) and a sampling
network evaluation (no grad, batch 4) of ``configs/demo.yaml``'s model in both layouts, interleaved
round by round in one process, so the ratio is measured under the same machine load. This is what
``train.channels_last`` (default true) switches for ``ctdiff train`` and ``ctdiff sample``.

    python benchmarks/bench_memory_format.py --threads 2 --rounds 4 --json benchmarks/results/memory-format-cpu.json
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from ctdiff.atomic import write_json  # noqa: E402
from ctdiff.config import load_config  # noqa: E402
from ctdiff.diffusion.schedule import Diffusion  # noqa: E402
from ctdiff.model.unet import build_model  # noqa: E402

LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last_3d}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(REPO / "configs" / "demo.yaml"))
    p.add_argument("--size", type=int, nargs=3, default=[64, 64, 32], metavar=("X", "Y", "Z"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--steps", type=int, default=3, help="timed repetitions per round and layout")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    dev = torch.device(args.device)
    diffusion = Diffusion(cfg.diffusion)
    x, y, z = args.size
    gen = torch.Generator().manual_seed(0)
    x_train = torch.randn(2, 1, z, y, x, generator=gen)
    x_sample = torch.randn(4, 1, z, y, x, generator=gen)

    setups = {}
    for name, fmt in LAYOUTS.items():
        torch.manual_seed(0)
        model = build_model(cfg.model).to(dev).to(memory_format=fmt)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
        setups[name] = (model, opt, x_train.to(dev, memory_format=fmt), x_sample.to(dev, memory_format=fmt))

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def train_step(model, opt, xb):
        t = torch.randint(0, cfg.diffusion.timesteps, (xb.shape[0],), generator=gen).to(dev)
        noise = torch.randn(xb.shape, generator=gen).to(dev)
        loss = diffusion.loss(model, xb, t, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    @torch.no_grad()
    def sample_eval(model, xb):
        model(xb, torch.full((xb.shape[0],), cfg.diffusion.timesteps // 2, device=dev))

    times = {name: {"train": [], "sample": []} for name in LAYOUTS}
    for model, opt, xt, xs in setups.values():  # warm-up
        train_step(model, opt, xt)
        sample_eval(model, xs)
    for r in range(args.rounds):
        for name, (model, opt, xt, xs) in setups.items():
            for kind, fn in (("train", lambda: train_step(model, opt, xt)), ("sample", lambda: sample_eval(model, xs))):  # noqa: B023 (called in this iteration)
                sync()
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    fn()
                sync()
                times[name][kind].append((time.perf_counter() - t0) / args.steps)
        print(
            f"round {r + 1}: "
            + ", ".join(
                f"{n} train {times[n]['train'][-1]:.3f} s sample {times[n]['sample'][-1]:.3f} s" for n in LAYOUTS
            ),
            flush=True,
        )
    med = {n: {k: statistics.median(v) for k, v in times[n].items()} for n in LAYOUTS}
    rows = []
    for kind, what in (("train", "training step, batch 2"), ("sample", "sampling network evaluation, batch 4")):
        base = med["contiguous"][kind]
        for n in LAYOUTS:
            rows.append(
                {
                    "what": what,
                    "layout": n,
                    "seconds": round(med[n][kind], 4),
                    "speedup_vs_contiguous": round(base / med[n][kind], 3),
                }
            )
    print("| what | layout | s (median) | speed vs contiguous |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['what']} | {r['layout']} | {r['seconds']:.3f} | {r['speedup_vs_contiguous']:.2f}x |")
    if args.json:
        write_json(
            args.json,
            {
                "machine": {
                    "platform": platform.platform(),
                    "cpus": os.cpu_count(),
                    "torch": torch.__version__,
                    "threads": torch.get_num_threads(),
                    "device": str(dev),
                },
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "load_average": [round(v, 1) for v in os.getloadavg()],
                "command": " ".join(["python", "benchmarks/bench_memory_format.py", *sys.argv[1:]]),
                "config": args.config,
                "size": args.size,
                "rounds": args.rounds,
                "steps": args.steps,
                "times": times,
                "rows": rows,
            },
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
