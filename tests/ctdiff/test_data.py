"""Data pipeline: seeded split, wrong-shape error, HU window, padding round trip, augmentation, DDP shards."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ctdiff.config import DataConfig
from ctdiff.data.dataset import (
    Augment,
    TrainDataset,
    crop_slices,
    epoch_batches,
    fit_centred,
    load_cases,
    make_split,
    pad_slices,
)
from ctdiff.data.io import read_volume, write_nifti
from ctdiff.data.tensors import model_to_hu
from ctdiff.data.volume import Volume
from ctdiff.errors import InputError
from ctdiff.training.rundir import RunDir


def _write(tmp_path, name, shape, value=0.0):
    arr = np.full(shape, value, dtype=np.float32)
    arr[: shape[0] // 2] = 400.0
    path = tmp_path / name
    write_nifti(Volume.from_spacing(arr, (1.5, 1.5, 3.0)), path)
    return path


def test_split_is_seeded_like_the_thesis(tmp_path):
    files = [f"/d/case_{i:03d}.nii.gz" for i in range(28)]
    train, val = make_split(files, 0.2, seed=5)
    assert (len(train), len(val)) == (23, 5)
    assert sorted(train + val) == files
    assert make_split(files, 0.2, seed=5) == (train, val)
    assert make_split(files, 0.2, seed=6) != (train, val)
    RunDir(tmp_path).write_split(5, train, val)
    assert RunDir(tmp_path).read_split() == {"seed": 5, "train": train, "val": val}
    assert make_split(files[:1], 0.5, 0)[0] == files[:1]  # never an empty training set


def test_wrong_shape_dataset_names_the_file(tmp_path):
    good = [_write(tmp_path, f"case_{i}.nii.gz", (8, 8, 4)) for i in range(2)]
    bad = _write(tmp_path, "case_odd.nii.gz", (8, 8, 5))
    with pytest.raises(InputError) as info:
        load_cases(good + [bad], DataConfig())
    msg = str(info.value)
    assert "case_odd.nii.gz" in msg and "(8, 8, 5)" in msg and "(8, 8, 4)" in msg and "prepare --shape" in msg
    with pytest.raises(InputError, match="data.shape"):
        load_cases(good, DataConfig(shape=(8, 8, 6)))


def test_fixed_window_scaling_and_geometry(tmp_path):
    p = _write(tmp_path, "a.nii.gz", (6, 4, 2), value=-1024.0)
    cases = load_cases([p], DataConfig(hu_window=(-1024.0, 1500.0)))
    t = cases.tensors[0]
    assert t.shape == (1, 2, 4, 6)  # (C, z, y, x)
    assert t.min().item() == -1.0
    assert t.max().item() == pytest.approx((400 + 1024) / 2524 * 2 - 1, abs=1e-6)
    assert cases.spacing == pytest.approx((1.5, 1.5, 3.0))
    assert cases.shape == (6, 4, 2)


@pytest.mark.parametrize("mode", ["edge", "constant"])
def test_pad_and_crop_round_trip(mode):
    t = torch.arange(1 * 26 * 2 * 2, dtype=torch.float32).reshape(1, 26, 2, 2) / 200 - 0.5
    p = pad_slices(t, 32, mode)
    assert p.shape == (1, 32, 2, 2)
    torch.testing.assert_close(crop_slices(p, 26), t, rtol=0, atol=0)
    if mode == "edge":
        torch.testing.assert_close(p[:, 0], t[:, 0])
        torch.testing.assert_close(p[:, -1], t[:, -1])
    else:
        assert torch.all(p[:, :3] == -1.0) and torch.all(p[:, -3:] == -1.0)
        assert model_to_hu(p[:, 0], (-1024, 1500)).max().item() == -1024.0


@pytest.mark.parametrize("mode", ["edge", "constant"])
@pytest.mark.parametrize(("n", "depth"), [(26, 32), (25, 32), (5, 8), (6, 9), (7, 7)])
def test_pad_slices_matches_torch_pad_bitwise(mode, n, depth):
    # the torch.nn.functional.pad lines that MONAI's SpatialPad replaced are the reference
    t = torch.rand((1, n, 3, 4), generator=torch.Generator().manual_seed(n)) * 2 - 1
    before = (depth - n) // 2
    pad = (0, 0, 0, 0, before, depth - n - before)
    ref = F.pad(t[None], pad, mode="replicate")[0] if mode == "edge" else F.pad(t, pad, value=-1.0)
    got = pad_slices(t, depth, mode)
    assert type(got) is torch.Tensor and got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=0, atol=0)
    torch.testing.assert_close(crop_slices(got[None].expand(2, -1, -1, -1, -1), n)[1], t, rtol=0, atol=0)


def test_centre_spatial_crop_does_not_undo_symmetric_pad():
    # why fit_centred/crop_slices crop at pad_before's offset instead of MONAI's CenterSpatialCrop
    from monai.transforms import CenterSpatialCrop, SpatialPad

    t = torch.arange(25, dtype=torch.float32).reshape(1, 25, 1, 1)
    padded = SpatialPad((32, -1, -1), method="symmetric", mode="edge")(t)
    monai_crop = CenterSpatialCrop((25, -1, -1))(padded)
    assert monai_crop[0, 0, 0, 0].item() == 1.0  # one slice late: slice 0 is lost
    torch.testing.assert_close(crop_slices(padded.as_tensor(), 25), t, rtol=0, atol=0)
    torch.testing.assert_close(fit_centred(padded.as_tensor(), (25, -1, -1)), t, rtol=0, atol=0)


def formula_fit(arr, shape, value):
    """The hand-written centre crop/pad loop of eval/report/cases.py that fit_centred replaced."""
    out = np.full(tuple(shape), value, dtype=np.float32)
    src, dst = [], []
    for n_in, n_out in zip(arr.shape, shape):
        if n_in >= n_out:
            a = (n_in - n_out) // 2
            src.append(slice(a, a + n_out))
            dst.append(slice(0, n_out))
        else:
            a = (n_out - n_in) // 2
            src.append(slice(0, n_in))
            dst.append(slice(a, a + n_in))
    out[tuple(dst)] = arr[tuple(src)]
    return out


def test_fit_centred_matches_the_crop_pad_loop_and_monai_spatial_pad(rng):
    from monai.transforms import SpatialPad

    for _ in range(20):
        arr = rng.normal(size=tuple(int(n) for n in rng.integers(1, 12, 3))).astype(np.float32)
        shape = tuple(int(n) for n in rng.integers(1, 12, 3))
        got = fit_centred(arr[None], shape, "constant", -1000.0)
        assert type(got) is np.ndarray and got.dtype == np.float32  # numpy in, numpy out
        np.testing.assert_array_equal(got[0], formula_fit(arr, shape, -1000.0), err_msg=f"{arr.shape} -> {shape}")
        # padding only: the same values as the MONAI transform whose widths and pad function it uses
        grown = tuple(max(a, b) for a, b in zip(arr.shape, shape))
        for mode, kw in (("constant", {"value": -1000.0}), ("edge", {})):
            monai = SpatialPad(grown, method="symmetric", mode=mode, **kw)(arr[None])
            np.testing.assert_array_equal(fit_centred(arr[None], grown, mode, -1000.0), monai.numpy())


def test_augmentation_flip_axis_and_seeding():
    t = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(1, 2, 3, 4)
    flip_x = Augment(DataConfig(flip_prob=1.0, flip_axis="x", zoom_prob=0.0))
    torch.testing.assert_close(flip_x(t, 0), t.flip(-1))  # x = last tensor axis (W)
    flip_y = Augment(DataConfig(flip_prob=1.0, flip_axis="y", zoom_prob=0.0))
    torch.testing.assert_close(flip_y(t, 0), t.flip(-2))
    zoom = Augment(DataConfig(flip_prob=0.0, zoom_prob=1.0, zoom_range=(0.9, 1.1)))
    big = torch.rand((1, 8, 32, 32), generator=torch.Generator().manual_seed(0))
    a, b = zoom(big, 1), zoom(big, 1)
    assert a.shape == big.shape and type(a) is torch.Tensor
    torch.testing.assert_close(a, b, rtol=0, atol=0)  # same seed, same augmentation
    # MONAI rounds the zoomed size to whole voxels, so nearby seeds may coincide; several must not
    outs = [zoom(big, s) for s in range(1, 6)]
    assert sum(not torch.allclose(outs[0], o) for o in outs[1:]) >= 2
    assert all(not torch.allclose(o, big) for o in outs)


def test_dataset_items_are_pure_functions_of_epoch_and_index(tmp_path):
    paths = [_write(tmp_path, f"c{i}.nii.gz", (8, 8, 6), value=float(i)) for i in range(3)]
    cfg = DataConfig(pad_slices_to=8)
    ds = TrainDataset(load_cases(paths, cfg), cfg, seed=0)
    x = ds[(3, 1)]
    assert x.shape == (1, 8, 8, 8)
    torch.testing.assert_close(ds[(3, 1)], x, rtol=0, atol=0)


def test_epoch_batches_shard_like_distributed_sampler():
    one = epoch_batches(7, epoch=2, seed=0, batch_size=2)
    assert sorted(i for b in one for _, i in b) == list(range(7))
    assert all(e == 2 for b in one for e, _ in b)
    assert epoch_batches(7, 3, 0, 2) != one  # reshuffled every epoch
    r0 = [i for b in epoch_batches(7, 2, 0, 1, rank=0, world_size=2) for _, i in b]
    r1 = [i for b in epoch_batches(7, 2, 0, 1, rank=1, world_size=2) for _, i in b]
    assert len(r0) == len(r1) == 4
    assert set(r0) | set(r1) == set(range(7))
    flat = [i for b in one for _, i in b]
    assert r0 == flat[0::2] and r1 == (flat + flat[:1])[1::2]


def test_window_clipping_counts_only_voxels_just_outside_the_window():
    from ctdiff.data.dataset import window_clipped_fraction

    # window -1024..1500: the band is 5 % of 2524 HU = 126.2 HU on either side
    a = np.array([-1100.0, -1030.0, -1024.0, -2048.0, -3024.0, 1550.0, 1700.0, 0.0, 40.0, -1150.0])
    # in the band: -1100, -1030, -1150 (>= -1150.2) and 1550; not -1024 (inside), not padding
    # (-2048, -3024) nor 1700 (> 1626.2)
    assert window_clipped_fraction(a, (-1024.0, 1500.0)) == pytest.approx(4 / 10)
    assert window_clipped_fraction(a, (-1200.0, 1500.0)) == pytest.approx(1 / 10)  # 1550 only


def test_load_cases_warns_when_the_window_clips_the_scans_noise(tmp_path, capsys):
    from ctdiff.data.dataset import warn_window_clipping, window_clip_warning

    rng = np.random.default_rng(0)
    noisy = np.full((16, 16, 4), -1000.0, np.float32) + rng.normal(0, 25, (16, 16, 4)).astype(np.float32)
    noisy[:8] = 40.0  # half soft tissue, half air at -1000 HU with 25 HU of noise
    scanner = np.full((16, 16, 4), -1024.0, np.float32)  # real CT: air stored at -1024, padding at -3024
    scanner[:8], scanner[:, :2] = 40.0, -3024.0
    paths = []
    for name, arr in (("air_noise.nii.gz", noisy), ("scanner.nii.gz", scanner)):
        paths.append(tmp_path / name)
        write_nifti(Volume.from_spacing(arr, (1.0, 1.0, 1.0)), paths[-1])
    window = (-1024.0, 1500.0)
    cases = load_cases(paths, DataConfig(hu_window=window))
    stored = read_volume(paths[0]).array  # as written (the NIfTI may round to integer HU)
    expected = np.count_nonzero((stored < -1024) & (stored >= -1024 - 126.2)) / stored.size
    assert expected > 0.05  # half the voxels are air, ~17 % of those below -1024
    assert cases.clipped == [pytest.approx(expected), 0.0]
    line = window_clip_warning([cases], window)
    assert line.startswith("warning: 1 of 2 volume(s)") and "air_noise.nii.gz" in line
    assert f"{100 * expected:.1f}%" in line and "data.hu_window" in line and "\n" not in line
    wide = (-1300.0, 1500.0)
    assert window_clip_warning([load_cases(paths, DataConfig(hu_window=wide))], wide) is None
    warn_window_clipping([cases, None], window)
    assert capsys.readouterr().err.strip() == line
