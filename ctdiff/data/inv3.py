"""Reading InVesalius 3 projects (``.inv3``) as CT volumes in HU.

An ``.inv3`` file is a tar archive (gzip-compressed by default) of one folder holding
``main.plist`` (an XML property list) and the raw image ``matrix.dat``, next to masks, surfaces
and measurements that ctdiff ignores. ``main.plist`` gives ``matrix: {filename, shape, dtype}``,
``spacing`` and ``modality``. The matrix is a C-order array with axes ``(slice, row, column)`` while
``spacing`` is ``(column, row, slice)`` in mm: InVesalius's own resampling zooms the matrix by
the reversed spacing and its NIfTI export swaps axes 0 and 2 before setting the zooms to
``spacing``. Slices are stored inferior to superior and each slice bottom-up (VTK's image origin
is the lower-left corner), so the row index grows towards the patient's anterior side; columns
keep the DICOM direction, towards the patient's left. On the Debian example ``Cranium.inv3`` this
puts the frontal sinus at high row indices, the head-holder behind the occiput at low ones, and
the vertex in the last slices (checked in ``tests/ctdiff/test_inv3.py``). The left-right direction
cannot be checked on a symmetric head; it follows the DICOM column convention.

The archive is read in memory (nothing is extracted to disk), so a member name such as
``../x`` can do no harm.
"""

from __future__ import annotations

import plistlib
import tarfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Any
from xml.parsers.expat import ExpatError

import numpy as np

from ctdiff.data.volume import Volume
from ctdiff.errors import InputError

INV3_SUFFIX = ".inv3"
MAIN_PLIST = "main.plist"
# Data types an InVesalius matrix can hold that are CT numbers: InVesalius writes int16.
ALLOWED_DTYPES = ("int16", "uint16", "int32", "float32")
# Voxel axes (column, row, slice) -> RAS+: columns run to the patient's left (-R), rows to anterior
# (+A, stored bottom-up), slices to superior (+S).
AXIS_SIGNS = (-1.0, 1.0, 1.0)


def is_inv3(path: Path) -> bool:
    return path.name.lower().endswith(INV3_SUFFIX)


def _members(path: Path) -> tuple[tarfile.TarFile, dict[str, tarfile.TarInfo]]:
    try:
        tar = tarfile.open(path, "r:*")
        members = {PurePosixPath(m.name).name: m for m in tar.getmembers() if m.isfile()}
    except (EOFError, zlib.error) as exc:
        raise InputError(f"truncated or corrupt .inv3 archive ({type(exc).__name__}: {exc})", path) from None
    except tarfile.ReadError:
        # tarfile's message lists every compression it tried, over several lines
        raise InputError("not a readable InVesalius .inv3 archive (not a tar or tar.gz file)", path) from None
    except (tarfile.TarError, OSError) as exc:
        raise InputError(f"not a readable InVesalius .inv3 archive ({type(exc).__name__}: {exc})", path) from None
    return tar, members


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, path: Path) -> bytes:
    try:
        fh = tar.extractfile(member)
        data = fh.read() if fh is not None else b""
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise InputError(
            f"truncated or corrupt .inv3 archive: {member.name} cannot be read ({type(exc).__name__})", path
        ) from None
    if len(data) != member.size:
        raise InputError(f"truncated .inv3 archive: {member.name} has {len(data)} of {member.size} bytes", path)
    return data


def _header(tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], path: Path) -> dict[str, Any]:
    if MAIN_PLIST not in members:
        raise InputError(f"is not an InVesalius project: the archive holds no {MAIN_PLIST}", path)
    try:
        plist = plistlib.loads(_read_member(tar, members[MAIN_PLIST], path))
    except (plistlib.InvalidFileException, ExpatError, ValueError, KeyError) as exc:
        raise InputError(f"{MAIN_PLIST} is not a readable property list ({type(exc).__name__})", path) from None
    matrix = plist.get("matrix") if isinstance(plist, dict) else None
    if not isinstance(matrix, dict) or not {"filename", "shape", "dtype"} <= set(matrix):
        raise InputError(f"{MAIN_PLIST} has no matrix entry with filename, shape and dtype", path)
    return plist


def _geometry(plist: dict[str, Any], path: Path) -> tuple[tuple[int, int, int], np.dtype, tuple[float, float, float]]:
    matrix = plist["matrix"]
    shape = matrix["shape"]
    if not isinstance(shape, list) or len(shape) != 3 or not all(isinstance(s, int) and s > 0 for s in shape):
        raise InputError(f"matrix shape {shape!r} is not three positive integers (slices, rows, columns)", path)
    dtype_name = str(matrix["dtype"])
    if dtype_name not in ALLOWED_DTYPES:
        raise InputError(f"matrix dtype {dtype_name!r} is not a CT number type ({', '.join(ALLOWED_DTYPES)})", path)
    spacing = plist.get("spacing")
    try:
        sp = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        sp = ()
    if len(sp) != 3 or not all(np.isfinite(s) and s > 0 for s in sp):
        raise InputError(f"spacing {spacing!r} is not three positive numbers in mm", path)
    # InVesalius writes the matrix with numpy's native (little-endian on every platform it runs on) order
    return tuple(shape), np.dtype(dtype_name).newbyteorder("<"), sp


def read_inv3(path: str | Path, allow_non_ct: bool = False) -> Volume:
    """Read the image of an InVesalius project as a RAS+ :class:`Volume` in HU.

    Raises :class:`InputError` naming the file for a truncated or non-tar archive, a missing or
    unreadable ``main.plist`` or matrix file, a dtype that is not a CT number type, a matrix
    file whose size does not match shape x dtype, non-finite voxels, or a non-CT modality (unless
    ``allow_non_ct``).
    """
    p = Path(path)
    tar, members = _members(p)
    with tar:
        plist = _header(tar, members, p)
        shape, dtype, spacing = _geometry(plist, p)
        modality = str(plist.get("modality", "CT"))
        if modality.upper() != "CT" and not allow_non_ct:
            raise InputError(f"modality is {modality}, not CT (pass allow_non_ct to read it anyway)", p)
        name = PurePosixPath(str(plist["matrix"]["filename"])).name
        if name not in members:
            raise InputError(f"the archive holds no {name}, the matrix file that {MAIN_PLIST} names", p)
        raw = _read_member(tar, members[name], p)
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise InputError(f"{name} has {len(raw)} bytes but shape {list(shape)} x {dtype.name} needs {expected}", p)
    matrix = np.frombuffer(raw, dtype=dtype).reshape(shape)
    if not np.all(np.isfinite(matrix)):
        raise InputError(f"{name} contains NaN/inf voxels", p)
    # (slice, row, column) -> (column, row, slice), then flip the column axis so x grows to the right
    array = np.ascontiguousarray(matrix.transpose(2, 1, 0))
    affine = np.diag([AXIS_SIGNS[i] * spacing[i] for i in range(3)] + [1.0])
    # put the flipped axis back to RAS+ order: index 0 becomes the patient's rightmost column
    array = np.ascontiguousarray(array[::-1])
    affine = affine @ _flip_x(array.shape[0])
    meta = {
        "source_kind": "inv3",
        "modality": modality,
        "original_shape": [shape[2], shape[1], shape[0]],
        "original_spacing": [round(s, 6) for s in spacing],
        "original_orientation": "LAS",
    }
    return Volume(array.astype(np.float32), affine, meta)


def _flip_x(n: int) -> np.ndarray:
    """Voxel-index transform that reverses axis 0 of length ``n`` (i -> n-1-i)."""
    flip = np.eye(4)
    flip[0, 0] = -1.0
    flip[0, 3] = n - 1
    return flip
