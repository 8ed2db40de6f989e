"""``build_report`` / ``python -m eval report`` on a tiny phantom cohort: the report.json contract,
FRD equal to the frd_score command line, the feature cache, rendering and clear errors."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from ctdiff.data.io import write_nifti
from ctdiff.data.volume import Volume
from eval.cli import main as eval_main
from eval.report import METRICS, SCHEMA, build_report

N = 4


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, ph):
    root = tmp_path_factory.mktemp("tiny-report")
    real = ph.write_folder(root / "real", ph.phantom_arrays(21, N))
    gen = ph.write_folder(root / "gen", ph.phantom_arrays(22, N, noise_hu=30.0))
    cache = root / "cache"
    report = build_report(real, gen, out=root / "out", cache_dir=cache, workers=2, settings=ph.SMALL_SETTINGS)
    return {"root": root, "real": real, "gen": gen, "cache": cache, "report": report, "out": root / "out"}


def test_frd_equals_frd_score_command_line(tmp_path, ph):
    # scans of their own, smaller than the other tests' (the comparison needs no particular anatomy,
    # and the command line extracts with pyradiomics' own, slower code): 4 vs 4 at 32x32x12
    shape = (32, 32, 12)
    real = ph.write_folder(tmp_path / "real", ph.phantom_arrays(24, N, shape=shape))
    gen = ph.write_folder(tmp_path / "gen", ph.phantom_arrays(25, N, noise_hu=30.0, shape=shape))
    report = build_report(real, gen, metrics="frd", cache_dir=tmp_path / "cache", workers=2, settings=ph.SMALL_SETTINGS)
    proc = subprocess.run(
        [sys.executable, "-m", "frd_score", str(real), str(gen), "-w", "2"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    cli_value = float(re.search(r"FRD \(v1\): (\S+)", proc.stdout).group(1))
    assert report["metrics"]["frd"]["value"] == pytest.approx(cli_value, rel=1e-9, abs=1e-9)
    assert cli_value > 0


def test_second_report_reuses_cached_real_features(tiny, ph):
    first = tiny["report"]["settings"]["cache_stats"]["radiomics-frd-v1"]
    assert first["real"] == {"cached": 0, "extracted": N, "failed": 0}
    other = ph.write_folder(tiny["root"] / "gen2", ph.phantom_arrays(23, N))
    second = build_report(
        tiny["real"], other, metrics="frd,kid", cache_dir=tiny["cache"], workers=2, settings=ph.SMALL_SETTINGS
    )
    stats = second["settings"]["cache_stats"]["radiomics-frd-v1"]
    assert stats["real"] == {"cached": N, "extracted": 0, "failed": 0}
    assert stats["generated"]["extracted"] == N
    # renamed copies of cached files hit the cache too (the key is the file content)
    copy = tiny["root"] / "real_renamed"
    shutil.copytree(tiny["real"], copy)
    for f in copy.iterdir():
        f.rename(copy / ("renamed_" + f.name))
    third = build_report(
        copy, tiny["gen"], metrics="frd", cache_dir=tiny["cache"], workers=1, settings=ph.SMALL_SETTINGS
    )
    assert third["settings"]["cache_stats"]["radiomics-frd-v1"]["real"]["extracted"] == 0
    assert third["metrics"]["frd"]["value"] == pytest.approx(tiny["report"]["metrics"]["frd"]["value"], rel=1e-12)


def test_report_json_contract(tiny):
    report = tiny["report"]
    on_disk = json.loads((tiny["out"] / "report.json").read_text())
    assert on_disk == report
    assert report["schema"] == SCHEMA
    inp = report["inputs"]
    assert (inp["n_real"], inp["n_generated"], inp["n_train"], inp["train"]) == (N, N, 0, None)
    assert inp["skipped"] == [] and inp["resampled_to"] is None
    assert list(report["metrics"]) == list(METRICS)
    for name, m in report["metrics"].items():
        if "real_ci95" in m:  # per-scan properties: the real cohort's own CI holds its mean
            assert m["real_ci95"][0] <= m["real"] <= m["real_ci95"][1], name
        if name in ("noise_sd", "cnr_soft_tissue_fat", "contrast_rms") and m["real"] is not None:
            assert "real_ci95" in m, name
        assert set(m) - {"details", "matched_value", "real_ci95"} == {
            "value",
            "ci95",
            "real",
            "generated",
            "reference",
            "better",
            "unit",
            "reason",
            "description",
            "resolution",
            "floor",
            "floor_basis",
            "gap",
            "status",
        }
        assert ("details" in m) == (
            name in ("cnr_soft_tissue_fat", "noise_sd", "nps_peak_frequency", "nps_mean_frequency")
        ), name
        assert m["status"] in ("close", "apart", "far", "n/a")
        assert (m["gap"] is None) == (m["status"] == "n/a"), name
        if m["gap"] is not None:  # the floor is never below the real-vs-real reference
            assert m["floor"] >= abs(m["reference"]) * (1 - 1e-12) or m["unit"] == "log" or m["better"] == "higher", (
                name
            )
        assert m["better"] in ("lower", "higher", "closer-to-real")
        # no --train: the floor is a split of the real cohort, so two-sample distances are also given at
        # the split's sizes (eval.report.gap reads them); per-scan properties have none
        two_sample = m["better"] in ("lower", "higher") and m["reference"] is not None
        assert ("matched_value" in m) == (two_sample and m["value"] is not None and name != "memorization"), name
        assert (m["value"] is None) == (m["reason"] is not None), name
        if m["ci95"] is not None:
            assert len(m["ci95"]) == 2 and m["ci95"][0] <= m["ci95"][1]
    for name in ("noise_sd", "contrast_rms", "frd", "kid", "ssim_nearest_real", "ms_ssim_diversity", "glcm_distance"):
        assert report["metrics"][name]["value"] is not None, (name, report["metrics"][name]["reason"])
        assert report["metrics"][name]["ci95"] is not None, name
    assert report["metrics"]["noise_sd"]["generated"] > report["metrics"]["noise_sd"]["real"]  # 30 vs 20 HU phantoms
    nps_bin = report["curves"]["nps"]["frequency_mm"][1] - report["curves"]["nps"]["frequency_mm"][0]
    assert report["metrics"]["nps_peak_frequency"]["resolution"] == pytest.approx(nps_bin)
    assert report["metrics"]["precision"]["resolution"] == pytest.approx(1 / N)
    d = report["metrics"]["noise_sd"]["details"]
    assert d["roi_px"] == 8 and d["measurable"] == {"real": N, "generated": N}  # 16 mm ROIs at 2 mm
    cohorts = [r["cohort"] for r in report["per_case"]]
    assert cohorts == ["real"] * N + ["generated"] * N
    gen_row = report["per_case"][N]
    assert {
        "file",
        "case",
        "noise_sd",
        "contrast_rms",
        "cnr_soft_tissue_fat",
        "ssim_nearest_real",
        "nearest_real_file",
    } <= set(gen_row)
    assert gen_row["nearest_real_file"].startswith(str(tiny["real"]))
    h = report["curves"]["hu_histogram"]
    assert len(h["bin_edges"]) == len(h["real"]) + 1 == len(h["generated"]) + 1
    assert sum(h["real"]) == pytest.approx(1.0)
    nps = report["curves"]["nps"]
    assert len(nps["frequency_mm"]) == len(nps["real"]) == len(nps["generated"])
    assert isinstance(report["memorization_flagged"], list)
    assert report["settings"]["reference"].startswith("split")


def test_inception_fid_is_null_with_reason_without_weights(tiny):
    m = tiny["report"]["metrics"]["fid_inception_2d"]
    assert m["value"] is None and m["ci95"] is None
    assert "--inception-weights" in m["reason"] and "pt_inception-2015-12-05" in m["reason"]


def test_inception_fid_with_a_local_weights_file(tiny, tmp_path, monkeypatch, ph):
    """The FID path end to end with a stand-in weights file (randomly initialised, same layout)."""
    from eval.features.inception import FIDInceptionV3

    torch.manual_seed(0)
    weights = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(FIDInceptionV3().state_dict(), weights)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    settings = {**ph.SMALL_SETTINGS, "inception_slices_per_plane": 1}
    report = build_report(
        tiny["real"],
        tiny["gen"],
        metrics="fid_inception_2d",
        cache_dir=tiny["cache"],
        inception_weights=weights,
        device="cpu",
        settings=settings,
    )
    m = report["metrics"]["fid_inception_2d"]
    assert m["reason"] is None and m["value"] > 0
    # the hub cache is searched too
    (tmp_path / "torch-home" / "hub" / "checkpoints").mkdir(parents=True)
    shutil.copy(weights, tmp_path / "torch-home" / "hub" / "checkpoints" / weights.name)
    again = build_report(
        tiny["real"], tiny["gen"], metrics="fid_inception_2d", cache_dir=tiny["cache"], device="cpu", settings=settings
    )
    assert again["metrics"]["fid_inception_2d"]["value"] == pytest.approx(m["value"], rel=1e-9)
    assert again["settings"]["cache_stats"]["inception-v3-fid-2d"]["real"]["extracted"] == 0


def test_html_and_markdown_are_complete_and_offline(tiny):
    html = (tiny["out"] / "report.html").read_text()
    assert "data:image/png;base64," in html and html.count("<img") == 3
    assert "Plotly.newPlot" in html and len(html) > 1_000_000  # plotly.js embedded
    assert not re.search(r"<script[^>]+src=[\"']https?://", html)
    for name in METRICS:
        assert name in html
    assert "HU histogram" in html and "Noise power spectrum" in html and "Per case" in html
    md = (tiny["out"] / "report.md").read_text()
    assert "| frd |" in md and "figures/mosaic_axial.png" in md
    assert (tiny["out"] / "figures" / "mosaic_coronal.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_json_output_and_refusal_to_overwrite(tiny, capsys):
    out = tiny["root"] / "cli-out"
    args = [
        "report",
        "--real",
        str(tiny["real"]),
        "--generated",
        str(tiny["gen"]),
        "--out",
        str(out),
        "--metrics",
        "contrast_rms,noise_sd",
        "--json",
        "--no-cache",
        "--bootstrap",
        "20",
    ]
    assert eval_main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert list(printed["metrics"]) == ["contrast_rms", "noise_sd"]
    assert printed["settings"]["cache_dir"] is None
    assert eval_main(args) == 2
    assert "--force" in capsys.readouterr().err
    assert eval_main(args + ["--force"]) == 0


def test_clear_errors_for_empty_folder_and_unknown_metric(tiny, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (
        eval_main(["report", "--real", str(empty), "--generated", str(tiny["gen"]), "--out", str(tmp_path / "o")]) == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "empty" in err and str(empty) in err
    assert (
        eval_main(
            [
                "report",
                "--real",
                str(tiny["real"]),
                "--generated",
                str(tiny["gen"]),
                "--out",
                str(tmp_path / "o"),
                "--metrics",
                "fid,noise",
            ]
        )
        == 2
    )
    assert "unknown metric 'fid'" in capsys.readouterr().err


def test_unreadable_file_is_skipped_and_listed(tiny, tmp_path, ph):
    real = tmp_path / "real"
    shutil.copytree(tiny["real"], real)
    (real / "broken.nii.gz").write_bytes(b"\x1f\x8b\x08\x00 not really gzip")
    report = build_report(real, tiny["gen"], metrics="contrast_rms", settings=ph.SMALL_SETTINGS)
    assert report["inputs"]["n_real"] == N
    [skip] = report["inputs"]["skipped"]
    assert skip["file"].endswith("broken.nii.gz") and skip["reason"]


def test_fewer_than_two_cases_gives_null_with_reason(tiny, tmp_path, ph):
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(next(tiny["gen"].glob("*.nii.gz")), one)
    report = build_report(
        tiny["real"], one, metrics="ms_ssim_diversity,noise_sd,glcm_distance", settings=ph.SMALL_SETTINGS
    )
    for name in ("ms_ssim_diversity", "noise_sd", "glcm_distance"):
        m = report["metrics"][name]
        assert m["value"] is None and "2" in m["reason"], (name, m)


def test_inputs_on_different_grids_are_resampled_and_reported(tiny, tmp_path, ph):
    gen = tmp_path / "coarse"
    gen.mkdir()
    for i, a in enumerate(ph.phantom_arrays(22, N, noise_hu=30.0)):
        coarse = a[::2, ::2, :]  # same anatomy, half the in-plane samples at twice the spacing
        write_nifti(Volume.from_spacing(coarse, (4.0, 4.0, 2.0)), gen / f"c{i}.nii.gz")
    report = build_report(tiny["real"], gen, metrics="contrast_rms,ssim_nearest_real", settings=ph.SMALL_SETTINGS)
    r = report["inputs"]["resampled_to"]
    assert r["shape"] == [48, 48, 16] and r["spacing"] == [2.0, 2.0, 2.0] and len(r["files"]) == N
    # decimated without anti-aliasing, then interpolated back: edges soften, contrast drops (60 vs 71 HU in 96 mm crops)
    assert report["metrics"]["contrast_rms"]["generated"] == pytest.approx(
        tiny["report"]["metrics"]["contrast_rms"]["generated"], rel=0.2
    )
    assert np.isfinite(report["metrics"]["ssim_nearest_real"]["value"])
