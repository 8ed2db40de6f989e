"""benchmarks/decode_variants.py on the shipped demo model, with 2 Euler steps."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch

import ctdiff.model.autoencoder as autoencoder
from ctdiff.data.io import read_volume
from ctdiff.diffusion.sample import load_bundle, sample

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "ctdiff_app" / "demo" / "assets" / "model.pt"


@pytest.fixture(scope="module")
def dv():
    return runpy.run_path(str(REPO / "benchmarks" / "decode_variants.py"), run_name="decode_variants")


def test_replace_ring_copies_the_inner_neighbours_and_nothing_else(dv):
    y = torch.arange(3 * 5 * 6, dtype=torch.float32).reshape(1, 1, 3, 5, 6) * 1.5
    r = dv["replace_ring"](y)
    assert torch.equal(r[..., 1:-1, 1:-1], y[..., 1:-1, 1:-1])
    assert torch.equal(r[..., 0, 1:-1], y[..., 1, 1:-1]) and torch.equal(r[..., -1, 1:-1], y[..., -2, 1:-1])
    assert torch.equal(r[..., 2, 0], y[..., 2, 1]) and torch.equal(r[..., 2, -1], y[..., 2, -2])
    assert torch.equal(r[..., 0, 0], y[..., 1, 1])  # a corner: its row's, then its column's neighbour
    assert torch.equal(y[0, 0, 0, 0], torch.tensor([0.0, 1.5, 3.0, 4.5, 6.0, 7.5]))  # the input is left as it was


def test_the_ring_wraps_the_decode_only_while_active(dv):
    original = autoencoder.decode

    def fake(ae, z, tile=None, z_pad=0):  # a 4x "decoder" along every axis; z_pad crops 4 slices per latent slice
        y = z.repeat_interleave(4, 2).repeat_interleave(4, 3).repeat_interleave(4, 4)
        return y[:, :, 4 * z_pad : y.shape[2] - 4 * z_pad]

    autoencoder.decode = fake
    try:
        z = torch.randn(1, 1, 3, 3, 3)
        with dv["decode_variant"](ring=True):
            y = autoencoder.decode(None, z)
        assert torch.equal(y, dv["replace_ring"](fake(None, z)))
        with dv["decode_variant"](ring=True):
            y = autoencoder.decode(None, z, None, 1)  # sampling passes its decode_z_pad through
        assert y.shape[2] == 4 and torch.equal(y, dv["replace_ring"](fake(None, z, None, 1)))
        assert autoencoder.decode is fake  # restored
    finally:
        autoencoder.decode = original


def test_decode_z_pad_is_ctdiff_samples(dv, tmp_path):
    """The probe was adopted: --decode-z-pad is passed to ctdiff sample's decode_z_pad."""
    out = tmp_path / "zpad"
    assert dv["main"](["--model", str(MODEL), "--decode-z-pad", "1", "--z-margin", "0", "--n", "1", "--seed", "7",
                       "--steps", "2", "--out", str(out), "--threads", "1"]) == 0  # fmt: skip
    bundle = load_bundle(MODEL, device="cpu")
    ours = sample(bundle, 1, sampler=bundle.config.sample.sampler, steps=2, seed=7, z_margin=0, decode_z_pad=1)[0]
    v = read_volume(out / "case_000.nii.gz").array
    assert np.abs(v - ours.array).max() <= 0.5 + 1e-3  # int16 on disk
    info = json.loads((out / "manifest.json").read_text())
    assert info["decode_z_pad"] == 1 and info["z_margin"] == 0 and info["ring"] is False


def test_ring_samples_differ_from_ctdiff_sample_only_on_the_ring(dv, tmp_path):
    out = tmp_path / "ring"
    assert dv["main"](["--model", str(MODEL), "--ring", "--n", "1", "--seed", "7", "--steps", "2",
                       "--out", str(out), "--threads", "1"]) == 0  # fmt: skip
    bundle = load_bundle(MODEL, device="cpu")
    plain = sample(bundle, 1, sampler=bundle.config.sample.sampler, steps=2, seed=7)[0].array
    v = read_volume(out / "case_000.nii.gz").array
    assert v.shape == plain.shape == bundle.shape
    # the written file is int16: the interior matches ctdiff sample's to rounding
    assert np.abs(v[1:-1, 1:-1] - plain[1:-1, 1:-1]).max() <= 0.5 + 1e-3
    assert np.abs(v[0] - plain[0]).max() > 5.0
    info = json.loads((out / "manifest.json").read_text())
    assert info["ring"] is True and info["decode_z_pad"] == bundle.config.sample.decode_z_pad
    assert autoencoder.decode.__module__ == "ctdiff.model.autoencoder"


def test_nothing_to_change_is_refused(dv, tmp_path):
    with pytest.raises(SystemExit):
        dv["main"](["--model", str(MODEL), "--out", str(tmp_path / "x")])
