"""One phantom volume (:func:`make_phantom`: anatomy, texture, blur, noise) and a cohort of them
written as NIfTI files with a manifest (:func:`write_cohort`). Part of :mod:`ctdiff.data.phantom`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import ndimage

from ctdiff.data.phantom.anatomy import LABELS, _Canvas, _render, _texture, draw_anatomy
from ctdiff.data.phantom.noise import NOISE_METHODS, correlated_noise, simulated_fbp_noise
from ctdiff.data.volume import Volume

DEFAULT_SHAPE = (128, 128, 32)
DEFAULT_FOV_MM = (420.0, 420.0, 160.0)


# ----------------------------------------------------------------------------------- public
def geometry(
    shape=DEFAULT_SHAPE, fov_mm=DEFAULT_FOV_MM, center_mm=(0.0, 0.0, 0.0)
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Voxel spacing (fov / shape) and the origin (centre of voxel 0) of a volume centred on ``center_mm``."""
    if len(shape) != 3 or any(int(n) < 2 for n in shape):
        raise ValueError(f"shape must be three integers >= 2, got {tuple(shape)}")
    if len(fov_mm) != 3 or any(float(f) <= 0 for f in fov_mm):
        raise ValueError(f"fov_mm must be three positive numbers, got {tuple(fov_mm)}")
    spacing = tuple(float(f) / int(n) for f, n in zip(fov_mm, shape))
    if len(center_mm) != 3:
        raise ValueError(f"center_mm must be three numbers, got {tuple(center_mm)}")
    origin = tuple(float(c) - (int(n) - 1) / 2.0 * sp for n, sp, c in zip(shape, spacing, center_mm))
    return spacing, origin


def make_phantom(
    shape=DEFAULT_SHAPE,
    seed: int = 0,
    noise_hu: float = 20.0,
    fov_mm=DEFAULT_FOV_MM,
    noise_method: str = "correlated",
    *,
    blur_voxels: float = 0.5,
    table: bool = True,
    return_labels: bool = False,
    fbp_angles: int | None = None,
    center_mm=(0.0, 0.0, 0.0),
):
    """One synthetic pelvic CT volume.

    Returns ``(volume, params)``, or ``(volume, params, labels)`` with ``return_labels=True``
    (uint8 label map of the tissue classes in :data:`LABELS`, before blur and noise). ``volume``
    holds float32 HU in RAS+ with spacing ``fov_mm / shape``; ``params`` is the JSON-able record of
    the case's random anatomy and of the rendering options.

    The seed fixes everything. Anatomy, texture and noise use three independent streams spawned
    from it (``numpy.random.SeedSequence``), so changing ``noise_hu``/``noise_method``/``shape``
    keeps the anatomy, and ``noise_method="none"`` gives the noise-free image of the same case.
    ``center_mm`` moves the field of view (default: centred on the pelvis), e.g. to render one
    femoral head at a fine spacing.
    """
    if noise_method not in NOISE_METHODS:
        raise ValueError(f"noise_method must be one of {NOISE_METHODS}, got {noise_method!r}")
    if noise_hu < 0 or not math.isfinite(noise_hu):
        raise ValueError(f"noise_hu must be a finite number >= 0, got {noise_hu}")
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    shape = tuple(int(n) for n in shape)
    spacing, origin = geometry(shape, fov_mm, center_mm)
    anatomy_ss, texture_ss, noise_ss = np.random.SeedSequence(int(seed)).spawn(3)
    params = draw_anatomy(np.random.default_rng(anatomy_ss))

    shift = params["shift_mm"]
    canvas = _Canvas(shape, spacing, (origin[0] - shift[0], origin[1] - shift[1], origin[2]))
    _render(params, canvas, table)
    hu = canvas.hu
    hu += _texture(canvas.labels, spacing, np.random.default_rng(texture_ss))
    if blur_voxels > 0:
        hu = ndimage.gaussian_filter(hu, sigma=float(blur_voxels), mode="nearest")

    info = {"noise_method": noise_method, "noise_hu": float(noise_hu)}
    noise_rng = np.random.default_rng(noise_ss)
    if noise_method == "correlated" and noise_hu > 0:
        hu = hu + correlated_noise(shape, spacing, noise_hu, noise_rng)
    elif noise_method == "fbp" and noise_hu > 0:
        noise, photons = simulated_fbp_noise(hu, spacing, noise_hu, noise_rng, n_angles=fbp_angles)
        hu = hu + noise
        info["photons_per_ray"] = round(float(photons), 1)

    params = {
        "seed": int(seed),
        "shape": list(shape),
        "fov_mm": [float(f) for f in fov_mm],
        "center_mm": [float(c) for c in center_mm],
        "spacing_mm": [round(sp, 6) for sp in spacing],
        "table": bool(table),
        "blur_voxels": float(blur_voxels),
        **info,
        "anatomy": params,
    }
    meta = {
        "source_kind": "phantom",
        "modality": "CT",
        "synthetic": True,
        "generator": "ctdiff.data.phantom",
        "seed": int(seed),
        "original_shape": list(shape),
        "original_spacing": [round(sp, 6) for sp in spacing],
    }
    volume = Volume.from_spacing(hu.astype(np.float32), spacing, origin, meta)
    if return_labels:
        return volume, params, canvas.labels
    return volume, params


def case_seed(seed: int, index: int) -> int:
    """The seed of case ``index`` of a cohort: deterministic in (seed, index), via SeedSequence."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, dtype=np.uint32)[0])


def write_cohort(
    out_dir: str | os.PathLike,
    n: int = 28,
    shape=DEFAULT_SHAPE,
    seed: int = 0,
    noise_hu: float = 20.0,
    force: bool = False,
    progress: bool | Callable[[int, int], None] = True,
    *,
    fov_mm=DEFAULT_FOV_MM,
    noise_method: str = "correlated",
    table: bool = True,
) -> Path:
    """Write ``n`` phantoms as ``case_000.nii.gz``... (int16 HU) plus ``manifest.json`` into ``out_dir``.

    Refuses a non-empty ``out_dir`` unless ``force``. ``progress`` is True (tqdm bar), False, or a
    callback ``f(done, total)``. Every file is written atomically; the manifest last. Returns the
    manifest path.
    """
    from ctdiff.outputs import staged_output

    if int(n) < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    # the whole cohort appears under ``out_dir`` in one rename, manifest included, or not at all
    with staged_output(out_dir, command="phantom", force=force) as tmp:
        _write_cohort_into(tmp, n, shape, seed, noise_hu, progress, fov_mm, noise_method, table)
    return Path(out_dir) / "manifest.json"


def _write_cohort_into(out: Path, n, shape, seed, noise_hu, progress, fov_mm, noise_method, table) -> Path:
    from ctdiff.atomic import write_json
    from ctdiff.data.io import write_nifti
    from ctdiff.progress import counted

    width = max(3, len(str(int(n) - 1)))
    cases = []
    for i in counted(range(int(n)), progress, "phantoms", "case"):
        cs = case_seed(seed, i)
        volume, params = make_phantom(shape, cs, noise_hu, fov_mm, noise_method, table=table)
        name = f"case_{i:0{width}d}.nii.gz"
        write_nifti(volume, out / name, force=False)
        cases.append(
            {
                "file": name,
                "seed": cs,
                "shape": list(volume.shape),
                "spacing": [round(sp, 6) for sp in volume.spacing],
                "anatomy": params["anatomy"],
                **({"photons_per_ray": params["photons_per_ray"]} if "photons_per_ray" in params else {}),
            }
        )
    spacing, _ = geometry(shape, fov_mm)
    manifest = {
        "kind": "ctdiff phantom cohort",
        "synthetic": True,
        "note": "Synthetic pelvic CT phantoms generated by ctdiff.data.phantom; not patient data.",
        "generator": "ctdiff.data.phantom.make_phantom",
        "seed": int(seed),
        "n": int(n),
        "shape": [int(v) for v in shape],
        "fov_mm": [float(f) for f in fov_mm],
        "spacing": [round(sp, 6) for sp in spacing],
        "noise_hu": float(noise_hu),
        "noise_method": noise_method,
        "table": bool(table),
        "labels": LABELS,
        "cases": cases,
    }
    return write_json(out / "manifest.json", manifest, force=False)
