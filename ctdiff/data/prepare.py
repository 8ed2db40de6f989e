"""Convert a folder of CT (NIfTI, DICOM series, npy/npz) into a standard NIfTI dataset in HU.

``python -m ctdiff prepare --src DIR --out DIR`` walks ``--src`` (``ctdiff.data.io.find_cases``), reads
each case in Hounsfield units, optionally crops it to the body, resamples it to a spacing or
resizes it to a shape, clips HU, and writes ``<case>.nii.gz`` (int16 HU) plus ``manifest.json``.
Bad cases are skipped and listed with the reason; they only fail the command with ``--strict``.
No DICOM patient identifier reaches the output: the manifest holds relative source paths,
geometry and HU statistics only.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from ctdiff import validate
from ctdiff.atomic import write_json
from ctdiff.data.body import BODY_THRESHOLD_HU, body_mask, bounding_box
from ctdiff.data.hu import AIR_HU
from ctdiff.data.io import ASSUME_HU_CHOICES, case_name, find_cases, read_volume, write_nifti
from ctdiff.data.resample import crop_volume, resample_to_spacing, resize_to_shape
from ctdiff.data.volume import Volume
from ctdiff.errors import ConfigError, CTDiffError, InputError
from ctdiff.outputs import check_output, staged_output
from ctdiff.progress import Progress, counted

# int16 CT convention: -1024 is the scanner's air floor, 3071 the 12-bit top (dense bone/metal).
DEFAULT_CLIP = (-1024.0, 3071.0)
DEFAULT_CROP_MARGIN_MM = 10.0
PERCENTILES = (1, 50, 99)
MANIFEST = "manifest.json"


def _positive_triple(values, what: str) -> tuple[float, float, float] | None:
    if values is None:
        return None
    vals = tuple(float(v) for v in values)
    if len(vals) != 3 or any(not math.isfinite(v) or v <= 0 for v in vals):
        raise ConfigError(f"{what} needs three positive numbers, got {list(values)}")
    return vals


def crop_to_body(volume: Volume, margin_mm: float = DEFAULT_CROP_MARGIN_MM) -> tuple[Volume, list[list[int]]]:
    """Crop to the body's bounding box (+ ``margin_mm`` in-plane) and remove objects outside it.

    The body is :func:`ctdiff.data.body.body_mask` (threshold, in-plane opening that detaches a thin
    table, largest component). Inside the box, voxels above the body threshold that are neither
    body nor touching it in-plane (the table, cushions, clothing), plus a one-voxel rim around
    them (their partial-volume edge), become air (-1000 HU); the air noise elsewhere is kept.
    Returns the cropped volume and the box as ``[[start, stop], ...]`` voxel indices of the input.
    """
    mask = body_mask(volume.array)
    if not mask.any():
        raise InputError(f"no body found (no voxels above {BODY_THRESHOLD_HU:g} HU); cannot crop to the body")
    sx, sy, _ = volume.spacing
    box = bounding_box(mask, int(math.ceil(margin_mm / min(sx, sy))))
    cropped = crop_volume(volume, box)
    array = cropped.array
    in_plane = np.ones((3, 3, 1), dtype=bool)
    near_body = ndimage.binary_dilation(mask[box], structure=in_plane)
    other = (array > BODY_THRESHOLD_HU) & ~near_body
    if other.any():
        other = ndimage.binary_dilation(other, structure=in_plane) & ~near_body
        array[other] = AIR_HU
    return cropped, [[s.start, s.stop] for s in box]


def process_volume(
    volume: Volume,
    *,
    spacing: Sequence[float] | None = None,
    shape: Sequence[int] | None = None,
    crop_body: bool = False,
    crop_margin_mm: float = DEFAULT_CROP_MARGIN_MM,
    clip: Sequence[float] = DEFAULT_CLIP,
) -> tuple[Volume, dict[str, Any]]:
    """Clip HU, optionally crop to the body, then resample to ``spacing`` or resize to ``shape``.

    Returns the new volume and what was done (crop box) for the manifest.
    """
    info: dict[str, Any] = {}
    lo, hi = float(clip[0]), float(clip[1])
    out = volume.with_array(np.clip(volume.array, lo, hi))
    if crop_body:
        out, info["crop_box"] = crop_to_body(out, crop_margin_mm)
    if spacing is not None:
        out = resample_to_spacing(out, spacing)
    elif shape is not None:
        out = resize_to_shape(out, shape)
    # interpolation cannot leave [lo, hi], but keep the promise exact after rounding/blur
    out = out.with_array(np.clip(out.array, lo, hi))
    return out, info


def _unique_names(cases: list[Path]) -> list[str]:
    """Output names from ``case_name``; a repeated name gets ``_2``, ``_3``, ... appended."""
    used: set[str] = set()
    names = []
    for path in cases:
        base = case_name(path) or "case"
        name, k = base, 2
        while name in used:
            name = f"{base}_{k}"
            k += 1
        used.add(name)
        names.append(name)
    return names


def _relative(path: Path, root: Path) -> str:
    try:
        rel = path.resolve().relative_to(root.resolve())
    except ValueError:
        return path.name
    return rel.as_posix() if str(rel) != "." else path.name


def prepare_dataset(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    spacing: Sequence[float] | None = None,
    shape: Sequence[int] | None = None,
    crop_body: bool = False,
    crop_margin_mm: float = DEFAULT_CROP_MARGIN_MM,
    clip: Sequence[float] = DEFAULT_CLIP,
    series: str | None = None,
    allow_non_ct: bool = False,
    resample_irregular: bool = False,
    npy_spacing: Sequence[float] | None = None,
    assume_hu: str | None = None,
    force: bool = False,
    progress: Progress = True,
) -> dict[str, Any]:
    """Prepare every case below ``src`` into ``out``; return the manifest (also written to disk).

    Cases that cannot be read or processed are skipped and listed in ``manifest["skipped"]`` with
    the reason. Raises :class:`InputError` when ``src`` holds no case or no case could be prepared
    (the manifest with the reasons is written first), :class:`ConfigError` for bad options and
    :class:`OverwriteError` for a non-empty ``out`` without ``force``.
    ``progress``: True (tqdm bar), False, or a callback ``f(done, total)``.
    """
    src, out = Path(src), Path(out)
    spacing = _positive_triple(spacing, "--spacing")
    npy_spacing = _positive_triple(npy_spacing, "--npy-spacing")
    if spacing is not None and shape is not None:
        raise ConfigError("give --spacing or --shape, not both")
    if shape is not None:
        shape = tuple(int(n) for n in shape)
        if len(shape) != 3 or any(n < 1 for n in shape):
            raise ConfigError(f"--shape needs three positive integers, got {list(shape)}")
    clip = tuple(float(c) for c in clip)
    if len(clip) != 2 or not all(map(math.isfinite, clip)) or clip[0] >= clip[1]:
        raise ConfigError(f"--clip needs LO < HI, got {list(clip)}")
    crop_margin_mm = validate.number(crop_margin_mm, "--crop-margin", low=0, high=1000)
    if shape is not None:
        validate.fits_in_memory(16.0 * math.prod(shape), f"a {shape[0]}x{shape[1]}x{shape[2]} volume", "--shape")
    if not src.exists():
        raise InputError("no such folder", src)
    # --out must not be, hold or lie inside --src: --force would delete the source, and the walk
    # below would read the outputs back; checked before anything is written or deleted
    check_output(out, command="prepare", force=force, inputs={"--src": src})
    cases = find_cases(src)
    if not cases:
        raise InputError("holds no NIfTI, .npy/.npz or DICOM volumes", src)
    # the validated options, once: how each case is read (read_volume's keywords) and processed
    read = dict(
        series=series,
        allow_non_ct=allow_non_ct,
        resample_irregular=resample_irregular,
        spacing=npy_spacing,
        assume_hu=assume_hu,
    )
    process = dict(spacing=spacing, shape=shape, crop_body=crop_body, crop_margin_mm=crop_margin_mm, clip=clip)
    with staged_output(out, command="prepare", force=force, inputs={"--src": src}) as tmp:
        manifest = _prepare_into(tmp, src, cases, read, process, progress)
    if not manifest["cases"]:
        skipped = manifest["skipped"]
        reasons = "; ".join(f"{s['source']}: {s['reason']}" for s in skipped[:5])
        raise InputError(f"no case could be prepared ({len(skipped)} skipped: {reasons})", src)
    return manifest


def _prepare_into(
    out: Path, src: Path, cases: list[Path], read: dict[str, Any], process: dict[str, Any], progress: Progress
) -> dict[str, Any]:
    """Read every case with ``read_volume(**read)``, ``process_volume(**process)`` it, write it and the manifest."""
    entries: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for path, name in counted(list(zip(cases, _unique_names(cases))), progress, "prepare", "case"):
        source = _relative(path, src)
        try:
            volume = read_volume(path, **read)
            result, info = process_volume(volume, **process)
            file = f"{name}.nii.gz"
            write_nifti(result, out / file, force=False)
            p = np.percentile(result.array, PERCENTILES)
            entries.append(
                {
                    "file": file,
                    "source": source,
                    "source_kind": volume.meta.get("source_kind", ""),
                    "modality": volume.meta.get("modality", ""),
                    "original_shape": [int(n) for n in volume.meta.get("original_shape", volume.shape)],
                    "original_spacing": [
                        round(float(s), 6) for s in volume.meta.get("original_spacing", volume.spacing)
                    ],
                    "read_shape": list(volume.shape),
                    "read_spacing": [round(s, 6) for s in volume.spacing],
                    **info,
                    "final_shape": list(result.shape),
                    "final_spacing": [round(s, 6) for s in result.spacing],
                    "hu_percentiles": {f"p{q}": round(float(v), 2) for q, v in zip(PERCENTILES, p)},
                    "hu_clipped_fraction": round(float(np.mean(np.isin(result.array, process["clip"]))), 6),
                    **({"resampled_slices": True} if volume.meta.get("resampled_slices") else {}),
                }
            )
        except CTDiffError as exc:
            skipped.append({"source": source, "reason": exc.problem})
        except (ValueError, OSError, MemoryError, ArithmeticError, np.linalg.LinAlgError) as exc:
            # one odd case (e.g. a singular affine met while resampling) must not end a batch over
            # hundreds; the type names the problem
            skipped.append(
                {"source": source, "reason": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
            )

    manifest: dict[str, Any] = {
        "kind": "ctdiff prepared dataset",
        "created_by": "python -m ctdiff prepare",
        "n_cases": len(entries),
        "n_skipped": len(skipped),
        "options": {
            "spacing": list(process["spacing"]) if process["spacing"] else None,
            "shape": list(process["shape"]) if process["shape"] else None,
            "crop_body": bool(process["crop_body"]),
            "crop_margin_mm": float(process["crop_margin_mm"]),
            "clip": list(process["clip"]),
            "series_selected": read["series"] is not None,  # the UID itself is an identifier: not stored
            "allow_non_ct": bool(read["allow_non_ct"]),
            "resample_irregular": bool(read["resample_irregular"]),
            "npy_spacing": list(read["spacing"]) if read["spacing"] else None,
            **({"assume_hu": read["assume_hu"]} if read["assume_hu"] else {}),
        },
        "cases": entries,
        "skipped": skipped,
    }
    if _source_is_synthetic(src):
        manifest["synthetic"] = True
    write_json(out / MANIFEST, manifest, force=True)  # the completion mark: written last
    return manifest


def _source_is_synthetic(src: Path) -> bool:
    """True when ``src`` is a phantom cohort (its manifest says ``"synthetic": true``)."""
    try:
        return bool(json.loads((src / MANIFEST).read_text()).get("synthetic", False))
    except (OSError, ValueError, AttributeError):
        return False


# ------------------------------------------------------------------------------------- CLI
EXAMPLES = """\
  python -m ctdiff phantom --out /tmp/d --n 4
  python -m ctdiff prepare --src /tmp/d --out /tmp/p --shape 64 64 32
  python -m ctdiff prepare --src scans/ --out data/prostate --shape 256 256 26 --crop-body
  python -m ctdiff prepare --src dicom/ --out data/iso --spacing 1 1 2.5 --clip -1000 2000 --strict
  python -m ctdiff prepare --src study/ --out data/one --series 1.2.840.113619.2.55.3.1234
  python -m ctdiff prepare --src arrays/ --out data/np --npy-spacing 0.8 0.8 3 --force
"""


def add_arguments(parser) -> None:
    parser.add_argument("--src", required=True, help="folder of NIfTI files, DICOM series folders and/or .npy/.npz")
    parser.add_argument("--out", required=True, help="output folder (must be empty or absent unless --force)")
    geo = parser.add_mutually_exclusive_group()
    geo.add_argument(
        "--spacing",
        type=float,
        nargs=3,
        metavar=("SX", "SY", "SZ"),
        help="resample to this voxel spacing in mm (trilinear, anti-aliased)",
    )
    geo.add_argument(
        "--shape",
        type=int,
        nargs=3,
        metavar=("X", "Y", "Z"),
        help="resize to this many voxels over the same extent (thesis: 256 256 26)",
    )
    parser.add_argument(
        "--crop-body",
        action="store_true",
        help="crop to the body's bounding box and replace objects outside the body (table) by air",
    )
    parser.add_argument(
        "--crop-margin",
        type=float,
        default=DEFAULT_CROP_MARGIN_MM,
        metavar="MM",
        help=f"in-plane margin kept around the body with --crop-body (default {DEFAULT_CROP_MARGIN_MM:g} mm)",
    )
    parser.add_argument(
        "--clip",
        type=float,
        nargs=2,
        default=list(DEFAULT_CLIP),
        metavar=("LO", "HI"),
        help="HU clipping range (default -1024 3071)",
    )
    parser.add_argument("--series", metavar="UID", help="SeriesInstanceUID to read from folders holding several series")
    parser.add_argument("--allow-non-ct", action="store_true", help="also read DICOM whose Modality is not CT")
    parser.add_argument(
        "--resample-irregular",
        action="store_true",
        help="resample DICOM series with irregular slice spacing instead of skipping them",
    )
    parser.add_argument(
        "--npy-spacing",
        type=float,
        nargs=3,
        metavar=("SX", "SY", "SZ"),
        help="voxel spacing (mm) of .npy files, which store none",
    )
    parser.add_argument(
        "--assume-hu",
        choices=tuple(ASSUME_HU_CHOICES),
        help="DICOM CT without RescaleSlope/RescaleIntercept (or slope 0) is skipped unless you say what "
        "its stored values are: identity (already HU) or offset-1024 (HU + 1024)",
    )
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when any case was skipped")
    parser.add_argument("--force", action="store_true", help="empty and reuse a non-empty output folder")


def run(args) -> int:
    import sys

    manifest = prepare_dataset(
        args.src,
        args.out,
        spacing=args.spacing,
        shape=args.shape,
        crop_body=args.crop_body,
        crop_margin_mm=args.crop_margin,
        clip=args.clip,
        series=args.series,
        allow_non_ct=args.allow_non_ct,
        resample_irregular=args.resample_irregular,
        npy_spacing=args.npy_spacing,
        assume_hu=args.assume_hu,
        force=args.force,
        progress=True,
    )
    print(f"prepared {manifest['n_cases']} case(s) into {args.out} (manifest: {Path(args.out) / MANIFEST})")
    skipped = manifest["skipped"]
    if skipped:
        print(f"skipped {len(skipped)} case(s):", file=sys.stderr)
        for s in skipped:
            print(f"  {s['source']}: {s['reason']}", file=sys.stderr)
        if args.strict:
            return 1
    return 0
