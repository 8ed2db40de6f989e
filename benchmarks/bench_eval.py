"""Benchmark of ``python -m eval report`` (not a test): 28 vs 28 phantom volumes of 256x256x26.

Times, on this machine's cores (2 here):

1. each metric family except the radiomics one (intensity, noise, texture, similarity/memorisation,
   InceptionV3 — the last is "not computed" without local weights) and all of them together;
2. ``frd`` with a cold feature cache vs the ``frd_score`` command line on the same folders, run
   back to back (the issue asks for a ratio <= 1);
3. ``frd`` with the real cohort's features cached (generated features extracted), and fully cached.

Results go to ``docs/benchmarks-eval.md`` (rewritten after every phase, so a run cut short still
leaves what it measured). Usage::

    nice .venv/bin/python benchmarks/bench_eval.py [--work /tmp/ctdiff-bench-eval] [--n 28] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ctdiff.atomic import write_text  # noqa: E402
from ctdiff.data.phantom import DEFAULT_FOV_MM, write_cohort  # noqa: E402
from eval.features import create  # noqa: E402
from eval.features.radiomics import image_dim_of_shape  # noqa: E402
from eval.report import build_report  # noqa: E402
from eval.report.cache import cache_key, content_hash  # noqa: E402

SHAPE = (256, 256, 26)
OUT_MD = REPO / "docs" / "benchmarks-eval.md"


def timed(fn):
    t = time.perf_counter()
    result = fn()
    return time.perf_counter() - t, result


def write_md(rows: list[tuple[str, str, str]], notes: list[str], n: int, workers: int) -> None:
    load = os.getloadavg()
    lines = [
        "# Benchmark: `python -m eval report` (28 vs 28 CT volumes)",
        "",
        f"`benchmarks/bench_eval.py`, {n} real vs {n} generated phantom volumes of {SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]} "
        f"(field of view {DEFAULT_FOV_MM} mm, spacing {DEFAULT_FOV_MM[0] / SHAPE[0]:.3g} x {DEFAULT_FOV_MM[1] / SHAPE[1]:.3g} x "
        f"{DEFAULT_FOV_MM[2] / SHAPE[2]:.3g} mm), {os.cpu_count()} CPU cores, --workers {workers}, Python {platform.python_version()}, "
        f"no GPU. Load average when written: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (the cores are shared with other work; "
        "timings are wall-clock, one run each).",
        "",
        "| what | wall time | note |",
        "|---|---|---|",
        *[f"| {a} | {b} | {c} |" for a, b, c in rows],
        "",
        *notes,
    ]
    write_text(OUT_MD, "\n".join(lines) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/ctdiff-bench-eval")
    ap.add_argument("--n", type=int, default=28)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--skip-frd", action="store_true")
    ap.add_argument(
        "--frd-n",
        type=int,
        default=None,
        help="FRD phases on the first N scans of each cohort (default: all); extraction of one "
        "256x256x26 phantom takes minutes on one core",
    )
    args = ap.parse_args()
    work = Path(args.work)
    real, gen = work / "real", work / "generated"
    for folder, seed, noise in ((real, 100, 20.0), (gen, 200, 25.0)):
        if not (folder / "manifest.json").exists():
            t, _ = timed(
                lambda: write_cohort(  # noqa: B023 (called here, inside the loop)
                    folder,  # noqa: B023
                    n=args.n,
                    shape=SHAPE,
                    seed=seed,  # noqa: B023
                    noise_hu=noise,  # noqa: B023
                    force=True,
                    progress=False,
                )
            )
            print(f"wrote {folder} in {t:.0f} s", flush=True)
    rows: list[tuple[str, str, str]] = []
    notes: list[str] = []
    common = dict(use_cache=False, workers=args.workers, device="cpu")

    families = [
        ("intensity (hu_wasserstein, contrast_rms, cnr)", "intensity"),
        ("noise (noise_sd, NPS peak, nps_distance)", "noise"),
        ("texture (glcm_distance)", "texture"),
        ("similarity (ssim_nearest_real, ms_ssim_diversity, memorization)", "similarity"),
        ("fid_inception_2d (no weights here: reported as not computed)", "fid_inception_2d"),
    ]
    for label, metrics in families:
        t, _ = timed(lambda: build_report(real, gen, metrics=metrics, **common))  # noqa: B023 (called here)
        rows.append((label, f"{t:.1f} s", "includes reading 56 volumes"))
        print(rows[-1], flush=True)
        write_md(rows, notes, args.n, args.workers)
    all_but = "intensity,noise,texture,similarity,fid_inception_2d"
    t, _ = timed(lambda: build_report(real, gen, metrics=all_but, **common))
    rows.append(
        ("**every metric except the radiomics family**", f"**{t:.1f} s**", "one report; per-scan measurements shared")
    )
    print(rows[-1], flush=True)
    write_md(rows, notes, args.n, args.workers)
    if args.skip_frd:
        return 0

    if args.frd_n and args.frd_n < args.n:
        subsets = []
        for folder in (real, gen):
            sub = work / f"{folder.name}-first{args.frd_n}"
            shutil.rmtree(sub, ignore_errors=True)
            sub.mkdir()
            for f in sorted(folder.glob("*.nii.gz"))[: args.frd_n]:
                shutil.copy(f, sub / f.name)
            subsets.append(sub)
        real, gen = subsets
        notes.append(
            f"FRD rows: the first {args.frd_n} scans of each cohort ({args.frd_n} vs {args.frd_n}), not 28 vs 28: "
            "extraction scales linearly with the number of scans (one per worker at a time)."
        )
    cache = work / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    t_cli, proc = timed(
        lambda: subprocess.run(
            [sys.executable, "-m", "frd_score", str(real), str(gen), "-w", str(args.workers)],
            capture_output=True,
            text=True,
        )
    )
    m = re.search(r"FRD \(v1\): (\S+)", proc.stdout)
    cli_value = float(m.group(1)) if m else float("nan")
    rows.append(("`python -m frd_score REAL GEN -w 2` (reference)", f"{t_cli:.0f} s", f"FRD {cli_value:.6f}"))
    print(rows[-1], flush=True)
    write_md(rows, notes, args.n, args.workers)
    t_cold, rep = timed(
        lambda: build_report(real, gen, metrics="frd", cache_dir=cache, workers=args.workers, device="cpu")
    )
    ours = rep["metrics"]["frd"]["value"]
    rows.append(
        (
            "`eval report --metrics frd`, cold cache",
            f"{t_cold:.0f} s",
            f"FRD {ours:.6f}; ratio to the CLI {t_cold / t_cli:.2f}",
        )
    )
    print(rows[-1], flush=True)
    write_md(rows, notes, args.n, args.workers)

    # drop the generated cohort's entries: real cached, generated extracted again
    extractor = create("radiomics-frd-v1", image_dim=image_dim_of_shape(SHAPE), single_thread=args.workers > 1)
    settings = extractor.settings()
    for f in sorted(gen.glob("*.nii.gz")):
        p = cache / extractor.name
        key = cache_key(content_hash(f), extractor.name, settings)
        (p / key[:2] / f"{key}.npz").unlink(missing_ok=True)
    t_half, rep2 = timed(
        lambda: build_report(real, gen, metrics="frd", cache_dir=cache, workers=args.workers, device="cpu")
    )
    stats = rep2["settings"]["cache_stats"]["radiomics-frd-v1"]
    rows.append(
        (
            "`eval report --metrics frd`, real cohort cached",
            f"{t_half:.0f} s",
            f"real extracted {stats['real']['extracted']}, generated extracted {stats['generated']['extracted']}; ratio to the CLI {t_half / t_cli:.2f}",
        )
    )
    t_warm, _ = timed(
        lambda: build_report(real, gen, metrics="frd", cache_dir=cache, workers=args.workers, device="cpu")
    )
    rows.append(
        (
            "`eval report --metrics frd`, both cohorts cached",
            f"{t_warm:.1f} s",
            "reading volumes + FRD + 200 bootstrap replicates",
        )
    )
    notes.append(
        f"FRD values: report {ours!r}, frd_score CLI {cli_value!r} (equal: {abs(ours - cli_value) <= 1e-9 * max(1.0, abs(cli_value))})."
    )
    print(rows[-2:], flush=True)
    write_md(rows, notes, args.n, args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
