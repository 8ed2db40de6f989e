"""benchmarks/wavelet_bands.py: where pyradiomics' wavelet bands carry their extremes."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import numpy as np
import pytest

from ctdiff.data.io import write_nifti
from ctdiff.data.volume import Volume

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wb():
    return runpy.run_path(str(REPO / "benchmarks" / "wavelet_bands.py"), run_name="wavelet_bands")


def test_ring_sd_reads_the_outermost_ring_and_the_next(wb):
    a = np.zeros((10, 12, 3), np.float32)
    a[0, :, 0] = 30.0  # one side of the outer ring, in one slice
    a[2, 5, 1] = 100.0  # inside both rings
    outer, inner = wb["ring_sd"](a)
    ring = np.concatenate([a[0].ravel(), a[-1].ravel(), a[1:-1, 0].ravel(), a[1:-1, -1].ravel()])
    assert outer == pytest.approx(float(ring.std())) and outer > 5.0
    assert inner == pytest.approx(0.0)


def test_band_stats_sees_the_end_slices_and_the_rows(wb):
    rng = np.random.default_rng(0)
    band = rng.normal(0.0, 1.0, (40, 16, 16))
    band[-2:, 12:14] += 30.0  # a strong feature at the volume's end, rows 12-13
    band[10, 3, 3] = 200.0  # one inner extreme, row 3
    s = wb["band_stats"](band)
    assert s["end_sd"] > 3.0 * s["inner_sd"]
    assert s["inner_sd"] == pytest.approx(float(band[4:-4].std()))
    assert s["kurtosis"] != pytest.approx(s["kurtosis_inner"])
    rows = s["top_rows"]
    assert len(rows) == 8 and rows[1] >= 1  # row 3 lies in bin 1 (rows 2-3) of 8 over 16 rows
    assert sum(rows) == pytest.approx(int(np.ceil(0.001 * band[4:-4].size)), abs=1)


def test_a_noisy_border_ring_shows_up_against_a_clean_one(wb, tmp_path):
    rng = np.random.default_rng(1)
    clean, border = tmp_path / "clean", tmp_path / "border"
    for i in range(2):
        a = rng.normal(-1000.0, 20.0, (24, 24, 8)).astype(np.float32)
        a[6:18, 6:18] = rng.normal(40.0, 20.0, (12, 12, 8))
        write_nifti(Volume.from_spacing(a, (3.28, 3.28, 5.0)), clean / f"case_{i}.nii.gz")
        b = a.copy()
        b[0] += rng.normal(0.0, 60.0, b[0].shape)  # a decoder's padding artefact on one edge
        write_nifti(Volume.from_spacing(b, (3.28, 3.28, 5.0)), border / f"case_{i}.nii.gz")
    out = tmp_path / "bands.json"
    assert wb["main"](["--real", str(clean), "--cohort", f"b={border}", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    real, b = r["real"], r["cohorts"]["b"]
    assert real["n"] == b["n"] == 2
    assert real["ring_sd"] == pytest.approx(20.0, rel=0.25) and b["ring_sd"] > 1.5 * real["ring_sd"]
    assert b["ring2_sd"] == pytest.approx(real["ring2_sd"], rel=1e-6)
    assert set(real["bands"]) == {f"wavelet-{c}" for c in ("LLL", "LLH", "LHL", "LHH", "HLL", "HLH", "HHL", "HHH")}
    # the noisy edge raises the in-plane high bands' SD
    assert b["bands"]["wavelet-HHL"]["sd"] > real["bands"]["wavelet-HHL"]["sd"]
    with pytest.raises(SystemExit, match="--force"):
        wb["main"](["--real", str(clean), "--json", str(out)])


def test_edge_p99_reads_sharp_steps_along_each_axis(wb):
    a = np.zeros((20, 20, 20), np.float32)
    a[:, :, 10:] = 100.0  # a step along z only, in the inner slices
    x, y, z = wb["edge_p99"](a)
    assert x == y == 0.0
    # one plane of 100-HU steps among 11 z-differences per column (slices 4-15): p99 of 1/11 of values at 100
    assert z == pytest.approx(100.0)
    smooth = np.repeat(np.linspace(0.0, 100.0, 20, dtype=np.float32)[None, None], 20, axis=0).repeat(20, axis=1)
    assert wb["edge_p99"](smooth)[2] == pytest.approx(100.0 / 19.0, rel=1e-4)  # the same rise, spread out
    a[:, :, 4] = 500.0  # a step in slice 4: counted; slices 0-3 and 16-19 are not
    assert wb["edge_p99"](a)[2] == pytest.approx(500.0)
