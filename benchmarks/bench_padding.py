#!/usr/bin/env python3
"""Padding one training item along the slice axis: ctdiff's pad_slices vs MONAI's SpatialPad vs F.pad.

``ctdiff.data.dataset.pad_slices`` (what every training item goes through) takes MONAI
``SpatialPad(method="symmetric")``'s pad widths and pads with MONAI's ``pad_nd``, the function the
transform runs. Calling the transform itself gives the same values but wraps the item in a MetaTensor
and records the operation; this times the four ways side by side, interleaved round by round in one
process, so the ratios are measured under the same load. Also checks that all four agree bit for bit.

    python benchmarks/bench_padding.py --size 64 64 26 --depth 32 --rounds 5 --json benchmarks/results/padding-cpu.json
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
import torch.nn.functional as F  # noqa: E402
from monai.transforms import SpatialPad  # noqa: E402
from monai.utils import convert_to_tensor  # noqa: E402

from ctdiff.atomic import write_json  # noqa: E402
from ctdiff.data.dataset import pad_before, pad_slices  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, nargs=3, default=[64, 64, 26], metavar=("X", "Y", "Z"))
    p.add_argument("--depth", type=int, default=32, help="padded slice count (data.pad_slices_to)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--calls", type=int, default=200, help="timed calls per round and way")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    x, y, z = args.size
    t = torch.rand((1, z, y, x), generator=torch.Generator().manual_seed(0)) * 2 - 1
    before = pad_before(z, args.depth)
    transform = SpatialPad((args.depth, -1, -1), method="symmetric", mode="edge")
    ways = {
        "torch F.pad (replicate)": lambda: F.pad(t[None], (0, 0, 0, 0, before, args.depth - z - before), "replicate")[
            0
        ],
        "ctdiff pad_slices (MONAI widths + pad_nd)": lambda: pad_slices(t, args.depth, "edge"),
        "MONAI SpatialPad transform": lambda: transform(t),
        "MONAI SpatialPad + convert_to_tensor(track_meta=False)": lambda: convert_to_tensor(
            transform(t), track_meta=False
        ),
    }
    reference = ways["torch F.pad (replicate)"]()
    for name, fn in ways.items():  # warm-up and the values check
        out = torch.as_tensor(fn())
        if not torch.equal(out, reference):
            raise SystemExit(f"{name} gives other values than F.pad")
    times = {name: [] for name in ways}
    for r in range(args.rounds):
        for name, fn in ways.items():
            t0 = time.perf_counter()
            for _ in range(args.calls):
                fn()
            times[name].append((time.perf_counter() - t0) / args.calls * 1e3)
        print(f"round {r + 1}: " + ", ".join(f"{n} {times[n][-1]:.3f} ms" for n in ways), flush=True)
    base = statistics.median(times["torch F.pad (replicate)"])
    rows = [
        {"way": n, "ms_per_item": round(statistics.median(v), 4), "vs_F_pad": round(statistics.median(v) / base, 2)}
        for n, v in times.items()
    ]
    print(f"| way | ms per item (median of {args.rounds}) | time vs F.pad |\n|---|---|---|")
    for row in rows:
        print(f"| {row['way']} | {row['ms_per_item']:.3f} | {row['vs_F_pad']:.2f}x |")
    if args.json:
        write_json(
            args.json,
            {
                "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__},
                "item": [1, z, y, x],
                "depth": args.depth,
                "rounds": args.rounds,
                "calls": args.calls,
                "rows": rows,
            },
            force=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
