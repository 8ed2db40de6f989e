"""benchmarks/cohort_spread.py: per-cohort means with CIs and draw ranges, and nearest-training-scan distances."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import numpy as np
import pytest

from ctdiff.data.io import Volume, write_nifti
from eval.metrics.memorization import memorisation_threshold
from eval.metrics.similarity import ssim

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cs():
    return runpy.run_path(str(REPO / "benchmarks" / "cohort_spread.py"), run_name="cohort_spread")


def test_cohort_stats_mean_ci_and_draw_range(cs):
    values = [float(v) for v in range(1, 41)] + [None, float("nan")]  # None and NaN are left out
    s = cs["cohort_stats"](values, subset=12, seed=3)
    assert s["n"] == 40 and s["mean"] == pytest.approx(20.5) and s["sd"] == pytest.approx(np.std(range(1, 41), ddof=1))
    lo, hi = s["ci95"]
    assert lo < 20.5 < hi and hi - lo < 8.0
    # a 12-of-40 draw without replacement varies more than the mean of all 40 (finite-population SE)
    dlo, dhi = s["subset"]["range95"]
    se12 = np.std(range(1, 41), ddof=1) / np.sqrt(12) * np.sqrt((40 - 12) / (40 - 1))
    assert dhi - dlo == pytest.approx(2 * 1.96 * se12, rel=0.15)
    assert dhi - dlo > hi - lo
    assert cs["cohort_stats"](values[:12], subset=12)["subset"] is None  # no smaller draw to take
    assert cs["cohort_stats"]([None])["n"] == 0


def test_report_spread_groups_rows_by_cohort(cs):
    rows = [{"cohort": "real", "noise_sd": v} for v in (20.0, 22.0, 24.0)]
    rows += [{"cohort": "train", "noise_sd": v} for v in (30.0, 31.0)] + [{"cohort": "train", "noise_sd": None}]
    out = cs["report_spread"]({"per_case": rows}, keys=("noise_sd",), subset=2)
    assert out["real"]["noise_sd"]["mean"] == pytest.approx(22.0) and out["real"]["noise_sd"]["n"] == 3
    assert out["train"]["noise_sd"]["mean"] == pytest.approx(30.5) and out["train"]["noise_sd"]["n"] == 2
    assert out["real"]["noise_sd"]["subset"]["range95"][0] >= 21.0  # a mean of 2 of (20, 22, 24)


def test_nearest_train_counts_and_hubs(cs):
    d = np.array([[0.3, 0.1, 0.5], [0.2, 0.15, 0.4], [0.05, 0.6, 0.7], [0.4, 0.25, 0.9]])
    r = cs["nearest_train"](d, threshold=0.12)
    assert r["nearest_train_index"] == [1, 1, 0, 1]
    assert r["nearest_distance"] == [0.1, 0.15, 0.05, 0.25]
    assert r["below_threshold"] == 2 and r["share_below_threshold"] == pytest.approx(0.5)
    assert r["most_often_nearest"] == {1: 3, 0: 1}


def _scan(rng, shape=(24, 24, 8)):
    body = np.full(shape, -1000.0)
    body[4:20, 4:20] = 40.0
    return body + rng.normal(0.0, 20.0, shape)


def test_memorisation_spread_matches_eval_ssim_and_flags_a_copy(cs):
    rng = np.random.default_rng(0)
    train = [_scan(rng) for _ in range(4)]
    held = [_scan(rng) for _ in range(5)]
    copy = train[2] + rng.normal(0.0, 1.0, train[2].shape)  # a near-copy of training scan 2
    out = cs["memorisation_spread"](train, held, {"gen": [copy, _scan(rng)]})
    held_near = [min(1.0 - ssim(h, t) for t in train) for h in held]
    assert out["threshold"] == pytest.approx(memorisation_threshold(np.array(held_near)), abs=1e-5)
    assert out["held"]["nearest_distance"] == pytest.approx(held_near, abs=1e-4)
    gen = out["gen"]
    assert gen["nearest_train_index"][0] == 2 and gen["nearest_distance"][0] < 0.05
    assert gen["below_threshold"] == 1 and gen["nearest_distance"][1] > out["threshold"]


def test_main_writes_json_and_lists_a_bad_file(cs, tmp_path, capsys):
    rng = np.random.default_rng(1)
    folders = {}
    for name, n in (("train", 3), ("held", 3), ("gen", 2)):
        folders[name] = tmp_path / name
        folders[name].mkdir()
        for i in range(n):
            write_nifti(Volume(_scan(rng).astype(np.float32), np.eye(4)), folders[name] / f"case_{i}.nii.gz")
    (folders["gen"] / "broken.nii.gz").write_bytes(b"not a nifti")
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"per_case": [{"cohort": "real", "noise_sd": 20.0 + i} for i in range(5)]}))
    out = tmp_path / "out" / "spread.json"
    argv = ["--report", str(report), "--subset", "3", "--train", str(folders["train"]), "--held", str(folders["held"])]
    assert cs["main"]([*argv, "--cohort", f"gen={folders['gen']}", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["cohorts"]["real"]["noise_sd"]["mean"] == pytest.approx(22.0)
    assert data["memorisation"]["gen"]["n"] == 2
    err = capsys.readouterr().err
    assert "broken.nii.gz: skipped" in err
    assert [p.name for p in out.parent.iterdir()] == ["spread.json"]  # written atomically, no temporary left
    with pytest.raises(SystemExit):
        cs["main"](["--subset", "3"])  # neither a report nor train and held
    before = out.read_text()
    with pytest.raises(SystemExit):
        cs["main"]([*argv, "--json", str(out)])  # exists: refused without --force
    assert out.read_text() == before
    assert cs["main"]([*argv, "--subset", "4", "--json", str(out), "--force"]) == 0
    assert json.loads(out.read_text())["cohorts"]["real"]["noise_sd"]["subset"]["size"] == 4
    capsys.readouterr()
    with pytest.raises(SystemExit):
        cs["main"]([*argv, "--cohort", f"held={folders['gen']}"])  # would overwrite the held-out entry
    assert "is taken" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="does not exist"):
        cs["main"](["--train", str(tmp_path / "missing"), "--held", str(folders["held"])])
