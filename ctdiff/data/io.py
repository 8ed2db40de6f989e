"""Reading and writing CT volumes in Hounsfield units.

``read_volume`` accepts NIfTI (``.nii``/``.nii.gz``), a DICOM series folder, a single (multi-frame)
DICOM file, and ``.npy``/``.npz`` arrays. Every reader returns a :class:`~ctdiff.data.volume.Volume` in
canonical RAS+ voxel order with float32 HU. Bad input raises :class:`~ctdiff.errors.InputError`
naming the file and the problem. DICOM patient identifiers are never copied into the volume's
metadata or into an error message.
"""

from __future__ import annotations

import gzip
import os
import zipfile
import zlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from ctdiff.atomic import atomic_path
from ctdiff.data.volume import Volume
from ctdiff.errors import InputError

# DICOM patient coordinates are LPS+, NIfTI/nibabel world coordinates RAS+: flip x and y.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ARRAY_SUFFIXES = (".npy", ".npz")
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
INT16_MIN, INT16_MAX = -32768, 32767

# Relative tolerance for "regular" slice spacing: gantry jitter in real scanners is well below 1 %.
SPACING_TOLERANCE = 0.01


def is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def is_array_file(path: Path) -> bool:
    return path.suffix.lower() in ARRAY_SUFFIXES


def looks_like_dicom(path: Path) -> bool:
    """True for a file with the DICOM preamble ("DICM" at byte 128) or a DICOM file suffix."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def case_name(path: str | os.PathLike) -> str:
    """A file-system-safe case name: the file name without volume suffixes, or the folder name."""
    p = Path(path)
    name = p.name
    for suffix in NIFTI_SUFFIXES[::-1] + ARRAY_SUFFIXES + DICOM_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


# ----------------------------------------------------------------------------------------- checks
def _check_array(array: np.ndarray, path: Path, min_slices: int = 1) -> np.ndarray:
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        raise InputError(f"is 2D (shape {tuple(array.shape)}); ctdiff needs a 3D volume (x, y, z)", path)
    if array.ndim != 3:
        raise InputError(f"is {array.ndim}D (shape {tuple(array.shape)}); ctdiff needs a 3D volume (x, y, z)", path)
    if min(array.shape) < 1 or array.shape[2] < min_slices:
        raise InputError(f"has shape {tuple(array.shape)}; at least {min_slices} slice(s) needed", path)
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise InputError(f"holds {array.dtype} data, not real numbers", path)
    finite = np.isfinite(array)
    if not finite.all():
        bad = int((~finite).sum())
        raise InputError(f"contains {bad} NaN/inf voxel(s); fix or mask them before use", path)
    return array


def _canonical(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorder/flip voxel axes to the closest RAS+ orientation, as nibabel.as_closest_canonical does."""
    ornt = nib.orientations.io_orientation(affine)
    if np.array_equal(ornt, [[0, 1], [1, 1], [2, 1]]):
        return array, affine
    new_array = nib.orientations.apply_orientation(array, ornt)
    new_affine = affine @ nib.orientations.inv_ornt_aff(ornt, array.shape)
    return np.ascontiguousarray(new_array), new_affine


def _spacing_of(affine: np.ndarray) -> list[float]:
    return [round(float(s), 6) for s in np.linalg.norm(affine[:3, :3], axis=0)]


# ------------------------------------------------------------------------------------------ NIfTI
def _gzip_problem(path: Path) -> str | None:
    """Why a gzip file cannot be fully decompressed, or None if it can (or is not gzip)."""
    with open(path, "rb") as fh:
        if fh.read(2) != b"\x1f\x8b":
            return None
    try:
        with gzip.open(path, "rb") as fh:
            while fh.read(1 << 24):
                pass
    except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


# refuse a header that claims more voxels than this (before allocating): 2**31 float32 = 8 GiB
MAX_VOXELS = 2**31


def _header_size(img, path: Path) -> tuple[int, int]:
    """(voxel count, bytes of image data) the NIfTI header claims; InputError for absurd claims."""
    shape = tuple(int(n) for n in img.shape)
    if any(n < 0 for n in shape):
        raise InputError(f"NIfTI header claims a negative size {shape}", path)
    n_voxels = 1
    for n in shape:
        n_voxels *= n
    if n_voxels > MAX_VOXELS:
        raise InputError(
            f"NIfTI header claims {shape} = {n_voxels:.3g} voxels, more than ctdiff reads "
            f"({MAX_VOXELS:.3g}); the header is corrupt or the image is not one CT volume",
            path,
        )
    from ctdiff.errors import ConfigError
    from ctdiff.validate import fits_in_memory

    try:
        fits_in_memory(8.0 * n_voxels, f"a {shape} NIfTI volume", "input")
    except ConfigError as exc:
        raise InputError(f"header claims a size that does not fit in memory ({exc})", path) from None
    itemsize = np.dtype(img.get_data_dtype()).itemsize
    offset = getattr(img.dataobj, "offset", None)  # where the proxy reads from (the header may say 0)
    if offset is None:
        offset = int(img.header.get_data_offset())
    return n_voxels, n_voxels * itemsize + int(offset)


def _verified_gzip_bytes(path: Path, expected: int) -> bytes:
    """Decompress a whole .nii.gz with Python's gzip, which checks the CRC-32 and length trailer.

    nibabel stops reading once it has the voxels it needs, so a flipped byte inside the data (a
    CRC failure) would otherwise read as a few wrong voxels. Reading stops early (and fails) when the
    stream holds much more than the header promised (a gzip bomb)."""
    limit = expected + (1 << 20)  # NIfTI extensions and padding: allow some slack
    chunks, total = [], 0
    try:
        with gzip.open(path, "rb") as fh:
            while True:
                chunk = fh.read(1 << 22)
                if not chunk:
                    break
                total += len(chunk)
                if total > limit:
                    raise InputError(f"compressed NIfTI holds more data than its header says ({expected} bytes)", path)
                chunks.append(chunk)
    except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
        raise InputError(f"truncated or corrupt compressed NIfTI ({type(exc).__name__}: {exc})", path) from None
    data = b"".join(chunks)
    if len(data) < expected:
        raise InputError(f"truncated NIfTI: {len(data)} of the {expected} bytes its header promises", path)
    return data


def _read_nifti(path: Path) -> Volume:
    try:
        img = nib.load(str(path))
        if len(img.shape) not in (3, 4):
            _check_array(np.empty(img.shape, dtype=np.float32), path)  # raises the 2D/4D message
        _, n_bytes = _header_size(img, path)
        if path.name.lower().endswith(".gz"):
            # verify the whole stream (CRC, length), then parse the verified bytes: one decompression
            img = type(img).from_bytes(_verified_gzip_bytes(path, n_bytes))
        elif path.stat().st_size < n_bytes:
            raise InputError(f"truncated NIfTI: {path.stat().st_size} of the {n_bytes} bytes its header promises", path)
        # get_fdata applies scl_slope/scl_inter and reads everything, so truncated files fail here
        array = img.get_fdata(dtype=np.float32)
    except InputError:
        raise
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InputError(f"truncated or corrupt compressed NIfTI ({type(exc).__name__}: {exc})", path) from None
    except MemoryError:
        raise InputError("does not fit in memory (header claims a huge image?)", path) from None
    except (
        nib.filebasedimages.ImageFileError,
        OSError,
        ValueError,
        TypeError,
        OverflowError,
        nib.spatialimages.HeaderDataError,
    ) as exc:
        gzip_problem = _gzip_problem(path)
        if gzip_problem:
            raise InputError(f"truncated or corrupt compressed NIfTI ({gzip_problem})", path) from None
        if isinstance(exc, nib.filebasedimages.ImageFileError):
            raise InputError("not a readable NIfTI image (no valid NIfTI header)", path) from None
        raise InputError(
            f"cannot read NIfTI ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})", path
        ) from None
    array = _check_array(array, path)
    affine = img.affine if img.affine is not None else np.eye(4)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise InputError("has an invalid (singular or non-finite) affine", path)
    original_shape = list(array.shape)
    original_spacing = _spacing_of(affine)
    array, affine = _canonical(array, affine)
    meta = {
        "source_kind": "nifti",
        "modality": "CT",
        "original_shape": original_shape,
        "original_spacing": original_spacing,
        "original_orientation": "".join(nib.aff2axcodes(img.affine)),
    }
    return Volume(array.astype(np.float32), affine, meta)


def write_nifti(volume: Volume, path: str | os.PathLike, force: bool = True) -> Path:
    """Write ``volume`` as an int16 HU NIfTI with its affine, atomically.

    HU are rounded to the nearest integer and clipped to the int16 range. With ``force=False`` an
    existing file raises :class:`~ctdiff.errors.OverwriteError`.
    """
    out = Path(path)
    if not is_nifti(out):
        raise InputError("output must end in .nii or .nii.gz", out)
    data = to_int16_hu(volume.array)
    img = nib.Nifti1Image(data, volume.affine)
    img.set_qform(volume.affine, code=1)
    img.set_sform(volume.affine, code=1)
    img.header.set_xyzt_units(xyz="mm")
    img.header["descrip"] = b"ctdiff HU"
    img.header.set_slope_inter(1.0, 0.0)
    with atomic_path(out, force=force) as tmp:
        nib.save(img, str(tmp))
    return out


# ------------------------------------------------------------------------------------ npy / npz
def _check_npy_header(path: Path) -> None:
    """Refuse a .npy whose header claims more voxels than ctdiff reads, before numpy allocates them."""
    try:
        with open(path, "rb") as fh:
            major, _minor = np.lib.format.read_magic(fh)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(fh)
    except (ValueError, OSError, EOFError, SyntaxError, TypeError):
        return  # not a valid header: np.load names the problem
    count = 1
    for n in shape:
        count *= int(n)
    if count > MAX_VOXELS or count * np.dtype(dtype).itemsize > path.stat().st_size:
        raise InputError(f"header claims shape {tuple(shape)}, more data than the file holds or ctdiff reads", path)


def _read_array_file(path: Path, spacing: Sequence[float] | None) -> Volume:
    try:
        if path.suffix.lower() == ".npy":
            _check_npy_header(path)
            array = np.load(path, allow_pickle=False)
            affine = None
        else:
            with np.load(path, allow_pickle=False) as npz:
                key = next((k for k in ("array", "volume", "image", "arr_0") if k in npz.files), None)
                if key is None:
                    raise InputError(f"npz holds no 'array'/'volume'/'image' entry (found {npz.files})", path)
                array = npz[key]
                affine = npz["affine"] if "affine" in npz.files else None
                if affine is None and "spacing" in npz.files and spacing is None:
                    spacing = [float(s) for s in npz["spacing"]]
    except InputError:
        raise
    except MemoryError:
        raise InputError("does not fit in memory (its header claims a huge array?)", path) from None
    except (OSError, ValueError, EOFError, zlib.error, zipfile.BadZipFile, KeyError, TypeError, OverflowError) as exc:
        # zipfile/zlib raise these for truncated or corrupt .npz members (CRC is checked on read)
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise InputError(f"cannot read array file ({type(exc).__name__}: {first})", path) from None
    array = _check_array(np.asarray(array), path)
    if affine is None:
        if spacing is None:
            raise InputError(
                "holds no voxel spacing; pass the spacing (--npy-spacing SX SY SZ) "
                "or save an .npz with a 'spacing' or 'affine' entry",
                path,
            )
        if len(spacing) != 3 or any(not np.isfinite(float(s)) or float(s) <= 0 for s in spacing):
            raise InputError(f"spacing must be three positive numbers in mm, got {list(spacing)}", path)
        affine = np.diag([*map(float, spacing), 1.0])
    try:
        affine = np.asarray(affine, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError("affine is not numeric", path) from None
    if affine.shape != (4, 4):
        raise InputError(f"affine must be 4x4, got {affine.shape}", path)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise InputError("has an invalid (singular or non-finite) affine", path)
    meta = {
        "source_kind": "array",
        "modality": "CT",
        "original_shape": list(array.shape),
        "original_spacing": _spacing_of(affine),
    }
    array, affine = _canonical(array, affine)
    return Volume(array.astype(np.float32), affine, meta)


# ------------------------------------------------------------------------------------------ DICOM
class _Slice:
    """One 2D image of a classic DICOM series (header facts only; pixels read on demand)."""

    def __init__(self, path: Path, ds: Any):
        self.path = path
        self.ds = ds


def _dcmread(path: Path, stop_before_pixels: bool):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(str(path), stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        raise InputError("not a DICOM file", path) from None
    except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"corrupt DICOM file ({type(exc).__name__})", path) from None


def _series_description(ds: Any) -> str:
    return str(getattr(ds, "SeriesDescription", "") or "")


def list_dicom_series(folder: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Group the DICOM files of a folder by SeriesInstanceUID.

    Returns ``{uid: {"files": [...], "modality": str, "description": str}}``. Non-DICOM files are
    ignored; an unreadable file that claims to be DICOM raises :class:`InputError`.
    """
    folder = Path(folder)
    series: dict[str, dict[str, Any]] = defaultdict(lambda: {"files": [], "modality": "", "description": ""})
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        if path.name.upper() == "DICOMDIR" or not looks_like_dicom(path):
            continue
        ds = _dcmread(path, stop_before_pixels=True)
        uid = str(getattr(ds, "SeriesInstanceUID", "") or "")
        if not uid:
            raise InputError("DICOM file has no SeriesInstanceUID (truncated, or not an image)", path)
        entry = series[uid]
        entry["files"].append(path)
        entry["modality"] = str(getattr(ds, "Modality", "") or "")
        entry["description"] = _series_description(ds)
    return dict(series)


def _is_ct(ds: Any) -> bool:
    return str(getattr(ds, "Modality", "") or "").upper() == "CT"


def _modality_check(modality: str, path: Path, allow_non_ct: bool) -> None:
    if modality.upper() != "CT" and not allow_non_ct:
        raise InputError(f"modality is {modality or 'missing'!r}, not CT; pass --allow-non-ct to read it anyway", path)


# how to read CT whose files carry no usable rescale (RescaleSlope/RescaleIntercept missing, slope 0):
# only by an explicit choice, since a wrong guess shifts every voxel by ~1000 HU
ASSUME_HU_CHOICES: dict[str, tuple[float, float]] = {
    "identity": (1.0, 0.0),  # stored values are HU already
    "offset-1024": (1.0, -1024.0),  # stored values are HU + 1024 (unsigned storage)
}


def _rescale(ds: Any, path: Path, assume_hu: str | None = None, is_ct: bool = True) -> tuple[float, float]:
    """(slope, intercept) mapping stored values to HU; InputError when CT has none and no assumption is given."""
    raw_slope = getattr(ds, "RescaleSlope", None)
    raw_intercept = getattr(ds, "RescaleIntercept", None)
    missing = raw_slope in (None, "") or raw_intercept in (None, "")
    slope = intercept = None
    if not missing:
        try:
            slope, intercept = float(raw_slope), float(raw_intercept)
        except (TypeError, ValueError):
            raise InputError("RescaleSlope/RescaleIntercept are not numbers", path) from None
        if not (np.isfinite(slope) and np.isfinite(intercept)):
            raise InputError("RescaleSlope/RescaleIntercept are not finite", path)
        if slope != 0:
            return slope, intercept
    if not is_ct:
        return (1.0, 0.0) if missing else (1.0, intercept)  # not CT: there are no HU to get wrong
    if assume_hu is not None:
        if assume_hu not in ASSUME_HU_CHOICES:
            raise InputError(f"unknown --assume-hu {assume_hu!r}; choose one of {', '.join(ASSUME_HU_CHOICES)}", path)
        return ASSUME_HU_CHOICES[assume_hu]
    problem = "has no RescaleSlope/RescaleIntercept" if missing else "has RescaleSlope 0"
    raise InputError(
        f"CT {problem}, so its stored values are not known to be HU; pass --assume-hu identity "
        "(stored values are HU) or --assume-hu offset-1024 (stored values are HU + 1024) if you know which",
        path,
    )


def _orientation(iop: Sequence[float], path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    iop = np.asarray([float(v) for v in iop], dtype=np.float64)
    if iop.shape != (6,):
        raise InputError("ImageOrientationPatient must hold 6 numbers", path)
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    if np.linalg.norm(normal) < 1e-6:
        raise InputError("ImageOrientationPatient is degenerate", path)
    return row, col, normal / np.linalg.norm(normal)


def _affine_lps(row, col, step, pixel_spacing, origin) -> np.ndarray:
    """Voxel (column j, row i, slice k) -> LPS mm. PixelSpacing is [between rows, between columns]."""
    affine = np.eye(4)
    affine[:3, 0] = row * float(pixel_spacing[1])
    affine[:3, 1] = col * float(pixel_spacing[0])
    affine[:3, 2] = step
    affine[:3, 3] = origin
    return affine


def _slice_steps(positions: np.ndarray, normal: np.ndarray, path: Path, resample: bool):
    """Sort key distances along the normal; return (order, distances, mean step vector, regular?)."""
    dist = positions @ normal
    order = np.argsort(dist, kind="stable")
    dist = dist[order]
    gaps = np.diff(dist)
    if np.any(gaps < 1e-3):
        raise InputError("series has two or more slices at the same position (duplicate slices)", path)
    median = float(np.median(gaps))
    regular = bool(np.all(np.abs(gaps - median) <= SPACING_TOLERANCE * median + 1e-3))
    if not regular and not resample:
        raise InputError(
            f"irregular slice spacing ({gaps.min():.3f} to {gaps.max():.3f} mm); "
            "pass --resample-irregular to resample it onto a regular grid",
            path,
        )
    return order, dist, regular


def _resample_slices(stack: np.ndarray, dist: np.ndarray) -> tuple[np.ndarray, float]:
    """Linearly resample (cols, rows, slices) onto a regular grid of the median slice gap."""
    step = float(np.median(np.diff(dist)))
    n = int(np.floor((dist[-1] - dist[0]) / step + 1e-6)) + 1
    targets = dist[0] + step * np.arange(n)
    out = np.empty(stack.shape[:2] + (n,), dtype=np.float32)
    for k, t in enumerate(targets):
        hi = int(np.clip(np.searchsorted(dist, t), 1, len(dist) - 1))
        lo = hi - 1
        w = (t - dist[lo]) / (dist[hi] - dist[lo])
        out[..., k] = (1 - w) * stack[..., lo] + w * stack[..., hi]
    return out, step


def _read_dicom_series(
    folder: Path, series_uid: str | None, allow_non_ct: bool, resample: bool, assume_hu: str | None = None
) -> Volume:
    if not any(folder.iterdir()):
        raise InputError("folder is empty", folder)
    series = list_dicom_series(folder)
    if not series:
        raise InputError("folder holds no DICOM files", folder)
    if series_uid is None:
        if len(series) > 1:
            listing = "; ".join(
                f"{uid} ({len(s['files'])} files, {s['modality'] or '?'}"
                + (f", '{s['description']}'" if s["description"] else "")
                + ")"
                for uid, s in sorted(series.items())
            )
            raise InputError(f"folder holds {len(series)} DICOM series; pick one with --series UID: {listing}", folder)
        series_uid = next(iter(series))
    if series_uid not in series:
        raise InputError(f"no series with SeriesInstanceUID {series_uid} (found {sorted(series)})", folder)
    files = series[series_uid]["files"]
    if len(files) == 1:
        return _read_dicom_file(files[0], allow_non_ct=allow_non_ct, resample=resample, assume_hu=assume_hu)

    datasets = [_dcmread(p, stop_before_pixels=False) for p in files]
    first = datasets[0]
    _modality_check(str(getattr(first, "Modality", "") or ""), folder, allow_non_ct)
    if any(int(getattr(ds, "NumberOfFrames", 1) or 1) > 1 for ds in datasets):
        raise InputError("series mixes multi-frame files with other files; read the multi-frame file alone", folder)
    for ds, p in zip(datasets, files):
        for tag in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
            if getattr(ds, tag, None) is None:
                raise InputError(f"slice has no {tag}; slice spacing cannot be derived", p)
    row, col, normal = _orientation(first.ImageOrientationPatient, files[0])
    for ds, p in zip(datasets, files):
        r2, c2, _ = _orientation(ds.ImageOrientationPatient, p)
        if not (np.allclose(r2, row, atol=1e-3) and np.allclose(c2, col, atol=1e-3)):
            raise InputError("slices have different orientations (mixed or tilted series)", p)
        if (int(ds.Rows), int(ds.Columns)) != (int(first.Rows), int(first.Columns)):
            raise InputError("slices have different image sizes", p)
    positions = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in datasets])
    order, dist, regular = _slice_steps(positions, normal, folder, resample)

    slices = []
    for idx in order:
        ds, p = datasets[idx], files[idx]
        try:
            pixels = ds.pixel_array.astype(np.float32)
        except Exception as exc:  # pydicom raises many types for bad/unsupported pixel data
            raise InputError(f"cannot decode pixel data ({type(exc).__name__})", p) from None
        slope, intercept = _rescale(ds, p, assume_hu, _is_ct(first))
        slices.append(pixels * slope + intercept)  # rescale per slice: scanners may vary it
    stack = np.stack([s.T for s in slices], axis=-1)  # (columns, rows, slices)
    step_len = float(np.median(np.diff(dist)))
    if not regular:
        stack, step_len = _resample_slices(stack, dist)
    origin = positions[order[0]]
    affine_lps = _affine_lps(row, col, normal * step_len, first.PixelSpacing, origin)
    meta = {
        "source_kind": "dicom-series",
        "modality": str(getattr(first, "Modality", "") or ""),
        "series_description": _series_description(first),
        "n_files": len(files),
        "resampled_slices": not regular,
    }
    return _finish_dicom(stack, affine_lps, folder, meta)


def _finish_dicom(stack: np.ndarray, affine_lps: np.ndarray, path: Path, meta: dict) -> Volume:
    stack = _check_array(stack, path)
    affine = LPS_TO_RAS @ affine_lps
    meta = {**meta, "original_shape": list(stack.shape), "original_spacing": _spacing_of(affine)}
    array, affine = _canonical(stack, affine)
    return Volume(array.astype(np.float32), affine, meta)


def _frame_item(ds: Any, frame: int, seq: str):
    """A functional-group item for one frame: per-frame if present, else the shared one."""
    for groups in (
        getattr(ds, "PerFrameFunctionalGroupsSequence", None),
        getattr(ds, "SharedFunctionalGroupsSequence", None),
    ):
        if not groups:
            continue
        group = groups[frame] if groups is getattr(ds, "PerFrameFunctionalGroupsSequence", None) else groups[0]
        if seq in group and len(group[seq].value):
            return group[seq].value[0]
    return None


def _read_dicom_file(path: Path, allow_non_ct: bool, resample: bool, assume_hu: str | None = None) -> Volume:
    ds = _dcmread(path, stop_before_pixels=False)
    modality = str(getattr(ds, "Modality", "") or "")
    _modality_check(modality, path, allow_non_ct)
    n_frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    try:
        pixels = ds.pixel_array.astype(np.float32)
    except Exception as exc:  # pydicom raises many types for bad/unsupported pixel data
        raise InputError(f"cannot decode pixel data ({type(exc).__name__})", path) from None
    if n_frames == 1:
        # one classic 2D slice: a one-slice volume whose thickness comes from SliceThickness
        for tag in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing"):
            if getattr(ds, tag, None) is None:
                raise InputError(f"has no {tag}; its geometry is unknown", path)
        if pixels.ndim != 2:
            raise InputError(f"single-frame image has {pixels.ndim} dimensions (colour?)", path)
        row, col, normal = _orientation(ds.ImageOrientationPatient, path)
        thickness = float(getattr(ds, "SliceThickness", 0) or 0) or 1.0
        slope, intercept = _rescale(ds, path, assume_hu, _is_ct(ds))
        stack = (pixels * slope + intercept).T[..., None]
        origin = np.array([float(v) for v in ds.ImagePositionPatient])
        affine_lps = _affine_lps(row, col, normal * thickness, ds.PixelSpacing, origin)
        meta = {"source_kind": "dicom-file", "modality": modality, "series_description": _series_description(ds)}
        return _finish_dicom(stack, affine_lps, path, meta)

    # enhanced / multi-frame: geometry and rescale live in the functional group sequences
    if pixels.ndim != 3:
        raise InputError(f"multi-frame pixel data has shape {pixels.shape}, expected (frames, rows, cols)", path)
    positions, slopes, intercepts = [], [], []
    orient_item = _frame_item(ds, 0, "PlaneOrientationSequence")
    measures = _frame_item(ds, 0, "PixelMeasuresSequence")
    iop = getattr(orient_item, "ImageOrientationPatient", None) or getattr(ds, "ImageOrientationPatient", None)
    pixel_spacing = getattr(measures, "PixelSpacing", None) or getattr(ds, "PixelSpacing", None)
    if iop is None or pixel_spacing is None:
        raise InputError("multi-frame file has no ImageOrientationPatient/PixelSpacing", path)
    row, col, normal = _orientation(iop, path)
    for f in range(n_frames):
        pos_item = _frame_item(ds, f, "PlanePositionSequence")
        ipp = getattr(pos_item, "ImagePositionPatient", None)
        if ipp is None:
            raise InputError(f"frame {f + 1} has no ImagePositionPatient; slice spacing cannot be derived", path)
        positions.append([float(v) for v in ipp])
        tr = _frame_item(ds, f, "PixelValueTransformationSequence")
        s, i = _rescale(tr if tr is not None else ds, path, assume_hu, _is_ct(ds))
        slopes.append(s)
        intercepts.append(i)
    positions = np.asarray(positions)
    order, dist, regular = _slice_steps(positions, normal, path, resample)
    stack = np.stack([pixels[f].T * slopes[f] + intercepts[f] for f in order], axis=-1)  # (columns, rows, frames)
    step_len = float(np.median(np.diff(dist)))
    if not regular:
        stack, step_len = _resample_slices(stack, dist)
    affine_lps = _affine_lps(row, col, normal * step_len, pixel_spacing, positions[order[0]])
    meta = {
        "source_kind": "dicom-multiframe",
        "modality": modality,
        "series_description": _series_description(ds),
        "n_frames": n_frames,
        "resampled_slices": not regular,
    }
    return _finish_dicom(stack, affine_lps, path, meta)


# ------------------------------------------------------------------------------------ entry point
def read_volume(
    path: str | os.PathLike,
    *,
    series: str | None = None,
    allow_non_ct: bool = False,
    resample_irregular: bool = False,
    spacing: Sequence[float] | None = None,
    assume_hu: str | None = None,
) -> Volume:
    """Read one CT volume in HU, whatever its format.

    Parameters
    ----------
    path: NIfTI file, DICOM series folder, single/multi-frame DICOM file, ``.npy``/``.npz``, or an
        InVesalius project (``.inv3``, :mod:`ctdiff.data.inv3`).
    series: SeriesInstanceUID to pick when a DICOM folder holds several series.
    allow_non_ct: read DICOM whose Modality is not CT (otherwise an error).
    resample_irregular: resample a DICOM series with irregular slice spacing instead of refusing it.
    spacing: voxel spacing (mm) for ``.npy`` files, which store none.
    assume_hu: how to read DICOM CT without a usable rescale (no RescaleSlope/RescaleIntercept, or
        slope 0): a key of :data:`ASSUME_HU_CHOICES`; None (default) makes such files an error.
    """
    p = Path(path)
    if not p.exists():
        if p.is_symlink():
            raise InputError("broken symbolic link or symlink loop", p)
        raise InputError("no such file or folder", p)
    if not os.access(p, os.R_OK):
        raise InputError("not readable (permission denied)", p)
    if p.is_dir():
        return _read_dicom_series(p, series, allow_non_ct, resample_irregular, assume_hu)
    if p.stat().st_size == 0:
        raise InputError("file is empty", p)
    if is_nifti(p):
        return _read_nifti(p)
    if is_array_file(p):
        return _read_array_file(p, spacing)
    if looks_like_dicom(p):
        return _read_dicom_file(p, allow_non_ct, resample_irregular, assume_hu)
    if p.name.lower().endswith(".inv3"):
        from ctdiff.data.inv3 import read_inv3  # InVesalius project; the parsing lives in its own module

        return read_inv3(p, allow_non_ct=allow_non_ct)
    raise InputError("not a recognised volume (expected .nii/.nii.gz, .npy/.npz, .inv3, DICOM file or folder)", p)


def read_volume_int16(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``(array, affine)``: a volume as int16 HU in RAS+ (x, y, z) voxel order, for showing it.

    The values are those of :func:`read_volume` rounded and clipped to int16 (:func:`to_int16_hu`),
    the affine is its RAS+ affine. A NIfTI that stores int16 HU without scaling (what
    :func:`write_nifti` writes, and most CT exports) is checked as :func:`read_volume` checks it (header
    size, whole-stream gzip CRC and length, dimensions, affine) but never converted to float: the
    array keeps the stored bytes, Fortran-ordered as in the file, with only the axis flips or swaps
    that RAS+ needs. That is about four times faster for a 512x512x133 scan (benchmarks/bench_app.py).
    Every other input, and every problem, goes through :func:`read_volume` (same errors).
    """
    p = Path(path)
    fast = _read_nifti_int16(p) if p.is_file() and is_nifti(p) else None
    if fast is not None:
        return fast
    vol = read_volume(p)
    return to_int16_hu(vol.array), vol.affine


def _read_nifti_int16(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """The stored int16 voxels of an unscaled int16 NIfTI in RAS+ order; None for any other file."""
    try:
        img = nib.load(str(path))
        # the scaling nibabel applies when reading, as read_volume sees it (the image's header no
        # longer shows it: nibabel moves it into the proxy); e.g. the real chest CT: stored - 1024
        slope, inter = float(img.dataobj.slope), float(img.dataobj.inter)
        ok = (
            img.header.get_data_dtype() == np.dtype("<i2")
            and slope == 1.0
            and inter == round(inter)
            and abs(inter) <= INT16_MAX
            and (len(img.shape) == 3 or (len(img.shape) == 4 and img.shape[3] == 1))
        )
    except Exception:  # noqa: BLE001 - any doubt: read_volume reads it and names the problem
        return None
    if not ok:
        return None
    try:
        _, n_bytes = _header_size(img, path)
        if path.name.lower().endswith(".gz"):
            img = type(img).from_bytes(_verified_gzip_bytes(path, n_bytes))
        elif path.stat().st_size < n_bytes:
            return None
        array = img.dataobj.get_unscaled()  # int16 as stored
    except InputError:
        raise  # the same message read_volume gives (header size, gzip CRC/length)
    except Exception:  # noqa: BLE001
        return None
    if array.ndim == 4:
        array = array[..., 0]
    _check_array(array, path)
    if inter:
        # an integer intercept: add it in int16 when every voxel stays in range (else the float path clips)
        if array.size and not (INT16_MIN <= int(array.min()) + inter and int(array.max()) + inter <= INT16_MAX):
            return None
        array = array + np.int16(inter)
    affine = img.affine if img.affine is not None else np.eye(4)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise InputError("has an invalid (singular or non-finite) affine", path)
    ornt = nib.orientations.io_orientation(affine)
    if not np.array_equal(ornt, [[0, 1], [1, 1], [2, 1]]):
        # as _canonical, but keeping the file's Fortran order (the viewer sends x-fastest bytes)
        affine = affine @ nib.orientations.inv_ornt_aff(ornt, array.shape)
        array = np.asfortranarray(nib.orientations.apply_orientation(array, ornt))
    return array, affine


def to_int16_hu(array: np.ndarray) -> np.ndarray:
    """HU rounded to the nearest integer and clipped to int16, as NIfTI files store them."""
    return np.clip(np.rint(array), INT16_MIN, INT16_MAX).astype(np.int16)


def find_cases(root: str | os.PathLike) -> list[Path]:
    """Volume inputs below ``root``: NIfTI and array files, and each folder that holds DICOM files.

    Sorted by path. Raises :class:`InputError` for a missing or empty folder.
    """
    from ctdiff.outputs import check_finished

    root = Path(root)
    if not root.exists():
        raise InputError("no such folder", root)
    if root.is_file():
        return [root]
    check_finished(root)  # a cohort a ctdiff command started and did not finish is no cohort
    cases: list[Path] = []
    # an unreadable sub-folder becomes a case of its own, so batch readers list it as skipped
    # ("not readable") instead of silently leaving it out
    unreadable: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=lambda exc: unreadable.append(Path(exc.filename))):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        here = Path(dirpath)
        has_dicom = False
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            f = here / name
            if is_nifti(f) or is_array_file(f):
                cases.append(f)
            elif name.upper() != "DICOMDIR" and looks_like_dicom(f):
                has_dicom = True
        if has_dicom:
            cases.append(here)
    cases += [p for p in unreadable if p != root]
    if unreadable and root in unreadable:
        raise InputError("folder is not readable (permission denied)", root)
    if not cases:
        raise InputError("holds no NIfTI, .npy/.npz or DICOM volumes", root)
    return sorted(cases)


def read_volumes(
    paths: Iterable[str | os.PathLike], **kwargs
) -> tuple[list[tuple[Path, Volume]], list[tuple[Path, str]]]:
    """Read many volumes; return ``(good, bad)`` where ``bad`` lists ``(path, reason)`` for skipped files."""
    good, bad = [], []
    for p in paths:
        try:
            good.append((Path(p), read_volume(p, **kwargs)))
        except InputError as exc:
            bad.append((Path(p), exc.problem))
    return good, bad
