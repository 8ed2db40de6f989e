"""Noise and NPS on every field of view: ROI sizes, absolute homogeneity, the independent
cross-check, f_avg and the sub-bin peak, reasons when nothing is measurable, one ROI size per
comparison, and small-field-of-view phantom cohorts (96 mm at 1.5 mm) moving the right way."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from ctdiff.data.io import write_nifti
from ctdiff.data.phantom import case_seed, make_phantom
from ctdiff.data.volume import Volume
from eval.metrics import noise
from eval.report import build_report


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def _soft_block(rng, sd, shape=(64, 64, 6), hu=40.0):
    a = np.full(shape, hu) + rng.normal(0, sd, shape)
    return a, np.ones(shape, bool)


def test_roi_sizes_step_down_from_40_mm_to_8_px():
    assert noise.roi_sizes((1.5, 1.5)) == [27, 20, 13, 10, 8]
    assert noise.roi_sizes((0.7, 0.7)) == [57, 43, 29, 21, 14, 8]
    assert noise.roi_sizes((6.5625, 6.5625)) == [8]
    assert noise.roi_sizes((1.5, 1.5), shape_xy=(16, 40)) == [13, 10, 8]
    assert noise.roi_sizes((1.5, 1.5), shape_xy=(6, 6)) == []
    assert noise.roi_sizes((2.0, 2.0), preferred_mm=16.0) == [8]  # 16, 15, 10 mm all round to 8 px


def test_peak_is_interpolated_below_one_bin_and_f_avg_is_the_nps_weighted_mean():
    freq = 0.05 * np.arange(12)
    vertex = 0.2375  # between bins 4 (0.20) and 5 (0.25)
    nps = np.maximum(10.0 - 400.0 * (freq - vertex) ** 2, 0.1)
    assert noise.nps_peak_frequency(freq, nps) == pytest.approx(vertex, abs=1e-12)
    assert noise.nps_mean_frequency(freq, nps) == pytest.approx(np.sum(freq * nps) / np.sum(nps))
    flat = np.ones(12)
    assert noise.nps_mean_frequency(freq, flat) == pytest.approx(freq.mean())
    assert np.isnan(noise.nps_mean_frequency(freq, np.zeros(12)))


def test_blur_lowers_peak_and_f_avg_of_measured_nps(rng):
    white = rng.normal(0, 20, (30, 16, 16))
    blurred = np.stack([ndimage.gaussian_filter(w, 0.7) for w in white])
    f, n_white = noise.nps_radial(noise.detrend_rois(white, order=0), (1.5, 1.5))
    _, n_blur = noise.nps_radial(noise.detrend_rois(blurred, order=0), (1.5, 1.5))
    # white noise (flat NPS, zero at f = 0 after removing the mean): f_avg is the mean ring frequency
    assert noise.nps_mean_frequency(f, n_white) == pytest.approx(f[1:].mean(), rel=0.05)
    assert noise.nps_mean_frequency(f, n_blur) < 0.75 * noise.nps_mean_frequency(f, n_white)
    assert noise.nps_peak_frequency(f, n_blur) < noise.nps_peak_frequency(f, n_white)


@pytest.mark.parametrize("sd", [8.0, 30.0])
def test_local_sd_estimate_recovers_white_noise(rng, sd):
    a, body = _soft_block(rng, sd)
    assert noise.local_sd_noise(a, body) == pytest.approx(sd, rel=0.1)


def test_homogeneity_is_absolute_not_relative_to_the_scan(rng):
    a, body = _soft_block(rng, 5.0)
    x = np.arange(a.shape[0])[:, None, None]
    striped = a + 8.0 * (x - 32.0)  # a steep gradient (8 HU/px) everywhere: an 8-px square spans 64 HU
    # the old rule (2x the lowest structure found) accepted the least bad; the absolute one refuses
    assert noise.find_homogeneous_rois(striped, body, 8) == []
    per_size, why = noise.measure_noise(striped, body, (1.5, 1.5))
    assert why is None and all(not m.ok for m in per_size.values())
    assert "structure <= 10 HU" in per_size[8].reason
    assert np.isnan(per_size[8].sd) and np.isnan(per_size[8].peak_frequency)
    ok, _ = noise.measure_noise(a, body, (1.5, 1.5))
    assert ok[27].ok and ok[27].sd == pytest.approx(5.0, rel=0.1) and ok[27].n_rois >= 4


def test_disagreement_with_the_independent_estimate_is_refused(rng):
    a, body = _soft_block(rng, 10.0)
    per_size, _ = noise.measure_noise(a, body, (1.5, 1.5), cross_check=80.0)
    assert all("disagrees with the local-SD estimate 80.0 HU by more than 2.5x" in m.reason for m in per_size.values())
    per_size, _ = noise.measure_noise(a, body, (1.5, 1.5), cross_check=20.0)  # 2x off: within the factor
    assert per_size[27].ok


def test_reasons_when_nothing_is_measurable(rng):
    tiny, body = _soft_block(rng, 10.0, shape=(6, 6, 4))
    assert noise.measure_noise(tiny, body, (1.5, 1.5)) == (
        {},
        "field of view too small: 6x6 px in-plane, an ROI needs 8 px",
    )
    fat = np.full((40, 40, 4), -100.0) + rng.normal(0, 10, (40, 40, 4))
    assert noise.measure_noise(fat, np.ones(fat.shape, bool), (1.5, 1.5))[1] == "no soft tissue (0..100 HU) in the body"


def _m(r, ok=True):
    return noise.NoiseMeasurement(
        r, 3 if ok else 0, 10.0 if ok else np.nan, np.zeros(3), np.zeros(3), 0.1, 0.1, None if ok else "no ROI"
    )


def test_one_roi_size_for_every_cohort():
    real = [{27: _m(27, i < 3), 13: _m(13)} for i in range(4)]  # 3 of 4 real scans at 27 px
    gen = [{27: _m(27, i < 1), 13: _m(13)} for i in range(4)]  # 1 of 4 generated: not enough at 27
    size, details = noise.choose_roi_size({"real": real, "generated": gen})
    assert size == 13 and details["measurable_per_size"]["27"] == {"real": 3, "generated": 1}
    gen = [{27: _m(27, i < 2), 13: _m(13)} for i in range(4)]
    assert noise.choose_roi_size({"real": real, "generated": gen})[0] == 27
    # nowhere half: the size with the most scans in the worst cohort
    real = [{27: _m(27, i < 1), 13: _m(13, False)} for i in range(6)]
    assert noise.choose_roi_size({"real": real, "generated": real})[0] == 27
    assert noise.choose_roi_size({"real": [{13: _m(13, False)}], "generated": [{13: _m(13, False)}]})[0] is None


# ----------------------------------------------------------------- small field of view cohorts
SMALL_FOV = dict(shape=(64, 64, 20), fov_mm=(96.0, 96.0, 30.0), center_mm=(0.0, -20.0, 0.0))  # 1.5 mm pixels


def _cohort(folder, seed, n=4, noise_hu=20.0, sigma=0.0):
    folder.mkdir()
    for i in range(n):
        v, _ = make_phantom(
            SMALL_FOV["shape"],
            case_seed(seed, i),
            noise_hu,
            fov_mm=SMALL_FOV["fov_mm"],
            center_mm=SMALL_FOV["center_mm"],
        )
        a = ndimage.gaussian_filter(v.array, (sigma, sigma, 0)) if sigma else v.array
        write_nifti(Volume.from_spacing(a.astype(np.float32), v.spacing), folder / f"c{i}.nii.gz")
    return folder


@pytest.fixture(scope="module")
def small_fov_reports(tmp_path_factory):
    root = tmp_path_factory.mktemp("small-fov")
    real = _cohort(root / "real", 11)
    out = {}
    for name, kw in {"fresh": {}, "noisy": {"noise_hu": 35.0}, "blurred": {"sigma": 1.0}}.items():
        gen = _cohort(root / name, 12, **kw)
        out[name] = build_report(
            real, gen, metrics="noise,cnr_soft_tissue_fat", workers=1, settings={"n_bootstrap": 30}
        )
    return out


def test_small_field_of_view_is_measurable_with_the_roi_size_reported(small_fov_reports):
    for name, report in small_fov_reports.items():
        m = report["metrics"]
        for metric in ("noise_sd", "nps_peak_frequency", "nps_mean_frequency"):
            assert m[metric]["value"] is not None, (name, metric, m[metric]["reason"])
        d = m["noise_sd"]["details"]
        assert d["roi_px"] in (27, 20, 13, 10, 8) and d["roi_mm"] == pytest.approx(1.5 * d["roi_px"])
        assert d["roi_sizes_tried_px"] == [27, 20, 13, 10, 8]
        assert d["measurable"]["real"] >= 2 and d["measurable"]["generated"] >= 2
        rows = [r for r in report["per_case"] if r["noise_sd"] is not None]
        assert {r["noise_roi_px"] for r in rows} == {d["roi_px"]}  # one size for real and generated
        for r in rows:  # the pooled ROI SD agrees with the independent estimate
            assert 1 / 2.5 <= r["noise_sd"] / r["noise_sd_local"] <= 2.5
    assert small_fov_reports["fresh"]["metrics"]["noise_sd"]["real"] == pytest.approx(20.0, rel=0.25)


def test_small_field_of_view_noise_and_blur_move_the_metrics_the_right_way(small_fov_reports):
    fresh, noisy, blurred = (small_fov_reports[k]["metrics"] for k in ("fresh", "noisy", "blurred"))
    assert noisy["noise_sd"]["generated"] > 1.4 * fresh["noise_sd"]["generated"]
    assert blurred["noise_sd"]["generated"] < 0.75 * fresh["noise_sd"]["generated"]
    assert blurred["nps_peak_frequency"]["generated"] < 0.8 * fresh["nps_peak_frequency"]["generated"]
    assert blurred["nps_mean_frequency"]["generated"] < 0.85 * fresh["nps_mean_frequency"]["generated"]
    assert blurred["nps_distance"]["value"] > 1.5 * fresh["nps_distance"]["value"]
    assert noisy["noise_sd"]["status"] == "far" and blurred["nps_mean_frequency"]["status"] in ("apart", "far")
