"""benchmarks/bench_sampling.py end to end on a small DDPM model, with cheap metrics and few steps."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ctdiff.data.phantom import write_cohort
from eval.report import build_report

REPO = Path(__file__).resolve().parents[2]
# a DDPM pixel-space model (the 64x64x32 demo model before issue 20, tests/data/README.md): the grid's
# DPM-Solver++ and DDIM run on it
MODEL = REPO / "tests" / "data" / "pixel-demo-64-before-spaces.pt"


@pytest.mark.slow
def test_bench_sampling_rows_match_eval(tmp_path):
    shape = (64, 64, 32)  # the model's
    real = tmp_path / "real"
    write_cohort(real, n=3, shape=shape, seed=5, progress=False)
    out_json, plot, work = tmp_path / "s.json", tmp_path / "s.png", tmp_path / "work"
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "bench_sampling.py"),
        "--run",
        str(MODEL),
        "--real",
        str(real),
        "--n",
        "2",
        "--grid",
        "dpmpp:2",
        "ddim:3",
        "--metrics",
        "noise_sd",
        "hu_wasserstein",
        "--threads",
        "1",
        "--workers",
        "1",
        "--json",
        str(out_json),
        "--plot",
        str(plot),
        "--work",
        str(work),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out_json.read_text())
    assert result["complete"] is True and result["n"] == 2
    rows = {(r["sampler"], r["steps"]): r for r in result["rows"]}
    assert set(rows) == {("dpmpp", 2), ("ddim", 3)}
    assert rows[("ddim", 3)]["nfe"] == 3 and rows[("dpmpp", 2)]["seconds_per_volume"] > 0
    # each row's numbers are what eval computes on the samples it kept
    for (sampler, steps), row in rows.items():
        folder = work / f"{sampler}-{steps}"
        manifest = json.loads((folder / "manifest.json").read_text())
        assert [c["seed"] for c in manifest["cases"]] == [0, 1]  # same seeds for every sampler
        rep = build_report(real, folder, metrics=["noise_sd", "hu_wasserstein"], settings={"n_bootstrap": 0})
        m = rep["metrics"]
        assert row["hu_wasserstein"] == pytest.approx(m["hu_wasserstein"]["value"])
        gen_sd, real_sd = m["noise_sd"]["generated"], m["noise_sd"]["real"]
        if gen_sd is None or real_sd is None:  # not measurable on these tiny samples: the row has no ratio either
            assert row["noise_sd_ratio"] is None
        else:
            assert row["noise_sd_ratio"] == pytest.approx(gen_sd / real_sd)
    assert plot.stat().st_size > 10_000
    assert "| dpmpp | 2 |" in proc.stdout
