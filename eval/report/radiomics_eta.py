"""How long radiomics extraction will take, said before it starts, from timings measured here.

frd-score's v1 radiomics (Original + 4 LoG + 8 wavelet images, ~1000 pyradiomics features) costs
minutes per scan, far more than every other metric family. frd-score first resamples each scan to
2 mm voxels, so the cost follows the scan's physical size: it is modelled as ``PER_VOXEL_S`` per
2 mm voxel, and a run's wall time as that summed over the scans to extract, divided by the
processes that run at once. The rate was measured on the 2-core reference machine (docs/benchmarks.md).
Each finished run appends its measured wall time to ``<feature cache>/radiomics-frd-v1/timings.json``;
the estimate then scales the model by the median of measured / modelled over this machine's recent
runs, and says which of the two it used.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ctdiff.atomic import write_json
from eval.report.registry import FAST_FAMILIES as FAST_FAMILIES  # re-exported: the families announce() suggests

# measured on the 2-core reference machine (pyradiomics-bhklab 3.1.4, frd-score 1.0.1; docs/benchmarks.md,
# "Evaluation"): the 4 vs 4 cold report of 256 x 256 x 26 phantoms, whose 420 x 420 x 160 mm field of
# view is 3.53 M voxels at 2 mm, took 387 s on 2 workers with eval.features.radiomics_speedups
# (2026-12-07): 27 us per voxel, ~97 s per scan per process (42 us and 609 s before those speedups).
# Shared with other jobs the same scans took up to twice as long: the timings of this machine's own
# runs correct for that.
PER_VOXEL_S = 2.7e-5
RESAMPLED_MM = 2.0  # frd-score v1 resamples to 2 mm (in-plane only for single-slice images)
TIMINGS = "timings.json"
KEEP = 20  # most recent runs kept
clock = time.perf_counter


def voxels(case) -> int:
    """Voxels of a report case after frd-score's resampling to 2 mm (its physical extent / 2 mm)."""
    extent = np.asarray(case.volume.shape, float) * np.asarray(case.volume.spacing, float)
    if case.volume.shape[2] <= 1:
        extent[2] = RESAMPLED_MM
    return max(1, int(np.prod(np.maximum(np.round(extent / RESAMPLED_MM), 1))))


def scans_to_extract(cohorts: dict[str, list[Any]], image_dim: int, cache) -> list[int]:
    """Voxel counts of the scans whose radiomics are not in the feature cache yet."""
    from eval.features import create
    from eval.report.extract import missing_from_cache

    extractor = create("radiomics-frd-v1", image_dim=image_dim)
    cases = [c for k in ("real", "generated", "train") for c in cohorts.get(k, [])]
    return [voxels(cases[i]) for i in missing_from_cache(extractor, [c.path for c in cases], cache)]


def parallel(workers: int, n_scans: int) -> int:
    """Processes that extract at once: the workers, at most one per scan and one per core."""
    return max(1, min(int(workers), int(n_scans), os.cpu_count() or 1))


def modelled_seconds(voxels: Sequence[int], workers: int) -> float:
    """The reference model's wall time for scans of ``voxels`` voxels each."""
    if not voxels:
        return 0.0
    return PER_VOXEL_S * sum(voxels) / parallel(workers, len(voxels))


def timings_path(cache_root: str | os.PathLike, extractor_name: str = "radiomics-frd-v1") -> Path:
    return Path(cache_root) / extractor_name / TIMINGS


def read_timings(path: str | os.PathLike | None) -> list[dict]:
    if path is None:
        return []
    try:
        runs = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return []
    return (
        [r for r in runs if isinstance(r, dict) and r.get("modelled_s", 0) > 0 and r.get("wall_s", 0) > 0]
        if isinstance(runs, list)
        else []
    )


def record_run(path: str | os.PathLike, voxels: Sequence[int], wall_s: float, workers: int) -> None:
    """Append one finished extraction (scans' voxel counts, measured wall time) to the timings file."""
    if not voxels or wall_s <= 0:
        return
    runs = read_timings(path)
    runs.append(
        {
            "scans": len(voxels),
            "voxels": int(sum(voxels)),
            "workers": int(workers),
            "cpus": os.cpu_count(),
            "wall_s": float(wall_s),
            "modelled_s": modelled_seconds(voxels, workers),
        }
    )
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_json(path, runs[-KEEP:])


def estimate(voxels: Sequence[int], workers: int, timings: str | os.PathLike | None) -> tuple[float, str]:
    """(seconds, how it was estimated) for extracting scans of ``voxels`` voxels with ``workers``."""
    model = modelled_seconds(voxels, workers)
    runs = [r for r in read_timings(timings) if r.get("cpus") == os.cpu_count()]
    basis = (
        f"{PER_VOXEL_S * 1e6:.0f} us per 2 mm voxel, {sum(voxels) / 1e6:.1f} M voxels, "
        f"{parallel(workers, len(voxels))} scan(s) at a time"
    )
    if runs:
        scale = statistics.median(r["wall_s"] / r["modelled_s"] for r in runs)
        return model * scale, (
            f"from {len(runs)} earlier radiomics run(s) timed on this machine, scaling the model {basis} by {scale:.2f}"
        )
    return model, f"model {basis}, measured on the 2-core reference machine; no run timed here yet"


def announce(n_scans: int, seconds: float, how: str, fast_families: Sequence[str]) -> str:
    """The one line printed before radiomics starts."""
    minutes = seconds / 60
    amount = "less than a minute" if minutes < 1 else f"about {minutes:.0f} min"
    return (
        f"radiomics: {amount} for {n_scans} scan(s) on this machine ({how}); "
        f"use --metrics {','.join(fast_families)} for the fast families"
    )
