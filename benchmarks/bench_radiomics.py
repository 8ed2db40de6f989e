#!/usr/bin/env python3
"""Radiomics extraction per scan: pyradiomics' own code against ``eval.features.radiomics_speedups``.

One process, one ITK thread, the same scans extracted alternately with the stock and the faster
GLCM coefficients and bin edges (stock, fast, fast, stock, ... so drift in the machine's load falls
on both), and the feature vectors compared bit for bit. Scans: six of the eval tests' 48x48x16
phantoms at 2 mm (the time is their sum), and the demo's 128x128x32 phantom (420 x 420 x 160 mm,
3.53 M voxels once frd-score resamples it to 2 mm, as the thesis' 256x256x26 one). Writes a JSON
file::

    python benchmarks/bench_radiomics.py [--repeats 2] [--json benchmarks/results/radiomics-speedups.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from ctdiff.atomic import write_json  # noqa: E402
from ctdiff.data.io import write_nifti  # noqa: E402
from ctdiff.data.phantom import case_seed, make_phantom  # noqa: E402
from eval.features import radiomics_speedups as speed  # noqa: E402
from eval.features.radiomics import RadiomicsFRD  # noqa: E402

# label: (shape, field of view in mm, phantoms); a row's time is the sum over its phantoms (the cost
# of the GLCM coefficients follows the number of grey levels, which varies from phantom to phantom)
SCANS = {
    "eval tests, 48x48x16 at 2 mm": ((48, 48, 16), (96.0, 96.0, 32.0), 6),
    "demo, 128x128x32 at 3.3 x 3.3 x 5 mm": ((128, 128, 32), (420.0, 420.0, 160.0), 1),
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=2, help="stock/fast pairs per scan")
    p.add_argument("--json", default="benchmarks/results/radiomics-speedups.json")
    args = p.parse_args()
    extractor = RadiomicsFRD(single_thread=True)
    extractor.setup()
    rows = []
    with tempfile.TemporaryDirectory(prefix="ctdiff-bench-radiomics-") as tmp:
        for label, (shape, fov, n) in SCANS.items():
            paths = [Path(tmp) / f"{shape[0]}-{i}.nii.gz" for i in range(n)]
            for i, path in enumerate(paths):
                write_nifti(make_phantom(shape, case_seed(0, i), 20.0, fov_mm=fov)[0], path)
            times = {"stock": [], "fast": []}
            values = {}
            order = [k for r in range(args.repeats) for k in (("stock", "fast") if r % 2 == 0 else ("fast", "stock"))]
            for kind in order:
                speed.install() if kind == "fast" else speed.uninstall()
                t = time.perf_counter()
                v = np.stack([extractor.extract(path)[1] for path in paths])
                times[kind].append(time.perf_counter() - t)
                values.setdefault(kind, v)
                print(f"{label}: {kind} {times[kind][-1]:.1f} s", flush=True)
            stock, fast = statistics.median(times["stock"]), statistics.median(times["fast"])
            rows.append(
                {
                    "scan": label,
                    "shape": list(shape),
                    "fov_mm": list(fov),
                    "phantoms": n,
                    "stock_s": times["stock"],
                    "fast_s": times["fast"],
                    "median_stock_s": stock,
                    "median_fast_s": fast,
                    "ratio_fast_over_stock": fast / stock,
                    "bit_identical": bool(np.array_equal(values["stock"], values["fast"], equal_nan=True)),
                    "n_features": int(values["fast"].shape[1]),
                }
            )
            write_json(Path(args.json), result(rows, args))
    speed.install()
    for r in rows:
        print(
            f"{r['scan']}: stock {r['median_stock_s']:.1f} s, fast {r['median_fast_s']:.1f} s "
            f"({r['ratio_fast_over_stock']:.2f}x), bit-identical {r['bit_identical']}"
        )
    return 0


def result(rows, args) -> dict:
    import radiomics

    return {
        "benchmark": "benchmarks/bench_radiomics.py",
        "command": f"python benchmarks/bench_radiomics.py --repeats {args.repeats}",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, one ITK thread",
        "pyradiomics": getattr(radiomics, "__version__", "?"),
        "rows": rows,
    }


if __name__ == "__main__":
    raise SystemExit(main())
