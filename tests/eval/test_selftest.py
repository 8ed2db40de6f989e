"""eval.selftest: controlled degradations of a real cohort and which metrics detect them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from eval.cli import main as eval_main
from eval.metrics import noise
from eval.selftest import DEGRADATIONS, Context, detection, distance, noise_like, run_selftest


def test_noise_like_follows_the_given_nps_and_sd():
    rng = np.random.default_rng(0)
    freq = np.arange(17) / 32.0  # radial bins of 32-px ROIs at 1 mm
    target = np.exp(-((freq / 0.25) ** 2)) * 100.0  # a low-pass spectrum: power falls with frequency
    n = noise_like((64, 64, 40), (1.0, 1.0, 1.0), (freq, target), 25.0, rng)
    assert n.std() == pytest.approx(25.0, rel=1e-3)
    rois = np.stack([n[x : x + 32, y : y + 32, z] for z in range(40) for x in (0, 32) for y in (0, 32)])
    f2, got = noise.nps_radial(noise.detrend_rois(rois, 0), (1.0, 1.0))
    assert np.allclose(f2, freq)
    shape = target.copy()
    shape[0] = 0.0  # the ROI mean is removed, so the measured NPS is 0 at f = 0
    assert noise.nps_distance(f2, got, shape) < 0.1  # same shape (unit-area L1 distance, max 2)
    w = noise_like((64, 64, 40), (1.0, 1.0, 1.0), None, 10.0, rng)  # white without an NPS
    wr = np.stack([w[x : x + 32, y : y + 32, z] for z in range(40) for x in (0, 32) for y in (0, 32)])
    _, flat = noise.nps_radial(noise.detrend_rois(wr, 0), (1.0, 1.0))
    assert noise.nps_distance(f2, got, flat) > 0.5


def test_distance_and_detection_rule():
    lower = {"better": "lower", "value": 2.0, "ci95": [1.0, 3.0]}
    assert distance(lower) == 2.0
    assert distance({"better": "higher", "value": 0.25}) == 0.75
    assert distance({"better": "closer-to-real", "real": 10.0, "generated": 7.0}) == 3.0
    assert distance({"better": "lower", "value": None}) is None
    se = 2.0 / 3.919927969080108
    d = detection(lower, {**lower, "value": 6.0, "ci95": [5.0, 7.0]})
    assert d["direction"] == "up" and d["effect"] == 4.0
    assert d["z"] == pytest.approx(4.0 / np.hypot(se, se)) and d["detected"] is True
    assert detection(lower, {**lower, "value": 2.5, "ci95": [1.5, 3.5]})["detected"] is False
    # closer-to-real: moving away from real is detected, towards real is not
    base = {"better": "closer-to-real", "value": 11.0, "real": 10.0, "generated": 11.0, "ci95": [10.5, 11.5]}
    away = detection(base, {**base, "value": 15.0, "generated": 15.0, "ci95": [14.5, 15.5]})
    assert away["detected"] and away["direction"] == "up"
    towards = detection(base, {**base, "value": 10.0, "generated": 10.0, "ci95": [9.5, 10.5]})
    assert not towards["detected"] and towards["direction"] == "down"
    missing = detection(base, {**base, "value": None, "generated": None, "reason": "not measurable"})
    assert missing["detected"] is None and missing["reason"] == "not measurable"


def test_degradations_do_what_they_say():
    rng = np.random.default_rng(1)
    a = np.full((16, 16, 6), 40.0, np.float32)
    a[:4] = -1000.0
    ctx = Context(rng=rng, spacing=(1.0, 1.0, 1.0), nps=None, noise_sd=10.0, train=[a + 1])
    assert np.allclose(DEGRADATIONS["hu_offset"].apply([a], ctx)[0], a + 30)
    c = DEGRADATIONS["contrast"].apply([a + 100 * (np.arange(6) == 2)], ctx)[0]
    assert c[8, 8, 2] == pytest.approx(40 + 0.7 * 100) and c[0, 0, 0] == -1000.0  # air stays air
    assert np.array_equal(DEGRADATIONS["flip"].apply([a], ctx)[0], a[::-1])
    assert np.array_equal(DEGRADATIONS["train_copies"].apply([a, a], ctx)[0], a + 1)
    mc = DEGRADATIONS["mode_collapse"].apply([a, a + 500], ctx)
    assert abs(float(mc[1].mean()) - float(a.mean())) < 1.0
    assert DEGRADATIONS["added_noise"].apply([a], ctx)[0].std() > 9.0
    so = DEGRADATIONS["slice_offsets"].apply([a], ctx)[0]
    assert np.array_equal(so[:4], a[:4])  # air stays air
    shift = so[8, 8] - a[8, 8]  # one offset per slice, the same across the slice
    assert np.allclose(so[4:] - a[4:], shift[None, None, :]) and len(np.unique(shift)) == 6


@pytest.fixture(scope="module")
def selftest(tmp_path_factory, ph):
    root = tmp_path_factory.mktemp("selftest")
    real = ph.write_folder(root / "real", ph.phantom_arrays(31, 8))
    out = root / "out"
    result = run_selftest(
        real,
        out=out,
        metrics="noise_sd,nps_mean_frequency,contrast_rms,hu_wasserstein",
        degradations=["added_noise", "blur", "contrast", "hu_offset"],
        n_bootstrap=50,
    )
    return {"root": root, "real": real, "out": out, "result": result}


def test_selftest_detects_noise_blur_contrast_and_offset(selftest):
    r = selftest["result"]
    assert r["inputs"]["n_reference"] == 4 and r["inputs"]["n_degraded"] == 4
    assert r["settings"]["added_noise_shape"] == "the cohort's mean NPS"
    base = r["baseline"]
    assert base["noise_sd"]["value"] is not None, base["noise_sd"]["reason"]
    deg = r["degradations"]
    assert (
        deg["added_noise"]["metrics"]["noise_sd"]["direction"] == "up"
        and "noise_sd" in deg["added_noise"]["detected_by"]
    )
    # the added noise has the cohort's own NPS, so its spectrum shape (f_avg) barely moves
    assert deg["added_noise"]["metrics"]["nps_mean_frequency"]["value"] == pytest.approx(
        base["nps_mean_frequency"]["value"], rel=0.15
    )
    assert (
        deg["blur"]["metrics"]["nps_mean_frequency"]["direction"] == "down"
        and "nps_mean_frequency" in deg["blur"]["detected_by"]
    )
    assert deg["blur"]["metrics"]["noise_sd"]["direction"] == "down"
    assert (
        deg["contrast"]["metrics"]["contrast_rms"]["direction"] == "down"
        and "contrast_rms" in deg["contrast"]["detected_by"]
    )
    assert "hu_wasserstein" in deg["hu_offset"]["detected_by"] and deg["hu_offset"]["missed"] == []
    for d in deg.values():
        assert set(d["missed"]) == set(d["expected"]) - set(d["detected_by"])


def test_selftest_files_and_cli(selftest, capsys, tmp_path):
    out = selftest["out"]
    on_disk = json.loads((out / "selftest.json").read_text())
    assert on_disk == selftest["result"] and on_disk["schema"] == "ctdiff-eval-selftest/1"
    md = (out / "selftest.md").read_text()
    assert "| degradation | hu_wasserstein | contrast_rms | noise_sd |" in md and "| blur |" in md and "✓" in md
    assert "<table>" in (out / "selftest.html").read_text()
    args = [
        "selftest",
        "--real",
        str(selftest["real"]),
        "--out",
        str(tmp_path / "st"),
        "--metrics",
        "contrast_rms",
        "--degradations",
        "contrast",
        "--bootstrap",
        "20",
        "--json",
    ]
    assert eval_main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert list(printed["degradations"]) == ["contrast"]
    assert eval_main(args) == 2 and "--force" in capsys.readouterr().err
    assert eval_main(args + ["--force"]) == 0  # its own folder: replaced whole, through a staged sibling
    assert sorted(p.name for p in (tmp_path / "st").iterdir()) == ["selftest.html", "selftest.json", "selftest.md"]
    assert [p.name for p in tmp_path.iterdir()] == ["st"]
    capsys.readouterr()
    assert eval_main(args[:-1] + ["--force", "--degradations", "melt"]) == 2
    assert "unknown degradation" in capsys.readouterr().err
    few = tmp_path / "few"
    few.mkdir()
    for f in sorted(selftest["real"].iterdir())[:3]:
        (few / f.name).write_bytes(f.read_bytes())
    assert eval_main(["selftest", "--real", str(few), "--out", str(tmp_path / "st3")]) == 2
    assert "at least 4" in capsys.readouterr().err
