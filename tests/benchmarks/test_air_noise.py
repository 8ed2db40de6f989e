"""benchmarks/air_noise.py: the air's noise reaches the target SD, the body gets the noise model's draw
(plus the extra SD asked for), and the affine is kept."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "ctdiff_app" / "demo" / "assets" / "model.pt"


@pytest.fixture(scope="module")
def an():
    return runpy.run_path(str(REPO / "benchmarks" / "air_noise.py"), run_name="air_noise")


def _clean(folder: Path, n: int = 2) -> np.ndarray:
    """(x, y, z) volumes: air in the first half along x, 40 HU soft tissue in the second."""
    folder.mkdir()
    d = np.full((48, 48, 16), -1000.0, dtype=np.float32)
    d[24:] = 40.0
    d[:24] = -1010.0  # air decoded below -1000 HU: floored to -1000 before the noise goes on
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    affine[:3, 3] = (10.0, -5.0, 3.0)
    for i in range(n):
        nib.save(nib.Nifti1Image(d, affine), folder / f"case_{i:03d}.nii.gz")
    return affine


def _stationary(tmp_path: Path) -> Path:
    """The demo model with a stationary noise model: since 2026-12-05 it carries a per-class one, whose
    soft-tissue (body) part is a stationary model measured as fit-noise's stationary model is."""
    import torch

    ckpt = torch.load(MODEL, map_location="cpu", weights_only=True)
    record = ckpt["space"]["autoencoder"]
    if record["noise_model"].get("format") == "class-nps-1":
        record["noise_model"] = record["noise_model"]["body"]
    out = tmp_path / "stationary.pt"
    torch.save(ckpt, out)
    return out


def test_air_weight_ramp(an):
    w = an["air_weight"](np.array([-1000.0, -950.0, -900.0, -850.0, 40.0]))
    assert np.allclose(w, [1.0, 1.0, 0.5, 0.0, 0.0])


def test_air_reaches_target_and_body_keeps_the_model_noise(an, tmp_path, capsys):
    from ctdiff.model import noise_resynthesis as nr
    from ctdiff.model.checkpoint import load_checkpoint

    affine = _clean(tmp_path / "clean")
    stationary = _stationary(tmp_path)
    out, js = tmp_path / "noisy", tmp_path / "r.json"
    argv = ["--checkpoint", str(stationary), "--clean", str(tmp_path / "clean"), "--out", str(out), "--json", str(js)]
    assert an["main"]([*argv, "--air-sd", "35"]) == 0
    r = json.loads(js.read_text())
    model = load_checkpoint(stationary)["space"]["autoencoder"]["noise_model"]
    assert model["format"] == nr.FORMAT
    first = nr.synthesize(model, (16, 48, 48), nr.noise_generator(1000)).numpy().transpose(2, 1, 0)
    x = nib.load(out / "case_000.nii.gz")
    a = x.get_fdata()
    assert np.allclose(x.affine, affine)
    # the body (weight 0): the clean value plus exactly the noise model's draw for seed 1000
    assert np.allclose(a[30:], 40.0 + first[30:], atol=1e-3)
    # the air: floored at -1000, its noise SD at the target (the model alone gives its own SD there)
    air = a[4:20, 4:44, 4:12]
    assert r["air_sd_noise_model_only_hu"] == pytest.approx(model["sd_hu"], rel=0.1)
    assert air.std() == pytest.approx(35.0, rel=0.06)
    assert r["air_sd_after_hu"] == pytest.approx(35.0, rel=0.06)
    assert air.mean() == pytest.approx(-1000.0, abs=2.0)
    # an extra body SD adds in quadrature; a target below what the model gives adds nothing in air
    out2 = tmp_path / "noisy2"
    argv[5] = str(out2)
    assert an["main"]([*argv, "--air-sd", "1", "--body-extra-sd", "15"]) == 0
    b = nib.load(out2 / "case_000.nii.gz").get_fdata()
    assert r["air_scale"] > 0 and json.loads(js.read_text())["air_scale"] == 0.0
    assert np.allclose(b[:24], -1000.0 + first[:24], atol=1e-3)
    body_sd = np.std(b[30:44, 4:44, 4:12])
    assert body_sd == pytest.approx(np.hypot(first.std(), 15.0), rel=0.08)
    capsys.readouterr()


def test_bad_options(an, tmp_path):
    _clean(tmp_path / "clean", n=1)
    base = ["--checkpoint", str(MODEL), "--clean", str(tmp_path / "clean"), "--out", str(tmp_path / "o")]
    for bad in (["--air-sd", "nan"], ["--air-sd", "0"], ["--air-sd", "20", "--body-extra-sd", "-1"]):
        with pytest.raises(SystemExit) as e:
            an["main"]([*base, *bad])
        assert e.value.code == 2
    with pytest.raises(SystemExit, match="no .nii.gz files"):
        an["main"](
            [
                "--checkpoint",
                str(_stationary(tmp_path)),
                "--clean",
                str(tmp_path),
                "--out",
                str(tmp_path / "o"),
                "--air-sd",
                "20",
            ]
        )
    # the shipped demo model carries a per-class model (2026-12-05), which already sets the air apart
    with pytest.raises(SystemExit, match="per-class noise model .* takes a stationary one"):
        an["main"]([*base, "--air-sd", "20"])
