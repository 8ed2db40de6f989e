"""CT volume I/O: NIfTI / DICOM / npy readers, the NIfTI writer, and bad input."""

from __future__ import annotations

import gzip
import json
import os

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

from ctdiff.data.io import find_cases, read_volume, read_volumes, write_nifti
from ctdiff.data.volume import Volume
from ctdiff.errors import InputError, OverwriteError

PHI = {"PatientName": "Doe^Jane", "PatientID": "PID-998877", "PatientBirthDate": "19450102"}


# ----------------------------------------------------------------------------------- helpers
def write_dicom_series(
    folder,
    hu: np.ndarray,
    spacing=(0.7, 0.8, 2.5),
    origin=(-100.0, -120.0, 50.0),
    modality="CT",
    positions=None,
    series_uid=None,
    shuffle_seed=0,
    intercept=-1024.0,
    slope=1.0,
    drop_position=False,
):
    """Write an axial DICOM series whose HU are ``hu`` (x=columns, y=rows, z=slices), LPS geometry.

    File names are shuffled and InstanceNumber runs backwards, so only ImagePositionPatient gives
    the true slice order.
    """
    folder.mkdir(parents=True, exist_ok=True)
    nx, ny, nz = hu.shape
    series_uid = series_uid or generate_uid()
    study_uid = generate_uid()
    if positions is None:
        positions = [origin[2] + k * spacing[2] for k in range(nz)]
    order = np.random.default_rng(shuffle_seed).permutation(nz)
    for k in range(nz):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage if modality == "CT" else MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        name = folder / f"img_{order[k]:03d}.dcm"
        ds = FileDataset(str(name), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = modality
        ds.SeriesInstanceUID = series_uid
        ds.StudyInstanceUID = study_uid
        ds.SeriesDescription = "Pelvis 2.5mm"
        for tag, value in PHI.items():
            setattr(ds, tag, value)
        ds.InstanceNumber = nz - k
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        if not (drop_position and k == 1):
            ds.ImagePositionPatient = [origin[0], origin[1], positions[k]]
        ds.PixelSpacing = [spacing[1], spacing[0]]  # [between rows (y), between columns (x)]
        ds.SliceThickness = spacing[2]
        ds.Rows, ds.Columns = ny, nx
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = intercept
        ds.RescaleSlope = slope
        stored = np.rint((hu[:, :, k] - intercept) / slope).astype(np.uint16)
        ds.PixelData = stored.T.tobytes()  # pixel rows = y, columns = x
        ds.save_as(str(name), enforce_file_format=True)
    return series_uid


@pytest.fixture
def hu_cube(rng):
    hu = rng.integers(-1000, 1500, size=(10, 8, 5)).astype(np.float32)
    return hu


# ------------------------------------------------------------------------------------ NIfTI
def test_nifti_round_trip_keeps_hu_spacing_and_orientation(tmp_path, small_volume):
    path = write_nifti(small_volume, tmp_path / "a.nii.gz")
    back = read_volume(path)
    assert back.shape == small_volume.shape
    np.testing.assert_allclose(back.array, np.rint(small_volume.array), atol=0)
    np.testing.assert_allclose(back.spacing, (0.8, 0.9, 2.5), atol=1e-5)
    np.testing.assert_allclose(back.affine, small_volume.affine, atol=1e-4)
    img = nib.load(path)
    assert img.get_data_dtype() == np.int16
    assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
    assert back.meta["source_kind"] == "nifti"


def test_nifti_in_las_orientation_is_reoriented_to_ras(tmp_path, rng):
    data = rng.normal(size=(6, 5, 4)).astype(np.float32) * 100
    affine = np.diag([-2.0, 1.5, 3.0, 1.0])  # first axis points left (L)
    affine[:3, 3] = (10.0, -5.0, 7.0)
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "las.nii")
    vol = read_volume(tmp_path / "las.nii")
    assert nib.aff2axcodes(vol.affine) == ("R", "A", "S")
    np.testing.assert_allclose(vol.array, data[::-1], rtol=1e-6)
    # the same voxel keeps the same world position
    world_before = affine @ np.array([0, 2, 3, 1.0])
    world_after = vol.affine @ np.array([5, 2, 3, 1.0])
    np.testing.assert_allclose(world_before, world_after)
    assert vol.meta["original_orientation"] == "LAS"


def test_nifti_scaling_is_applied(tmp_path):
    data = np.arange(60, dtype=np.int16).reshape(5, 4, 3)
    img = nib.Nifti1Image(data, np.eye(4))
    img.header.set_slope_inter(2.0, -1024.0)
    nib.save(img, tmp_path / "scaled.nii.gz")
    vol = read_volume(tmp_path / "scaled.nii.gz")
    np.testing.assert_allclose(vol.array, data * 2.0 - 1024.0)


def test_write_nifti_rounds_clips_and_refuses_overwrite(tmp_path):
    vol = Volume.from_spacing(np.array([[[1.4, -2.6, 40000.0]]], dtype=np.float32), (1, 1, 1))
    path = write_nifti(vol, tmp_path / "v.nii.gz")
    np.testing.assert_array_equal(read_volume(path).array.ravel(), [1, -3, 32767])
    with pytest.raises(OverwriteError, match="--force"):
        write_nifti(vol, path, force=False)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temp files left behind"


def test_write_is_atomic_on_failure(tmp_path, small_volume, monkeypatch):
    target = tmp_path / "keep.nii.gz"
    write_nifti(small_volume, target)
    before = target.read_bytes()

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(nib, "save", boom)
    with pytest.raises(RuntimeError):
        write_nifti(small_volume.with_array(small_volume.array + 5), target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.nii.gz"]


# ------------------------------------------------------------------------------------ DICOM
def test_dicom_series_sorted_by_position_rescaled_and_phi_free(tmp_path, hu_cube):
    write_dicom_series(tmp_path / "series", hu_cube)
    vol = read_volume(tmp_path / "series")
    # intercept -1024 applied, slices in true order; DICOM columns run to the patient's left and
    # rows to posterior (LPS), so RAS+ canonical order reverses the first two axes
    np.testing.assert_allclose(vol.array, hu_cube[::-1, ::-1, :])
    np.testing.assert_allclose(vol.spacing, (0.7, 0.8, 2.5), atol=1e-6)
    # LPS (-100, -120, 50) is RAS (100, 120, 50) for voxel (0,0,0) of the DICOM grid; after
    # canonical reordering the x and y axes run the other way, so check world positions instead.
    first_lps = np.array([-100.0, -120.0, 50.0])
    ras = np.array([-first_lps[0], -first_lps[1], first_lps[2], 1.0])
    idx = np.linalg.solve(vol.affine, ras)
    np.testing.assert_allclose(idx[:3], [9, 7, 0], atol=1e-6)
    assert vol.array[9, 7, 0] == hu_cube[0, 0, 0]
    text = json.dumps(vol.meta)
    for value in PHI.values():
        assert value not in text
    assert vol.meta["modality"] == "CT" and vol.meta["series_description"] == "Pelvis 2.5mm"


def test_dicom_to_nifti_round_trip_has_no_phi(tmp_path, hu_cube):
    write_dicom_series(tmp_path / "series", hu_cube)
    vol = read_volume(tmp_path / "series")
    out = write_nifti(vol, tmp_path / "out.nii.gz")
    back = read_volume(out)
    np.testing.assert_allclose(back.array, hu_cube[::-1, ::-1, :])
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-4)
    raw = gzip.decompress(out.read_bytes())
    for value in PHI.values():
        assert value.encode() not in raw


def test_dicom_per_slice_rescale(tmp_path, hu_cube):
    folder = tmp_path / "s"
    write_dicom_series(folder, hu_cube)
    # rewrite one slice with another slope/intercept but the same HU
    files = sorted(folder.iterdir())
    ds = pydicom.dcmread(files[0])
    k = int(round((float(ds.ImagePositionPatient[2]) - 50.0) / 2.5))
    ds.RescaleSlope, ds.RescaleIntercept = 2.0, -2048.0
    ds.PixelData = np.rint((hu_cube[:, :, k] + 2048.0) / 2.0).astype(np.uint16).T.tobytes()
    ds.save_as(files[0])
    vol = read_volume(folder)
    np.testing.assert_allclose(vol.array[..., 0], hu_cube[::-1, ::-1][..., 0], atol=1.0)
    np.testing.assert_allclose(vol.array[::-1, ::-1], hu_cube, atol=1.0)


def test_several_series_error_lists_them(tmp_path, hu_cube):
    folder = tmp_path / "study"
    uid_a = write_dicom_series(folder / "x", hu_cube)
    uid_b = write_dicom_series(folder / "y", hu_cube[:, :, :3], shuffle_seed=1)
    for f in list((folder / "x").iterdir()) + list((folder / "y").iterdir()):
        f.rename(folder / f"{f.parent.name}_{f.name}")
    with pytest.raises(InputError) as err:
        read_volume(folder)
    msg = str(err.value)
    assert "2 DICOM series" in msg and uid_a in msg and uid_b in msg and "--series" in msg
    assert "Doe" not in msg and "PID-998877" not in msg
    picked = read_volume(folder, series=uid_b)
    assert picked.shape == (10, 8, 3)


def test_non_ct_modality_needs_flag(tmp_path, hu_cube):
    write_dicom_series(tmp_path / "mr", hu_cube, modality="MR")
    with pytest.raises(InputError, match="not CT.*--allow-non-ct"):
        read_volume(tmp_path / "mr")
    assert read_volume(tmp_path / "mr", allow_non_ct=True).meta["modality"] == "MR"


def test_irregular_spacing_rejected_unless_resampled(tmp_path, rng):
    hu = np.zeros((6, 6, 4), dtype=np.float32)
    for k in range(4):
        hu[:, :, k] = 100.0 * k
    positions = [0.0, 2.0, 4.0, 8.0]  # a missing slice
    write_dicom_series(tmp_path / "irr", hu, origin=(0, 0, 0), positions=positions)
    with pytest.raises(InputError, match="irregular slice spacing.*--resample-irregular"):
        read_volume(tmp_path / "irr")
    vol = read_volume(tmp_path / "irr", resample_irregular=True)
    assert vol.shape[2] == 5 and vol.spacing[2] == pytest.approx(2.0)
    # slice at 6 mm lies half way between the 4 mm (200 HU) and 8 mm (300 HU) slices
    np.testing.assert_allclose(vol.array[:, :, 3], 250.0, atol=1.0)
    assert vol.meta["resampled_slices"] is True


def test_missing_position_is_a_clear_error(tmp_path, hu_cube):
    write_dicom_series(tmp_path / "m", hu_cube, drop_position=True)
    with pytest.raises(InputError, match="ImagePositionPatient"):
        read_volume(tmp_path / "m")


def test_real_scanner_ct_small():
    from pydicom.data import get_testdata_file

    path = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    vol = read_volume(path)
    assert vol.shape == (128, 128, 1)
    expected = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    # display row r, column c is voxel (x = 127 - c, y = 127 - r) after LPS->RAS canonicalisation
    np.testing.assert_allclose(vol.array[::-1, ::-1, 0].T, expected)
    np.testing.assert_allclose(vol.spacing[:2], [float(v) for v in ds.PixelSpacing])
    # first stored pixel keeps its patient position (LPS -> RAS flips x and y)
    lps = np.array([float(v) for v in ds.ImagePositionPatient])
    np.testing.assert_allclose(vol.affine @ [127, 127, 0, 1], [-lps[0], -lps[1], lps[2], 1], atol=1e-4)
    assert vol.array.min() >= -1024 and vol.array.max() < 3100


def test_real_scanner_enhanced_multiframe_ct():
    from pydicom.data import get_testdata_file

    path = get_testdata_file("eCT_Supplemental.dcm")
    ds = pydicom.dcmread(path)
    vol = read_volume(path)
    assert vol.shape == (512, 512, 2)
    assert vol.meta["source_kind"] == "dicom-multiframe"
    frames = ds.pixel_array.astype(np.float32)
    groups = ds.PerFrameFunctionalGroupsSequence
    shared = ds.SharedFunctionalGroupsSequence[0]
    z = [float(g.PlanePositionSequence[0].ImagePositionPatient[2]) for g in groups]
    first = int(np.argmin(z))
    group = groups[first] if "PixelValueTransformationSequence" in groups[first] else shared
    tr = group.PixelValueTransformationSequence[0]
    assert float(tr.RescaleIntercept) != 0.0  # the file stores real scanner rescaling
    expected = frames[first] * float(tr.RescaleSlope) + float(tr.RescaleIntercept)
    # map every stored pixel (row i, column j) of that frame to patient space, then into the volume
    iop = np.array([float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient])
    ipp = np.array([float(v) for v in groups[first].PlanePositionSequence[0].ImagePositionPatient])
    d_row, d_col = (float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing)
    i, j = np.mgrid[0:512:7, 0:512:5]
    lps = ipp[:, None, None] + iop[:3, None, None] * j * d_col + iop[3:, None, None] * i * d_row
    ras = np.stack([-lps[0], -lps[1], lps[2], np.ones_like(lps[0])]).reshape(4, -1)
    idx = np.rint(np.linalg.solve(vol.affine, ras)[:3]).astype(int)
    assert (idx[2] == 0).all()
    np.testing.assert_allclose(vol.array[idx[0], idx[1], idx[2]], expected[i, j].ravel())
    assert vol.spacing[2] == pytest.approx(abs(z[1] - z[0]))
    spacing = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
    np.testing.assert_allclose(vol.spacing[:2], [float(v) for v in spacing])


def test_real_mr_file_rejected_as_non_ct():
    from pydicom.data import get_testdata_file

    with pytest.raises(InputError, match="'MR', not CT"):
        read_volume(get_testdata_file("MR_small.dcm"))


# -------------------------------------------------------------------------------- npy / npz
def test_npy_needs_spacing_and_npz_stores_it(tmp_path, rng):
    arr = rng.normal(size=(4, 5, 6)).astype(np.float32)
    np.save(tmp_path / "a.npy", arr)
    with pytest.raises(InputError, match="no voxel spacing"):
        read_volume(tmp_path / "a.npy")
    vol = read_volume(tmp_path / "a.npy", spacing=(1.0, 2.0, 3.0))
    assert vol.spacing == (1.0, 2.0, 3.0)
    np.testing.assert_allclose(vol.array, arr)
    np.savez(tmp_path / "b.npz", array=arr, spacing=np.array([0.5, 0.5, 2.0]))
    assert read_volume(tmp_path / "b.npz").spacing == (0.5, 0.5, 2.0)


# -------------------------------------------------------------------------------- bad input
def _truncated_gzip(tmp_path, small_volume):
    good = write_nifti(small_volume, tmp_path / "good.nii.gz")
    bad = tmp_path / "truncated.nii.gz"
    bad.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    return bad


def _text_file(name, text):
    def make(tmp_path, small_volume):
        (tmp_path / name).write_text(text)
        return tmp_path / name

    return make


@pytest.mark.parametrize(
    "make, pattern",
    [
        (_truncated_gzip, "truncated or corrupt compressed NIfTI"),
        (_text_file("text.nii", "hello, not an image " * 30), "not a readable NIfTI image"),
        (_text_file("notes.txt", "x"), "not a recognised volume"),
        (_text_file("empty.nii.gz", ""), "file is empty"),
    ],
    ids=["truncated-gzip", "not-an-image", "unknown-file", "empty-file"],
)
def test_bad_files_give_one_line_errors_naming_the_file(tmp_path, small_volume, make, pattern):
    path = make(tmp_path, small_volume)
    with pytest.raises(InputError, match=pattern) as err:
        read_volume(path)
    assert str(err.value).startswith(str(path) + ":")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("shape, what", [((8, 9), "2D"), ((4, 4, 4, 3), "4D")])
def test_wrong_dimensionality(tmp_path, shape, what):
    nib.save(nib.Nifti1Image(np.zeros(shape, dtype=np.int16), np.eye(4)), tmp_path / "x.nii.gz")
    with pytest.raises(InputError, match=f"is {what}"):
        read_volume(tmp_path / "x.nii.gz")


def test_single_frame_4d_is_accepted(tmp_path):
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4, 1), dtype=np.int16), np.eye(4)), tmp_path / "x.nii.gz")
    assert read_volume(tmp_path / "x.nii.gz").shape == (4, 4, 4)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_and_inf_rejected(tmp_path, bad):
    data = np.zeros((4, 4, 4), dtype=np.float32)
    data[1, 2, 3] = bad
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "n.nii.gz")
    with pytest.raises(InputError, match="1 NaN/inf voxel"):
        read_volume(tmp_path / "n.nii.gz")


def test_missing_path_empty_folder_and_unreadable(tmp_path, small_volume, monkeypatch):
    with pytest.raises(InputError, match="no such file or folder"):
        read_volume(tmp_path / "nope.nii.gz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="folder is empty"):
        read_volume(tmp_path / "empty")
    with pytest.raises(InputError, match="holds no NIfTI"):
        find_cases(tmp_path / "empty")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "readme.txt").write_text("x")
    with pytest.raises(InputError, match="no DICOM files"):
        read_volume(tmp_path / "junk")
    path = write_nifti(small_volume, tmp_path / "locked.nii.gz")
    os.chmod(path, 0)
    if os.geteuid() == 0:  # root reads mode-0 files; emulate what os.access reports for a normal user
        monkeypatch.setattr(os, "access", lambda p, mode: False)
    with pytest.raises(InputError, match="not readable"):
        read_volume(path)


def test_corrupt_dicom_in_series_is_named(tmp_path, hu_cube):
    folder = tmp_path / "s"
    write_dicom_series(folder, hu_cube)
    victim = sorted(folder.iterdir())[2]
    victim.write_bytes(victim.read_bytes()[:200])
    with pytest.raises(InputError) as err:
        read_volume(folder)
    assert str(victim) in str(err.value)


def test_find_cases_and_batch_read_skip_and_list_bad(tmp_path, small_volume, hu_cube):
    write_nifti(small_volume, tmp_path / "a.nii.gz")
    write_dicom_series(tmp_path / "patient1" / "ct", hu_cube)
    (tmp_path / "broken.nii.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    cases = find_cases(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in cases] == ["a.nii.gz", "broken.nii.gz", "patient1/ct"]
    good, bad = read_volumes(cases)
    assert [p.name for p, _ in good] == ["a.nii.gz", "ct"]
    assert [p.name for p, _ in bad] == ["broken.nii.gz"]
    assert bad[0][1].startswith("truncated or corrupt compressed NIfTI")


# ------------------------------------------------------------------- int16 reading for the viewer
def _nifti(path, data, affine, slope=None, inter=None):
    """A NIfTI of ``data`` as stored, with scl_slope/scl_inter written into the header bytes as given
    (nibabel's writer would choose its own scaling)."""
    raw = bytearray(nib.Nifti1Image(data, affine).to_bytes())
    if slope is not None:
        raw[112:120] = np.array([slope, inter], "<f4").tobytes()  # scl_slope, scl_inter (NIfTI-1 offsets)
    path.write_bytes(gzip.compress(bytes(raw)) if path.name.endswith(".gz") else bytes(raw))
    return path


@pytest.mark.parametrize(
    "case",
    ["ras int16", "las int16, intercept -1024", "float32", "int16 slope 2", "plain .nii, axes swapped"],
)
def test_read_volume_int16_gives_read_volumes_values_rounded(tmp_path, rng, case):
    """Every path of read_volume_int16 (stored int16 used as is, or read_volume then rounding) gives
    exactly rint(read_volume) and its affine; the stored path keeps NIfTI's Fortran order."""
    from ctdiff.data.io import read_volume_int16, to_int16_hu

    stored = rng.integers(-1024, 3000, size=(12, 10, 7)).astype(np.int16)
    aff = np.diag([0.7, 0.8, 2.5, 1.0])
    aff[:3, 3] = (-40.0, 20.0, 5.0)
    las = aff @ np.array([[-1, 0, 0, 11], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], float)  # x runs to the left
    swapped = np.array([[0, 0.8, 0, 0], [0.7, 0, 0, 0], [0, 0, 2.5, 0], [0, 0, 0, 1]])  # file axes (A, R, S)
    path, fast = {
        "ras int16": (_nifti(tmp_path / "a.nii.gz", stored, aff, 1.0, 0.0), True),
        # as the real chest CT: stored + scl_inter -1024, x running to the left
        "las int16, intercept -1024": (_nifti(tmp_path / "b.nii.gz", stored, las, 1.0, -1024.0), True),
        "float32": (_nifti(tmp_path / "c.nii.gz", stored.astype(np.float32) + 0.4, aff), False),
        "int16 slope 2": (_nifti(tmp_path / "d.nii.gz", stored, aff, 2.0, 1.0), False),
        "plain .nii, axes swapped": (_nifti(tmp_path / "e.nii", stored, swapped, 1.0, 0.0), True),
    }[case]
    array, affine = read_volume_int16(path)
    ref = read_volume(path)
    assert array.dtype == np.int16 and array.shape == ref.shape
    np.testing.assert_array_equal(array, to_int16_hu(ref.array))
    np.testing.assert_allclose(affine, ref.affine)
    if fast:
        assert array.flags.f_contiguous  # the stored bytes' order: the viewer sends them without a transpose
    if case.startswith("las"):
        assert array.min() == stored.min() - 1024 and array[0, 0, 0] == stored[-1, 0, 0] - 1024


def test_read_volume_int16_errors_are_read_volumes(tmp_path, rng):
    """A .nii.gz whose CRC does not match and a truncated one fail as read_volume fails (same line)."""
    from ctdiff.data.io import read_volume_int16

    path = _nifti(tmp_path / "a.nii.gz", rng.integers(-1000, 1000, (40, 40, 20)).astype(np.int16), np.eye(4), 1.0, 0.0)
    raw = gzip.decompress(path.read_bytes())
    bad = bytearray(gzip.compress(raw, mtime=0))
    bad[-8] ^= 0xFF  # the CRC-32 trailer no longer matches the voxels
    flipped = tmp_path / "crc.nii.gz"
    flipped.write_bytes(bytes(bad))
    short = tmp_path / "short.nii.gz"
    short.write_bytes(gzip.compress(bytes(raw[:-5000])))
    for p in (flipped, short):
        with pytest.raises(InputError) as fast:
            read_volume_int16(p)
        with pytest.raises(InputError) as ref:
            read_volume(p)
        assert str(fast.value) == str(ref.value) and p.name in str(fast.value)
