"""benchmarks/prdc_reference.py: precision, recall and FRD of random draws of real scans against held-out ones."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pr():
    return runpy.run_path(str(REPO / "benchmarks" / "prdc_reference.py"), run_name="prdc_reference")


def _naeem(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    """Precision, recall, density and coverage written out from Naeem et al. (2020), eqs. 1-4, with
    brute-force distances: the independent check of what the script takes from the prdc package."""
    d_rr = np.linalg.norm(real[:, None] - real[None], axis=-1)
    d_ff = np.linalg.norm(fake[:, None] - fake[None], axis=-1)
    d_fr = np.linalg.norm(fake[:, None] - real[None], axis=-1)  # fake x real
    r_real = np.sort(d_rr, axis=1)[:, k]  # the k-th neighbour; column 0 is the scan itself
    r_fake = np.sort(d_ff, axis=1)[:, k]
    inside = d_fr < r_real[None, :]  # fake j inside real i's (open) ball
    return {
        "precision": float(inside.any(axis=1).mean()),
        "recall": float((d_fr.T < r_fake[None, :]).any(axis=1).mean()),
        "density": float(inside.sum() / (k * len(fake))),
        "coverage": float((d_fr.min(axis=0) < r_real).mean()),
    }


def test_score_is_the_reports_prdc_by_its_definition_and_frd(pr):
    from eval.metrics.distribution import frd_v1, standardise

    rng = np.random.default_rng(0)
    real = rng.normal(0.0, 1.0, (12, 6)) * [1, 2, 3, 1, 10, 0.1] + [0, 5, -3, 0, 100, 1]
    for shift in (0.0, 0.7, 3.0):
        fake = rng.normal(0.0, 1.0, (12, 6)) * [1, 2, 3, 1, 10, 0.1] + [0, 5, -3, 0, 100, 1] + shift
        got = pr["score"](real, fake)
        ref = _naeem(*standardise(real, fake), k=2)  # k = min(5, 12 // 5), as the report caps it
        for m in ("precision", "recall", "density", "coverage"):
            assert got[m] == pytest.approx(ref[m]), (shift, m)
        assert got["frd"] == pytest.approx(frd_v1(real, fake, exact=True), rel=1e-5)
    assert pr["score"](real, real + 3.0 * real.std(axis=0))["recall"] == 0.0


def test_draws_are_seeded_subsets_and_the_whole_pool_is_every_draw(pr):
    rng = np.random.default_rng(1)
    real = rng.normal(0.0, 1.0, (12, 4))
    pool = rng.normal(0.0, 1.0, (20, 4))
    a = pr["draws"](real, pool, 12, 30, seed=5)
    b = pr["draws"](real, pool, 12, 30, seed=5)
    assert [r["cases"] for r in a["rows"]] == [r["cases"] for r in b["rows"]]
    assert len({tuple(r["cases"]) for r in a["rows"]}) > 20  # different subsets, not one repeated
    for row in a["rows"]:
        assert len(set(row["cases"])) == 12 and row["cases"] == sorted(row["cases"])
        again = pr["score"](real, pool[row["cases"]])
        assert row["recall"] == again["recall"] and row["precision"] == again["precision"]
    rec = np.array([r["recall"] for r in a["rows"]])
    assert a["summary"]["recall"]["median"] == pytest.approx(np.median(rec))
    assert a["summary"]["recall"]["q025"] <= a["summary"]["recall"]["median"] <= a["summary"]["recall"]["q975"]
    assert a["meets"]["recall"] == pytest.approx(np.mean(rec >= 0.5))
    whole = pr["draws"](real, pool[:12], 12, 3, seed=0)
    full = pr["score"](real, pool[:12])
    assert all(r["cases"] == list(range(12)) for r in whole["rows"])
    assert whole["summary"]["recall"]["median"] == full["recall"]
    assert whole["summary"]["frd"]["q975"] == pytest.approx(full["frd"])


def test_targets_count_only_draws_that_meet_them(pr):
    rng = np.random.default_rng(2)
    real = rng.normal(0.0, 1.0, (12, 4))
    far = rng.normal(0.0, 1.0, (16, 4)) + 4.0
    r = pr["draws"](real, far, 12, 10, seed=0, floor=1.0)
    assert r["meets"] == {"precision": 0.0, "recall": 0.0, "precision_and_recall": 0.0, "frd": 0.0, "all_three": 0.0}
    assert r["summary"]["frd_over_floor"]["median"] == pytest.approx(r["summary"]["frd"]["median"])
    near = rng.normal(0.0, 1.0, (16, 4))
    s = pr["draws"](real, near, 12, 40, seed=0, floor=1e6)
    assert s["meets"]["frd"] == 1.0 and s["meets"]["all_three"] == s["meets"]["precision_and_recall"] > 0
    p = np.array([x["precision"] for x in s["rows"]])
    q = np.array([x["recall"] for x in s["rows"]])
    assert s["meets"]["precision_and_recall"] == pytest.approx(np.mean((p >= 0.5) & (q >= 0.5)))
    with pytest.raises(ValueError, match="between 3 and the pool's 16 scans, got 17"):
        pr["draws"](real, near, 17, 5, seed=0)
    with pytest.raises(ValueError, match="at least 1, got 0"):
        pr["draws"](real, near, 12, 0, seed=0)


def test_command_line_reads_scans_through_evals_feature_cache(pr, tmp_path, capsys):
    from ctdiff.data.phantom import write_cohort

    shape, fov = (32, 32, 12), (64.0, 64.0, 24.0)  # 2 mm voxels: radiomics works at 2 mm (eval's resampling)
    write_cohort(tmp_path / "held", n=3, shape=shape, seed=1, progress=False, fov_mm=fov)
    write_cohort(tmp_path / "fresh", n=4, shape=shape, seed=2, progress=False, fov_mm=fov)
    cache = tmp_path / "cache"
    out = tmp_path / "ref.json"
    argv = ["--real", str(tmp_path / "held"), "--pool", f"fresh={tmp_path / 'fresh'}", "--draws", "4"]
    argv += ["--floor-train", str(tmp_path / "fresh"), "--cache-dir", str(cache), "--json", str(out)]
    assert pr["main"](argv) == 0
    text = capsys.readouterr().out
    assert "fresh: 4 draws of 3 of 4 scans" in text and "FRD floor (real vs 4 training scans)" in text
    result = json.loads(out.read_text())
    assert result["real_files"] == ["case_000.nii.gz", "case_001.nii.gz", "case_002.nii.gz"]
    pool = result["pools"]["fresh"]
    assert pool["files"] == [f"case_{i:03d}.nii.gz" for i in range(4)] and len(pool["rows"]) == 4
    assert all(len(r["cases"]) == 3 for r in pool["rows"]) and result["floor"]["n_train"] == 4
    assert np.isfinite(pool["summary"]["frd"]["median"])
    # the floor as the report computes its reference: the training scans in the real role
    from eval.metrics.distribution import frd_v1

    _, _, held = pr["features"](tmp_path / "held", cache, 1)
    _, _, fresh = pr["features"](tmp_path / "fresh", cache, 1)
    assert result["floor"]["frd"] == pytest.approx(frd_v1(fresh, held, exact=False), rel=1e-12)
    assert abs(frd_v1(held, fresh, exact=True) - result["floor"]["frd"]) > 1e-3  # the order matters
    assert sum(1 for p in cache.rglob("*") if p.is_file()) >= 7  # every scan's features were cached
    with pytest.raises(SystemExit, match="expected NAME=FOLDER"):
        pr["main"](["--real", str(tmp_path / "held"), "--pool", str(tmp_path / "fresh"), "--cache-dir", str(cache)])
    with pytest.raises(SystemExit, match="no NIfTI scans"):
        (tmp_path / "empty").mkdir()
        pr["main"](["--real", str(tmp_path / "empty"), "--pool", "x=y", "--cache-dir", str(cache)])
