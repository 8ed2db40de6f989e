"""Noise re-synthesis for the latent space: the fitted noise model recovers a known noise (SD, spectrum
shape, slice correlation), synthesised noise has the model's spectrum, a blurring coder gets its noise
back, the model travels in autoencoder files and checkpoints (fit-noise) and sampling adds it."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ctdiff.cli import main
from ctdiff.data.phantom import correlated_noise
from ctdiff.model import noise_resynthesis as nr
from ctdiff.model.autoencoder import autoencoder_config, evaluate, fit_noise_model


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# 30 steps without the adversarial loss: enough for a coder that smooths the noise (ratio 0.64)
SMALL_AE = {
    "channels": [8, 8],
    "latent_channels": 2,
    "norm_groups": 4,
    "patch": [8, 16, 16],
    "disc_channels": 4,
    "disc_layers": 1,
    "steps": 30,
    "lr": 5e-3,
    "adv_weight": 0.0,
}


@pytest.fixture(scope="module")
def latent_run(tmp_path_factory):
    """Four 32x32x8 volumes of soft tissue with FBP noise and a fat disk, a tiny autoencoder trained on
    them without a noise model (as before noise re-synthesis existed) and a tiny latent rflow run on it."""
    from ctdiff.config import config_from_dict
    from ctdiff.data.io import write_nifti
    from ctdiff.data.volume import Volume
    from ctdiff.model.autoencoder import train_autoencoder
    from ctdiff.training.train import train

    root = tmp_path_factory.mktemp("noise-data")
    rng = np.random.default_rng(10)
    yy, xx = np.mgrid[:32, :32]
    for i in range(4):
        hu = np.full((32, 32, 8), 40.0)
        hu[(xx - 8 - i) ** 2 + (yy - 24) ** 2 < 30] = -100.0  # a fat disk: some structure to learn
        hu += correlated_noise(hu.shape, (1.0, 1.0, 1.0), 20.0, rng)
        write_nifti(Volume.from_spacing(hu.astype(np.float32), (1.0, 1.0, 2.0)), root / f"case_{i}.nii.gz")
    ae = tmp_path_factory.mktemp("ae") / "ae"
    with torch.random.fork_rng():
        train_autoencoder(
            root, ae, config={**SMALL_AE, "noise_resynthesis": False, "hu_window": [-1000.0, 1000.0]}, progress=False
        )
    cfg = config_from_dict(
        {
            "name": "tiny-latent",
            "data": {"val_fraction": 0.25, "hu_window": [-1000.0, 1000.0]},
            "model": {
                "channels": [8, 8],
                "block_kinds": ["3d", "3d"],
                "attention": [False, False],
                "mid_attention": False,
                "norm_groups": 4,
                "res_blocks": 1,
                "time_channels": 16,
                "space": "latent",
                "autoencoder": str(ae / "autoencoder.pt"),
            },
            "diffusion": {"kind": "rflow", "timesteps": 100},
            "train": {
                "epochs": 1,
                "batch_size": 2,
                "lr": 2e-3,
                "warmup_steps": 1,
                "val_timesteps": 2,
                "preview_every": 0,
            },
            "sample": {"steps": 2},
        }
    )
    run = tmp_path_factory.mktemp("run") / "run"
    with torch.random.fork_rng():
        train(cfg, root, run, progress=False)
    return run, root, ae / "autoencoder.pt"


def _flat(shape, hu=40.0):
    return np.full(shape, hu, dtype=np.float64)


def _radial(noise: np.ndarray, n_bins: int) -> np.ndarray:
    """Radial in-plane NPS of a (z, y, x) noise volume, rings of 1/ny cycles per voxel."""
    power = (np.abs(np.fft.fft2(noise - noise.mean())) ** 2).mean(0) / (noise.shape[1] * noise.shape[2])
    bins = nr._radial_bins(power.shape, n_bins, 1.0 / power.shape[0])
    return np.bincount(bins.ravel(), power.ravel(), n_bins) / np.bincount(bins.ravel(), None, n_bins)


def test_fit_recovers_the_noise_a_coder_drops():
    """Known answer: originals = flat soft tissue + FBP-shaped noise of 20 HU (independent slices),
    reconstructions = the flat volume (the coder drops all the noise). The model's SD is 20 HU, its
    slice correlation ~0, and its ring spectrum has the noise's shape (peak at mid frequency)."""
    rng = np.random.default_rng(0)
    shape = (8, 64, 64)
    pairs = []
    for _ in range(2):
        noise = correlated_noise(shape[::-1], (1.0, 1.0, 1.0), 20.0, rng).transpose(2, 1, 0)
        pairs.append((_flat(shape) + noise, _flat(shape)))
    model = nr.fit(pairs)
    nr.check(model)
    assert model["rois"] == 2 * 8 * 7 * 7  # every half-overlapping 16x16 square of every slice
    assert model["sd_hu"] == pytest.approx(20.0, rel=0.1)
    assert model["original_sd_hu"] == pytest.approx(20.0, rel=0.1) and model["decoded_sd_hu"] < 1e-6
    assert abs(model["z_correlation"][0]) < 0.05
    nps = np.asarray(model["nps_xy_hu2"])
    peak = int(np.argmax(nps))
    assert 2 <= peak <= 6 and nps[0] < 0.2 * nps[peak]  # FBP noise: little power at DC, a mid-frequency peak
    # nothing dropped -> nothing to add
    same = nr.fit([(a, a) for a, _ in pairs])
    assert same["sd_hu"] < 1e-6


def test_fit_measures_the_slice_correlation():
    rng = np.random.default_rng(1)
    white = rng.standard_normal((17, 48, 48)) * 20.0
    noise = (white[1:] + white[:-1]) / np.sqrt(2.0)  # neighbouring slices share half their noise: rho 0.5
    model = nr.fit([(_flat(noise.shape) + noise, _flat(noise.shape))])
    assert model["z_correlation"][0] == pytest.approx(0.5, abs=0.06)
    assert abs(model["z_correlation"][1]) < 0.06
    # the synthesised noise carries that correlation
    n = nr.synthesize(model, (32, 64, 64), nr.noise_generator(3)).double()
    rho = float((n[1:] * n[:-1]).mean() / n.var())
    assert rho == pytest.approx(0.5, abs=0.06)


def test_synthesised_noise_has_the_model_spectrum_and_repeats_by_seed():
    rng = np.random.default_rng(2)
    shape = (8, 64, 64)
    noise = correlated_noise(shape[::-1], (1.0, 1.0, 1.0), 30.0, rng).transpose(2, 1, 0)
    model = nr.fit([(_flat(shape) + noise, _flat(shape))])
    a = nr.synthesize(model, (16, 96, 80), nr.noise_generator(5))
    assert a.shape == (16, 96, 80) and a.dtype == torch.float32
    assert torch.equal(a, nr.synthesize(model, (16, 96, 80), nr.noise_generator(5)))
    assert not torch.equal(a, nr.synthesize(model, (16, 96, 80), nr.noise_generator(6)))
    assert float(a.std()) == pytest.approx(model["sd_hu"], rel=0.1)
    # ring spectrum of the synthesised noise follows the fitted one (on a 64 x 64 grid: same rings x4)
    b = nr.synthesize(model, (32, 64, 64), nr.noise_generator(7)).numpy().astype(np.float64)
    measured = _radial(b, 45)[::4][: len(model["nps_xy_hu2"])]
    fitted = np.asarray(model["nps_xy_hu2"])
    big = fitted > 0.2 * fitted.max()
    assert np.allclose(measured[big], fitted[big], rtol=0.25)


def test_add_noise_floors_the_estimate_at_air_before_the_noise():
    from ctdiff.model.autoencoder import AIR_HU, add_noise

    rng = np.random.default_rng(3)
    shape = (8, 32, 32)
    noise = correlated_noise(shape[::-1], (1.0, 1.0, 1.0), 20.0, rng).transpose(2, 1, 0)
    model = nr.fit([(_flat(shape) + noise, _flat(shape))])
    window = (-1200.0, 1500.0)
    per_hu = 2.0 / 2700.0
    hu = torch.full((2, 1, *shape), 40.0)
    hu[:, :, :, :8] = -1150.0  # a decoder's too-dark air
    hu[:, :, :, 8:16] = -1000.0
    hu[1, :, :, 16:] = -995.0
    y = (hu - window[0]) * per_hu - 1.0
    out = add_noise(y, model, window, [4, 5])
    drawn = torch.stack([nr.synthesize(model, shape, nr.noise_generator(s)) for s in (4, 5)])[:, None]
    got_hu = (out + 1.0) / per_hu + window[0] - drawn  # the estimate the noise went on
    assert AIR_HU == -1000.0
    torch.testing.assert_close(got_hu, hu.clamp(min=-1000.0), atol=1e-2, rtol=0)
    assert float(got_hu[:, :, :, :8].max()) == pytest.approx(-1000.0, abs=1e-2)
    # without the floor the dark air stays; above it nothing changes
    raw = (add_noise(y, model, window, [4, 5], floor_hu=None) + 1.0) / per_hu + window[0] - drawn
    torch.testing.assert_close(raw, hu, atol=1e-2, rtol=0)
    # a window that starts above air: the floor lies below it and changes nothing
    narrow = (-160.0, 240.0)
    yn = torch.zeros(1, 1, *shape) - 0.99
    torch.testing.assert_close(add_noise(yn, model, narrow, [1]), add_noise(yn, model, narrow, [1], floor_hu=None))


def test_unpaired_fit_adds_what_the_decoded_cohort_lacks():
    """Originals with FBP noise of 24 HU, 'samples' (other volumes) with 12 HU of the same texture:
    each measured in its own ROIs, the model adds sqrt(24^2 - 12^2) = 20.8 HU."""
    rng = np.random.default_rng(5)
    shape = (8, 64, 64)
    make = lambda sd: _flat(shape) + correlated_noise(shape[::-1], (1.0, 1.0, 1.0), sd, rng).transpose(2, 1, 0)  # noqa: E731
    model = nr.fit_unpaired([make(24.0) for _ in range(2)], [make(12.0) for _ in range(3)])
    assert model["method"] == "unpaired" and model["volumes"] == 2 and model["decoded"] == 3
    assert model["rois"] == 2 * 8 * 49 and model["decoded_rois"] == 3 * 8 * 49
    assert model["original_sd_hu"] == pytest.approx(24.0, rel=0.1) and model["decoded_sd_hu"] == pytest.approx(
        12.0, rel=0.1
    )
    assert model["sd_hu"] == pytest.approx(np.sqrt(24.0**2 - 12.0**2), rel=0.1)
    air = np.full(shape, -1000.0)
    with pytest.raises(ValueError, match="in the decoded volumes"):
        nr.fit_unpaired([make(24.0)], [air])


def _fbp_rings(sd: float, roi: int, n_bins: int, grid: int = 1024) -> np.ndarray:
    """The true ring means (HU^2, rings of 1/roi cycles per voxel) of correlated_noise's spectrum at
    1 mm, from its filter on a fine grid scaled to variance sd^2."""
    from ctdiff.data.phantom.noise import fbp_noise_filter

    power = fbp_noise_filter((grid, grid), (1.0, 1.0)) ** 2
    power *= sd**2 / power.mean()
    f = np.fft.fftfreq(grid)
    ring = np.minimum((np.hypot(f[:, None], f[None, :]) * roi + 0.5).astype(int), n_bins - 1).ravel()
    return np.bincount(ring, power.ravel(), n_bins) / np.bincount(ring, None, n_bins)


def _all_rois(volumes, roi):
    step = roi // 2
    return [
        [
            (z, y, x)
            for z in range(v.shape[0])
            for y in range(0, v.shape[1] - roi + 1, step)
            for x in range(0, v.shape[2] - roi + 1, step)
        ]
        for v in volumes
    ]


def test_leakage_matrix_predicts_the_ring_estimate():
    """Cross-check of the exact leakage matrix against simulation: the ROI ring estimate of FBP noise
    (band-limited at Nyquist) averages K @ (true rings), corner rings included, and white noise's
    averages K @ 1; the raw estimate itself is off in both (the detrend and the leakage)."""
    rng = np.random.default_rng(11)
    roi = nr.ROI
    k = nr.leakage_matrix(roi)
    n_bins = k.shape[0]
    fbp = [
        correlated_noise((64, 64, 16), (1.0, 1.0, 1.0), 20.0, rng).transpose(2, 1, 0).astype(np.float64)
        for _ in range(3)
    ]
    total, n, _ = nr._roi_stats(fbp, roi, _all_rois(fbp, roi))
    measured, truth = total / n, _fbp_rings(20.0, roi, n_bins)
    predicted = k @ truth
    assert truth[9:].max() == 0.0 and measured[9] > 0.015 * truth.max()  # leaked power beyond Nyquist
    assert np.allclose(measured[1:], predicted[1:], rtol=0.08, atol=0.004 * truth.max())
    white = [rng.standard_normal((16, 64, 64)) * 10.0 for _ in range(2)]
    total, n, _ = nr._roi_stats(white, roi, _all_rois(white, roi))
    assert np.allclose(total / n, k @ np.full(n_bins, 100.0), rtol=0.05)
    assert (total / n)[1] < 60.0  # the detrend took ring 1 down to ~1/2 of the white level


def test_fit_corrects_the_leakage_beyond_nyquist():
    """Known answer: FBP noise band-limited at the in-plane Nyquist frequency. The fitted rings follow
    the true spectrum, with nothing beyond Nyquist, where the raw difference of ROI estimates had power."""
    rng = np.random.default_rng(12)
    shape = (16, 64, 64)
    pairs = [
        (_flat(shape) + correlated_noise(shape[::-1], (1.0, 1.0, 1.0), 20.0, rng).transpose(2, 1, 0), _flat(shape))
        for _ in range(3)
    ]
    model = nr.fit(pairs)
    assert model["nps_estimate"] == "leakage-corrected"
    fitted = np.asarray(model["nps_xy_hu2"])
    truth = _fbp_rings(20.0, model["roi"], fitted.size)
    peak = truth.max()
    assert fitted[9:].max() < 0.005 * peak  # raw: rings 9.. hold 2-3 % of the peak
    assert np.allclose(fitted[1:8], truth[1:8], rtol=0.12, atol=0.02 * peak)
    assert model["sd_hu"] == pytest.approx(20.0, rel=0.06)  # the detrend's low-frequency loss restored
    raw = nr._roi_stats([o for o, _ in pairs], model["roi"], [nr.homogeneous_rois(o, model["roi"]) for o, _ in pairs])
    assert (raw[0] / raw[1])[9] > 0.015 * peak


def test_no_homogeneous_soft_tissue_is_an_error_and_bad_models_are_refused():
    rng = np.random.default_rng(3)
    air = np.full((4, 32, 32), -1000.0) + rng.standard_normal((4, 32, 32))
    with pytest.raises(ValueError, match="no homogeneous 16x16 soft-tissue ROI"):
        nr.fit([(air, air)])
    good = {"format": nr.FORMAT, "nps_xy_hu2": [0.0, 1.0], "z_correlation": [0.1], "bin_width": 0.5}
    nr.check(good)
    for bad, msg in (
        ({**good, "format": "x"}, "not a noise model"),
        ({**good, "nps_xy_hu2": [1.0, -1.0]}, "non-negative"),
        ({**good, "nps_xy_hu2": [1.0, float("nan")]}, "finite"),
        ({**good, "z_correlation": [1.5]}, r"\[-1, 1\]"),
        ({**good, "bin_width": 0.0}, "bin_width"),
    ):
        with pytest.raises(ValueError, match=msg):
            nr.check(bad)


class _Blur(torch.nn.Module):
    """A coder that drops the fine noise: a 5x5 in-plane box on decode."""

    def encode(self, x):
        return x, torch.ones_like(x)

    def decode(self, z):
        return F.avg_pool3d(z, (1, 5, 5), stride=1, padding=(0, 2, 2), count_include_pad=False)


def test_a_blurring_coder_gets_its_noise_back():
    cfg = autoencoder_config({"channels": [8]})
    rng = np.random.default_rng(4)
    vols = []
    for _ in range(3):  # ~40 HU soft tissue + FBP noise of 25 HU, in model units
        hu = 40.0 + correlated_noise((64, 64, 8), (1.0, 1.0, 1.0), 25.0, rng).transpose(2, 1, 0)
        lo, hi = cfg.hu_window
        vols.append(torch.from_numpy(((hu - lo) / (hi - lo) * 2 - 1).astype(np.float32))[None])
    model = fit_noise_model(_Blur(), cfg, vols[:2])
    plain = evaluate(_Blur(), cfg, vols[2:])
    both = evaluate(_Blur(), cfg, vols[2:], noise_model=model)
    assert {k: v for k, v in both.items() if k != "with_noise_resynthesis"} == plain  # same reconstructions
    noisy = both["with_noise_resynthesis"]
    assert plain["noise_sd_ratio"] < 0.6  # measured 0.4
    assert abs(noisy["noise_sd_ratio"] - 1.0) < 0.15
    assert noisy["nps_distance"] < 0.5 * plain["nps_distance"]
    assert noisy["psnr_db"] < plain["psnr_db"]  # the noise is new noise, not the original's


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_noise_by_seed(bundle, plain, sampler: str, sd_hu: float):
    """``bundle`` (a checkpoint with a noise model) samples ``plain``'s (the same weights without it) volume
    plus noise of about ``sd_hu`` on the air-floored estimate, repeatably by seed; ``noise=False`` gives
    ``plain``'s volume. Returns the noisy volume (seed 3, 2 steps)."""
    from ctdiff.diffusion.sample import sample

    a = sample(bundle, 1, sampler=sampler, steps=2, seed=3)[0]
    b = sample(bundle, 1, sampler=sampler, steps=2, seed=3, noise=False)[0]
    c = sample(plain, 1, sampler=sampler, steps=2, seed=3)[0]
    assert a.meta["noise_resynthesis"] is True and b.meta["noise_resynthesis"] is False
    assert c.meta["noise_resynthesis"] is False
    np.testing.assert_array_equal(b.array, c.array)
    diff = a.array.astype(np.float64) - np.maximum(b.array, -1000.0)  # the noise goes on the air-floored estimate
    assert diff.std() > 0.5 * sd_hu
    np.testing.assert_array_equal(a.array, sample(bundle, 1, sampler=sampler, steps=2, seed=3)[0].array)
    return a


def test_fit_noise_cli_on_autoencoder_and_latent_checkpoint(latent_run, tmp_path, capsys, monkeypatch):
    """``fit-noise`` writes a copy with a noise model; the input is untouched; sampling adds the
    noise unless --no-noise; a pixel checkpoint, an existing --out and --out == --model are refused."""
    from ctdiff.diffusion.sample import load_bundle
    from ctdiff.model.autoencoder import autoencoder_record
    from ctdiff.model.checkpoint import load_checkpoint

    run, data, ae_file = latent_run
    ckpt = run / "checkpoints" / "last.pt"
    assert autoencoder_record(ae_file)["noise_model"] is None  # trained with noise_resynthesis: false
    assert load_checkpoint(ckpt)["space"]["autoencoder"]["noise_model"] is None
    before = _sha(ckpt), _sha(ae_file)
    out_ae = tmp_path / "ae-noise.pt"
    assert main(["fit-noise", "--model", str(ae_file), "--data", str(data), "--out", str(out_ae)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rec = autoencoder_record(out_ae)
    assert rec["noise_model"]["sd_hu"] == pytest.approx(summary["sd_hu"]) and summary["sd_hu"] > 0
    assert rec["noise_model"]["step"] == rec["step"]
    out_ck = tmp_path / "ck-noise.pt"
    assert main(["fit-noise", "--model", str(ckpt), "--data", str(data), "--out", str(out_ck)]) == 0
    capsys.readouterr()
    carried = load_checkpoint(out_ck)["space"]["autoencoder"]["noise_model"]
    assert carried["nps_xy_hu2"] == rec["noise_model"]["nps_xy_hu2"]  # same coder, same volumes
    assert (_sha(ckpt), _sha(ae_file)) == before  # inputs untouched
    # refusals, one line each
    assert main(["fit-noise", "--model", str(ckpt), "--data", str(data), "--out", str(out_ck)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["fit-noise", "--model", str(ckpt), "--data", str(data), "--out", str(ckpt), "--force"]) == 2
    assert "is the input --model" in capsys.readouterr().err
    other = tmp_path / "notes.txt"
    other.write_text("mine")
    assert main(["fit-noise", "--model", str(ckpt), "--data", str(data), "--out", str(other), "--force"]) == 2
    assert "not a ctdiff autoencoder or checkpoint" in capsys.readouterr().err and other.read_text() == "mine"
    assert main(["fit-noise", "--model", str(ckpt), "--data", str(data), "--out", str(out_ck), "--force"]) == 0
    assert main(["fit-noise", "--model", str(run), "--data", str(data), "--out", str(tmp_path / "x.pt")]) == 2
    assert "model file not found" in capsys.readouterr().err
    # --samples: fitted against the checkpoint's own samples; samples that hold no homogeneous soft
    # tissue (all air here) give a one-line error naming the checkpoint (the unpaired fit: its own test)
    from ctdiff.data.volume import Volume
    from ctdiff.diffusion import sample as sample_module

    drawn = sample_module.sample

    def all_air(*args, **kwargs):
        return [Volume(np.full_like(v.array, -1000.0), v.affine) for v in drawn(*args, **kwargs)]

    monkeypatch.setattr(sample_module, "sample", all_air)
    out_s = tmp_path / "ck-samples-noise.pt"
    cmd = [
        "fit-noise",
        "--model",
        str(ckpt),
        "--data",
        str(data),
        "--samples",
        "2",
        "--no-progress",
        "--out",
        str(out_s),
    ]
    assert main(cmd) == 2
    err = capsys.readouterr().err
    assert f"{ckpt}: no homogeneous 16x16 soft-tissue ROI" in err and "decoded volumes" in err and not out_s.exists()
    monkeypatch.setattr(sample_module, "sample", drawn)
    cmd = ["fit-noise", "--model", str(ae_file), "--data", str(data), "--samples", "2", "--out", str(tmp_path / "y.pt")]
    assert main(cmd) == 2
    assert "--samples needs a diffusion checkpoint" in capsys.readouterr().err
    assert _sha(ckpt) == before[0]
    # sampling: noise added by seed; --no-noise / noise=False gives the plain decode
    bundle = load_bundle(out_ck, device="cpu")
    plain = load_bundle(ckpt, device="cpu")
    _check_noise_by_seed(bundle, plain, "euler", carried["sd_hu"])
    out_s = tmp_path / "samples"
    assert main(["sample", "--checkpoint", str(out_ck), "--n", "1", "--steps", "2", "--out", str(out_s)]) == 0
    assert json.loads((out_s / "manifest.json").read_text())["noise_resynthesis"] is True
    out_s2 = tmp_path / "samples-plain"
    cmd = ["sample", "--checkpoint", str(out_ck), "--n", "1", "--steps", "2", "--no-noise", "--out", str(out_s2)]
    assert main(cmd) == 0
    assert json.loads((out_s2 / "manifest.json").read_text())["noise_resynthesis"] is False


def test_train_autoencoder_fits_the_noise_model_and_judges_with_it(latent_run, tmp_path):
    from ctdiff.model.autoencoder import autoencoder_record, train_autoencoder

    _, data, _ = latent_run
    out = tmp_path / "ae"
    result = train_autoencoder(data, out, config=SMALL_AE, progress=False)
    model = autoencoder_record(out / "autoencoder.pt")["noise_model"]
    assert model["step"] == 30 and model["volumes"] == 3  # the 3 training volumes
    assert model["sd_hu"] == pytest.approx(20.0, rel=0.25)  # the volumes' noise is 20 HU, the coder keeps little
    judged = result["with_noise_resynthesis"]
    assert judged["n"] == result["n"] == 1
    # measured: noise SD ratio 0.64 without, 1.01 with the noise added back
    assert result["noise_sd_ratio"] < 0.8 and abs(judged["noise_sd_ratio"] - 1.0) < 0.15
    assert json.loads((out / "eval.json").read_text())["noise_model"]["rois"] == model["rois"]
    # resuming at the same step keeps the fitted model (same weights); training on refits it
    again = train_autoencoder(None, out, resume=True, progress=False)
    assert autoencoder_record(out / "autoencoder.pt")["noise_model"] == model
    assert again["with_noise_resynthesis"] == judged
    train_autoencoder(None, out, overrides=["steps=31"], resume=True, progress=False)
    assert autoencoder_record(out / "autoencoder.pt")["noise_model"]["step"] == 31


@pytest.mark.parametrize("space", ["pixel", "wavelet"])
def test_fit_noise_samples_gives_a_pixel_or_wavelet_checkpoint_a_noise_model(
    latent_run, space, tmp_path, capsys, monkeypatch
):
    """A pixel- or wavelet-space checkpoint (x_0 prediction, as the wavelet runs that come out too smooth)
    has no autoencoder: ``fit-noise`` needs ``--samples`` and then fits what its samples lack against the
    training volumes. Samples standing in as the data's noise-free truth (40 HU with a fat disk) lack the
    data's 20 HU of noise, so the model adds about 20 HU; the space carries it in the checkpoint, the
    weights and band scales are unchanged, sampling adds it by seed, ``--no-noise`` leaves it out."""
    from ctdiff.config import config_from_dict
    from ctdiff.data.volume import Volume
    from ctdiff.diffusion import sample as sample_module
    from ctdiff.diffusion.sample import load_bundle
    from ctdiff.model.checkpoint import load_checkpoint
    from ctdiff.training.train import train
    from tests.ctdiff.test_spaces import tiny

    _, data, _ = latent_run
    values = tiny(
        space, "ddpm", **({"wavelet_levels": [1, 1, 1], "wavelet_scale": "band"} if space == "wavelet" else {})
    )
    values["diffusion"]["prediction"] = "sample"
    values["train"]["epochs"] = 1
    run = tmp_path / "run"
    with torch.random.fork_rng():
        train(config_from_dict(values), data, run, progress=False)
    ckpt = run / "checkpoints" / "last.pt"
    before = _sha(ckpt)
    out = tmp_path / "noise.pt"
    assert main(["fit-noise", "--model", str(ckpt), "--data", str(data), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"a {space}-space checkpoint has no autoencoder to fit on; give --samples N" in err and not out.exists()

    yy, xx = np.mgrid[:32, :32]
    drawn = sample_module.sample

    def noise_free(*args, **kwargs):
        assert kwargs["noise"] is False  # the samples are drawn without any noise model
        vols = drawn(*args, **kwargs)
        truth = np.full((32, 32, 8), 40.0, dtype=np.float32)
        truth[(xx - 9) ** 2 + (yy - 24) ** 2 < 30] = -100.0
        return [Volume(truth.copy(), v.affine, v.meta) for v in vols]

    monkeypatch.setattr(sample_module, "sample", noise_free)
    cmd = ["fit-noise", "--model", str(ckpt), "--data", str(data), "--samples", "2", "--no-progress", "--out", str(out)]
    assert main(cmd) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    monkeypatch.setattr(sample_module, "sample", drawn)
    assert summary["method"] == "unpaired" and summary["decoded"] == 2
    assert summary["sd_hu"] == pytest.approx(20.0, rel=0.25)  # the data's noise: the samples have none
    assert _sha(ckpt) == before  # the input is untouched
    old, new = load_checkpoint(ckpt), load_checkpoint(out)
    carried = new["space"]["noise_model"]
    assert new["space"]["kind"] == space and carried["sd_hu"] == pytest.approx(summary["sd_hu"])
    assert {k: v for k, v in new["space"].items() if k != "noise_model"} == (old.get("space") or {"kind": "pixel"})
    assert all(torch.equal(new["ema"][k], v) for k, v in old["ema"].items())

    bundle, plain = load_bundle(out, device="cpu"), load_bundle(ckpt, device="cpu")
    assert bundle.space.noise_model["sd_hu"] == carried["sd_hu"] and plain.space.noise_model is None
    assert bundle.space.state()["noise_model"] == carried  # a trainer or export saving the space keeps it
    a = _check_noise_by_seed(bundle, plain, "ddim", carried["sd_hu"])
    for flag, expect in (([], True), (["--no-noise"], False)):
        dst = tmp_path / f"samples{len(flag)}"
        assert main(["sample", "--checkpoint", str(out), "--n", "1", "--out", str(dst), *flag]) == 0
        assert json.loads((dst / "manifest.json").read_text())["noise_resynthesis"] is expect
    # the app's Generate form samples the same noisy volume
    from ctdiff.data.io import read_volume
    from pages.components.sampling import generate

    folder = generate(run, out, n=1, sampler="ddim", steps=2, seed=3, overwrite=False, device="cpu", progress=None)
    assert json.loads((folder / "manifest.json").read_text())["noise_resynthesis"] is True
    np.testing.assert_allclose(read_volume(folder / "case_000.nii.gz").array, a.array, atol=0.5)
