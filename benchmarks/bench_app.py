"""Benchmark: time of one slice-browser rerun when the slice slider moves (target < 150 ms).

A 512x512x26 real/generated pair (synthetic pelvis phantoms from ``ctdiff.data.phantom``) is written to
a temporary workspace; the slice browser runs in Streamlit's AppTest, volumes are loaded once
(cached), a few warm-up moves are made, then the real slice slider is moved ``--moves`` times with
linked scrolling on (both images change each time). The time per move is the wall time of the
AppTest rerun: the whole page script, slicing, figure building and serialisation, which is what
the server does per slider move. Browser-side drawing and the network are not included.

    .venv/bin/python benchmarks/bench_app.py [--moves 40] [--out docs/benchmarks-app.md]
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

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ctdiff.data.io import write_nifti  # noqa: E402

SHAPE = (512, 512, 26)
TARGET_MS = 150.0


def make_pair(folder: Path) -> tuple[Path, Path, str]:
    """Write one real and one generated 512x512x26 volume; returns their folders and the data source."""
    try:
        from ctdiff.data.phantom import make_phantom

        real, _ = make_phantom(shape=SHAPE, seed=1)
        gen, _ = make_phantom(shape=SHAPE, seed=2, noise_hu=30.0)
        source = "ctdiff.data.phantom.make_phantom (seeds 1 and 2)"
    except ImportError:
        from ctdiff.data.volume import Volume

        rng = np.random.default_rng(0)
        real = Volume.from_spacing(rng.normal(0, 200, SHAPE).astype(np.float32), (0.82, 0.82, 3.0))
        gen = real.with_array(rng.normal(0, 200, SHAPE).astype(np.float32))
        source = "random normal HU (ctdiff.data.phantom not available)"
    write_nifti(real, folder / "real" / "real_000.nii.gz")
    write_nifti(gen, folder / "generated" / "gen_000.nii.gz")
    return folder / "real", folder / "generated", source


def time_moves(real_dir: Path, gen_dir: Path, moves: int, warmup: int, plane: str) -> list[float]:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "pages" / "1_Slice_browser.py"), default_timeout=300)
    at.session_state["real_dir"] = str(real_dir)
    at.session_state["generated_dir"] = str(gen_dir)
    at.session_state["report_dir"] = None
    at.session_state["run_dir"] = None
    at.session_state["selection_source"] = "benchmark"
    at.run()  # reads both volumes once (cached from here on)
    assert not at.exception, at.exception
    if plane != "axial":
        at.radio(key="plane").set_value(plane).run()
    n = at.slider(key="real_slice").max
    times = []
    for i in range(warmup + moves):
        value = 1 + (i * 7) % n
        if value == at.slider(key="real_slice").value:
            value = value % n + 1
        t0 = time.perf_counter()
        at.slider(key="real_slice").set_value(value).run()
        dt = time.perf_counter() - t0
        assert not at.exception, at.exception
        if i >= warmup:
            times.append(dt * 1000.0)
    return times


def summary(times: list[float]) -> dict[str, float]:
    s = sorted(times)
    return {"median": statistics.median(s), "p90": s[int(0.9 * (len(s) - 1))], "min": s[0], "max": s[-1], "n": len(s)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--moves", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks-app.md")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        real_dir, gen_dir, source = make_pair(Path(tmp))
        print(f"wrote the 512x512x26 pair in {time.perf_counter() - t0:.1f} s ({source})", flush=True)
        results = {}
        for plane in ("axial", "coronal"):
            results[plane] = summary(time_moves(real_dir, gen_dir, args.moves, args.warmup, plane))
            print(plane, {k: round(v, 1) for k, v in results[plane].items()}, flush=True)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    ok = results["axial"]["median"] < TARGET_MS
    lines = [
        "# Benchmark: slice-browser slider move",
        "",
        "`benchmarks/bench_app.py` — time per rerun of `pages/1_Slice_browser.py` when the real slice slider",
        "moves, with linked scrolling (both images redrawn), for a 512×512×26 real/generated pair, in Streamlit's",
        "AppTest (server side: page script, slicing, plotly figure building and serialisation; the browser's",
        "drawing and the network are not included). Volumes are read once and cached; "
        f"{args.warmup} warm-up moves, then {args.moves} timed moves.",
        "",
        f"- data: {source}",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPU cores (shared), load average {load:.1f} at the end, "
        f"Python {platform.python_version()}",
        f"- date: {time.strftime('%Y-%m-%d %H:%M')}",
        "",
        "| plane | median (ms) | p90 (ms) | min (ms) | max (ms) | moves |",
        "|---|---|---|---|---|---|",
    ]
    for plane, r in results.items():
        lines.append(f"| {plane} | {r['median']:.1f} | {r['p90']:.1f} | {r['min']:.1f} | {r['max']:.1f} | {r['n']} |")
    lines += [
        "",
        f"Target: median < {TARGET_MS:.0f} ms per slider move (axial) — "
        + ("**met**." if ok else "**not met** on this machine."),
        "",
        "Reproduce: `.venv/bin/python benchmarks/bench_app.py`",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from ctdiff.atomic import write_text

    write_text(args.out, "\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
