"""Fixtures for the app tests: a tiny workspace (real/, generated/, report/, run/) in tmp_path.

Volumes hold a known HU pattern, ``hu(x, y, z) = x + 30*y + 1000*z - 3000`` (plus an offset per
case), so a test can predict the HU at any voxel and check the viewer's readout and orientation.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from ctdiff.data.io import write_nifti
from ctdiff.data.volume import Volume
from eval.report.provenance import add_provenance

REPO = Path(__file__).resolve().parents[2]
SPACING = (0.8, 0.9, 2.5)


def pattern(shape, offset: float = 0.0) -> np.ndarray:
    x, y, z = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return (x + 30 * y + 1000 * z - 3000 + offset).astype(np.float32)


def expected_hu(x: int, y: int, z: int, offset: float = 0.0) -> float:
    return float(x + 30 * y + 1000 * z - 3000 + offset)


def write_report(path: Path, real_files: list[str], gen_files: list[str]) -> dict:
    report = {
        "schema": "ctdiff-eval-report/1",
        "inputs": {"real": str(path.parent / "real"), "generated": str(path.parent / "generated")},
        "settings": {"seed": 0},
        "metrics": {
            "frd": {
                "value": 30.0,
                "ci95": [25.0, 35.0],
                "real": None,
                "generated": None,
                "reference": 10.0,
                "better": "lower",
                "unit": "",
                "reason": None,
                "description": "Fréchet radiomics distance",
            },
            "noise_sd": {
                "value": 1.0,
                "ci95": None,
                "real": 10.0,
                "generated": 11.0,
                "reference": 1.0,
                "better": "closer-to-real",
                "unit": "HU",
                "reason": None,
                "description": "noise SD in flat regions",
            },
            "coverage": {
                "value": 0.8,
                "ci95": [0.7, 0.9],
                "real": None,
                "generated": None,
                "reference": 0.9,
                "better": "higher",
                "unit": "",
                "reason": None,
                "description": "coverage",
            },
            "fid_2d": {
                "value": None,
                "ci95": None,
                "real": None,
                "generated": None,
                "reference": None,
                "better": "lower",
                "unit": "",
                "reason": "skipped: needs 2 volumes per cohort",
                "description": "",
            },
        },
        "per_case": [
            *(
                {
                    "cohort": "real",
                    "file": f,
                    "case": Path(f).name.split(".")[0],
                    "noise_sd": 10.0 + i,
                    "contrast_rms": 50.0 + i,
                    "ssim_nearest_real": None,
                    "nearest_real_file": None,
                }
                for i, f in enumerate(real_files)
            ),
            *(
                {
                    "cohort": "generated",
                    "file": f,
                    "case": Path(f).name.split(".")[0],
                    "noise_sd": 12.0 + i,
                    "contrast_rms": 40.0 + i,
                    "ssim_nearest_real": 0.8 + 0.05 * i,
                    "nearest_real_file": real_files[(i + 1) % len(real_files)],
                }
                for i, f in enumerate(gen_files)
            ),
        ],
        "curves": {
            "hu_histogram": {
                "bin_edges": [-1000, -500, 0, 500, 1000],
                "real": [0.1, 0.2, 0.5, 0.2],
                "generated": [0.2, 0.2, 0.4, 0.2],
            },
            "nps": {
                "frequency_mm": [0.05, 0.1, 0.2, 0.4],
                "real": [10.0, 8.0, 4.0, 1.0],
                "generated": [12.0, 9.0, 5.0, 2.0],
            },
        },
        "memorization_flagged": [
            {"generated": gen_files[1], "nearest_train": real_files[0], "distance": 0.01, "threshold": 0.05},
        ],
    }
    # which scans it measured, as the report builder records it (content hashes)
    add_provenance(
        report,
        {
            "real": [SimpleNamespace(path=Path(f)) for f in real_files],
            "generated": [SimpleNamespace(path=Path(f)) for f in gen_files],
        },
    )
    path.mkdir(parents=True, exist_ok=True)
    (path / "report.json").write_text(json.dumps(report, indent=1))
    (path / "report.html").write_text("<html><body><h1>ctdiff report</h1></body></html>")
    (path / "report.md").write_text("# ctdiff report\n")
    return report


def write_run(run: Path, epochs: int = 30) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg

    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run / "previews").mkdir(exist_ok=True)
    (run / "config.yaml").write_text("model:\n  channels: [8, 8, 8]\ntraining:\n  epochs: 30\n  lr: 0.0001\n")
    (run / "split.json").write_text(
        json.dumps({"seed": 7, "train": ["real/case_a.nii.gz"], "val": ["real/case_b.nii.gz"]})
    )
    rows = ["epoch,step,train_loss,val_loss,lr,seconds"]
    for e in range(1, epochs + 1):
        val = f"{0.5 / e + 0.02:.6f}" if e % 5 == 0 else ""
        rows.append(f"{e},{e * 4},{1.0 / e + 0.01:.6f},{val},{1e-4 * min(1.0, e / 10):.3e},{e * 2.5:.1f}")
    (run / "history.csv").write_text("\n".join(rows) + "\n")
    for e in (5, 10, 15):
        img = np.full((8, 12), e * 10, dtype=np.uint8)
        img[:, : e // 5] = 255  # a bar whose width tells the epoch
        mpimg.imsave(run / "previews" / f"epoch_{e:04d}.png", img, cmap="gray", vmin=0, vmax=255)


@pytest.fixture
def workspace(tmp_path) -> Path:
    """tmp_path/ws with 2 real (16x12x8) and 2 generated (16x12x6) volumes, a report and a run dir."""
    ws = tmp_path / "ws"
    real, gen = [], []
    for i, name in enumerate(("case_a", "case_b")):
        p = ws / "real" / f"{name}.nii.gz"
        write_nifti(Volume.from_spacing(pattern((16, 12, 8), offset=100 * i), SPACING), p)
        real.append(str(p))
    for i, name in enumerate(("sample_000", "sample_001")):
        p = ws / "generated" / f"{name}.nii.gz"
        write_nifti(Volume.from_spacing(pattern((16, 12, 6), offset=-50 - 100 * i), SPACING), p)
        gen.append(str(p))
    write_report(ws / "report", real, gen)
    write_run(ws / "run")
    (ws / "workspace.json").write_text(json.dumps({"name": "test-ws"}))
    return ws


@pytest.fixture
def app_env(monkeypatch, workspace):
    monkeypatch.setenv("CTDIFF_WORKSPACE", str(workspace))
    monkeypatch.chdir(REPO)
    return workspace


@pytest.fixture
def page():
    """Factory: ``page("pages/1_Slice_browser.py")`` -> an AppTest of that script (not run yet)."""
    from streamlit.testing.v1 import AppTest

    return lambda script: AppTest.from_file(str(REPO / script), default_timeout=60)


@pytest.fixture
def hu_at():
    """The HU the fixture volumes hold at voxel (x, y, z) for a case offset."""
    return expected_hu


def _decode_typed(value):
    """Plotly's typed-array JSON ({"dtype", "bdata"[, "shape"]}) -> numpy array; recurse into the rest."""
    import base64

    if isinstance(value, dict) and "bdata" in value and "dtype" in value:
        arr = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]).newbyteorder("<"))
        shape = value.get("shape")
        if shape:
            arr = arr.reshape([int(s) for s in (shape if isinstance(shape, list) else str(shape).split(","))])
        return arr
    if isinstance(value, dict):
        return {k: _decode_typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode_typed(v) for v in value]
    return value


@pytest.fixture
def charts():
    """``charts(at)`` -> the plotly figures an AppTest rendered, as dicts with arrays decoded."""
    return lambda at: [_decode_typed(json.loads(el.proto.spec)) for el in at.get("plotly_chart")]
