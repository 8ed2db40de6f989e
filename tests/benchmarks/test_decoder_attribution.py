"""benchmarks/decoder_attribution.py: region masks, the hybrid volumes, the noise-free cohort, and a
whole run on tiny phantoms with real radiomics features."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch

from ctdiff.data.io import read_volume
from ctdiff.data.phantom import write_cohort
from ctdiff.model import noise_resynthesis
from ctdiff.model.autoencoder import AutoencoderTrainer, autoencoder_config

REPO = Path(__file__).resolve().parents[2]
TINY_AE = {"channels": [8, 8], "latent_channels": 2, "norm_groups": 4, "patch": [8, 16, 16], "disc_layers": 1}
IDS = {"air": 0, "muscle": 4, "subcutaneous_fat": 3, "pelvic_fat": 5, "cortical_bone": 7, "trabecular_bone": 8}


@pytest.fixture(scope="module")
def da():
    return runpy.run_path(str(REPO / "benchmarks" / "decoder_attribution.py"), run_name="decoder_attribution")


def test_region_masks(da):
    lab = np.zeros((8, 8, 8), dtype=np.uint8)
    lab[1:7, 1:7, :] = IDS["muscle"]
    lab[3:5, 3:5, 3:5] = IDS["trabecular_bone"]  # a 2x2x2 cube inside muscle
    lab[1, 1:7, :] = IDS["pelvic_fat"]
    m = da["region_masks"](lab, IDS, border_slices=1)
    assert m["air"].sum() == (lab == 0).sum() == 8 * 8 * 8 - 36 * 8
    # the cube dilated by the 6-neighbourhood: 8 voxels + 4 on each of its 6 faces
    assert m["bone"].sum() == 8 + 6 * 4 and m["bone"][3:5, 3:5, 3:5].all() and not m["bone"][2, 2, 4]
    assert m["border"].sum() == 2 * 64 and m["border"][:, :, 0].all() and not m["border"][:, :, 1:7].any()
    assert m["fat"].sum() == 6 * 8 and m["fat"][1, 3, 4]
    # edges: both sides of every boundary, nothing inside a tissue
    assert m["edges"][3, 3, 3] and m["edges"][2, 3, 3] and m["edges"][0, 3, 3] and m["edges"][1, 3, 3]
    assert not m["edges"][5, 5, 0] and not m["edges"][7, 7, 7] and not m["edges"][3, 3, 0]
    with pytest.raises(ValueError, match="border_slices"):
        da["region_masks"](lab, IDS, border_slices=4)


def test_hybrid_takes_the_region_from_the_anatomy_adds_the_noise_and_clips(da):
    decoded = np.full((4, 4, 2), 100.0, np.float32)
    anatomy = np.full((4, 4, 2), -990.0, np.float32)
    mask = np.zeros((4, 4, 2), bool)
    mask[0] = True
    noise = np.full((4, 4, 2), -30.0, np.float32)
    h = da["hybrid"](decoded, anatomy, mask, noise, (-1000, 1500))
    assert h.dtype == np.float32
    assert (h[0] == -1000.0).all()  # -990 - 30, clipped to the window
    assert (h[1:] == 70.0).all()
    assert (da["hybrid"](decoded, anatomy, None, noise, (-1000, 1500)) == 70.0).all()


def test_region_errors_measure_each_region_against_the_anatomy(da):
    clean = np.full((5, 5, 6), -1000.0, np.float32)
    clean[1:4, 1:4, :] = 40.0  # a body column
    lab = np.where(clean > -500, IDS["muscle"], IDS["air"]).astype(np.uint8)
    lab[1, 1, 2:4] = IDS["cortical_bone"]
    clean[lab == IDS["cortical_bone"]] = 600.0
    decoded = clean.copy()
    air = lab == IDS["air"]
    decoded[air] += 5.0
    decoded[0, 0, 0] = -1150.0  # one dark air voxel
    decoded[1:4, 1:4, 0] += 30.0  # the body wrong by 30 HU in the first slice only
    masks = da["region_masks"](lab, IDS, border_slices=1)
    e = da["region_errors"](decoded, clean, masks)
    assert e["air_bias_hu"] == pytest.approx((5.0 * (air.sum() - 1) - 150.0) / air.sum())
    assert e["air_below_-1040"] == 1 and e["air_min_hu"] == -1150.0
    # border (slices 0 and 5): 18 body voxels, 9 of them 30 HU off; the inner slices are exact
    assert e["body_mae_border_hu"] == pytest.approx(15.0) and e["body_mae_inner_hu"] == 0.0
    assert e["bone_p99_clean"] == 600.0 and e["share"]["border"] == pytest.approx(2 / 6)
    # the body column's centre is off its edges; 30 HU there in slice 0, of 6 slices
    assert e["nonedge_body_mae_hu"] == pytest.approx(5.0)
    summary = da["mean_errors"]([{"case": "a", **e}, {"case": "b", **{**e, "air_min_hu": -1050.0}}])
    assert summary["air_min_hu"] == -1100.0 and summary["share"] == e["share"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("attribution")
    write_cohort(root / "held", n=3, shape=(24, 24, 8), seed=3, noise_hu=20.0, progress=False)
    return root


def test_the_noise_free_cohort_is_the_scans_without_their_noise(da, cohort, tmp_path):
    cases = list(da["noise_free_cohort"](cohort / "held"))
    assert [c[0] for c in cases] == ["case_000.nii.gz", "case_001.nii.gz", "case_002.nii.gz"]
    for name, original, clean, labels in cases:
        diff = original - clean.array
        assert abs(diff.mean()) < 2.0 and 15.0 < diff.std() < 25.0
        assert labels.shape == original.shape and (labels == 0).any() and (labels != 0).any()
        np.testing.assert_allclose(clean.affine, read_volume(cohort / "held" / name).affine)
    # a manifest whose seed is not the scan's
    bad = tmp_path / "bad"
    bad.mkdir()
    manifest = json.loads((cohort / "held" / "manifest.json").read_text())
    manifest["cases"][1]["seed"] += 1
    for c in manifest["cases"]:
        (bad / c["file"]).write_bytes((cohort / "held" / c["file"]).read_bytes())
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SystemExit, match=r"case_001.nii.gz: the manifest's seed does not give back this scan"):
        list(da["noise_free_cohort"](bad))
    with pytest.raises(SystemExit, match="manifest.json: not readable"):
        list(da["noise_free_cohort"](tmp_path))


def _cheap_features(folder, cache_dir, workers):
    """A stand-in for the radiomics features in the whole-run test: frd-score resamples every scan to
    1 mm, so even a 24 x 24 x 8 phantom (420 mm field of view) costs a minute per scan. Intensity
    percentiles and the mean gradient, which an untrained decoder changes and the noise does not much."""
    vectors = []
    for path in sorted(p for p in Path(folder).iterdir() if p.name.endswith(".nii.gz")):
        a = read_volume(path).array
        grad = np.abs(np.diff(a, axis=0)).mean() + np.abs(np.diff(a, axis=1)).mean()
        vectors.append([*np.percentile(a, [1, 10, 50, 90, 99]), a.std(), grad])
    return ["p1", "p10", "p50", "p90", "p99", "sd", "gradient"], np.asarray(vectors)


def test_a_whole_run_scores_each_cohort_against_the_phantoms(da, cohort, tmp_path, monkeypatch):
    monkeypatch.setitem(da["main"].__globals__, "features", _cheap_features)
    # an untrained autoencoder with a noise model of about the phantoms' noise
    rng = np.random.default_rng(0)
    flat = [np.full((4, 32, 32), 40.0) for _ in range(2)]
    model = noise_resynthesis.fit([(f + rng.normal(0, 20, f.shape), f) for f in flat])
    with torch.random.fork_rng():
        torch.manual_seed(0)
        trainer = AutoencoderTrainer(autoencoder_config(TINY_AE))
    state = trainer.state()
    state["noise_model"] = model
    torch.save(state, tmp_path / "autoencoder.pt")
    out = tmp_path / "out.json"
    argv = ["--held-out", str(cohort / "held"), "--model", str(tmp_path / "autoencoder.pt")]
    argv += ["--work", str(tmp_path / "work"), "--regions", "air,border,air+border"]
    argv += ["--border-slices", "1"]
    argv += ["--cache-dir", str(tmp_path / "cache"), "--workers", "1", "--json", str(out)]
    assert da["main"](argv) == 0
    result = json.loads(out.read_text())
    names = ["anatomy, new phantom noise", "anatomy", "decoded"]
    names += [
        "decoded, air from the anatomy",
        "decoded, border from the anatomy",
        "decoded, air+border from the anatomy",
    ]
    assert list(result["cohorts"]) == names
    work = tmp_path / "work"
    cases = list(da["noise_free_cohort"](cohort / "held"))
    name, _, clean, labels = cases[0]
    decoded = read_volume(work / "reconstructions" / name).array
    noise = noise_resynthesis.synthesize(model, (8, 24, 24), noise_resynthesis.noise_generator(0)).numpy()
    noise = noise.transpose(2, 1, 0)
    window = autoencoder_config(TINY_AE).hu_window
    want = np.clip(clean.array + noise, *window)
    np.testing.assert_allclose(read_volume(work / "cohorts" / "anatomy" / name).array, want, atol=0.51)  # int16 HU
    air = read_volume(work / "cohorts" / "decoded_air-from-the-anatomy" / name).array
    np.testing.assert_allclose(air[labels == 0], want[labels == 0], atol=0.51)
    body = np.clip(decoded + noise, *window)
    np.testing.assert_allclose(air[labels != 0], body[labels != 0], atol=0.51)
    both = read_volume(work / "cohorts" / "decoded_air+border-from-the-anatomy" / name).array
    union = (labels == 0) | (np.arange(8) == 0)[None, None, :] | (np.arange(8) == 7)[None, None, :]
    np.testing.assert_allclose(both[union], want[union], atol=0.51)
    np.testing.assert_allclose(both[~union], body[~union], atol=0.51)
    fresh = read_volume(work / "cohorts" / "anatomy_new-phantom-noise" / name).array - clean.array
    assert abs(fresh.mean()) < 2.0 and 15.0 < fresh.std() < 25.0  # the phantoms' 20 HU, not their own draw
    assert np.abs(fresh - (cases[0][1] - clean.array)).mean() > 10.0
    for cohort_result in result["cohorts"].values():
        m = cohort_result["manifold"]
        assert 0.0 <= m["precision"] <= 1.0 and len(m["generated_ratio"]) == 3
    # the untrained decoder is far from the phantoms; their own anatomy with noise is not
    r = {k: v["manifold"]["generated_ratio_median"] for k, v in result["cohorts"].items()}
    assert r["anatomy"] < r["decoded"] and r["anatomy, new phantom noise"] < r["decoded"]
    assert result["cohorts"]["anatomy"]["gap"]["median_abs_z"] < result["cohorts"]["decoded"]["gap"]["median_abs_z"]
    errors = result["decoder_errors_by_region"]
    assert [c["case"] for c in errors["cases"]] == [c[0] for c in cases]
    first = da["region_errors"](
        decoded,
        clean.array,
        da["region_masks"](labels, da["ids_of"](json.loads((cohort / "held" / "manifest.json").read_text())), 1),
    )
    assert errors["cases"][0]["body_mae_inner_hu"] == pytest.approx(first["body_mae_inner_hu"])
    # --errors-only: the same errors, no cohorts written, no features extracted
    only = tmp_path / "only.json"
    monkeypatch.setitem(da["main"].__globals__, "features", None)
    argv_only = [*argv[: argv.index("--json")], "--json", str(only), "--errors-only"]
    assert da["main"](argv_only) == 0
    assert json.loads(only.read_text())["decoder_errors_by_region"] == errors
    monkeypatch.setitem(da["main"].__globals__, "features", _cheap_features)
    # a second run reuses the reconstructions
    stamp = (work / "reconstructions" / name).stat().st_mtime_ns
    assert da["main"](argv) == 0
    assert (work / "reconstructions" / name).stat().st_mtime_ns == stamp


def test_unknown_regions_are_refused(da, cohort, tmp_path, capsys):
    with pytest.raises(SystemExit):
        da["main"](
            ["--held-out", str(cohort / "held"), "--model", "x.pt", "--work", str(tmp_path), "--regions", "lungs"]
        )
    assert "--regions: unknown lungs" in capsys.readouterr().err
