"""Random body crops from a block of slices (ctdiff.data.crops): inside their block, inside the body,
at the right world position, and never across the two blocks; and the benchmark's crop stage."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ctdiff.data.body import body_mask
from ctdiff.data.crops import _box_fraction, body_crops, crop, crop_starts, slice_blocks
from ctdiff.data.io import read_volume, write_nifti
from ctdiff.data.volume import Volume

REPO = Path(__file__).resolve().parents[2]


def _torso(shape=(48, 40, 30), seed=0) -> Volume:
    """Air around an elliptic 'body' (soft tissue with noise) whose width changes along z, on an
    oblique, offset affine so that a crop's world position is not just its index."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*(np.arange(s, dtype=float) for s in shape), indexing="ij")
    a = 14 + 6 * z / shape[2]  # wider towards the top: the valid positions change with z
    inside = ((x - 24) / a) ** 2 + ((y - 20) / 12) ** 2 <= 1
    array = np.round(np.where(inside, 40.0, -1000.0) + rng.normal(0, 10, shape))  # integer HU: NIfTI stores int16
    c, s = np.cos(0.3), np.sin(0.3)
    affine = np.array([[0.7 * c, -0.7 * s, 0, -100.0], [0.7 * s, 0.7 * c, 0, 35.0], [0, 0, 2.5, -340.0], [0, 0, 0, 1]])
    return Volume(array, affine)


def test_slice_blocks_split_with_the_gap_and_reject_impossible_splits():
    train, held = slice_blocks(133, 0.6, 8)
    assert train == (0, 75) and held == (83, 133)
    assert held[0] - train[1] == 8
    assert slice_blocks(10, 0.5, 0) == ((0, 5), (5, 10))
    for bad in ((133, 0.0, 8), (133, 1.0, 8), (133, 0.5, -1), (9, 0.5, 9)):
        with pytest.raises(ValueError):
            slice_blocks(*bad)


def test_box_fraction_matches_a_brute_force_count():
    mask = np.random.default_rng(1).random((9, 8, 7)) > 0.4
    shape = (4, 3, 5)
    frac = _box_fraction(mask, shape)
    assert frac.shape == (6, 6, 3)
    for x, y, z in itertools.product(*(range(n) for n in frac.shape)):
        assert frac[x, y, z] == pytest.approx(mask[x : x + 4, y : y + 3, z : z + 5].mean())


def test_crops_lie_in_their_block_and_mostly_in_the_body():
    vol = _torso()
    mask = body_mask(vol.array)
    shape, (z0, z1) = (12, 10, 6), (8, 20)
    starts = crop_starts(mask, shape, 40, (z0, z1), min_body_fraction=0.9, seed=3)
    assert starts.shape == (40, 3)
    assert len({tuple(s) for s in starts}) == 40  # distinct positions
    assert (starts[:, 2] >= z0).all() and (starts[:, 2] + shape[2] <= z1).all()
    assert (starts[:, :2] >= 0).all() and (starts[:, 0] + shape[0] <= vol.shape[0]).all()
    assert (starts[:, 1] + shape[1] <= vol.shape[1]).all()
    fractions = [mask[x : x + 12, y : y + 10, z : z + 6].mean() for x, y, z in starts]
    assert min(fractions) >= 0.9
    # the positions are drawn over the whole block, not bunched at its start
    assert starts[:, 2].min() <= z0 + 1 and starts[:, 2].max() >= z1 - shape[2] - 1
    # same seed, same crops; another seed, other crops
    assert (crop_starts(mask, shape, 40, (z0, z1), 0.9, seed=3) == starts).all()
    assert not (crop_starts(mask, shape, 40, (z0, z1), 0.9, seed=4) == starts).all()


def test_crop_starts_refuses_what_the_block_cannot_give():
    mask = body_mask(_torso().array)
    with pytest.raises(ValueError, match="does not fit"):
        crop_starts(mask, (12, 10, 6), 1, (0, 5))
    with pytest.raises(ValueError, match="inside the body"):
        crop_starts(mask, (40, 30, 6), 1, (0, 30), min_body_fraction=0.99)  # wider than the body
    with pytest.raises(ValueError, match="outside"):
        crop_starts(mask, (12, 10, 6), 1, (20, 40))


def test_crop_affine_keeps_each_voxel_at_its_world_position(tmp_path):
    vol = _torso()
    crops = body_crops(vol, (12, 10, 6), 5, (8, 20), min_body_fraction=0.9, seed=0)
    inv = np.linalg.inv(vol.affine)
    for k, c in enumerate(crops):
        assert c.shape == (12, 10, 6)
        assert np.allclose(c.spacing, vol.spacing)
        path = write_nifti(c, tmp_path / f"c{k}.nii.gz")
        back = read_volume(path)
        for ijk in ((0, 0, 0), (11, 9, 5), (3, 7, 2)):
            world = back.affine @ np.array([*ijk, 1.0])
            src = np.rint(inv @ world)[:3].astype(int)  # the voxel of the scan at that world point
            assert back.array[ijk] == pytest.approx(vol.array[tuple(src)], abs=1e-3)
        assert (np.rint(inv @ back.affine @ np.array([0, 0, 0, 1.0]))[:3] >= 0).all()


def test_crop_is_the_box_at_its_start():
    vol = _torso()
    c = crop(vol, (5, 6, 7), (4, 3, 2))
    assert np.array_equal(c.array, vol.array[5:9, 6:9, 7:9])
    assert np.allclose(c.affine[:3, 3], (vol.affine @ [5, 6, 7, 1])[:3])
    assert np.allclose(c.affine[:3, :3], vol.affine[:3, :3])


def test_no_crop_spans_both_blocks():
    vol = _torso()
    mask = body_mask(vol.array)
    shape = (12, 10, 6)
    train, held = slice_blocks(vol.shape[2], 0.5, 4)
    a = crop_starts(mask, shape, 30, train, 0.9, seed=0)
    b = crop_starts(mask, shape, 30, held, 0.9, seed=1)
    assert (a[:, 2] + shape[2]).max() <= train[1] < held[0] <= b[:, 2].min()
    # with the gap, the nearest crops of the two blocks are at least 4 slices apart
    assert b[:, 2].min() - (a[:, 2] + shape[2]).max() >= 4


def test_benchmark_crop_stage_writes_both_cohorts_with_world_positions(tmp_path):
    vol = _torso(shape=(48, 40, 40))
    scan = write_nifti(vol, tmp_path / "scan.nii.gz")
    out = tmp_path / "bench"
    cmd = [sys.executable, str(REPO / "benchmarks" / "bench_realct_texture.py"), "--scan", str(scan)]
    cmd += ["--out", str(out), "--stages", "crops", "--shape", "12", "10", "6", "--n-train", "6", "--n-eval", "4"]
    cmd += ["--gap", "4", "--train-fraction", "0.5"]
    subprocess.run(cmd, check=True, capture_output=True, cwd=tmp_path, timeout=120)
    info = json.loads((out / "crops" / "crops.json").read_text())
    assert info["train_block"]["slices"] == [0, 18] and info["held_out_block"]["slices"] == [22, 40]
    scan_back = read_volume(scan)
    mask = body_mask(scan_back.array)
    for block, n in (("train", 6), ("held_out", 4)):
        rows = info[f"{block}_block"]["crops"]
        assert len(rows) == n and len(list((out / "crops" / block).glob("*.nii.gz"))) == n
        z0, z1 = info[f"{block}_block"]["slices"]
        for row in rows:
            x, y, z = row["start_xyz"]
            assert z0 <= z and z + 6 <= z1
            assert mask[x : x + 12, y : y + 10, z : z + 6].mean() >= 0.9
            c = read_volume(out / "crops" / block / row["file"])
            assert np.allclose(c.affine, crop(scan_back, (x, y, z), (12, 10, 6)).affine, atol=1e-4)
            assert np.allclose(c.array, scan_back.array[x : x + 12, y : y + 10, z : z + 6], atol=1e-3)
    # a second run does not overwrite the crops without --force
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert again.returncode != 0 and "--force" in again.stderr
