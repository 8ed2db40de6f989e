"""InVesalius .inv3 reader: axis order and orientation on synthetic archives, one-line errors on bad
archives, and the real example project (Cranium.inv3, via the real-CT cache) read upright."""

from __future__ import annotations

import io
import plistlib
import tarfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from ctdiff.data.inv3 import read_inv3
from ctdiff.data.io import read_volume
from ctdiff.errors import InputError

SPACING = [0.5, 0.75, 2.0]  # (column, row, slice) as InVesalius stores it


def make_inv3(
    path: Path,
    matrix: np.ndarray | None = None,
    plist: dict | None = None,
    members: dict | None = None,
    gzip: bool = True,
    drop: tuple[str, ...] = (),
) -> Path:
    """Write an .inv3 the way InVesalius does: a (gzipped) tar of one folder with main.plist and matrix.dat."""
    if matrix is None:
        matrix = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6) - 60  # (slices, rows, columns)
    main = {
        "format_version": 1,
        "modality": "CT",
        "name": "test",
        "orientation": 1,
        "spacing": SPACING,
        "window_level": 40.0,
        "window_width": 400.0,
        "scalar_range": [int(matrix.min()), int(matrix.max())],
        "matrix": {"filename": "matrix.dat", "shape": list(matrix.shape), "dtype": str(matrix.dtype)},
    }
    main.update(plist or {})
    files = {"main.plist": plistlib.dumps(main), "matrix.dat": matrix.tobytes(), **(members or {})}
    with tarfile.open(path, "w:gz" if gzip else "w") as tar:
        for name, data in files.items():
            if name in drop:
                continue
            info = tarfile.TarInfo(f"tmpabc123/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_axis_order_spacing_and_ras_orientation(tmp_path):
    matrix = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6) - 60
    vol = read_volume(make_inv3(tmp_path / "a.inv3", matrix))
    assert vol.shape == (6, 5, 4)  # (x = columns, y = rows, z = slices)
    assert vol.spacing == pytest.approx((0.5, 0.75, 2.0))
    assert nib.aff2axcodes(vol.affine) == ("R", "A", "S")
    assert vol.meta["source_kind"] == "inv3" and vol.meta["original_shape"] == [6, 5, 4]
    # every stored voxel lands where the convention says: column c is the patient's left for high c
    # (x world = -0.5 c), row r anterior (+0.75 r), slice s superior (+2 s)
    inv = np.linalg.inv(vol.affine)
    for s, r, c in [(0, 0, 0), (3, 4, 5), (1, 2, 3), (2, 0, 5)]:
        world = np.array([-0.5 * c, 0.75 * r, 2.0 * s, 1.0])
        i, j, k = np.rint(inv @ world)[:3].astype(int)
        assert vol.array[i, j, k] == matrix[s, r, c]


def test_uncompressed_tar_and_float_matrix_are_read(tmp_path):
    matrix = np.linspace(-1000, 1000, 2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    vol = read_inv3(make_inv3(tmp_path / "f.inv3", matrix, gzip=False))
    assert vol.array.max() == pytest.approx(1000) and vol.array.min() == pytest.approx(-1000)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda p: p.write_bytes(make_inv3(p.with_suffix(".ok.inv3")).read_bytes()[:300]), "truncated or corrupt"),
        (lambda p: p.write_bytes(b"not a tar archive at all" * 40), "not a readable InVesalius .inv3 archive"),
        (lambda p: make_inv3(p, drop=("main.plist",)), "holds no main.plist"),
        (lambda p: make_inv3(p, members={"main.plist": b"<plist><dict><key>x"}), "not a readable property list"),
        (lambda p: make_inv3(p, plist={"matrix": {"filename": "matrix.dat"}}), "no matrix entry"),
        (lambda p: make_inv3(p, drop=("matrix.dat",)), "holds no matrix.dat"),
        (
            lambda p: make_inv3(
                p, plist={"matrix": {"filename": "matrix.dat", "shape": [4, 5, 6], "dtype": "complex64"}}
            ),
            "dtype 'complex64' is not a CT number type",
        ),
        (
            lambda p: make_inv3(p, plist={"matrix": {"filename": "matrix.dat", "shape": [4, 5, 7], "dtype": "int16"}}),
            "matrix.dat has 240 bytes but shape [4, 5, 7] x int16 needs 280",
        ),
        (
            lambda p: make_inv3(p, plist={"matrix": {"filename": "matrix.dat", "shape": [4, 5, 6], "dtype": "int32"}}),
            "needs 480",
        ),
        (
            lambda p: make_inv3(p, plist={"matrix": {"filename": "matrix.dat", "shape": [20, 6], "dtype": "int16"}}),
            "not three positive integers",
        ),
        (lambda p: make_inv3(p, plist={"spacing": [0.5, 0.0, 2.0]}), "spacing [0.5, 0.0, 2.0] is not three positive"),
        (lambda p: make_inv3(p, plist={"modality": "MRI"}), "modality is MRI, not CT"),
    ],
    ids=[
        "truncated-gzip",
        "not-tar",
        "no-plist",
        "bad-plist",
        "no-matrix-entry",
        "no-matrix-file",
        "dtype",
        "shape-vs-size",
        "dtype-vs-size",
        "2d-shape",
        "spacing",
        "non-ct",
    ],
)
def test_bad_archives_give_one_line_errors_naming_the_file(tmp_path, build, message):
    path = tmp_path / "bad.inv3"
    build(path)
    with pytest.raises(InputError) as err:
        read_volume(path)
    text = str(err.value)
    assert message in text and text.startswith(str(path)) and "\n" not in text


def test_truncated_uncompressed_tar_is_refused(tmp_path):
    matrix = np.zeros((20, 40, 40), dtype=np.int16)  # 64000 bytes, far more than the tar's end padding
    good = make_inv3(tmp_path / "good.inv3", matrix, gzip=False).read_bytes()
    bad = tmp_path / "cut.inv3"
    bad.write_bytes(good[: len(good) // 2])  # cuts into matrix.dat
    with pytest.raises(InputError, match="truncated"):
        read_inv3(bad)


def test_non_ct_is_read_when_allowed(tmp_path):
    vol = read_volume(make_inv3(tmp_path / "mr.inv3", plist={"modality": "MRI"}), allow_non_ct=True)
    assert vol.meta["modality"] == "MRI"


def test_real_cranium_is_upright_with_its_spacing(real_ct, real_ct_cache_dir):
    """The Debian example project: 256x256x108 at 0.957x0.957x1.5 mm, face anterior, vertex superior."""
    vol = read_volume(real_ct_cache_dir / "Cranium.inv3")
    assert vol.shape == (256, 256, 108)
    assert vol.spacing == pytest.approx((0.9570312, 0.9570312, 1.5))
    a = vol.array
    assert a.min() == -1024 and a.max() == 2986
    head = ndimage.binary_fill_holes(a > -300, structure=np.ones((3, 3, 1), bool))
    area = head.sum(axis=(0, 1))
    # superior end: the vertex, whose cross-section shrinks towards the last slices
    assert area[-3:].mean() < 0.5 * area[40:60].mean()
    # anterior: the frontal sinus (air enclosed by the skull) lies in front of the head's centre
    sinus = head & (a < -500)
    sinus[:, :, :30] = False  # above the skull base only (no nasal cavity / airway)
    ys = np.nonzero(sinus)[1]
    centre_y = np.nonzero(head[:, :, 50])[1].mean()
    assert ys.size > 200 and np.median(ys) > centre_y + 40
    # the NIfTI written by real-ct is this volume
    written = read_volume(real_ct / "head.nii.gz")
    np.testing.assert_array_equal(written.array, a)
    np.testing.assert_allclose(written.affine, vol.affine, atol=1e-4)
