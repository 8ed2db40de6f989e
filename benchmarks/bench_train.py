#!/usr/bin/env python3
"""Training step time and peak memory: the thesis network (baseline) vs ctdiff's, side by side.

Each variant runs in its own fresh process (so peak memory is its own), in interleaved rounds
(A, B, C, A, B, C, ...) so that machine noise hits every variant alike; the headline is the ratio of
medians. Variants:

- ``thesis``: ``benchmarks/thesis_unet.py``, the 2023 network as its script configured it (fp32,
  explicit attention matrices, per-slice 2D convolutions), AdamW, batch 1.
- ``ctdiff``: ctdiff's UNet3D built from ``configs/thesis-256.yaml`` (same levels, channels and
  2D/3D mix; SDPA attention), same optimiser and batch; on CUDA with bf16 autocast and channels-last.
- ``ctdiff-ckpt``: the same with gradient checkpointing (less memory, some recomputation).
- ``ctdiff-compile`` (``--compile``): the same under ``torch.compile``.

    python benchmarks/bench_train.py --size 64 64 32 --device cpu          # the CPU row (demo size)
    python benchmarks/bench_train.py --size 256 256 32 --device cuda       # the GPU row (thesis size)
    python benchmarks/bench_train.py --device cuda --find-max               # largest in-plane size at batch 1

Writes a JSON file (``--json``) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def build(variant: str, device):
    import torch

    if variant == "thesis":
        from thesis_unet import ThesisUNet3D

        return ThesisUNet3D().to(device)
    from ctdiff.config import load_config
    from ctdiff.model.unet import build_model

    cfg = load_config(REPO / "configs" / "thesis-256.yaml").model
    cfg.gradient_checkpointing = variant == "ctdiff-ckpt"
    model = build_model(cfg).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last_3d)
    if variant == "ctdiff-compile":
        model = torch.compile(model)
    return model


def worker(variant: str, size, device_name: str, steps: int, warmup: int, threads: int | None) -> dict:
    """Time ``steps`` training steps after ``warmup`` (in this process); return times and peak memory."""
    import torch
    import torch.nn.functional as F

    if threads:
        torch.set_num_threads(threads)
    device = torch.device(device_name)
    gen = torch.Generator().manual_seed(0)
    x, y, z = size
    x0 = (torch.rand((1, 1, z, y, x), generator=gen) * 2 - 1).to(device)
    model = build(variant, device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    acp = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0).float().to(device)
    use_bf16 = device.type == "cuda" and variant != "thesis"
    if device.type == "cuda" and variant != "thesis":
        x0 = x0.to(memory_format=torch.channels_last_3d)

    def step():
        t = torch.randint(0, 1000, (1,), generator=gen).to(device)
        noise = torch.randn(x0.shape, generator=gen).to(device)
        a = acp[t].view(-1, 1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            pred = model(xt, t)
        loss = F.mse_loss(pred.float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    peak = (
        torch.cuda.max_memory_allocated()
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    return {
        "variant": variant,
        "times": times,
        "peak_bytes": int(peak),
        "params": sum(p.numel() for p in model.parameters()),
    }


def run_round(variant, args) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        variant,
        "--size",
        *map(str, args.size),
        "--device",
        args.device,
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
    ]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"variant": variant, "error": tail[:300]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def find_max(args) -> list[dict]:
    """Largest in-plane size (z = 32) that trains at batch 1, for each variant (CUDA only)."""
    rows = []
    for variant in args.variants:
        for inplane in (256, 320, 384, 448, 512, 640, 768):
            a = argparse.Namespace(**{**vars(args), "size": [inplane, inplane, 32], "steps": 1, "warmup": 1})
            r = run_round(variant, a)
            ok = "error" not in r
            rows.append(
                {
                    "variant": variant,
                    "inplane": inplane,
                    "ok": ok,
                    "peak_gib": round(r["peak_bytes"] / 2**30, 2) if ok else None,
                    "error": r.get("error"),
                }
            )
            print(rows[-1], flush=True)
            if args.json:  # a run cut short keeps every finished size
                _write_json(args.json, {"partial": True, "find_max": rows})
            if not ok:
                break
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, nargs=3, default=[64, 64, 32], metavar=("X", "Y", "Z"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--variants", nargs="+", default=["thesis", "ctdiff", "ctdiff-ckpt"])
    p.add_argument("--compile", action="store_true", help="add the ctdiff-compile variant")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=3, help="timed steps per round")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--find-max", action="store_true")
    p.add_argument("--json", default=None)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.size, args.device, args.steps, args.warmup, args.threads)))
        return 0
    if args.compile:
        args.variants.append("ctdiff-compile")
    machine = {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()}
    if args.find_max:
        rows = find_max(args)
        result = {"machine": machine, "find_max": rows}
    else:
        per = {v: [] for v in args.variants}
        info = {}
        for r in range(args.rounds):
            for v in args.variants:
                out = run_round(v, args)
                if "error" in out:
                    info[v] = out
                    continue
                per[v] += out["times"]
                info[v] = {
                    "peak_bytes": max(out["peak_bytes"], info.get(v, {}).get("peak_bytes", 0)),
                    "params": out["params"],
                }
                print(
                    f"round {r + 1}: {v} median {statistics.median(out['times']):.3f} s/step, "
                    f"peak {out['peak_bytes'] / 2**20:.0f} MiB",
                    flush=True,
                )
                if args.json:  # a run cut short keeps every finished round
                    _write_json(args.json, {"machine": machine, "partial": True, "per_variant": per, "info": info})
        base = statistics.median(per["thesis"]) if per.get("thesis") else None
        rows = []
        for v in args.variants:
            if not per[v]:
                rows.append({"variant": v, "error": info[v].get("error")})
                continue
            med = statistics.median(per[v])
            rows.append(
                {
                    "variant": v,
                    "median_s": round(med, 4),
                    "n": len(per[v]),
                    "speedup_vs_thesis": round(base / med, 2) if base else None,
                    "peak_mib": round(info[v]["peak_bytes"] / 2**20),
                    "params_m": round(info[v]["params"] / 1e6, 2),
                }
            )
        result = {
            "machine": machine,
            "size": args.size,
            "device": args.device,
            "rows": rows,
            "command": " ".join(["python", "benchmarks/bench_train.py", *sys.argv[1:]]),
        }
        print(
            "\n| variant | s/step (median) | speed-up vs thesis | peak memory (MiB) | params (M) |\n|---|---|---|---|---|"
        )
        for r in rows:
            if "error" in r:
                print(f"| {r['variant']} | failed: {r['error']} | | | |")
            else:
                print(
                    f"| {r['variant']} | {r['median_s']:.3f} | {_speedup(r['speedup_vs_thesis'])} | {r['peak_mib']} | {r['params_m']} |"
                )
    if args.json:
        _write_json(args.json, result)
    return 0


def _speedup(value: float | None) -> str:
    return "n/a (no thesis rows)" if value is None else f"{value}x"


def _write_json(path: str, result: dict) -> None:
    from ctdiff.atomic import write_json

    write_json(Path(path), result)


if __name__ == "__main__":
    sys.exit(main())
