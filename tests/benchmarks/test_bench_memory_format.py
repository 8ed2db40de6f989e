"""benchmarks/bench_memory_format.py end to end on a tiny volume: both layouts timed, ratios consistent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_memory_format_writes_both_layouts(tmp_path):
    out = tmp_path / "mf.json"
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "bench_memory_format.py"),
        "--size",
        "16",
        "16",
        "8",
        "--threads",
        "1",
        "--rounds",
        "2",
        "--steps",
        "1",
        "--json",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    rows = {(r["what"].split(",")[0], r["layout"]): r for r in result["rows"]}
    assert set(rows) == {
        (w, layout)
        for w in ("training step", "sampling network evaluation")
        for layout in ("contiguous", "channels_last")
    }
    for (what, layout), r in rows.items():
        kind = "train" if what == "training step" else "sample"
        times = result["times"][layout][kind]
        assert len(times) == 2 and all(t > 0 for t in times)
        base = rows[(what, "contiguous")]["seconds"]
        assert (
            r["speedup_vs_contiguous"] == round(base / r["seconds"], 3)
            or abs(r["speedup_vs_contiguous"] - base / r["seconds"]) < 0.01
        )
    assert rows[("training step", "contiguous")]["speedup_vs_contiguous"] == 1.0
    assert "| training step, batch 2 | channels_last |" in proc.stdout
