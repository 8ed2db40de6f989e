"""Dataset preparation (ctdiff.data.prepare) and its geometry helpers (ctdiff.data.resample)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage
from skimage.transform import resize

from ctdiff.cli import main
from ctdiff.data import phantom
from ctdiff.data.body import body_mask
from ctdiff.data.io import read_volume, write_nifti
from ctdiff.data.phantom import LABELS, make_phantom
from ctdiff.data.prepare import crop_to_body, prepare_dataset
from ctdiff.data.resample import crop_volume, resample_to_spacing, resize_to_shape
from ctdiff.data.volume import Volume
from ctdiff.errors import ConfigError, InputError, OverwriteError
from tests.ctdiff.test_io import write_dicom_series  # the lead's synthetic DICOM series writer

REPO = Path(__file__).resolve().parents[2]
SHAPE = (64, 64, 16)
N_GOOD = 3
BAD = {  # file name -> words the skip reason must contain
    "truncated.nii.gz": "truncated",
    "text.nii": "NIfTI",
    "flat.nii.gz": "2D",
    "nan.nii.gz": "NaN",
}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """A phantom cohort (N_GOOD cases of SHAPE, 20 HU noise) written by write_cohort."""
    src = tmp_path_factory.mktemp("cohort") / "src"
    phantom.write_cohort(src, n=N_GOOD, shape=SHAPE, seed=1, noise_hu=20.0, progress=False)
    return src


@pytest.fixture(scope="module")
def mixed(cohort, tmp_path_factory) -> Path:
    """The cohort plus one file for each kind of bad input."""
    src = tmp_path_factory.mktemp("mixed") / "src"
    shutil.copytree(cohort, src)
    data = (cohort / "case_000.nii.gz").read_bytes()
    (src / "truncated.nii.gz").write_bytes(data[: len(data) // 2])
    (src / "text.nii").write_text("this is not an image\n" * 40)
    nib.save(nib.Nifti1Image(np.zeros((16, 16), np.int16), np.eye(4)), str(src / "flat.nii.gz"))
    nan = np.zeros((8, 8, 4), np.float32)
    nan[2, 2, 2] = np.nan
    nib.save(nib.Nifti1Image(nan, np.eye(4)), str(src / "nan.nii.gz"))
    return src


def _truth(cohort: Path, case: int):
    """(noise-free volume, labels) of a cohort case, regenerated from its seed in the manifest."""
    seed = json.loads((cohort / "manifest.json").read_text())["cases"][case]["seed"]
    vol, _, labels = make_phantom(SHAPE, seed=seed, noise_method="none", return_labels=True)
    return vol, labels


def _world(vol: Volume, index: np.ndarray) -> np.ndarray:
    """World coordinates (N, 3) of voxel indices (N, 3)."""
    return (vol.affine[:3, :3] @ index.T).T + vol.affine[:3, 3]


def _to_index(vol: Volume, world: np.ndarray) -> np.ndarray:
    inv = np.linalg.inv(vol.affine)
    return (inv[:3, :3] @ world.T).T + inv[:3, 3]


# ------------------------------------------------------------------------------ prepare_dataset
def test_resize_writes_good_cases_and_lists_bad_ones(mixed, tmp_path):
    out = tmp_path / "p"
    manifest = prepare_dataset(mixed, out, shape=(32, 32, 8), progress=False)
    assert manifest == json.loads((out / "manifest.json").read_text())
    assert manifest["n_cases"] == N_GOOD and manifest["n_skipped"] == len(BAD)
    assert manifest["synthetic"] is True  # the source is a phantom cohort
    reasons = {s["source"]: s["reason"] for s in manifest["skipped"]}
    assert set(reasons) == set(BAD)
    for name, word in BAD.items():
        assert word.lower() in reasons[name].lower(), (name, reasons[name])
    assert sorted(p.name for p in out.iterdir()) == [
        "case_000.nii.gz",
        "case_001.nii.gz",
        "case_002.nii.gz",
        "manifest.json",
    ]
    src_spacing = (420 / SHAPE[0], 420 / SHAPE[1], 160 / SHAPE[2])
    for entry in manifest["cases"]:
        vol = read_volume(out / entry["file"])
        src = read_volume(mixed / entry["source"])
        assert vol.shape == (32, 32, 8) and entry["final_shape"] == [32, 32, 8]
        assert vol.spacing == pytest.approx([2 * s for s in src_spacing])
        assert entry["final_spacing"] == pytest.approx(vol.spacing)
        assert entry["original_shape"] == list(SHAPE) and entry["source_kind"] == "nifti"
        assert entry["original_spacing"] == pytest.approx(src_spacing)
        # same world box: the outer corners of the first and last voxels coincide
        for corner in ([-0.5, -0.5, -0.5], [31.5, 31.5, 7.5]):
            src_corner = np.asarray(corner) * 2 + 0.5 * (np.asarray([2, 2, 2]) - 1)
            assert _world(vol, np.array([corner])) == pytest.approx(_world(src, np.array([src_corner])))
        # the manifest's HU percentiles describe the written file (int16 rounding aside)
        p = np.percentile(vol.array, [1, 50, 99])
        assert [entry["hu_percentiles"][k] for k in ("p1", "p50", "p99")] == pytest.approx(p, abs=1.0)
        assert abs(float(vol.array.mean()) - float(src.array.mean())) < 3.0
        assert "/" not in entry["source"] and not Path(entry["source"]).is_absolute()


def test_resize_preserves_bladder_hu(tmp_path):
    """Mean HU of the (homogeneous) urine survives halving the in-plane resolution."""
    src_dir = tmp_path / "src"
    measured = 0
    for seed in (3, 4):  # seeds with a well-filled bladder (about 450-500 ml)
        vol, _, labels = make_phantom((96, 96, 24), seed=seed, noise_hu=20.0, return_labels=True)
        write_nifti(vol, src_dir / f"s{seed}.nii.gz")
        truth, _ = make_phantom((96, 96, 24), seed=seed, noise_method="none")
        manifest = prepare_dataset(
            src_dir / f"s{seed}.nii.gz", tmp_path / f"p{seed}", shape=(48, 48, 24), progress=False
        )
        res = read_volume(tmp_path / f"p{seed}" / manifest["cases"][0]["file"])
        src = read_volume(src_dir / f"s{seed}.nii.gz")
        # urine voxels farther than 1.5 output voxels from the bladder wall, found in world coordinates
        core = ndimage.distance_transform_edt(labels == LABELS["bladder"], sampling=src.spacing) > 1.5 * max(
            res.spacing
        )
        assert core.sum() > 50
        idx = np.rint(_to_index(res, _world(src, np.argwhere(core)))).astype(int)
        res_vals = res.array[tuple(idx.T)]
        assert float(res_vals.mean()) == pytest.approx(float(src.array[core].mean()), abs=3.0)
        assert float(res_vals.mean()) == pytest.approx(float(truth.array[core].mean()), abs=4.0)
        # shrinking in-plane averages noise: the SD inside the bladder drops
        assert float(res_vals.std()) < 0.8 * float(src.array[core].std())
        measured += 1
    assert measured == 2


def test_resample_to_spacing_exact_spacing_and_centre(cohort, tmp_path):
    out = tmp_path / "p"
    manifest = prepare_dataset(cohort, out, spacing=(10.0, 10.0, 20.0), progress=False)
    for entry in manifest["cases"]:
        vol = read_volume(out / entry["file"])
        src = read_volume(cohort / entry["source"])
        assert vol.spacing == pytest.approx((10.0, 10.0, 20.0))
        assert vol.shape == (42, 42, 8)  # round(420 / 10), round(160 / 20)
        centre = lambda v: _world(v, (np.asarray(v.shape)[None] - 1) / 2.0)  # noqa: E731
        assert centre(vol) == pytest.approx(centre(src), abs=1e-3)


def test_clip_range_is_applied(cohort, tmp_path):
    manifest = prepare_dataset(cohort, tmp_path / "p", clip=(-200, 300), progress=False)
    for entry in manifest["cases"]:
        vol = read_volume(tmp_path / "p" / entry["file"])
        assert vol.array.min() == -200 and vol.array.max() == 300
        assert entry["hu_clipped_fraction"] > 0.3  # all the air
    # every option is recorded once, in this order (what manifest.json readers see)
    assert list(manifest["options"].items()) == [
        ("spacing", None),
        ("shape", None),
        ("crop_body", False),
        ("crop_margin_mm", 10.0),
        ("clip", [-200.0, 300.0]),
        ("series_selected", False),
        ("allow_non_ct", False),
        ("resample_irregular", False),
        ("npy_spacing", None),
    ]


def test_crop_body_shrinks_extent_keeps_body_and_removes_table(cohort, tmp_path):
    out = tmp_path / "p"
    manifest = prepare_dataset(cohort, out, crop_body=True, crop_margin_mm=8.0, progress=False)
    for i, entry in enumerate(manifest["cases"]):
        src = read_volume(cohort / entry["source"])
        res = read_volume(out / entry["file"])
        assert res.shape[0] < src.shape[0] and res.shape[1] < src.shape[1]
        assert res.spacing == pytest.approx(src.spacing)
        # every body voxel is still there, at the same world position and with the same HU
        body = body_mask(src.array)
        idx = _to_index(res, _world(src, np.argwhere(body)))
        assert np.allclose(idx, np.rint(idx), atol=1e-4)
        idx = np.rint(idx).astype(int)
        assert idx.min() >= 0 and np.all(idx < np.asarray(res.shape))
        assert np.array_equal(res.array[tuple(idx.T)], src.array[body])
        # the scanner table (a thin bright object outside the body) is gone
        _, labels = _truth(cohort, i)
        table = labels == LABELS["table"]
        assert table.sum() > 20
        inside = _to_index(res, _world(src, np.argwhere(table)))
        inside = np.rint(inside).astype(int)
        keep = np.all((inside >= 0) & (inside < np.asarray(res.shape)), axis=1)
        left = int(np.count_nonzero(res.array[tuple(inside[keep].T)] > -500))
        # at this coarse 6.6 mm grid a table voxel may touch the body diagonally and stay
        assert left <= 0.05 * int(np.count_nonzero(src.array[table] > -500))
        assert entry["crop_box"][0][1] - entry["crop_box"][0][0] == res.shape[0]


def test_crop_to_body_of_an_all_air_volume_is_an_error():
    air = Volume.from_spacing(np.full((16, 16, 4), -1000.0, np.float32), (1, 1, 1))
    with pytest.raises(InputError, match="no body"):
        crop_to_body(air)


def test_same_case_name_in_two_folders_gets_unique_outputs(cohort, tmp_path):
    src = tmp_path / "src"
    for sub in ("a", "b"):
        (src / sub).mkdir(parents=True)
        shutil.copy(cohort / "case_000.nii.gz", src / sub / "scan.nii.gz")
    manifest = prepare_dataset(src, tmp_path / "p", progress=False)
    assert [(c["file"], c["source"]) for c in manifest["cases"]] == [
        ("scan.nii.gz", "a/scan.nii.gz"),
        ("scan_2.nii.gz", "b/scan.nii.gz"),
    ]
    assert (tmp_path / "p" / "scan_2.nii.gz").exists()


def test_dicom_folder_with_two_series_needs_series(tmp_path, rng):
    src = tmp_path / "src"
    hu = rng.normal(40, 10, size=(12, 10, 4)).astype(np.float32)
    hu[:2] = -1000
    uid = write_dicom_series(src / "study", hu)
    write_dicom_series(tmp_path / "second", hu + 100, shuffle_seed=1)
    for f in (tmp_path / "second").iterdir():  # same file names: move them in under a prefix
        f.rename(src / "study" / f"b_{f.name}")
    with pytest.raises(InputError, match="no case could be prepared"):
        prepare_dataset(src, tmp_path / "p1", progress=False)
    skipped = json.loads((tmp_path / "p1" / "manifest.json").read_text())["skipped"]
    assert skipped[0]["source"] == "study" and "--series" in skipped[0]["reason"]
    manifest = prepare_dataset(src, tmp_path / "p2", series=uid, progress=False)
    assert manifest["n_cases"] == 1 and manifest["cases"][0]["source_kind"] == "dicom-series"
    got = read_volume(tmp_path / "p2" / "study.nii.gz")
    assert np.abs(got.array - hu[::-1, ::-1, :]).max() <= 0.5  # LPS -> RAS flips x and y
    text = (tmp_path / "p2" / "manifest.json").read_text()
    assert uid not in text and "Doe" not in text and "PID-998877" not in text
    assert manifest["options"]["series_selected"] is True


def test_npy_needs_spacing_option(tmp_path, rng):
    src = tmp_path / "src"
    src.mkdir()
    np.save(src / "arr.npy", rng.normal(0, 10, size=(10, 10, 4)).astype(np.float32))
    with pytest.raises(InputError, match="no case"):
        prepare_dataset(src, tmp_path / "p1", progress=False)
    manifest = prepare_dataset(src, tmp_path / "p2", npy_spacing=(0.5, 0.5, 2.0), progress=False)
    assert manifest["cases"][0]["final_spacing"] == [0.5, 0.5, 2.0]


def test_overwrite_and_option_errors(cohort, tmp_path):
    out = tmp_path / "p"
    prepare_dataset(cohort, out, shape=(16, 16, 8), progress=False)
    with pytest.raises(OverwriteError):
        prepare_dataset(cohort, out, progress=False)
    assert read_volume(out / "case_000.nii.gz").shape == (16, 16, 8)  # untouched
    prepare_dataset(cohort, out, shape=(8, 8, 4), force=True, progress=False)
    assert read_volume(out / "case_000.nii.gz").shape == (8, 8, 4)
    with pytest.raises(ConfigError, match="not both"):
        prepare_dataset(cohort, tmp_path / "q", shape=(8, 8, 4), spacing=(1, 1, 1), progress=False)
    with pytest.raises(ConfigError, match="clip"):
        prepare_dataset(cohort, tmp_path / "q", clip=(100, -100), progress=False)
    # an output folder that is (or contains) the source would be emptied by --force: refused
    with pytest.raises(ConfigError, match="is the input --src"):
        prepare_dataset(cohort, cohort, force=True, progress=False)
    with pytest.raises(ConfigError, match="contains the input --src"):
        prepare_dataset(cohort, cohort.parent, force=True, progress=False)
    assert (cohort / "manifest.json").exists()
    with pytest.raises(InputError):
        prepare_dataset(tmp_path / "missing", tmp_path / "q", progress=False)


def test_progress_callback(cohort, tmp_path):
    calls = []
    prepare_dataset(cohort, tmp_path / "p", progress=lambda done, total: calls.append((done, total)))
    assert calls == [(i + 1, N_GOOD) for i in range(N_GOOD)]


# ------------------------------------------------------------------------------------- CLI
def test_cli_exit_codes_strict_and_skipped_list(mixed, tmp_path, capsys):
    assert main(["prepare", "--src", str(mixed), "--out", str(tmp_path / "a"), "--shape", "16", "16", "8"]) == 0
    err = capsys.readouterr().err
    assert f"skipped {len(BAD)} case(s)" in err
    for name in BAD:
        assert f"  {name}: " in err
    args = ["prepare", "--src", str(mixed), "--out", str(tmp_path / "b"), "--strict"]
    assert main(args) == 1
    assert (tmp_path / "b" / "case_002.nii.gz").exists()  # good cases are still written
    capsys.readouterr()
    assert main(args) == 2  # refuses the non-empty output folder
    assert "pass --force" in capsys.readouterr().err
    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    shutil.copy(mixed / "text.nii", only_bad / "text.nii")
    assert main(["prepare", "--src", str(only_bad), "--out", str(tmp_path / "c")]) == 2
    assert "no case could be prepared" in capsys.readouterr().err
    assert main(["prepare", "--src", str(mixed), "--out", str(tmp_path / "d"), "--shape", "0", "4", "4"]) == 2


@pytest.mark.slow  # two fresh interpreters that import every subcommand (torch, diffusers)
def test_done_when_commands_in_a_subprocess(tmp_path):
    """The issue's acceptance commands (with n=2 to keep it short)."""
    d, p = tmp_path / "d", tmp_path / "p"
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "ctdiff", *a],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    r = run("phantom", "--out", str(d), "--n", "2")
    assert r.returncode == 0, r.stderr
    assert sorted(f.name for f in d.iterdir()) == ["case_000.nii.gz", "case_001.nii.gz", "manifest.json"]
    r = run("prepare", "--src", str(d), "--out", str(p), "--shape", "64", "64", "32")
    assert r.returncode == 0, r.stderr
    manifest = json.loads((p / "manifest.json").read_text())
    assert manifest["n_cases"] == 2 and manifest["n_skipped"] == 0
    assert read_volume(p / "case_001.nii.gz").shape == (64, 64, 32)


def test_help_lists_options_and_examples(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["prepare", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for option in (
        "--spacing",
        "--shape",
        "--crop-body",
        "--clip",
        "--series",
        "--allow-non-ct",
        "--resample-irregular",
        "--npy-spacing",
        "--strict",
        "--force",
        "examples:",
    ):
        assert option in text


# --------------------------------------------------------------------------------- resample
def test_resize_matches_scikit_image(rng):
    array = rng.normal(0, 100, size=(30, 24, 10)).astype(np.float32)
    vol = Volume.from_spacing(array, (0.8, 1.0, 3.0), origin=(5.0, -7.0, 11.0))
    for shape, aa in (((15, 12, 5), True), ((15, 12, 5), False), ((45, 24, 7), True)):
        ours = resize_to_shape(vol, shape, anti_aliasing=aa)
        ref = resize(array.astype(np.float64), shape, order=1, mode="edge", anti_aliasing=aa, preserve_range=True)
        assert np.abs(ours.array - ref).max() < 1e-3
        assert ours.spacing == pytest.approx([s * n / m for s, n, m in zip(vol.spacing, array.shape, shape)])


def test_resample_keeps_world_positions_of_an_oblique_volume():
    """A bright point keeps its world position through resampling, whatever the affine."""
    array = np.full((40, 40, 20), -1000.0, np.float32)
    array[21, 14, 9] = 1000.0
    rot = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([0.5, 0.5, 1.5])
    affine[:3, 3] = (10.0, -20.0, 30.0)
    vol = Volume(ndimage.gaussian_filter(array, 2.0), affine)
    point = _world(vol, np.array([[21.0, 14.0, 9.0]]))[0]

    def centroid(v: Volume) -> np.ndarray:  # sub-voxel position of the blob, in world mm
        w = v.array - v.array.min()
        idx = np.argwhere(w > 0.05 * w.max())
        return _world(v, (idx * w[tuple(idx.T)][:, None]).sum(axis=0)[None] / w[tuple(idx.T)].sum())[0]

    assert centroid(vol) == pytest.approx(point, abs=0.05)
    for out in (
        resample_to_spacing(vol, (0.25, 0.25, 0.75)),
        resize_to_shape(vol, (80, 80, 40)),
        resize_to_shape(vol, (20, 20, 10)),
    ):
        assert centroid(out) == pytest.approx(point, abs=0.1)


def test_crop_volume_keeps_world_positions(small_volume):
    box = (slice(2, 9), slice(1, 10), slice(3, 6))
    out = crop_volume(small_volume, box)
    assert out.shape == (7, 9, 3)
    assert np.array_equal(out.array, small_volume.array[box])
    assert _world(out, np.array([[0, 0, 0]])) == pytest.approx(_world(small_volume, np.array([[2, 1, 3]])))
    with pytest.raises(ValueError):
        crop_volume(small_volume, (slice(3, 3), slice(None), slice(None)))
