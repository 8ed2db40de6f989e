"""benchmarks/bench_padding.py end to end on a tiny item: the four ways agree and every one is timed."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_padding_checks_values_and_times_every_way(tmp_path, monkeypatch):
    out = tmp_path / "pad.json"
    argv = ["bench_padding.py", "--size", "8", "8", "5", "--depth", "8", "--rounds", "1", "--calls", "2"]
    monkeypatch.setattr(sys, "argv", [*argv, "--json", str(out)])
    bench = runpy.run_path(str(REPO / "benchmarks" / "bench_padding.py"), run_name="bench_padding")
    assert bench["main"]() == 0  # raises SystemExit when a way gives other values than F.pad
    result = json.loads(out.read_text())
    assert result["item"] == [1, 5, 8, 8] and result["depth"] == 8
    rows = {r["way"]: r for r in result["rows"]}
    assert len(rows) == 4 and rows["torch F.pad (replicate)"]["vs_F_pad"] == 1.0
    assert all(r["ms_per_item"] > 0 for r in rows.values())
