"""Synthetic pelvic CT phantoms: the built-in demo cohort (``python -m ctdiff phantom``).

There is no downloadable CT on the machines this project runs on, so ctdiff ships a generator of
*synthetic* male-pelvis CT volumes. They are built from smooth implicit shapes (ellipsoids,
elliptic cylinders, tubes), not from patient data, and no one should mistake them for real scans.
They are good enough to exercise the rest of ctdiff (training, metrics, app, review) on something
CT-like: plausible Hounsfield units per tissue, partial-volume edges, anatomical texture and CT
noise whose power spectrum peaks at mid frequencies like filtered back-projection (FBP) noise.

Anatomy, each part with random per-case variation (recorded in the returned parameter dict):
body outline with skin and subcutaneous fat, muscle, pelvic fat, psoas muscles, iliac/femoral
vessels, pelvic bones (ilium, acetabulum, pubis, ischium, sacrum, coccyx) and femora (head, neck,
greater trochanter, shaft), each with a cortical shell and trabecular interior, a bladder with
variable filling, prostate and seminal vesicles of variable size and position, a rectum with
gas pockets, a few bowel loops (some with air-fluid levels) and the scanner table.

Geometry: world millimetres in RAS+ as nibabel defines it (+x towards the patient's Right, +y
Anterior, +z Superior), the field of view centred on the origin by default;
``spacing = fov_mm / shape``, so a smaller shape renders the same anatomy at a coarser resolution. The patient lies supine: the back is
towards -y, the table below it.

Rendering: every shape has an (approximate) signed distance function in mm; a tissue is painted
with coverage ``clip(0.5 - d / h, 0, 1)`` (``h`` the voxel size), which anti-aliases edges into
partial-volume voxels at any resolution, followed by a slight Gaussian blur (scanner PSF).

Modules: :mod:`.anatomy` (shapes, random anatomy, rendering, texture), :mod:`.noise` (CT noise),
:mod:`.cohort` (one volume, a cohort on disk), :mod:`.cli` (the command). This package re-exports
their public names, so ``from ctdiff.data.phantom import make_phantom`` and the command module
``ctdiff.data.phantom`` keep working.
"""

from __future__ import annotations

from ctdiff.data.phantom.anatomy import (
    LABELS,
    MAX_BODY_SEMI_LR_MM,
    MUSCLE_TEXTURE_SD,
    TRABECULAR_HU,
    draw_anatomy,
)
from ctdiff.data.phantom.cli import EXAMPLES, add_arguments, run
from ctdiff.data.phantom.cohort import DEFAULT_FOV_MM, DEFAULT_SHAPE, case_seed, geometry, make_phantom, write_cohort
from ctdiff.data.phantom.noise import (
    MU_WATER_PER_MM,
    NOISE_METHODS,
    NOISE_WINDOW_POWER,
    REAL_CT_NOISE_HU_AT_0703MM,
    correlated_noise,
    fbp_noise_filter,
    simulated_fbp_noise,
)

__all__ = [
    "DEFAULT_FOV_MM",
    "DEFAULT_SHAPE",
    "EXAMPLES",
    "LABELS",
    "MAX_BODY_SEMI_LR_MM",
    "MU_WATER_PER_MM",
    "MUSCLE_TEXTURE_SD",
    "NOISE_METHODS",
    "NOISE_WINDOW_POWER",
    "REAL_CT_NOISE_HU_AT_0703MM",
    "TRABECULAR_HU",
    "add_arguments",
    "case_seed",
    "correlated_noise",
    "draw_anatomy",
    "fbp_noise_filter",
    "geometry",
    "make_phantom",
    "run",
    "simulated_fbp_noise",
    "write_cohort",
]
