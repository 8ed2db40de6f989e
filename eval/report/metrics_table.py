"""The report's metric catalogue: names (report.json keys), direction, unit, one-line meaning.

One place for the names and texts, shared by report building, rendering, the CLI and the docs.
"""

from __future__ import annotations

import dataclasses

SCHEMA = "ctdiff-eval-report/1"


@dataclasses.dataclass(frozen=True)
class MetricSpec:
    family: str
    better: str  # "lower" | "higher" | "closer-to-real"
    unit: str
    description: str


METRICS: dict[str, MetricSpec] = {
    "hu_wasserstein": MetricSpec(
        "intensity",
        "lower",
        "HU",
        "1-Wasserstein distance between the pooled body-voxel HU histograms of real and generated scans.",
    ),
    "contrast_rms": MetricSpec(
        "intensity", "closer-to-real", "HU", "RMS contrast: SD of HU inside the body mask, mean over scans."
    ),
    "cnr_soft_tissue_fat": MetricSpec(
        "intensity",
        "closer-to-real",
        "",
        "Contrast-to-noise ratio |mean soft tissue - mean fat| / noise SD, mean over scans.",
    ),
    "noise_sd": MetricSpec(
        "noise",
        "closer-to-real",
        "HU",
        "Noise SD in automatically found homogeneous soft-tissue ROIs (detrended; one ROI size for all cohorts), mean over scans.",
    ),
    "nps_peak_frequency": MetricSpec(
        "noise",
        "closer-to-real",
        "mm^-1",
        "Frequency of the peak of the radially averaged 2D noise power spectrum (sub-bin), mean over scans.",
    ),
    "nps_mean_frequency": MetricSpec(
        "noise",
        "closer-to-real",
        "mm^-1",
        "NPS mean frequency f_avg (AAPM TG-233): NPS-weighted mean of the radial frequency, mean over scans.",
    ),
    "nps_distance": MetricSpec(
        "noise",
        "lower",
        "",
        "L1 distance between the cohorts' mean unit-area NPS curves (0 = same noise texture, max 2).",
    ),
    "glcm_distance": MetricSpec(
        "texture",
        "lower",
        "SD",
        "RMS standardised mean difference of soft-tissue GLCM features (contrast, homogeneity, ...).",
    ),
    "ssim_nearest_real": MetricSpec(
        "similarity",
        "closer-to-real",
        "",
        "3D SSIM of each scan to its most similar real scan (real: leave-one-out), mean over scans.",
    ),
    "ms_ssim_diversity": MetricSpec(
        "similarity",
        "closer-to-real",
        "",
        "Mean pairwise 3D MS-SSIM inside a cohort; generated far above real means mode collapse.",
    ),
    "frd": MetricSpec(
        "radiomics",
        "lower",
        "log",
        "Fréchet Radiomics Distance v1 (frd-score): log squared Fréchet distance of radiomics features.",
    ),
    "kid": MetricSpec(
        "radiomics",
        "lower",
        "",
        "Unbiased MMD^2, cubic polynomial kernel (KID), in standardised per-scan radiomics features.",
    ),
    "mmd_rbf": MetricSpec(
        "radiomics",
        "lower",
        "",
        "Unbiased MMD^2, Gaussian kernel (median bandwidth), in standardised per-scan radiomics features.",
    ),
    "precision": MetricSpec(
        "radiomics",
        "higher",
        "",
        "Fraction of generated scans inside the real k-NN manifold (fidelity), radiomics feature space.",
    ),
    "recall": MetricSpec(
        "radiomics",
        "higher",
        "",
        "Fraction of real scans inside the generated k-NN manifold (diversity), radiomics feature space.",
    ),
    "density": MetricSpec(
        "radiomics",
        "higher",
        "",
        "How many real k-NN balls contain each generated scan, / k (about 1 for matching sets).",
    ),
    "coverage": MetricSpec(
        "radiomics", "higher", "", "Fraction of real scans whose k-NN ball contains at least one generated scan."
    ),
    "fid_inception_2d": MetricSpec(
        "inception",
        "lower",
        "",
        "FID of InceptionV3 pool features of axial, coronal and sagittal slices (needs local weights).",
    ),
    "fid_radimagenet_axial": MetricSpec(
        "radimagenet",
        "lower",
        "",
        "FID of RadImageNet ResNet-50 features of axial slices (MAISI's 2D FID; needs local weights).",
    ),
    "fid_radimagenet_coronal": MetricSpec(
        "radimagenet", "lower", "", "FID of RadImageNet ResNet-50 features of coronal slices (needs local weights)."
    ),
    "fid_radimagenet_sagittal": MetricSpec(
        "radimagenet", "lower", "", "FID of RadImageNet ResNet-50 features of sagittal slices (needs local weights)."
    ),
    "fid_radimagenet_2d": MetricSpec(
        "radimagenet",
        "lower",
        "",
        "Mean of the axial, coronal and sagittal RadImageNet FIDs, as MAISI reports it (needs local weights).",
    ),
    "memorization": MetricSpec(
        "similarity",
        "lower",
        "fraction",
        "Fraction of generated scans closer (1 - SSIM) to a training scan than 95% of held-out real scans are.",
    ),
}

FAMILIES: dict[str, list[str]] = {}
for _name, _spec in METRICS.items():
    FAMILIES.setdefault(_spec.family, []).append(_name)


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
