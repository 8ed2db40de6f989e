"""Build an evaluation report: real vs generated (and optionally training) CT folders -> report dict.

:func:`build_report` is the one entry point (the CLI ``python -m eval report`` and the Streamlit
dashboard both call it). It reads the cohorts, puts them on one grid, measures every case, runs
the selected metrics with bootstrap intervals over cases and a reference floor, and (with ``out``)
writes report.json / report.md / report.html. Metric maths lives in ``eval.metrics``; feature
extraction and its cache in ``eval.features`` / ``eval.report.extract``; rendering in
``eval.report.render``.

Reference floor (``reference`` in each metric): the same metric for held-out real vs training
real when ``train`` is given, else between two random halves of the real cohort. For properties
("closer-to-real") it is the real-vs-real *difference* |property(B) - property(A)|; for
``memorization`` it is the test's nominal false-positive rate (the quantile, 0.05). Each metric
entry also carries ``resolution``, ``floor``, ``floor_basis``, ``gap`` and ``status`` from
:mod:`eval.report.gap` (one rule for every metric; the app only displays them).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ctdiff import validate
from ctdiff.atomic import plain_json
from ctdiff.errors import ConfigError, InputError
from ctdiff.outputs import check_distinct_inputs, check_output
from eval.metrics import distribution, intensity, memorization, noise, similarity, texture
from eval.report.cases import Case, CaseStats, all_case_stats, common_grid, put_on_grid, read_cohort
from eval.report.entries import (
    _entry,
    _finite_rows,
    _make_reference,
    _property_metric,
    _Reference,
    _two_sample,
)
from eval.report.gap import annotate, finite_number, report_resolutions
from eval.report.provenance import add_provenance
from eval.report.registry import FAMILIES, METRICS, SCHEMA, names_for, parse_metric_names
from eval.stats import bootstrap_ci

# One defaults dict for the API and the CLI (torch-fidelity style).
DEFAULTS: dict[str, Any] = {
    "n_bootstrap": 200,  # case resamples per interval
    "seed": 0,
    "roi_mm": 40.0,  # preferred side of the square noise ROIs (smaller ones down to 8 px where needed)
    "hist_bin_hu": 4.0,
    "glcm_levels": 32,
    "ms_ssim_scales": 3,
    "similarity_max_inplane": 128,  # SSIM family on volumes average-pooled to at most this in-plane
    "ssim_window_hu": [-1000.0, 1000.0],
    "prdc_k": 5,
    "memorization_quantile": 0.05,
    "inception_slices_per_plane": 8,
    "fid2d_extractor": "radimagenet-resnet50-2d",  # multi-plane FID (eval.report.fid2d): any registered slice extractor
    "fid2d_weights": None,  # weights file; None: looked up in the torch hub cache
    "fid2d_slices_per_plane": 8,
    "fid2d_image_size": 224,
}

Progress = Callable[[str, int, int], None]


def resolve_device(device: str | None) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; ConfigError for an unknown device or
    one this machine lacks."""
    device = validate.device(device or "auto")
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def check_report_options(cfg: dict[str, Any], inputs: dict[str, Any], inception_weights=None) -> None:
    """One place for the report's settings and inputs: ConfigError/InputError in one line each."""
    validate.integer(cfg["n_bootstrap"], "--bootstrap", low=0, high=1_000_000)
    validate.seed(cfg["seed"])
    validate.number(cfg["roi_mm"], "roi_mm", low=0, low_open=True, high=1000)
    validate.number(cfg["hist_bin_hu"], "hist_bin_hu", low=0, low_open=True, high=1000)
    validate.integer(cfg["glcm_levels"], "glcm_levels", low=2, high=256)
    validate.integer(cfg["ms_ssim_scales"], "ms_ssim_scales", low=1, high=5)
    validate.integer(cfg["prdc_k"], "prdc_k", low=1, high=1000)
    validate.number(cfg["memorization_quantile"], "memorization_quantile", low=0, low_open=True, high=0.5)
    # the same scans as real and generated compare a cohort with itself: every distance is ~0 while
    # its bootstrap interval is not; refused rather than reported
    check_distinct_inputs(inputs)
    if inception_weights is not None:
        w = Path(inception_weights)
        if not w.is_file():
            raise InputError("--inception-weights: no such file", w)
        if not os.access(w, os.R_OK):
            raise InputError("--inception-weights: not readable (permission denied)", w)


# ------------------------------------------------------------------------------- the builder
def build_report(
    real: str | os.PathLike,
    generated: str | os.PathLike,
    train: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    metrics: str | Sequence[str] | None = None,
    progress_callback: Progress | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    workers: int | None = None,
    device: str = "auto",
    inception_weights: str | os.PathLike | None = None,
    force: bool = False,
    settings: dict[str, Any] | None = None,
    notice: Callable[[str], None] | None = None,
    executor: str = "local",
    scheduler: str | None = None,
) -> dict[str, Any]:
    """Compare ``generated`` with ``real`` CT folders; return the report dict (report.json contract).

    ``metrics``: names or families (comma string or list; None = all). ``progress_callback(stage,
    done, total)`` reports each stage. With ``out`` the folder gets report.json, report.md,
    report.html and figures/ (a non-empty ``out`` needs ``force``). ``settings`` overrides
    :data:`DEFAULTS`. ``notice(line)`` gets one-line announcements (radiomics' expected duration).
    ``executor="dask"`` extracts radiomics features on a Dask cluster (``scheduler`` address,
    else a local cluster of ``workers``); the numbers equal a local run.
    Raises :class:`InputError` for a missing/empty folder or one without any readable scan;
    unreadable files are skipped and listed in ``inputs.skipped``.
    """
    if isinstance(metrics, str):
        metrics = validate.metric_list(metrics)  # "" is an error, not "all"
    elif metrics is not None and not list(metrics):
        raise ConfigError("--metrics is empty; leave it out to compute every metric")
    try:
        selected = parse_metric_names(metrics)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    unknown = set(settings or {}) - set(DEFAULTS)
    if unknown:
        raise ConfigError(f"unknown report settings: {sorted(unknown)}")
    cfg = {**DEFAULTS, **(settings or {})}
    inputs = {"--real": real, "--generated": generated, "--train": train}
    check_report_options(cfg, inputs, inception_weights)
    if executor not in ("local", "dask"):
        raise ConfigError(f"unknown executor {executor!r}; choose local or dask")
    if out is not None:
        # before reading anything: --out must not be, hold or lie inside an input (--force would delete it)
        check_output(out, command="report", force=force, inputs={**inputs, "--inception-weights": inception_weights})
    workers = max(1, int(workers or os.cpu_count() or 1))
    dev = resolve_device(device)

    def progress(stage: str) -> Callable[[int, int], None] | None:
        if progress_callback is None:
            return None
        return lambda done, total: progress_callback(stage, done, total)

    # ---- read
    skipped: list[dict[str, str]] = []
    cohorts: dict[str, list[Case]] = {}
    for cohort, root in (("real", real), ("generated", generated), ("train", train)):
        if root is None:
            cohorts[cohort] = []
            continue
        cases, bad = read_cohort(root, cohort, progress(f"read {cohort}"))
        skipped += bad
        if not cases:
            why = "; ".join(f"{Path(b['file']).name}: {b['reason']}" for b in bad[:5])
            raise InputError(f"--{cohort} holds no readable CT volume ({why})", root)
        cohorts[cohort] = cases
    shape, spacing = common_grid(cohorts["real"])
    moved = put_on_grid(list(cohorts.values()), shape, spacing)
    resampled_to = {"shape": list(shape), "spacing": list(spacing), "files": moved} if moved else None
    n = {k: len(v) for k, v in cohorts.items()}
    ref = _make_reference(n["real"], n["train"], cfg["seed"])
    run = _Run(
        cohorts=cohorts,
        ref=ref,
        cfg=cfg,
        device=dev,
        workers=workers,
        cache_dir=cache_dir,
        use_cache=use_cache,
        inception_weights=inception_weights,
        executor=executor,
        scheduler=scheduler,
        progress=progress,
        notice=notice,
        skipped=skipped,
    )
    need_train = n["train"] > 0

    # ---- the metrics: each family runner computes its selected metrics (registry order of runners)
    for runner, compute in RUNNERS.items():
        names = names_for(runner, selected)
        if names:
            compute(names, run)
    metric_out, curves = run.metric_out, run.curves

    # ---- assemble
    per_case = []
    for k in ("real", "generated", "train"):
        for i, c in enumerate(cohorts[k]):
            row: dict[str, Any] = {"cohort": k, "file": str(c.path), "case": c.name}
            if k in run.stats:
                row.update(run.stats[k][i].row())
            row.update(run.per_case_extra.get((k, i), {}))
            per_case.append(
                {key: (finite_number(v) if isinstance(v, (float, np.floating)) else v) for key, v in row.items()}
            )
    report = {
        "schema": SCHEMA,
        "inputs": {
            "real": str(real),
            "generated": str(generated),
            "train": None if train is None else str(train),
            "n_real": n["real"],
            "n_generated": n["generated"],
            "n_train": n["train"],
            "skipped": run.skipped,
            "resampled_to": resampled_to,
        },
        "settings": {
            **cfg,
            "metrics": selected,
            "device": dev,
            "workers": workers,
            "executor": executor if scheduler is None else f"{executor} ({scheduler})",
            "grid": {"shape": list(shape), "spacing": list(spacing)},
            "reference": ref.kind if ref is not None else None,
            "cache_dir": None if not use_cache else str(cache_dir or _default_cache()),
            "cache_stats": run.cache_stats,
            "frd_input": "original files (frd-score reads them itself; not resampled)",
        },
        # gap / status against the reference floor: one rule for every metric (eval.report.gap)
        "metrics": annotate(
            {m: metric_out.get(m, _entry(m, reason="not computed")) for m in selected},
            report_resolutions(selected, n["real"], n["generated"], curves, cfg["prdc_k"]),
        ),
        "per_case": per_case,
        "curves": curves,
        "memorization_flagged": run.flagged,
    }
    add_provenance(report, cohorts)  # which scans these facts are about (eval/report/provenance.py)
    if not need_train:
        report["settings"]["memorization_null"] = "leave-one-out inside --real (no --train given)"
    report = plain_json(report)
    if out is not None:
        from eval.report.render import write_report

        write_report(report, out, cohorts, force=force, inputs={**inputs, "--inception-weights": inception_weights})
    return report


def _default_cache():
    from eval.report.cache import default_cache_dir

    return default_cache_dir()


# ------------------------------------------------------------------------------ family runners
@dataclasses.dataclass
class _Run:
    """What the family runners read (cohorts, reference, settings) and fill (entries, curves, ...)."""

    cohorts: dict[str, list[Case]]
    ref: _Reference | None
    cfg: dict[str, Any]
    device: str
    workers: int
    cache_dir: str | os.PathLike | None
    use_cache: bool
    inception_weights: str | os.PathLike | None
    executor: str
    scheduler: str | None
    progress: Callable[[str], Callable[[int, int], None] | None]
    notice: Callable[[str], None] | None
    skipped: list[dict[str, str]]
    metric_out: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    stats: dict[str, list[CaseStats]] = dataclasses.field(default_factory=dict)  # per-case measurements
    per_case_extra: dict[tuple[str, int], dict[str, Any]] = dataclasses.field(default_factory=dict)
    curves: dict[str, Any] = dataclasses.field(default_factory=dict)
    flagged: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    cache_stats: dict[str, Any] = dataclasses.field(default_factory=dict)

    def feature_cache(self):
        from eval.report.cache import FeatureCache

        return FeatureCache(self.cache_dir or _default_cache()) if self.use_cache else None


def _run_case_stats(names: list[str], run: _Run) -> None:
    """intensity, noise, texture: one pass measuring every case, then the per-case based metrics."""
    cohorts, n = run.cohorts, {k: len(v) for k, v in run.cohorts.items()}
    todo = [c for k in ("real", "generated", "train") for c in cohorts[k]]
    all_stats = all_case_stats(
        todo,
        run.cfg,
        workers=run.workers,
        progress=run.progress("measure scans"),
        parts={METRICS[m].family for m in names},
    )
    pos = 0
    for k in ("real", "generated", "train"):
        run.stats[k] = all_stats[pos : pos + n[k]]
        pos += n[k]
    run.metric_out.update(_case_metrics(names, run.stats, run.ref, run.cfg, run.curves))


def _run_radiomics(names: list[str], run: _Run) -> None:
    """frd, kid, mmd_rbf, precision/recall/density/coverage in the radiomics feature space."""
    args = (names, run.cohorts, run.ref, run.cfg, run.cache_dir, run.use_cache, run.workers, run.progress, run.notice)
    if run.executor == "dask":
        from eval.report.executor import dask_client

        with dask_client(run.scheduler, run.workers) as client:
            out_r, stats_r, bad_r = _radiomics_metrics(*args, client)
    else:
        out_r, stats_r, bad_r = _radiomics_metrics(*args)
    run.metric_out.update(out_r)
    run.cache_stats["radiomics-frd-v1"] = stats_r
    run.skipped += bad_r


def _run_similarity(names: list[str], run: _Run) -> None:
    """SSIM family and memorisation (they share the SSIM matrices)."""
    out_s, extra, run.flagged = _similarity_metrics(names, run.cohorts, run.ref, run.cfg, run.device, run.progress)
    run.metric_out.update(out_s)
    run.per_case_extra.update(extra)


def _run_inception(names: list[str], run: _Run) -> None:
    """InceptionV3 FID on slices."""
    out_f, stats_f = _inception_metric(
        run.cohorts, run.ref, run.cfg, run.cache_dir, run.use_cache, run.device, run.inception_weights, run.progress
    )
    run.metric_out.update(out_f)
    if stats_f:
        run.cache_stats["inception-v3-fid-2d"] = stats_f


def _run_fid2d(names: list[str], run: _Run) -> None:
    """Multi-plane 2D FID (RadImageNet ResNet-50 by default; eval.report.fid2d)."""
    from eval.report.fid2d import fid2d_metrics

    out_m, stats_m = fid2d_metrics(names, run.cohorts, run.ref, run.cfg, run.feature_cache(), run.device, run.progress)
    run.metric_out.update(out_m)
    if stats_m:
        run.cache_stats[run.cfg["fid2d_extractor"]] = stats_m


# The family runners, in the order they run; every MetricSpec.runner names one of them
# (tests/eval/test_report.py checks it). A runner gets the selected metrics it computes.
RUNNERS: dict[str, Callable[[list[str], _Run], None]] = {
    "case_stats": _run_case_stats,
    "radiomics": _run_radiomics,
    "similarity": _run_similarity,
    "inception": _run_inception,
    "fid2d": _run_fid2d,
}


# ------------------------------------------------------------------- per-case based metrics
def _case_metrics(selected, stats: dict[str, list[CaseStats]], ref, cfg, curves) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    cohorts = [k for k in ("real", "generated", "train") if k in stats]

    def values(attr: str) -> dict[str, np.ndarray]:
        return {k: np.array([getattr(s, attr) for s in stats[k]], dtype=np.float64) for k in cohorts}

    noise_details = (
        _choose_noise_roi(stats, cohorts)
        if any(s.noise_by_size or s.volume_noise_reason for k in cohorts for s in stats[k])
        else None
    )
    for name in (
        "contrast_rms",
        "cnr_soft_tissue_fat",
        "slice_banding",
        "noise_sd",
        "nps_peak_frequency",
        "nps_mean_frequency",
    ):
        if name in selected:
            out[name] = _property_metric(name, values(name), ref, cfg)
            if noise_details is not None and name not in ("contrast_rms", "slice_banding"):
                out[name]["details"] = noise_details
                if out[name]["value"] is None:
                    why = noise_details["why_not"].get("generated") or noise_details["why_not"].get("real")
                    out[name]["reason"] += f": {why}" if why else ""

    edges = intensity.hu_bin_edges(width=cfg["hist_bin_hu"])
    hists = {
        k: np.stack([s.histogram for s in stats[k]]) if stats[k] else np.zeros((0, len(edges) - 1)) for k in cohorts
    }
    if "hu_wasserstein" in selected:

        def fn(a, b):  # noqa: E306
            a, b = _finite_rows(a), _finite_rows(b)
            if not len(a) or not len(b):
                return {"hu_wasserstein": float("nan")}
            return {
                "hu_wasserstein": intensity.wasserstein_histograms(
                    intensity.pooled_histogram(a), intensity.pooled_histogram(b), edges
                )
            }

        out.update(_two_sample(["hu_wasserstein"], fn, hists, ref, cfg["n_bootstrap"], cfg["seed"], min_cases=1))
    if any(len(_finite_rows(h)) for h in hists.values()):
        curves["hu_histogram"] = {
            "bin_edges": edges.tolist(),
            **{
                k: intensity.pooled_histogram(_finite_rows(h)).tolist()
                for k, h in hists.items()
                if len(_finite_rows(h))
            },
        }

    if "glcm_distance" in selected:
        out["glcm_distance"] = _glcm(stats, cohorts, ref, cfg)

    freq = next((s.nps_frequency for k in cohorts for s in stats[k] if len(s.nps_frequency)), np.zeros(0))
    if not len(freq):  # noise not measured (only texture asked for) or measurable nowhere
        return out
    blank = np.full(len(freq), np.nan)
    nps = {
        k: np.stack([s.nps if len(s.nps) == len(freq) else blank for s in stats[k]])
        if stats[k]
        else np.zeros((0, len(freq)))
        for k in cohorts
    }
    if "nps_distance" in selected:

        def fn(a, b):  # scans without a homogeneous ROI (all-NaN NPS) drop out
            a, b = _finite_rows(a), _finite_rows(b)
            if not len(a) or not len(b):
                return {"nps_distance": float("nan")}
            return {"nps_distance": noise.nps_distance(freq, a.mean(axis=0), b.mean(axis=0))}

        out.update(_two_sample(["nps_distance"], fn, nps, ref, cfg["n_bootstrap"], cfg["seed"], min_cases=1))
    mean_nps = {k: _finite_rows(v).mean(axis=0) for k, v in nps.items() if len(_finite_rows(v))}
    curves["nps"] = {
        "frequency_mm": freq.tolist(),
        "unit": "unit-area NPS (mm); *_hu2mm2 keys: mean NPS in HU^2 mm^2",
        **{k: noise.normalise_nps(freq, v).tolist() for k, v in mean_nps.items()},
        **{f"{k}_hu2mm2": v.tolist() for k, v in mean_nps.items()},
    }
    return out


def _choose_noise_roi(stats: dict[str, list[CaseStats]], cohorts: list[str]) -> dict[str, Any]:
    """One noise ROI size for every cohort (eval.metrics.noise.choose_roi_size), applied to every
    case; the metric details: size, counts, the cross-check and why scans are not measurable."""
    cohorts = [k for k in cohorts if stats[k]]
    size, details = noise.choose_roi_size({k: [s.noise_by_size for s in stats[k]] for k in cohorts})
    for k in cohorts:
        for s in stats[k]:
            s.select_roi_size(size)
    spacing = None
    for k in cohorts:
        for s in stats[k]:
            if len(s.nps_frequency) > 1:
                spacing = 1.0 / (s.nps_frequency[1] * size)  # NPS bin = 1 / (roi_px * pixel)
                break
        if spacing:
            break
    return {
        "roi_px": size,
        "roi_mm": None if size is None or spacing is None else round(size * spacing, 2),
        **details,
        "measurable": {k: sum(1 for s in stats[k] if np.isfinite(s.noise_sd)) for k in cohorts},
        "homogeneity": f"ROI mean {noise.SOFT_TISSUE_HU[0]:g}..{noise.SOFT_TISSUE_HU[1]:g} HU, structure <= {noise.MAX_STRUCTURE_HU:g} HU (absolute)",
        "cross_check": f"local-SD mode ({noise.LOCAL_SD_KERNEL} px windows in soft tissue), refused beyond {noise.CROSS_CHECK_FACTOR:g}x",
        "why_not": {
            k: noise.why_not_measurable(
                [(s.noise_by_size, s.volume_noise_reason) for s in stats[k] if not np.isfinite(s.noise_sd)], size
            )
            for k in cohorts
        },
    }


def _glcm(stats, cohorts, ref, cfg) -> dict[str, Any]:
    n_props = len(texture.GLCM_PROPERTIES)
    feats = {
        k: np.array([[s.glcm[p] for p in texture.GLCM_PROPERTIES] for s in stats[k]]).reshape(-1, n_props)
        for k in cohorts
    }
    fn = lambda a, b: {"glcm_distance": texture.standardised_mean_distance(a, b)}  # noqa: E731
    return _two_sample(["glcm_distance"], fn, feats, ref, cfg["n_bootstrap"], cfg["seed"])["glcm_distance"]


# ---------------------------------------------------------------------------- radiomics family
def radiomics_features(paths: list[Path], image_dim: int, cache, workers: int, progress=None, client=None):
    """frd-score v1 features of ``paths`` via the cache and worker processes or a Dask ``client``
    (see eval.report.extract and eval.report.executor)."""
    from eval.features import create
    from eval.report.extract import extract_features

    extractor = create("radiomics-frd-v1", image_dim=image_dim, single_thread=workers > 1 or client is not None)
    return extract_features(
        extractor, [(p, p) for p in paths], cache, workers=workers, progress=progress, client=client
    )


def _radiomics_metrics(selected, cohorts, ref, cfg, cache_dir, use_cache, workers, progress, notice=None, client=None):
    from eval.features.radiomics import image_dim_of_shape
    from eval.report import radiomics_eta
    from eval.report.cache import FeatureCache

    names = [m for m in FAMILIES["radiomics"] if m in selected]
    cache = FeatureCache(cache_dir or _default_cache()) if use_cache else None
    image_dim = image_dim_of_shape(
        cohorts["real"][0].volume.meta.get("original_shape") or cohorts["real"][0].volume.shape
    )
    feats: dict[str, np.ndarray] = {}
    skipped, stats = [], {}
    columns = None
    timings = radiomics_eta.timings_path(cache.root) if cache is not None else None
    todo = radiomics_eta.scans_to_extract(cohorts, image_dim, cache) if notice is not None else []
    if todo:
        notice(
            radiomics_eta.announce(
                len(todo), *radiomics_eta.estimate(todo, workers, timings), radiomics_eta.FAST_FAMILIES
            )
        )
    for k in ("real", "generated", "train"):
        if not cohorts[k]:
            continue
        start = radiomics_eta.clock()
        ex = radiomics_features(
            [c.path for c in cohorts[k]], image_dim, cache, workers, progress(f"radiomics features ({k})"), client
        )
        if timings is not None:
            radiomics_eta.record_run(
                timings,
                [radiomics_eta.voxels(cohorts[k][i]) for i in ex.seconds],
                radiomics_eta.clock() - start,
                workers,
            )
        skipped += [{"file": f, "reason": f"radiomics: {why}"} for f, why in ex.failed]
        stats[k] = {"cached": ex.n_cached, "extracted": ex.n_extracted, "failed": len(ex.failed)}
        if columns is None:
            columns = ex.names
        elif ex.names is not None and ex.names != columns:
            raise InputError(f"radiomics feature names differ between the real and {k} cohorts (frd-score versions?)")
        feats[k] = ex.matrix(sorted(ex.vectors))
    out = {}
    if "frd" in names:
        # the headline value uses frd-score's own Fréchet function (equal to its CLI); bootstrap
        # replicates and the reference use the exact low-rank identity (no 464x464 sqrtm each)
        fast = lambda a, b: {"frd": distribution.frd_v1(a, b, exact=False)}  # noqa: E731
        out.update(
            _two_sample(
                ["frd"],
                fast,
                feats,
                ref,
                cfg["n_bootstrap"],
                cfg["seed"],
                point=lambda a, b: {"frd": distribution.frd_v1(a, b, exact=True)},
            )
        )
    rest = [m for m in names if m != "frd"]
    if rest:
        k = cfg["prdc_k"]

        def fn(a, b):
            a_s, b_s = distribution.standardise(a, b)
            vals = {"kid": distribution.kid_polynomial(a_s, b_s), "mmd_rbf": distribution.mmd_rbf(a_s, b_s)}
            if {"precision", "recall", "density", "coverage"} & set(rest):
                vals.update(distribution.prdc(a_s, b_s, nearest_k=k))
            return vals

        out.update(_two_sample(rest, fn, feats, ref, cfg["n_bootstrap"], cfg["seed"]))
    return out, stats, skipped


# --------------------------------------------------------------------------- SSIM / memorisation
def _similarity_tensor(cases: list[Case], cfg, device):
    import torch.nn.functional as F

    t = similarity.to_unit([c.volume.array for c in cases], tuple(cfg["ssim_window_hu"]), device=device)
    limit = int(cfg["similarity_max_inplane"] or 0)
    if limit > 0:
        f = max(1, math.ceil(max(t.shape[2], t.shape[3]) / limit))
        if f > 1:
            t = F.avg_pool3d(t, (f, f, 1))
    return t


def _similarity_metrics(selected, cohorts, ref, cfg, device, progress):
    R, G, T = cohorts["real"], cohorts["generated"], cohorts["train"]
    tr, tg = _similarity_tensor(R, cfg, device), _similarity_tensor(G, cfg, device)
    tt = _similarity_tensor(T, cfg, device) if T else None
    out: dict[str, dict[str, Any]] = {}
    extra: dict[tuple[str, int], dict[str, Any]] = {}
    flagged: list[dict[str, Any]] = []
    need_gr = "ssim_nearest_real" in selected or ("memorization" in selected and not T)
    need_rr = need_gr
    s_gr = similarity.similarity_matrix(tg, tr, progress=progress("SSIM generated x real")) if need_gr else None
    s_rr = similarity.similarity_matrix(tr, progress=progress("SSIM real x real")) if need_rr else None
    s_rt = s_gt = s_tt = None
    if T and ("memorization" in selected or "ssim_nearest_real" in selected):
        s_rt = similarity.similarity_matrix(tr, tt, progress=progress("SSIM real x train"))
    if T and "memorization" in selected:
        s_gt = similarity.similarity_matrix(tg, tt, progress=progress("SSIM generated x train"))
    if T and "ssim_nearest_real" in selected:
        s_tt = similarity.similarity_matrix(tt, progress=progress("SSIM train x train"))

    if "ssim_nearest_real" in selected:
        if len(R) < 2:
            out["ssim_nearest_real"] = _entry("ssim_nearest_real", reason="needs at least 2 real scans (leave-one-out)")
        else:
            idx, best = memorization.nearest(-s_gr)
            loo_idx, loo = memorization.nearest(-s_rr, exclude_self=True)
            for i in range(len(G)):
                extra.setdefault(("generated", i), {}).update(
                    {"ssim_nearest_real": float(-best[i]), "nearest_real_file": str(R[idx[i]].path)}
                )
            for i in range(len(R)):
                extra.setdefault(("real", i), {}).update(
                    {"ssim_nearest_real": float(-loo[i]), "nearest_real_file": str(R[loo_idx[i]].path)}
                )
            ci = bootstrap_ci(
                lambda ir, ig: float(s_gr[np.ix_(ig, ir)].max(axis=1).mean()),
                [len(R), len(G)],
                cfg["n_bootstrap"],
                cfg["seed"],
            )
            reference = None
            if T and s_tt is not None and len(T) >= 2:
                reference = abs(
                    float(s_rt.max(axis=1).mean()) - float(-memorization.nearest(-s_tt, exclude_self=True)[1].mean())
                )
            elif ref is not None:
                a, b = ref.a[1], ref.b[1]
                ba = float(s_rr[np.ix_(b, a)].max(axis=1).mean())
                aa = float(-memorization.nearest(-s_rr[np.ix_(a, a)], exclude_self=True)[1].mean())
                reference = abs(ba - aa)
            gen_v = float(-best.mean())
            out["ssim_nearest_real"] = _entry(
                "ssim_nearest_real", gen_v, ci, real=float(-loo.mean()), generated=gen_v, reference=reference
            )

    if "ms_ssim_diversity" in selected:
        if len(G) < 2 or len(R) < 2:
            out["ms_ssim_diversity"] = _entry(
                "ms_ssim_diversity", reason="needs at least 2 scans in each cohort (pairs)"
            )
        else:
            scales = int(cfg["ms_ssim_scales"])
            m_gg = similarity.similarity_matrix(tg, scales=scales, progress=progress("MS-SSIM generated pairs"))
            m_rr = similarity.similarity_matrix(tr, scales=scales, progress=progress("MS-SSIM real pairs"))
            gen_v, real_v = similarity.mean_pairwise(m_gg), similarity.mean_pairwise(m_rr)
            ci = bootstrap_ci(lambda ig: similarity.mean_pairwise(m_gg, ig), [len(G)], cfg["n_bootstrap"], cfg["seed"])
            reference = None
            if T and len(T) >= 2:
                m_tt = similarity.similarity_matrix(tt, scales=scales, progress=progress("MS-SSIM train pairs"))
                reference = abs(real_v - similarity.mean_pairwise(m_tt))
            elif ref is not None:
                reference = abs(similarity.mean_pairwise(m_rr, ref.b[1]) - similarity.mean_pairwise(m_rr, ref.a[1]))
            out["ms_ssim_diversity"] = _entry(
                "ms_ssim_diversity", gen_v, ci, real=real_v, generated=gen_v, reference=reference
            )

    if "memorization" in selected:
        q = float(cfg["memorization_quantile"])
        if T:
            train_cases, d_null_full, d_gen = T, 1.0 - s_rt, 1.0 - s_gt
            null_idx, null_d = memorization.nearest(d_null_full)
        else:
            train_cases, d_gen = R, 1.0 - s_gr
            null_idx, null_d = memorization.nearest(1.0 - s_rr, exclude_self=True)
        if len(null_d) < 2 or len(train_cases) < (1 if T else 2):
            out["memorization"] = _entry(
                "memorization", reason="needs at least 2 held-out real scans for the null distribution"
            )
        else:
            thr = memorization.memorisation_threshold(null_d, q)
            g_idx, g_d = memorization.nearest(d_gen)
            flags = memorization.memorisation_flags(g_d, thr)
            for i in range(len(G)):
                extra.setdefault(("generated", i), {}).update(
                    {
                        "nearest_train_file": str(train_cases[g_idx[i]].path),
                        "train_distance": float(g_d[i]),
                        "memorized": bool(flags[i]),
                    }
                )
                if flags[i]:
                    flagged.append(
                        {
                            "generated": str(G[i].path),
                            "nearest_train": str(train_cases[g_idx[i]].path),
                            "distance": float(g_d[i]),
                            "threshold": thr,
                        }
                    )
            ci = bootstrap_ci(
                lambda inull, ig: float(
                    memorization.memorisation_flags(
                        g_d[ig], memorization.memorisation_threshold(null_d[inull], q)
                    ).mean()
                ),
                [len(null_d), len(G)],
                cfg["n_bootstrap"],
                cfg["seed"],
            )
            out["memorization"] = _entry("memorization", float(flags.mean()), ci, reference=q)
    return out, extra, flagged


# ------------------------------------------------------------------------------- InceptionV3 FID
def _inception_metric(cohorts, ref, cfg, cache_dir, use_cache, device, weights, progress):
    from eval.features import create
    from eval.report.cache import FeatureCache
    from eval.report.fid2d import cohort_slice_features

    extractor = create(
        "inception-v3-fid-2d", weights=weights, device=device, slices_per_plane=cfg["inception_slices_per_plane"]
    )
    reason = extractor.unavailable_reason()
    if reason:
        return {"fid_inception_2d": _entry("fid_inception_2d", reason=reason)}, {}
    cache = FeatureCache(cache_dir or _default_cache()) if use_cache else None
    feats, stats, _, failure = cohort_slice_features(extractor, cohorts, cache, progress, "inception")
    if failure:
        return {"fid_inception_2d": _entry("fid_inception_2d", reason=f"InceptionV3 failed: {failure}")}, {}

    def fid(a, b):
        fa, fb = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
        return {"fid_inception_2d": distribution.frechet_distance_squared_lowrank(fa, fb)}

    return _two_sample(["fid_inception_2d"], fid, feats, ref, cfg["n_bootstrap"], cfg["seed"]), stats
