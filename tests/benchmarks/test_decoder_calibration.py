"""benchmarks/decoder_calibration.py: its maps recover known distortions; on the shipped demo model
(1 Euler step) its ``shipped`` cohort is what ``ctdiff sample`` draws."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import numpy as np
import pytest

from ctdiff.data.io import read_volume

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "ctdiff_app" / "demo" / "assets" / "model.pt"
WINDOW = (-1200.0, 1500.0)


@pytest.fixture(scope="module")
def dc():
    return runpy.run_path(str(REPO / "benchmarks" / "decoder_calibration.py"), run_name="decoder_calibration")


def _pairs(rng, n=3, shape=(6, 24, 24)):
    orig = np.full((n, *shape), -1000.0)
    orig[:, :, 4:20, 4:20] = 40.0
    orig[:, :, 8:14, 8:14] = -90.0
    orig[:, :, 16:19, 6:18] = 400.0
    return orig + rng.normal(0.0, 5.0, orig.shape)


def test_maps_undo_known_distortions(dc, rng):
    orig = _pairs(rng)
    # a decoder 30 HU too bright everywhere: the global map takes 30 HU off
    maps = dc["make_maps"](["global", "identity"], orig + 30.0, orig, WINDOW)
    for hu in (-1000.0, -90.0, 40.0, 400.0):
        assert maps["global"](np.array(hu + 30.0)) == pytest.approx(hu, abs=3.0)
    e = rng.normal(0.0, 50.0, (6, 24, 24))
    assert np.array_equal(maps["identity"](e), e)
    # each slice off by its own amount: the per-slice maps take each one off
    offsets = np.array([-20.0, 15.0, 0.0, 25.0, -10.0, 5.0])
    maps = dc["make_maps"](["per-slice"], orig + offsets[None, :, None, None], orig, WINDOW)
    est = np.full((6, 24, 24), 40.0) + offsets[:, None, None]
    assert np.allclose(maps["per-slice"](est)[:, 12, 12], 40.0, atol=3.0)
    with pytest.raises(ValueError, match="per-slice maps for 6 slices"):
        maps["per-slice"](est[:4])
    # a linear filter: a 10 HU offset is undone by the identity kernel and -10 HU
    maps = dc["make_maps"](["linear"], orig + 10.0, orig, WINDOW)
    s = maps["summary"]["linear"]
    assert s["centre"] == pytest.approx(1.0, abs=0.02) and s["kernel_sum"] == pytest.approx(1.0, abs=0.02)
    assert s["offset_hu"] == pytest.approx(-10.0, abs=1.0)


def test_shipped_cohort_is_ctdiff_sample_and_the_variants_are_written(dc, tmp_path, capsys):
    from ctdiff.data.phantom import write_cohort
    from ctdiff.diffusion.sample import load_bundle, sample

    train = tmp_path / "train"
    write_cohort(train, n=2, shape=(128, 128, 32), progress=False)
    out = tmp_path / "cal"
    argv = ["--model", str(MODEL), "--train-data", str(train), "--out", str(out), "--n", "2", "--seed", "5"]
    argv += ["--fit-samples", "1", "--steps", "1", "--threads", "1", "--variants", "shipped,identity,per-slice"]
    assert dc["main"](argv) == 0
    capsys.readouterr()
    want = sample(load_bundle(MODEL, device="cpu"), 2, sampler="euler", steps=1, seed=5, z_margin=0)
    for i, w in enumerate(want):
        got = read_volume(out / "shipped" / f"case_{i:03d}.nii.gz")
        assert np.abs(got.array - np.round(w.array)).max() <= 1.0  # int16 on disk; float order of operations
    other = read_volume(out / "per-slice" / "case_000.nii.gz").array
    assert np.abs(other - read_volume(out / "shipped" / "case_000.nii.gz").array).mean() > 1.0
    info = json.loads((out / "calibration.json").read_text())
    assert set(info["noise"]) == {"shipped", "identity", "per-slice"} and info["steps"] == 1
    assert info["noise"]["identity"]["sd_hu"] > 0 and "40_hu_maps_to_min" in info["maps"]["per-slice"]
    profiles = info["soft_tissue_by_slice"]
    assert len(profiles) == 4 and all(len(p) == 32 for p in profiles.values())
    phantoms = np.array(profiles["training phantoms"][1:-1])
    assert np.all((phantoms > 20) & (phantoms < 70))  # soft tissue's HU, slice by slice
    manifest = json.loads((out / "identity" / "manifest.json").read_text())
    assert manifest["decoder_calibration"] == "identity"
    # an existing --out, or an unknown variant, is refused before any work
    with pytest.raises(SystemExit, match="exists; pass --force"):
        dc["main"](argv)
    with pytest.raises(SystemExit, match="unknown variant"):
        dc["main"]([*argv[:5], str(tmp_path / "new"), "--variants", "sharpen"])
    assert not (tmp_path / "new").exists()
