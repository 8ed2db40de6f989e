"""AppTest of pages/2_Metrics_dashboard.py on the hand-made report of conftest.py."""

from __future__ import annotations

import json

import pytest

DASHBOARD = "pages/2_Metrics_dashboard.py"


def _by_title(at, charts) -> dict[str, dict]:
    out = {}
    for spec in charts(at):
        title = (spec["layout"].get("title") or {}).get("text") or spec["layout"].get("xaxis", {}).get("title", {}).get(
            "text"
        )
        out[title] = spec
    return out


@pytest.fixture
def dashboard(app_env, page):
    at = page(DASHBOARD)
    at.run()
    assert not at.exception, at.exception
    return at


@pytest.fixture
def no_report(app_env, page):
    """The dashboard with real and generated folders selected but no report."""
    at = page(DASHBOARD)
    at.session_state["report_dir"] = None
    at.session_state["selection_source"] = "test"
    at.session_state["real_dir"] = str(app_env / "real")
    at.session_state["generated_dir"] = str(app_env / "generated")
    at.run()
    assert not at.exception, at.exception
    return at


def test_metric_table_is_colour_coded_by_gap(dashboard):
    at = dashboard
    assert at.title[0].value == "Metrics dashboard"
    table = at.dataframe[0].value.set_index("metric")
    # frd 30 vs floor 10 -> 3x far; noise 11 vs 10 with floor 1 -> 1x close; coverage shortfall 0.2 vs real 0.1 -> 2x apart
    assert table.loc["frd", "gap"] == "3" and table.loc["frd", "status"] == "far"
    assert table.loc["noise_sd", "gap"] == "1" and table.loc["noise_sd", "status"] == "close"
    assert table.loc["coverage", "gap"] == "2" and table.loc["coverage", "status"] == "apart"
    assert table.loc["fid_2d", "status"] == "n/a" and "skipped" in table.loc["fid_2d", "notes"]
    assert table.loc["frd", "ci95"] == "25 .. 35"
    assert {m.label: m.value for m in at.metric} == {"close": "1", "apart": "1", "far": "1", "n/a": "1"}


def test_charts_show_the_report_curves(dashboard, charts):
    at = dashboard
    shown = _by_title(at, charts)
    hist = shown["HU histogram"]
    assert [t["name"] for t in hist["data"]] == ["real", "generated"]
    assert hist["data"][0]["x"].tolist() == [-750.0, -250.0, 250.0, 750.0]  # bin centres of the report's edges
    assert list(hist["data"][1]["y"]) == [0.2, 0.2, 0.4, 0.2]
    nps = shown["Noise power spectrum"]
    assert nps["layout"]["yaxis"]["type"] == "log" and list(nps["data"][1]["y"]) == [12.0, 9.0, 5.0, 2.0]
    scatter = shown["noise_sd"]
    assert scatter["layout"]["yaxis"]["title"]["text"] == "ssim_nearest_real"
    by_name = {t["name"]: t for t in scatter["data"]}
    assert list(by_name["generated"]["x"]) == [12.0, 13.0] and list(by_name["generated"]["y"]) == pytest.approx(
        [0.8, 0.85]
    )
    assert "real" not in by_name  # real cases have no nearest-real SSIM
    at.selectbox(key="scatter_y").set_value("contrast_rms").run()
    scatter = _by_title(at, charts)["noise_sd"]
    by_name = {t["name"]: t for t in scatter["data"]}
    assert list(by_name["real"]["y"]) == [50.0, 51.0] and list(by_name["generated"]["y"]) == [40.0, 41.0]


def test_memorisation_list_and_downloads(dashboard):
    at = dashboard
    assert "1 of 2 generated case(s)" in at.warning[0].value
    assert any("**sample_001** ↔ training scan **case_a**" in m.value for m in at.markdown)
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels == ["report.json", "report.html", "per-case values (CSV)"]


def test_memorisation_entry_opens_the_pair_in_the_browser(app_env, page):
    at = page("app.py")
    at.run()
    at.switch_page("pages/2_Metrics_dashboard.py").run()
    assert at.title[0].value == "Metrics dashboard"
    at.button(key="open_flagged_0").click().run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Slice browser"
    (viewer,) = [e.proto for e in at.main if getattr(e, "type", None) == "component_instance"]
    assert [v["label"] for v in json.loads(viewer.json_args)["volumes"]] == ["Generated: sample_001", "Real: case_a"]
    assert at.radio(key="view").value == "nearest real"


def test_no_report_offers_to_compute_one(no_report, app_env):
    at = no_report
    assert not at.exception
    assert "No report selected" in at.info[0].value
    assert at.button(key="compute_report") is not None
    assert at.text_input(key="report_out").value == str(app_env / "report-app")  # report/ is taken


def test_compute_refuses_to_overwrite_a_report(no_report, app_env):
    at = no_report
    at.text_input(key="report_out").set_value(str(app_env / "report")).run()
    at.button(key="compute_report").click().run()
    assert not at.exception
    assert "already holds a report" in at.error[0].value


def test_broken_report_gives_a_message(app_env, page):
    (app_env / "report" / "report.json").write_text("{broken")
    at = page(DASHBOARD)
    at.run()
    assert not at.exception
    assert "not readable JSON" in at.error[0].value


def test_compute_a_report_with_the_eval_builder(no_report, tmp_path):
    out = tmp_path / "new-report"
    at = no_report
    at.text_input(key="report_out").set_value(str(out))
    at.text_input(key="report_metrics").set_value("intensity")
    at.button(key="compute_report").click().run()
    assert not at.exception, at.exception
    assert (out / "report.json").is_file() and (out / "report.html").is_file()
    assert at.session_state["report_dir"] == str(out)
    written = json.loads((out / "report.json").read_text())
    table = at.dataframe[0].value.set_index("metric")
    assert (
        sorted(table.index)
        == sorted(written["metrics"])
        == ["cnr_soft_tissue_fat", "contrast_rms", "hu_wasserstein", "slice_banding"]
    )
    assert float(table.loc["hu_wasserstein", "value"]) == pytest.approx(
        written["metrics"]["hu_wasserstein"]["value"], rel=1e-3
    )
    # the report records which scans it measured, and they are the selected ones
    measured = {c: {r["sha256"] for r in rows} for c, rows in written["provenance"]["scans"].items() if rows}
    assert set(measured) == {"real", "generated"} and all(len(h) == 2 for h in measured.values())
    assert not any("other scans" in w.value for w in at.warning)


def test_distances_show_a_dash_never_none(dashboard):
    table = dashboard.dataframe[0].value.set_index("metric")
    # FRD and coverage compare the sets as a whole: no per-cohort number
    assert table.loc["frd", ["real", "generated"]].tolist() == ["—", "—"]
    assert table.loc["coverage", ["real", "generated"]].tolist() == ["—", "—"]
    assert table.loc["noise_sd", ["real", "generated"]].tolist() == ["10", "11"]
    assert table.loc["fid_2d", ["value", "gap", "status"]].tolist() == ["—", "—", "n/a"]
    cells = table.astype(str).to_numpy().ravel().tolist()
    assert "None" not in cells and "nan" not in cells


def test_a_report_for_other_scans_is_not_shown_as_theirs(app_env, page, tmp_path):
    from ctdiff.data.io import write_nifti
    from ctdiff.data.volume import Volume

    from .conftest import SPACING, pattern

    fresh = tmp_path / "fresh"  # a new Generate run: old names, new content
    for i in range(2):
        write_nifti(Volume.from_spacing(pattern((16, 12, 6), offset=700 + i), SPACING), fresh / f"sample_00{i}.nii.gz")
    at = page(DASHBOARD)
    at.session_state["generated_dir"] = str(fresh)
    at.run()
    assert not at.exception
    assert "This report is for other scans: generated: 0 of the 2 selected scans were measured" in at.warning[0].value
    assert not at.dataframe  # no metric is shown as if it described these scans
    assert at.button(key="compute_report") is not None  # offered: recompute on the selected scans
    at.checkbox(key="show_other_report").check().run()
    assert not at.exception and at.dataframe[0].value.set_index("metric").loc["frd", "gap"] == "3"


def test_report_without_scan_hashes_says_so(app_env, page):
    path = app_env / "report" / "report.json"
    report = json.loads(path.read_text())
    del report["provenance"]
    path.write_text(json.dumps(report))
    at = page(DASHBOARD)
    at.run()
    assert not at.exception
    assert "does not record which scans it measured" in at.info[0].value
    assert at.dataframe  # shown, with that caveat


def test_histogram_range_fits_the_data_and_nps_drops_the_zero_bin(app_env, page, charts):
    path = app_env / "report" / "report.json"
    report = json.loads(path.read_text())
    edges = list(range(-1100, 3001, 100))  # binned to 3000 HU; the data end at 700
    counts = [0.0] * (len(edges) - 1)
    for i, e in enumerate(edges[:-1]):
        if -1000 <= e < 700:
            counts[i] = 0.01
    report["curves"]["hu_histogram"] = {"bin_edges": edges, "real": counts, "generated": counts}
    report["curves"]["nps"] = {
        "frequency_mm": [0.0, 0.1, 0.2, 0.4],
        "real": [1e-28, 8.0, 4.0, 1.0],
        "generated": [3e-29, 9.0, 5.0, 2.0],
    }
    path.write_text(json.dumps(report))
    at = page(DASHBOARD)
    at.run()
    assert not at.exception
    shown = _by_title(at, charts)
    assert shown["HU histogram"]["layout"]["xaxis"]["range"] == [-1100.0, 800.0]  # one bin of margin each side
    nps = shown["Noise power spectrum"]
    assert [list(t["x"]) for t in nps["data"]] == [[0.1, 0.2, 0.4]] * 2
    lo, hi = nps["layout"]["yaxis"]["range"]
    assert lo == pytest.approx(-0.1) and hi == pytest.approx(0.954 + 0.1, abs=1e-3)  # log10 of 1 .. 9, padded


def test_selftest_tab_shows_the_sensitivity_table(app_env, page):
    result = {
        "schema": "ctdiff-eval-selftest/1",
        "inputs": {"n_real": 8, "n_reference": 4, "n_degraded": 4},
        "settings": {"metrics": ["noise_sd", "contrast_rms"]},
        "degradations": {
            "blur": {
                "expected": ["noise_sd"],
                "missed": [],
                "detected_by": ["noise_sd"],
                "metrics": {
                    "noise_sd": {"direction": "down", "z": 4.2, "detected": True},
                    "contrast_rms": {"direction": "down", "z": 0.3, "detected": False},
                },
            },
            "contrast": {
                "expected": ["contrast_rms"],
                "missed": ["contrast_rms"],
                "detected_by": [],
                "metrics": {
                    "noise_sd": {"detected": None},
                    "contrast_rms": {"direction": "down", "z": 1.1, "detected": False},
                },
            },
        },
    }
    (app_env / "report" / "selftest").mkdir()
    (app_env / "report" / "selftest" / "selftest.json").write_text(json.dumps(result))
    at = page(DASHBOARD)
    at.run()
    assert not at.exception, at.exception
    table = next(df.value for df in at.dataframe if "degradation" in df.value.columns).set_index("degradation")
    assert table.loc["blur", "noise_sd"] == "▼ +4.2σ ✓" and table.loc["blur", "contrast_rms"] == "▼ +0.3σ"
    assert table.loc["contrast", "noise_sd"] == "—" and table.loc["contrast", "missed"] == "contrast_rms"
    assert any("contrast: contrast_rms" in w.value for w in at.warning)
