"""The metric registry: every report metric declared once (name, family, direction, unit, meaning,
what it needs and which family runner computes it).

This is the only list of metrics. ``eval.report.build`` runs the selected metrics by looping over
``eval.report.build.RUNNERS`` (each spec names its runner; a runner computes every selected metric
of its families at once, since they share features or similarity matrices). The report schema,
the Markdown/HTML renderers, the CLI choices, the self-test and the app's dashboard read names,
directions, units and descriptions from here. Adding a metric: CONTRIBUTING.md, "Add a metric".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from typing import Literal

SCHEMA = "ctdiff-eval-report/1"

Better = Literal["lower", "higher", "closer-to-real"]
# What a metric can need beyond the real and generated scans:
#   "train"     uses --train when given (the memorisation null set), else a leave-one-out stand-in;
#   "frd-score" the frd-score package's radiomics features (slow: minutes per 100 scans);
#   "weights"   a network's weights on disk (not downloaded; the metric says so when they are absent).
NEEDS = frozenset({"train", "frd-score", "weights"})


@dataclasses.dataclass(frozen=True)
class MetricSpec:
    name: str  # the report.json key
    family: str  # selectable as a group (--metrics noise)
    better: Better
    unit: str
    description: str  # one line, shown in report.md/html and the app
    runner: str  # the family runner in eval.report.build.RUNNERS that computes it
    needs: frozenset[str] = frozenset()

    def __post_init__(self):
        if self.better not in ("lower", "higher", "closer-to-real"):
            raise ValueError(f"{self.name}: better must be lower, higher or closer-to-real, not {self.better!r}")
        if not self.needs <= NEEDS:
            raise ValueError(f"{self.name}: unknown needs {sorted(self.needs - NEEDS)}; known: {sorted(NEEDS)}")


# catalogue order is report order
_CATALOGUE = (
    MetricSpec(
        "hu_wasserstein",
        "intensity",
        "lower",
        "HU",
        "1-Wasserstein distance between the pooled body-voxel HU histograms of real and generated scans.",
        runner="case_stats",
    ),
    MetricSpec(
        "contrast_rms",
        "intensity",
        "closer-to-real",
        "HU",
        "RMS contrast: SD of HU inside the body mask, mean over scans.",
        runner="case_stats",
    ),
    MetricSpec(
        "cnr_soft_tissue_fat",
        "intensity",
        "closer-to-real",
        "",
        "Contrast-to-noise ratio |mean soft tissue - mean fat| / noise SD, mean over scans.",
        runner="case_stats",
    ),
    MetricSpec(
        "slice_banding",
        "intensity",
        "closer-to-real",
        "HU",
        "Slice-to-slice banding: RMS second difference / sqrt(6) of soft tissue's per-slice mean HU along z, mean over scans.",
        runner="case_stats",
    ),
    MetricSpec(
        "noise_sd",
        "noise",
        "closer-to-real",
        "HU",
        "Noise SD in automatically found homogeneous soft-tissue ROIs (detrended; one ROI size for all cohorts), mean over scans.",
        runner="case_stats",
    ),
    MetricSpec(
        "nps_peak_frequency",
        "noise",
        "closer-to-real",
        "mm^-1",
        "Frequency of the peak of the radially averaged 2D noise power spectrum (sub-bin), mean over scans.",
        runner="case_stats",
    ),
    MetricSpec(
        "nps_mean_frequency",
        "noise",
        "closer-to-real",
        "mm^-1",
        "NPS mean frequency f_avg (AAPM TG-233): NPS-weighted mean of the radial frequency, mean over scans.",
        runner="case_stats",
    ),
    MetricSpec(
        "nps_distance",
        "noise",
        "lower",
        "",
        "L1 distance between the cohorts' mean unit-area NPS curves (0 = same noise texture, max 2).",
        runner="case_stats",
    ),
    MetricSpec(
        "glcm_distance",
        "texture",
        "lower",
        "SD",
        "RMS standardised mean difference of soft-tissue GLCM features (contrast, homogeneity, ...).",
        runner="case_stats",
    ),
    MetricSpec(
        "ssim_nearest_real",
        "similarity",
        "closer-to-real",
        "",
        "3D SSIM of each scan to its most similar real scan (real: leave-one-out), mean over scans.",
        runner="similarity",
    ),
    MetricSpec(
        "ms_ssim_diversity",
        "similarity",
        "closer-to-real",
        "",
        "Mean pairwise 3D MS-SSIM inside a cohort; generated far above real means mode collapse.",
        runner="similarity",
    ),
    MetricSpec(
        "frd",
        "radiomics",
        "lower",
        "log",
        "Fréchet Radiomics Distance v1 (frd-score): log squared Fréchet distance of radiomics features.",
        runner="radiomics",
        needs=frozenset({"frd-score"}),
    ),
    MetricSpec(
        "kid",
        "radiomics",
        "lower",
        "",
        "Unbiased MMD^2, cubic polynomial kernel (KID), in standardised per-scan radiomics features.",
        runner="radiomics",
        needs=frozenset({"frd-score"}),
    ),
    MetricSpec(
        "mmd_rbf",
        "radiomics",
        "lower",
        "",
        "Unbiased MMD^2, Gaussian kernel (median bandwidth), in standardised per-scan radiomics features.",
        runner="radiomics",
        needs=frozenset({"frd-score"}),
    ),
    MetricSpec(
        "precision",
        "radiomics",
        "higher",
        "",
        "Fraction of generated scans inside the real k-NN manifold (fidelity), radiomics feature space.",
        runner="radiomics",
        needs=frozenset({"frd-score"}),
    ),
    MetricSpec(
        "recall",
        "radiomics",
        "higher",
        "",
        "Fraction of real scans inside the generated k-NN manifold (diversity), radiomics feature space.",
        runner="radiomics",
        needs=frozenset({"frd-score"}),
    ),
    MetricSpec(
        "density",
        "radiomics",
        "higher",
        "",
        "How many real k-NN balls contain each generated scan, / k (about 1 for matching sets).",
        runner="radiomics",
        needs=frozenset({"frd-score"}),
    ),
    MetricSpec(
        "coverage",
        "radiomics",
        "higher",
        "",
        "Fraction of real scans whose k-NN ball contains at least one generated scan.",
        runner="radiomics",
        needs=frozenset({"frd-score"}),
    ),
    MetricSpec(
        "fid_inception_2d",
        "inception",
        "lower",
        "",
        "FID of InceptionV3 pool features of axial, coronal and sagittal slices (needs local weights).",
        runner="inception",
        needs=frozenset({"weights"}),
    ),
    MetricSpec(
        "fid_radimagenet_axial",
        "radimagenet",
        "lower",
        "",
        "FID of RadImageNet ResNet-50 features of axial slices (MAISI's 2D FID; needs local weights).",
        runner="fid2d",
        needs=frozenset({"weights"}),
    ),
    MetricSpec(
        "fid_radimagenet_coronal",
        "radimagenet",
        "lower",
        "",
        "FID of RadImageNet ResNet-50 features of coronal slices (needs local weights).",
        runner="fid2d",
        needs=frozenset({"weights"}),
    ),
    MetricSpec(
        "fid_radimagenet_sagittal",
        "radimagenet",
        "lower",
        "",
        "FID of RadImageNet ResNet-50 features of sagittal slices (needs local weights).",
        runner="fid2d",
        needs=frozenset({"weights"}),
    ),
    MetricSpec(
        "fid_radimagenet_2d",
        "radimagenet",
        "lower",
        "",
        "Mean of the axial, coronal and sagittal RadImageNet FIDs, as MAISI reports it (needs local weights).",
        runner="fid2d",
        needs=frozenset({"weights"}),
    ),
    MetricSpec(
        "memorization",
        "similarity",
        "lower",
        "fraction",
        "Fraction of generated scans closer (1 - SSIM) to a training scan than 95% of held-out real scans are.",
        runner="similarity",
        needs=frozenset({"train"}),
    ),
)

METRICS: dict[str, MetricSpec] = {s.name: s for s in _CATALOGUE}

FAMILIES: dict[str, list[str]] = {}
for _spec in _CATALOGUE:
    FAMILIES.setdefault(_spec.family, []).append(_spec.name)

# families none of whose metrics need frd-score or network weights: seconds, not minutes
FAST_FAMILIES: tuple[str, ...] = tuple(
    f for f, names in FAMILIES.items() if not any(METRICS[m].needs & {"frd-score", "weights"} for m in names)
)


def names_for(runner: str, selected: Collection[str]) -> list[str]:
    """The metrics of ``selected`` that ``runner`` computes, in catalogue order."""
    return [m for m in METRICS if m in selected and METRICS[m].runner == runner]


def parse_metric_names(metrics) -> list[str]:
    """``None`` -> all; ``"a,b"`` or a list -> those names (family names expand); unknown -> ValueError."""
    if metrics is None or metrics == "" or metrics == "all":
        return list(METRICS)
    names = metrics.split(",") if isinstance(metrics, str) else list(metrics)
    out: list[str] = []
    for n in (x.strip() for x in names):
        if not n:
            continue
        if n in FAMILIES:
            out.extend(FAMILIES[n])
        elif n in METRICS:
            out.append(n)
        else:
            raise ValueError(
                f"unknown metric {n!r}; choose from {', '.join(METRICS)} or a family ({', '.join(FAMILIES)})"
            )
    return [m for m in METRICS if m in out]  # catalogue order, no duplicates
