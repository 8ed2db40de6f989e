"""Histogram matching of the body (``fit-histogram``, ``sample.histogram_match``): the matched body takes
the reference's quantiles (as scikit-image's ``match_histograms`` would), air and the noise are left
alone, the map is monotone and continuous; ``fit-histogram`` / ``sample`` / the app on a tiny latent run."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from ctdiff.cli import main
from ctdiff.diffusion import histogram
from ctdiff.diffusion.fit_histogram import fit_histogram
from ctdiff.diffusion.sample import load_bundle, sample
from ctdiff.errors import ConfigError, InputError, OverwriteError
from ctdiff.model.checkpoint import load_checkpoint
from tests.ctdiff.test_noise_resynthesis import _one_thread, latent_run  # noqa: F401


def _volume(rng, shape=(24, 24, 8), fat=-100.0, soft=40.0, sd=20.0, share=0.5):
    """Air around a body of fat and soft tissue, plus noise."""
    a = np.full(shape, -1000.0, dtype=np.float32)
    n = int(shape[0] * share)
    a[:n] = soft
    a[: n // 3] = fat
    return a + rng.normal(0.0, sd, shape).astype(np.float32)


def test_a_volume_matched_to_itself_takes_the_references_quantiles_and_keeps_its_air():
    rng = np.random.default_rng(0)
    ref = histogram.fit([_volume(rng) for _ in range(3)])
    drawn = _volume(rng, fat=-60.0, soft=30.0, sd=30.0, share=0.6)  # a blurred, shifted sample
    out = histogram.match(drawn, drawn, ref)
    body = drawn > -500
    q = np.quantile(out[body], np.linspace(0, 1, 101))
    want = np.asarray(ref["quantiles_hu"])[::10]
    np.testing.assert_allclose(q[1:-1], want[1:-1], atol=1.0)  # HU, on a 1001-quantile grid
    assert np.array_equal(out[~body], drawn[~body])  # air as drawn
    assert np.isclose(np.median(out[body & (drawn < -20)]), -100.0, atol=6.0)  # fat back at the reference's
    # the same as scikit-image's histogram matching of the body alone against the reference's body voxels
    from skimage.exposure import match_histograms

    pool = np.interp(np.linspace(0, 1, 200_001), np.linspace(0, 1, 1001), ref["quantiles_hu"])
    sk = match_histograms(drawn[body], pool)
    assert np.abs(out[body] - sk).mean() < 0.5 and np.abs(out[body] - sk).max() < 12.0


def test_the_noise_is_added_back_unchanged_and_the_map_is_monotone_and_continuous():
    rng = np.random.default_rng(1)
    ref = histogram.fit([_volume(rng) for _ in range(2)])
    estimate = _volume(rng, fat=-60.0, soft=30.0, sd=0.0) + np.linspace(-30, 30, 8, dtype=np.float32)
    noise = rng.normal(0.0, 20.0, estimate.shape).astype(np.float32)
    drawn = estimate + noise
    out = histogram.match(estimate, drawn, ref)
    mapped = out - noise  # T(estimate): a function of the estimate alone
    order = np.argsort(estimate, axis=None, kind="stable")
    e, t = estimate.ravel()[order], mapped.ravel()[order]
    assert np.all(np.diff(t) >= -1e-3)  # non-decreasing in the estimate
    assert np.allclose(t[e <= -500], e[e <= -500])  # identity in air
    same = np.isclose(e[1:], e[:-1])
    assert np.allclose(t[1:][same], t[:-1][same], atol=1e-3)  # equal estimates, equal T: the noise is kept
    # T continuous at the threshold: voxels just above it move by little
    near = estimate[(estimate > -500) & (estimate < -480)]
    if near.size:
        assert np.abs(histogram.match(near, near + 0, ref) - near).max() < 25.0
    # a volume with too few body voxels is returned as drawn
    air = np.full((16, 16, 4), -1000.0, np.float32)
    air[0, 0, 0] = 50.0
    assert np.array_equal(histogram.match(air, air, ref), air)


def test_fit_and_check_record_refuse_bad_input():
    rng = np.random.default_rng(2)
    with pytest.raises(ValueError, match="voxels above"):
        histogram.fit([np.full((8, 8, 4), -1000.0)])
    bad = _volume(rng)
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        histogram.fit([bad])
    with pytest.raises(ValueError, match="finite"):
        histogram.fit([_volume(rng)], body_above_hu=float("nan"))
    rec = histogram.fit([_volume(rng)])
    assert rec["n_volumes"] == 1 and len(rec["quantiles_hu"]) == histogram.N_QUANTILES
    body = _volume(rng)
    assert histogram.check_record(rec) is None
    assert "not a ctdiff histogram" in histogram.check_record({"quantiles_hu": [1, 2, 3]})
    assert "increasing" in histogram.check_record({**rec, "quantiles_hu": [3.0, 2.0, 1.0]})
    assert "threshold" in histogram.check_record({**rec, "body_above_hu": 1e9})
    with pytest.raises(ValueError, match="shape"):
        histogram.match(body, body[:-1], rec)


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fit_histogram_writes_a_copy_that_samples_with_matching(latent_run, tmp_path, capsys):  # noqa: F811
    from ctdiff.data.io import read_volume
    from ctdiff.diffusion.fit_noise import fit_noise

    run, data, _ = latent_run
    noisy = tmp_path / "noise.pt"
    fit_noise(run / "checkpoints" / "last.pt", data, noisy)  # a noise model, so estimate and draw differ
    before = _sha(noisy)
    out = tmp_path / "hist.pt"
    assert main(["fit-histogram", "--model", str(noisy), "--data", str(data), "--out", str(out), "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_volumes"] == 4 and summary["body_above_hu"] == -500.0
    assert _sha(noisy) == before  # the input is never changed
    ckpt = load_checkpoint(out)
    assert ckpt["config"]["sample"]["histogram_match"] is True
    rec = ckpt["histogram_reference"]
    assert rec["fitted_on"] == [f"case_{i}.nii.gz" for i in range(4)]
    vols = [np.clip(read_volume(data / f"case_{i}.nii.gz").array, -1000, 1000) for i in range(4)]
    np.testing.assert_allclose(rec["quantiles_hu"], histogram.fit(vols)["quantiles_hu"], atol=1e-3)
    bundle = load_bundle(out, device="cpu")
    matched = sample(bundle, 2, "euler", 2, seed=7)
    drawn = sample(bundle, 2, "euler", 2, seed=7, histogram_match=False)
    estimate = sample(bundle, 2, "euler", 2, seed=7, noise=False)
    plain = sample(load_bundle(noisy, device="cpu"), 2, "euler", 2, seed=7)
    assert matched[0].meta["histogram_match"] is True and drawn[0].meta["histogram_match"] is False
    assert estimate[0].meta["histogram_match"] is False  # noise=False: the raw estimate
    assert all(np.array_equal(a.array, b.array) for a, b in zip(drawn, plain))  # off: as without the record
    assert not np.array_equal(matched[0].array, drawn[0].array)
    for m, d, e in zip(matched, drawn, estimate):
        np.testing.assert_allclose(m.array, histogram.match(e.array, d.array, rec), atol=1e-3)
    # the CLI: the manifest records it; --no-histogram-match and --no-noise leave it out
    for flag, expected in (([], True), (["--no-histogram-match"], False), (["--no-noise"], False)):
        folder = tmp_path / f"samples-{'-'.join(flag) or 'on'}"
        cmd = ["sample", "--checkpoint", str(out), "--n", "1", "--out", str(folder), "--no-progress", *flag]
        assert main(cmd) == 0
        assert json.loads((folder / "manifest.json").read_text())["histogram_match"] is expected


def test_fit_histogram_and_sample_refuse_bad_input_in_one_line(latent_run, tmp_path, capsys):  # noqa: F811
    run, data, _ = latent_run
    src = run / "checkpoints" / "last.pt"
    out = tmp_path / "hist.pt"
    with pytest.raises(ConfigError, match="is the input"):
        fit_histogram(src, data, src)
    with pytest.raises(ConfigError, match="inside the model's HU window"):
        fit_histogram(src, data, out, body_above=-1500)
    out.write_text("not a checkpoint")
    with pytest.raises(OverwriteError, match="not a ctdiff checkpoint"):
        fit_histogram(src, data, out, force=True)
    assert out.read_text() == "not a checkpoint"
    with pytest.raises(InputError):
        fit_histogram(src, tmp_path / "missing", tmp_path / "new.pt")
    with pytest.raises(InputError, match="voxels above") as info:
        fit_histogram(src, data, tmp_path / "new.pt", body_above=900)  # nothing that bright in the data
    assert str(data) in str(info.value)
    rc = main(
        [
            "fit-histogram",
            "--model",
            str(src),
            "--data",
            str(data),
            "--out",
            str(tmp_path / "x.pt"),
            "--body-above",
            "inf",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "--body-above" in err and len(err.splitlines()) == 1, err
    # sampling a checkpoint without a reference, asking for matching: one line naming the checkpoint
    with pytest.raises(InputError, match="carries no histogram reference") as info:
        sample(load_bundle(src, device="cpu"), 1, "euler", 2, seed=0, histogram_match=True)
    assert "last.pt" in str(info.value)
    assert len(sample(load_bundle(src, device="cpu"), 1, "euler", 2, seed=0, noise=False, histogram_match=True)) == 1
    good = tmp_path / "good.pt"
    fit_histogram(src, data, good)
    ckpt = torch.load(good, weights_only=True)
    broken = tmp_path / "broken.pt"
    torch.save(
        {**ckpt, "histogram_reference": {**ckpt["histogram_reference"], "quantiles_hu": [5.0, 1.0, 0.0]}}, broken
    )
    with pytest.raises(InputError, match="increasing") as info:
        load_bundle(broken, device="cpu")
    assert "broken.pt" in str(info.value)


def test_the_apps_generate_form_samples_with_the_matching(latent_run, tmp_path):  # noqa: F811
    from ctdiff.data.io import read_volume
    from pages.components.sampling import generate

    run, data, _ = latent_run
    out = tmp_path / "hist.pt"
    fit_histogram(run / "checkpoints" / "last.pt", data, out)
    folder = generate(
        run, out, n=1, sampler="euler", steps=2, seed=4, overwrite=False, device="cpu", progress=None,
    )  # fmt: skip
    assert json.loads((folder / "manifest.json").read_text())["histogram_match"] is True
    matched = sample(load_bundle(out, device="cpu"), 1, "euler", 2, seed=4)[0]
    np.testing.assert_allclose(read_volume(folder / "case_000.nii.gz").array, matched.array, atol=0.5)


def test_fit_noise_on_a_matching_checkpoint_fits_the_noise_to_the_matched_estimate(latent_run, tmp_path):  # noqa: F811
    """``fit-noise --samples`` on a checkpoint with ``sample.histogram_match``: the noise the samples lack is
    measured on T(estimate), the volume the noise is added to, with T fitted as sample() fits it."""
    from ctdiff.data.dataset import dataset_files
    from ctdiff.data.io import read_volume
    from ctdiff.diffusion.fit_noise import fit_noise
    from ctdiff.model import noise_resynthesis

    run, data, _ = latent_run
    noisy = tmp_path / "noise.pt"
    fit_noise(run / "checkpoints" / "last.pt", data, noisy)  # the noise model T is fitted with
    hist = tmp_path / "hist.pt"
    fit_histogram(noisy, data, hist)
    refit, plain = tmp_path / "refit.pt", tmp_path / "plain.pt"
    fit_noise(hist, data, refit, samples=2, seed=3)
    fit_noise(noisy, data, plain, samples=2, seed=3)  # the same samples, no matching
    got = load_checkpoint(refit)["space"]["autoencoder"]["noise_model"]
    unmatched = load_checkpoint(plain)["space"]["autoencoder"]["noise_model"]
    assert got["samples"]["histogram_match"] is True and unmatched["samples"]["histogram_match"] is False
    # by hand: the estimates, the volumes drawn with the current noise, T(estimate) = match - noise
    bundle = load_bundle(hist, device="cpu")
    cfg = bundle.config.sample
    est = sample(bundle, 2, cfg.sampler, cfg.steps, seed=3, noise=False)
    drawn = sample(bundle, 2, cfg.sampler, cfg.steps, seed=3, histogram_match=False)
    rec = load_checkpoint(hist)["histogram_reference"]
    decoded = []
    for e, d in zip(est, drawn):
        e, d = np.maximum(e.array.astype(np.float64), -1000.0), d.array.astype(np.float64)
        decoded.append((histogram.match(e, d, rec) - (d - e)).transpose(2, 1, 0))
    originals = [read_volume(f).array.astype(np.float64).transpose(2, 1, 0) for f in dataset_files(data)[:8]]
    want = noise_resynthesis.fit_unpaired(originals, decoded)
    np.testing.assert_allclose(got["nps_xy_hu2"], want["nps_xy_hu2"], rtol=1e-5, atol=1e-6)
    assert np.isclose(got["decoded_sd_hu"], want["decoded_sd_hu"], rtol=1e-6)
    # the matching changed what was measured: the matched estimates' soft tissue is not the raw one's
    assert abs(got["decoded_sd_hu"] - unmatched["decoded_sd_hu"]) > 0.05
