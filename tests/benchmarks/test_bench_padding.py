"""benchmarks/bench_padding.py end to end on a tiny item: the four ways agree and every one is timed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_padding_checks_values_and_times_every_way(tmp_path):
    out = tmp_path / "pad.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "bench_padding.py"), "--size", "8", "8", "5", "--depth", "8"]
    cmd += ["--rounds", "1", "--calls", "2", "--threads", "1", "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]  # exits non-zero when a way gives other values
    result = json.loads(out.read_text())
    assert result["item"] == [1, 5, 8, 8] and result["depth"] == 8
    rows = {r["way"]: r for r in result["rows"]}
    assert len(rows) == 4 and rows["torch F.pad (replicate)"]["vs_F_pad"] == 1.0
    assert all(r["ms_per_item"] > 0 for r in rows.values())
