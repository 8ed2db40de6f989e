"""benchmarks/bench_quality.py: how the equal-cost budget is planned and counted, and how arms are ranked."""

from __future__ import annotations

import json
import math
import runpy
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    return runpy.run_path(str(REPO / "benchmarks" / "bench_quality.py"), run_name="bench_quality")


def test_epochs_fill_the_rest_of_the_budget_at_the_probe_pace(bench):
    plan = bench["plan_epochs"]
    # 20 min, 100 s already spent (probe + autoencoder), 0.5 s/step, 12 steps/epoch: 1100 / 6 = 183 more
    assert plan(1200.0, 100.0, 0.5, 12) == bench["PROBE_EPOCHS"] + 183
    assert plan(1200.0, 1300.0, 0.5, 12) == bench["PROBE_EPOCHS"] + 1  # over budget already: one more epoch
    with pytest.raises(ValueError):
        plan(1200.0, 0.0, float("nan"), 12)


def test_the_budget_counts_cpu_seconds_per_thread_not_the_wall_clock(bench, tmp_path):
    # a command that sleeps 0.6 s and burns ~0.3 s of CPU: the wall clock would count the sleep too
    code = "import time\nt=time.process_time()\nwhile time.process_time()-t<0.3: pass\ntime.sleep(0.6)"
    wall, cost = bench["_run"]([sys.executable, "-c", code], tmp_path / "log.txt", threads=1)
    assert wall >= 0.9 and 0.25 <= cost <= 0.6
    _, half = bench["_run"]([sys.executable, "-c", code], tmp_path / "log.txt", threads=2)
    assert half == pytest.approx(cost / 2, abs=0.15)
    assert (tmp_path / "log.txt").read_text().count("$ ") == 2  # every command is logged
    with pytest.raises(SystemExit, match="command failed"):
        bench["_run"]([sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "log.txt")


def test_arms_are_ranked_by_the_median_gap_of_their_report(bench, tmp_path):
    report = {
        "metrics": {
            "noise_sd": {"value": 40.0, "gap": 6.0, "status": "far", "extra": 1},
            "hu_wasserstein": {"value": 30.0, "gap": 3.0, "status": "far"},
            "glcm_distance": {"value": 1.0, "gap": None, "status": "n/a"},
            "kid": {"value": 1.0, "gap": float("inf"), "status": "far"},
        }
    }
    (tmp_path / "report.json").write_text(json.dumps(report))
    metrics = bench["_metrics"](tmp_path / "report.json")
    assert "extra" not in metrics["noise_sd"] and metrics["noise_sd"]["gap"] == 6.0
    assert bench["median_gap"](metrics) == pytest.approx(4.5)  # the missing and infinite gaps are left out
    assert math.isinf(bench["median_gap"]({}))


def test_the_table_has_a_row_per_arm_and_a_cell_per_metric_and_arm(bench):
    entry = {"value": 41.2, "ci95": [39.4, 43.3], "real": 23.9, "real_ci95": [21.0, 26.5], "gap": 6.2, "status": "far"}
    frd = {"value": 9.0, "ci95": [8.0, 10.0], "real": None, "gap": 1.2, "status": "close"}
    result = {
        "arms": {
            "pixel": {
                "trained": {"train_cost_s": 1200, "train_wall_s": 1500, "steps": 240, "best_val": 0.5},
                "sample_wall_s": 90,
                "median_gap": 7.5,
                "report": {"noise_sd": entry},
            },
            "wavelet": {
                "trained": {"train_cost_s": 1190, "train_wall_s": 1300, "steps": 1100, "best_val": 0.4},
                "sample_wall_s": 40,
                "median_gap": 4.0,
                "report": {"noise_sd": {**entry, "value": 25.0}, "frd": frd},
            },
        }
    }
    text = bench["table"](result)
    assert "| pixel | 20.0 | 25.0 | 240 | 0.5 | 90 | 7.5 |" in text
    assert (
        "| noise_sd (real 23.9) | 41.2 [39.4, 43.3] gap 6.2 far; outside real CI [21, 26.5] "
        "| 25 [39.4, 43.3] gap 6.2 far; inside real CI [21, 26.5] |" in text
    )
    assert "| frd | — | 9 [8, 10] gap 1.2 close |" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| arm")]
    # a row per metric that some arm has, in TABLE_METRICS order
    assert [r.split(" | ")[0][2:].split(" (")[0] for r in rows] == ["pixel", "wavelet", "metric", "noise_sd", "frd"]
    assert all(r.count(" | ") == 2 for r in rows[3:])  # one cell per arm


def test_an_arm_is_reported_again_when_radiomics_are_asked_for_later(bench, tmp_path):
    from types import SimpleNamespace

    calls = []

    def fake_run(cmd, log, threads=2):
        calls.append(cmd)
        if "report" in cmd:
            out = Path(cmd[cmd.index("--out") + 1])
            out.mkdir(parents=True, exist_ok=True)
            (out / "report.json").write_text(json.dumps({"metrics": {"noise_sd": {"value": 1.0, "gap": 2.0}}}))
        return 1.0, 1.0

    args = SimpleNamespace(
        threads=2, held_out=tmp_path / "held", train_data=tmp_path / "train", radiomics=False, cache_dir=None
    )
    arm = bench["Arm"]("latent", ["model.space=latent"], tmp_path, args)
    arm.sample_and_report.__globals__["_run"] = fake_run
    try:
        arm.sample_and_report()
        assert len(calls) == 2 and "radiomics" not in calls[1][calls[1].index("--metrics") + 1]
        arm.sample_and_report()  # complete: nothing runs again
        assert len(calls) == 2
        args.radiomics, args.cache_dir = True, tmp_path / "cache"
        arm.sample_and_report()  # the samples are kept, the report is made again with radiomics
        assert len(calls) == 3 and calls[2][calls[2].index("--metrics") + 1].endswith(",radiomics")
        assert calls[2][calls[2].index("--cache-dir") + 1] == str(tmp_path / "cache")
        assert json.loads(arm.state_file.read_text())["report_metrics"].endswith(",radiomics")
    finally:
        arm.sample_and_report.__globals__["_run"] = bench["_run"]


def test_the_latent_arms_autoencoder_learns_the_configs_hu_window(bench, tmp_path):
    """train refuses a latent run whose autoencoder learned another window than data.hu_window, so both
    autoencoder commands (probe and run) carry configs/demo-128.yaml's window."""
    from types import SimpleNamespace

    from ctdiff.config import load_config

    calls = []

    def fake_run(cmd, log, threads=2):
        calls.append(cmd)
        out = Path(cmd[cmd.index("--out") + 1])
        out.mkdir(parents=True, exist_ok=True)
        (out / "eval.json").write_text(json.dumps({"train_seconds_this_call": 3.0}))
        return 1.0, 1.0

    args = SimpleNamespace(threads=2, train_data=tmp_path / "train", ae_share=0.4)
    arm = bench["Arm"]("latent", ["model.space=latent"], tmp_path, args)
    arm.timed.__globals__["_run"] = fake_run
    try:
        assert arm.autoencoder(600.0) == f"--set model.autoencoder={arm.dir / 'ae' / 'autoencoder.pt'}"
    finally:
        arm.timed.__globals__["_run"] = bench["_run"]
    lo, hi = load_config(REPO / "configs" / "demo-128.yaml").data.hu_window
    assert len(calls) == 2 and all("train-autoencoder" in c for c in calls)
    for cmd in calls:
        assert cmd[cmd.index("--set", cmd.index("--out")) :].count(f"hu_window=[{lo:g},{hi:g}]") == 1, cmd
