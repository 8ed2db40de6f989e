"""The per-class noise model (``class-nps-1``): air and body measured apart, the body's gain by
intensity; the noise added to a decoded volume follows its classes; old stationary models give the same
noise as before; bad models are refused; fit-noise --per-class writes one that sampling uses."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import ndimage

from ctdiff.cli import main
from ctdiff.data.phantom import correlated_noise
from ctdiff.model import noise_resynthesis as nr
from tests.ctdiff.test_noise_resynthesis import _flat, _one_thread, latent_run  # noqa: F401

SHAPE = (8, 96, 96)  # z, y, x: air | soft tissue | fat, side by side along x
AIR, SOFT, FAT = slice(0, 32), slice(32, 80), slice(80, 96)


def _clean() -> np.ndarray:
    v = _flat(SHAPE, 40.0)
    v[:, :, AIR] = -1000.0
    v[:, :, FAT] = -100.0
    return v


def _cohort(seed: int, n: int):
    """Originals: FBP noise of 20 HU everywhere plus tissue texture (15 HU in soft tissue, 6 in fat).
    Their 'reconstructions': air flat, the body keeping the noise and texture blurred in-plane (a
    decoder that keeps the coarse texture and drops the fine)."""
    rng = np.random.default_rng(seed)
    originals, decoded = [], []
    for _ in range(n):
        clean = _clean()
        noise = correlated_noise(SHAPE[::-1], (1.0, 1.0, 1.0), 20.0, rng).transpose(2, 1, 0)
        texture = ndimage.gaussian_filter(rng.standard_normal(SHAPE), (0.5, 0.7, 0.7))
        texture /= texture.std()
        amp = np.zeros(SHAPE)
        amp[:, :, SOFT], amp[:, :, FAT] = 15.0, 6.0
        detail = noise + amp * texture
        originals.append(clean + detail)
        body = clean + ndimage.gaussian_filter(detail, (0.0, 2.0, 2.0))
        body[:, :, AIR] = -1000.0
        decoded.append(body)
    return originals, decoded


def _hp_sd(v: np.ndarray, region: slice) -> float:
    """SD of the high-pass (volume minus its blur) inside a region, two voxels clear of its edges."""
    h = v - ndimage.gaussian_filter(v, 1.0)
    return float(h[1:-1, 2:-2, region.start + 2 : region.stop - 2].std())


@pytest.fixture(scope="module")
def fitted():
    originals, decoded = _cohort(0, 3)
    return nr.fit_classes(originals, decoded, paired=True), originals, decoded


def test_per_class_fit_measures_air_and_body_apart(fitted):
    model, originals, decoded = fitted
    nr.check(model)
    assert model["format"] == nr.CLASS_FORMAT and model["method"] == "paired"
    # the decoder dropped all of the air's 20 HU: the air spectrum holds all of it
    assert model["air"]["sd_hu"] == pytest.approx(20.0, rel=0.12)
    assert model["air"]["decoded_sd_hu"] < 1.0
    # the body spectrum (soft-tissue ROIs) is what the blur dropped there
    body = model["body"]
    assert body["decoded_sd_hu"] > 2.0  # the blur kept some
    assert body["sd_hu"] == pytest.approx(np.sqrt(body["original_sd_hu"] ** 2 - body["decoded_sd_hu"] ** 2), rel=0.1)
    amp = model["amplitude"]
    # fat and soft tissue (no dense tissue or bone here): a plateau over each bin, ramps across the edges
    r = nr.GAIN_RAMP_HU
    assert amp["hu"] == [-200.0 + r, -50.0 - r, -50.0 + r, 150.0 - r]
    assert amp["median_hu"] == [pytest.approx(-100.0, abs=10), pytest.approx(40.0, abs=10)]
    fat_gain, fat_gain2, soft_gain, soft_gain2 = amp["gain"]
    assert (fat_gain, soft_gain) == (fat_gain2, soft_gain2)
    # soft tissue is where the body spectrum was measured: gain 1 by construction, and about 1 as
    # measured too here; fat lacks less (texture 6 vs 15 HU on the 20 HU of noise:
    # sqrt(20^2 + 6^2) / sqrt(20^2 + 15^2) = 0.84 of soft tissue's detail)
    assert soft_gain == 1.0 and amp["relative_to_bin"] == 1
    fat_measured, soft_measured = amp["measured_gain"]
    assert soft_measured == pytest.approx(1.0, abs=0.1)
    assert fat_gain == pytest.approx(fat_measured / soft_measured, rel=1e-12)
    assert fat_gain == pytest.approx(0.84, abs=0.08)


def test_gains_are_relative_to_soft_tissue(fitted):
    """Whatever the high-pass measure says soft tissue lacks, soft tissue gets the body noise as
    measured (gain 1) and the other bins keep their proportion to it; a cohort with no soft-tissue bin
    keeps its gains as measured."""
    model, originals, decoded = fitted
    louder = {**model["body"], "nps_xy_hu2": (4.0 * np.asarray(model["body"]["nps_xy_hu2"])).tolist()}
    amp = nr._amplitudes(originals, decoded, louder)  # the body noise twice as loud: half the measured gain
    np.testing.assert_allclose(amp["measured_gain"], np.asarray(model["amplitude"]["measured_gain"]) / 2, rtol=0.03)
    np.testing.assert_allclose(amp["gain"], model["amplitude"]["gain"], rtol=1e-9)
    fat_only = [np.where(v > -500, v - 140.0, v) for v in originals]  # soft tissue at -100 HU: fat
    fat_decoded = [np.where(v > -500, v - 140.0, v) for v in decoded]
    amp = nr._amplitudes(fat_only, fat_decoded, model["body"])
    assert amp["relative_to_bin"] is None and amp["hu"] == [-200.0 + nr.GAIN_RAMP_HU, -50.0 - nr.GAIN_RAMP_HU]
    assert amp["gain"] == [amp["measured_gain"][0]] * 2 and 0.3 < amp["gain"][0] < 3.0


def test_the_gain_cap(fitted):
    """A bin that lacks more than soft tissue gets its measured gain up to max_gain (default
    MAX_AMPLITUDE = 3), and max_gain itself above it; a cap below 1 (soft tissue's own gain) or not
    finite is refused."""
    _, originals, decoded = fitted

    def dense(v):  # the fat slab made dense tissue (250 HU) with 3x its detail
        out = v.copy()
        out[:, :, FAT] = 250.0 + 3.0 * (v[:, :, FAT] + 100.0)
        return out

    dense_o, dense_d = [dense(v) for v in originals], [dense(v) for v in decoded]
    model = nr.fit_classes(dense_o, dense_d, paired=True)
    amp = model["amplitude"]
    soft_measured, dense_measured = amp["measured_gain"]
    uncapped = dense_measured / soft_measured
    assert 1.8 < uncapped < nr.MAX_AMPLITUDE  # 3 x fat's 0.84
    assert amp["gain"] == [1.0, 1.0, pytest.approx(uncapped), pytest.approx(uncapped)] and amp["max_gain"] == 3.0
    for cap in (1.0, 1.5):
        capped = nr.fit_classes(dense_o, dense_d, paired=True, max_gain=cap)
        assert capped["amplitude"]["gain"] == [1.0, 1.0, cap, cap] and capped["amplitude"]["max_gain"] == cap
        assert capped["amplitude"]["measured_gain"] == pytest.approx(amp["measured_gain"])
        nr.check(capped)
    for bad in (0.5, float("nan")):
        with pytest.raises(ValueError, match="noise gain cap must be a finite number >= 1"):
            nr.fit_classes(dense_o, dense_d, paired=True, max_gain=bad)


def test_the_noise_follows_the_decoded_volume_classes(fitted):
    model, _, _ = fitted
    originals, decoded = _cohort(1, 1)  # a volume the model was not fitted on
    noise = nr.noise_for(model, decoded[0], nr.noise_generator(3)).numpy().astype(np.float64)
    assert noise.shape == SHAPE and noise.dtype == np.float64
    torch.testing.assert_close(
        nr.noise_for(model, torch.from_numpy(decoded[0]), nr.noise_generator(3)), torch.from_numpy(noise).float()
    )
    out = decoded[0] + noise
    # air: the phantom's 20 HU back; soft tissue and fat: their fine detail back, each at its own level
    assert float(noise[:, :, 2:28].std()) == pytest.approx(20.0, rel=0.12)
    for region in (SOFT, FAT):
        assert _hp_sd(out, region) == pytest.approx(_hp_sd(originals[0], region), rel=0.15)
    fat_gain, _, soft_gain, _ = model["amplitude"]["gain"]
    ratio = noise[:, :, FAT.start + 2 : FAT.stop - 2].std() / noise[:, :, SOFT.start + 2 : SOFT.stop - 2].std()
    assert ratio == pytest.approx(fat_gain / soft_gain, rel=0.05)  # the body field times each class's gain
    # the same seed on another volume: the same white noise, shaped by that volume's classes
    all_air = np.full(SHAPE, -1000.0)
    air_noise = nr.noise_for(model, all_air, nr.noise_generator(3)).numpy()
    np.testing.assert_allclose(air_noise, nr.synthesize(model["air"], SHAPE, nr.noise_generator(3)).numpy(), atol=1e-3)


def test_stationary_models_give_the_same_noise_as_before():
    rng = np.random.default_rng(2)
    shape = (8, 32, 32)
    noise = correlated_noise(shape[::-1], (1.0, 1.0, 1.0), 20.0, rng).transpose(2, 1, 0)
    model = nr.fit([(_flat(shape) + noise, _flat(shape))])
    anything = np.full(shape, -1000.0)
    assert torch.equal(
        nr.noise_for(model, anything, nr.noise_generator(9)), nr.synthesize(model, shape, nr.noise_generator(9))
    )


def test_add_noise_uses_the_decoded_intensity(fitted):
    from ctdiff.model.autoencoder import add_noise

    model, _, _ = fitted
    window = (-1200.0, 1500.0)
    per_hu = 2.0 / (window[1] - window[0])
    hu = torch.from_numpy(_clean()).float()[None, None].repeat(2, 1, 1, 1, 1)
    hu[1, :, :, :, AIR] = -1150.0  # too dark: floored at -1000 before the class is read
    y = (hu - window[0]) * per_hu - 1.0
    out = (add_noise(y, model, window, [4, 4]) + 1.0) / per_hu + window[0] - hu.clamp(min=-1000.0)
    torch.testing.assert_close(out[0], out[1], atol=2e-2, rtol=0)  # same seed, same classes after the floor
    expected = nr.noise_for(model, hu[0, 0].double().numpy(), nr.noise_generator(4))
    torch.testing.assert_close(out[0, 0], expected, atol=2e-2, rtol=0)


def test_the_unpaired_fit_and_its_errors():
    originals, decoded = _cohort(5, 2)
    model = nr.fit_classes(originals, decoded[:1], paired=False)
    assert model["method"] == "unpaired" and model["air"]["sd_hu"] == pytest.approx(20.0, rel=0.15)
    with pytest.raises(ValueError, match="2 originals and 1 reconstructions"):
        nr.fit_classes(originals, decoded[:1], paired=True)
    no_air = [v[:, :, 40:] for v in originals]
    with pytest.raises(ValueError, match=r"no homogeneous 16x16 air ROI \(-1100..-900 HU.*originals"):
        nr.fit_classes(no_air, [v[:, :, 40:] for v in decoded], paired=False)


def test_bad_class_models_are_refused(fitted):
    model, _, _ = fitted
    amp = model["amplitude"]
    for bad, msg in (
        ({**model, "body": None}, "no body spectrum"),
        ({**model, "air": {**model["air"], "nps_xy_hu2": [1.0, -1.0]}}, "non-negative"),
        ({**model, "amplitude": {**amp, "gain": [1.0, 1.0, -1.0, -1.0]}}, "gains must be >= 0"),
        ({**model, "amplitude": {**amp, "hu": [50.0, -100.0, 0.0, 10.0]}}, "increasing intensities"),
        ({**model, "amplitude": {**amp, "gain": [1.0]}}, "as many finite gains"),
        ({**model, "air_blend_hu": [-850.0, -950.0]}, "air_blend_hu"),
        ({**model, "format": "class-nps-9"}, "not a noise model"),
    ):
        with pytest.raises(ValueError, match=msg):
            nr.check(bad)


def _air_and_tissue_data(root, n=3):
    """64x64x8 volumes: air (x < 28) beside soft tissue, FBP noise of 20 HU."""
    from ctdiff.data.io import write_nifti
    from ctdiff.data.volume import Volume

    rng = np.random.default_rng(11)
    root.mkdir()
    for i in range(n):
        hu = np.full((64, 64, 8), 40.0)  # x, y, z
        hu[:28] = -1000.0
        hu += correlated_noise(hu.shape, (1.0, 1.0, 1.0), 20.0, rng)
        write_nifti(Volume.from_spacing(hu.astype(np.float32), (1.0, 1.0, 2.0)), root / f"case_{i}.nii.gz")
    return root


def test_fit_noise_per_class_cli_and_sampling(latent_run, tmp_path, capsys):  # noqa: F811
    from ctdiff.diffusion.sample import load_bundle, sample
    from ctdiff.model.checkpoint import load_checkpoint

    run, data, _ = latent_run
    ckpt = run / "checkpoints" / "last.pt"
    air_data = _air_and_tissue_data(tmp_path / "air-data")
    out = tmp_path / "ck-class.pt"
    cmd = ["fit-noise", "--model", str(ckpt), "--data", str(air_data), "--per-class", "--out", str(out)]
    assert main(cmd) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["format"] == nr.CLASS_FORMAT and "nps_xy_hu2" not in summary["air"]
    carried = load_checkpoint(out)["space"]["autoencoder"]["noise_model"]
    nr.check(carried)
    assert carried["air"]["sd_hu"] == pytest.approx(summary["air"]["sd_hu"]) and carried["air"]["sd_hu"] > 0.0
    # the training data hold no air: one line naming the data folder
    bad = ["fit-noise", "--model", str(ckpt), "--data", str(data), "--per-class", "--out", str(tmp_path / "x.pt")]
    assert main(bad) == 2
    err = capsys.readouterr().err
    assert f"{data}: no homogeneous 16x16 air ROI" in err and not (tmp_path / "x.pt").exists()
    # --max-gain: recorded in the model; below 1, or without --per-class, a one-line error and no file
    capped = tmp_path / "ck-cap.pt"
    assert main([*cmd[:-1], str(capped), "--max-gain", "1.5"]) == 0
    capsys.readouterr()
    assert load_checkpoint(capped)["space"]["autoencoder"]["noise_model"]["amplitude"]["max_gain"] == 1.5
    for extra, message in (
        (["--per-class", "--max-gain", "0.5"], "--max-gain must be >= 1, got 0.5"),
        (["--max-gain", "1.5"], "--max-gain caps the per-class model's gains; give --per-class too"),
    ):
        args = ["fit-noise", "--model", str(ckpt), "--data", str(air_data), "--out", str(tmp_path / "y.pt"), *extra]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "y.pt").exists()
    # sampling adds the per-class noise, repeats by seed, and --no-noise leaves it out
    bundle = load_bundle(out, device="cpu")
    a = sample(bundle, 1, sampler="euler", steps=2, seed=3)[0]
    b = sample(bundle, 1, sampler="euler", steps=2, seed=3, noise=False)[0]
    assert a.meta["noise_resynthesis"] is True and b.meta["noise_resynthesis"] is False
    assert float((a.array.astype(np.float64) - b.array).std()) > 1.0
    np.testing.assert_array_equal(a.array, sample(bundle, 1, sampler="euler", steps=2, seed=3)[0].array)


def test_the_gain_is_the_bins_own_up_to_its_edges(fitted):
    """Soft tissue at 120 HU gets the soft-tissue gain, not one interpolated towards dense tissue's;
    at the bins' edge (150 HU) the gain is half-way."""
    model, _, _ = fitted
    r = nr.GAIN_RAMP_HU
    model = {**model, "amplitude": {"hu": [-50.0 + r, 150.0 - r, 150.0 + r, 400.0 - r], "gain": [1.0, 1.0, 3.0, 3.0]}}
    nr.check(model)
    body_sd = float(nr.synthesize(model["body"], SHAPE, nr.noise_generator(1)).std())
    for hu, gain in ((40.0, 1.0), (120.0, 1.0), (150.0, 2.0), (300.0, 3.0), (2000.0, 3.0)):
        noise = nr.noise_for(model, np.full(SHAPE, hu), nr.noise_generator(1))
        assert float(noise.std()) == pytest.approx(gain * body_sd, rel=1e-3), hu


def _slice_correlated(rng, shape, sd: float) -> np.ndarray:
    """White noise whose neighbouring slices share half of it: slice correlation 0.5 at lag 1, 0 at 2."""
    white = rng.standard_normal((shape[0] + 1, *shape[1:])) * sd
    return (white[1:] + white[:-1]) / np.sqrt(2.0)


def _textured_cohort(seed: int, n: int, air_noise: bool):
    """Originals: noise with slice correlation 0.5 everywhere (or, without ``air_noise``, air written as
    one constant value), plus soft-tissue texture that runs on from slice to slice (smooth along z);
    'reconstructions': the noise-free volumes."""
    rng = np.random.default_rng(seed)
    originals, decoded = [], []
    for _ in range(n):
        clean = _clean()
        noise = _slice_correlated(rng, SHAPE, 20.0)
        texture = ndimage.gaussian_filter(rng.standard_normal(SHAPE), (3.0, 0.7, 0.7))
        texture *= 15.0 / texture.std()
        detail = noise + np.where(clean > -500, texture, 0.0)
        v = clean + detail
        if not air_noise:
            v[:, :, AIR] = -1000.0
        originals.append(v)
        decoded.append(clean)
    return originals, decoded


def test_body_noise_takes_the_slice_correlation_measured_in_air():
    """Known answer: the noise's slice correlation is 0.5 in air and body alike; the soft-tissue ROIs
    also hold texture that runs on from slice to slice, so measured there alone it is higher. The per
    class model gives the body the air's 0.5, and noise drawn from it has that correlation in the body."""
    originals, decoded = _textured_cohort(3, 3, air_noise=True)
    model = nr.fit_classes(originals, decoded, paired=True)
    nr.check(model)
    own = nr._stationary(originals, decoded, True, nr.ROI, nr.SOFT_TISSUE_HU, "soft-tissue")
    assert own["z_correlation"][0] > 0.6  # noise and texture together
    assert model["air"]["z_correlation"][0] == pytest.approx(0.5, abs=0.06)
    assert model["body"]["z_correlation"] == model["air"]["z_correlation"]
    assert model["body"]["z_correlation_from"] == "air"
    # the body's spectrum and SD are still its own ROIs'
    assert model["body"]["nps_xy_hu2"] == own["nps_xy_hu2"] and model["body"]["rois"] == own["rois"]
    n = nr.noise_for(model, _clean(), nr.noise_generator(0)).double().numpy()[:, :, SOFT]
    assert float((n[1:] * n[:-1]).mean() / n.var()) == pytest.approx(0.5, abs=0.06)


def test_body_keeps_its_own_slice_correlation_when_the_air_has_no_noise():
    """A scanner that writes air as one constant value leaves nothing to measure there: the body
    keeps what its own ROIs say."""
    originals, decoded = _textured_cohort(4, 3, air_noise=False)
    model = nr.fit_classes(originals, decoded, paired=True)
    own = nr._stationary(originals, decoded, True, nr.ROI, nr.SOFT_TISSUE_HU, "soft-tissue")
    assert model["air"]["original_sd_hu"] < nr.MIN_AIR_NOISE_HU
    assert model["body"]["z_correlation"] == own["z_correlation"] and own["z_correlation"][0] > 0.6
    assert "z_correlation_from" not in model["body"]
