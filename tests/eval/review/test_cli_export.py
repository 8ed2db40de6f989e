"""python -m eval review: create, add-reader, list, report, export; the exported files' content."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter

import pytest

from ctdiff.errors import ConfigError
from eval.cli import main
from eval.review import export, stats, store


def _answer_all(db_url, sid, names=("A", "B")):
    """Each reader calls every case synthetic with confidence 4, except the first two of their order."""
    for name in names:
        reader = store.find_reader(db_url, store.add_reader(db_url, sid, name))
        for i in range(reader.total):
            code = store.reader_case(db_url, reader.reader_id, i).code
            store.submit_answer(
                db_url,
                reader.reader_id,
                code,
                said_synthetic=i >= 2,
                confidence=4,
                realism=1 + i % 5,
                flags=["noise"] if i % 2 else [],
                seconds=2.0,
            )


def test_cli_create_add_reader_list_report_export(db_url, cohorts, tmp_path, capsys):
    real, gen = cohorts
    assert (
        main(
            [
                "review",
                "--db",
                db_url,
                "create",
                "--name",
                "pilot",
                "--real",
                str(real),
                "--generated",
                str(gen),
                "--n",
                "2",
                "--planes",
                "axial",
                "--windows",
                "bone",
                "lung",
                "--scroll",
                "middle",
                "--allow-change",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "session 1 'pilot': 2 real + 2 synthetic" in out
    info = store.session_info(db_url, 1)
    assert (info.planes, info.windows, info.scroll, info.allow_change) == (("axial",), ("bone", "lung"), "middle", True)

    assert main(["review", "--db", db_url, "add-reader", "--session", "1", "--name", "Dr. A"]) == 0
    code = capsys.readouterr().out.strip().rsplit(" ", 1)[1]
    assert store.find_reader(db_url, code).reader_name == "Dr. A"
    assert (
        main(["review", "--db", db_url, "add-reader", "--session", "1", "--name", "demo", "--code", "DEMO1-CODE"]) == 0
    )
    capsys.readouterr()
    reader = store.find_reader(db_url, "demo1-code")
    store.submit_answer(
        db_url,
        reader.reader_id,
        store.reader_case(db_url, reader.reader_id, 0).code,
        said_synthetic=True,
        confidence=5,
        realism=2,
    )

    assert main(["review", "--db", db_url, "list"]) == 0
    listing = capsys.readouterr().out
    assert "pilot" in listing and "Dr. A: 0/4" in listing and "demo: 1/4" in listing

    assert main(["review", "--db", db_url, "report", "--session", "1"]) == 0
    md = capsys.readouterr().out
    assert md.startswith("# Reader study: pilot") and "Wilson" in md

    out_dir = tmp_path / "rep"
    assert main(["review", "--db", db_url, "report", "--session", "1", "--out", str(out_dir)]) == 0
    # one answer so far: no MRMC analysis yet, so no ROC plot
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(set(export.REPORT_FILES) - {"roc.png"})
    assert {oct(p.stat().st_mode & 0o777) for p in out_dir.iterdir()} == {"0o600"}
    assert main(["review", "--db", db_url, "report", "--session", "1", "--out", str(out_dir)]) == 2  # no --force
    assert "--force" in capsys.readouterr().err
    assert main(["review", "--db", db_url, "report", "--session", "1", "--out", str(out_dir), "--force"]) == 0
    assert (
        main(["review", "--db", db_url, "export", "--session", "1", "--out", str(tmp_path / "csv"), "--format", "csv"])
        == 0
    )
    assert [p.name for p in (tmp_path / "csv").iterdir()] == ["answers.csv"]
    assert main(["review", "--db", db_url, "report", "--session", "9"]) == 2
    assert "no review session with id 9" in capsys.readouterr().err


def test_cli_bad_folder_is_one_line_error(db_url, tmp_path, capsys):
    assert (
        main(
            [
                "review",
                "--db",
                db_url,
                "create",
                "--name",
                "x",
                "--real",
                str(tmp_path / "nope"),
                "--generated",
                str(tmp_path),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "nope" in err and "\n" not in err


def test_exports_hold_every_answer_and_the_summary(db_url, cohorts):
    sid = store.create_session(db_url, "s", *cohorts)
    _answer_all(db_url, sid)
    files = export.build_report(db_url, sid)
    rows = list(csv.DictReader(io.StringIO(files["answers.csv"])))
    assert len(rows) == 12 and set(rows[0]) == set(export.ANSWER_COLUMNS)
    records = store.answer_records(db_url, sid)
    assert json.loads(files["answers.json"]) == json.loads(json.dumps(records))
    summary = json.loads(files["summary.json"])
    expected = stats.session_summary(records)
    assert summary["pooled"]["accuracy"]["k"] == expected["pooled"]["accuracy"]["k"]
    assert summary["pooled"]["auc"]["value"] == pytest.approx(expected["pooled"]["auc"]["value"])
    assert summary["agreement"]["method"] == "Cohen's kappa"
    # the Markdown and HTML carry the same pooled row; no folders or paths, only case file names
    pooled_acc = export.fmt_prop(expected["pooled"]["accuracy"])
    assert pooled_acc in files["summary.md"] and pooled_acc in files["summary.html"]
    for text in (files["summary.md"], files["summary.html"], files["answers.csv"]):
        assert str(cohorts[0]) not in text and cohorts[0].name not in text and cohorts[1].name not in text
    assert files["summary.html"].startswith("<!DOCTYPE html>") and "<table>" in files["summary.html"]
    assert "<strong>s</strong>" in files["summary.html"]


def test_serve_runs_the_reader_page_alone_without_navigation_or_error_details():
    from eval.review.cli import READER_PAGE, serve_command

    cmd = serve_command(8600, "127.0.0.1")
    assert cmd[1:4] == ["-m", "streamlit", "run"] and cmd[4] == str(READER_PAGE) and READER_PAGE.is_file()
    opts = dict(zip(cmd[5::2], cmd[6::2]))
    assert opts["--server.port"] == "8600" and opts["--server.address"] == "127.0.0.1"
    assert opts["--client.showSidebarNavigation"] == "false" and opts["--client.showErrorDetails"] == "none"


def test_serve_page_comes_from_flag_env_or_current_folder(tmp_path, monkeypatch):
    """eval does not locate the app's page from its own file: --page, $CTDIFF_READER_PAGE, ./pages/..."""
    from ctdiff.errors import InputError
    from eval.review.cli import READER_PAGE_ENV, reader_page, serve_command

    page = tmp_path / "reader.py"
    page.write_text("")
    monkeypatch.delenv(READER_PAGE_ENV, raising=False)
    assert reader_page(page) == page
    assert serve_command(1, "h", page)[4] == str(page)
    monkeypatch.setenv(READER_PAGE_ENV, str(page))
    assert reader_page() == page
    monkeypatch.delenv(READER_PAGE_ENV)
    monkeypatch.chdir(tmp_path)  # no pages/ here
    with pytest.raises(InputError, match="reader page not found"):
        reader_page()


def test_exports_are_private_formula_safe_and_feed_mrmc_and_imrmc(db_url, cohorts, tmp_path):
    from eval.review import mrmc

    sid = store.create_session(db_url, "s", *cohorts)
    names = ("=HYPERLINK(1)", "B", "C")
    _answer_all(db_url, sid, names=names)
    records = store.answer_records(db_url, sid)
    reader = store.find_reader(db_url, store.add_reader(db_url, sid, "late"))  # answers nothing: not in MRMC
    paths = export.write_report(db_url, sid, tmp_path / "out")
    assert sorted(p.name for p in paths) == sorted(export.REPORT_FILES)
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in paths)
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out" / "answers.csv").read_text())))
    assert {r["reader"] for r in rows} == {"'=HYPERLINK(1)", "B", "C"}  # neutralised, not evaluated
    assert export.csv_cell("-2+3") == "'-2+3" and export.csv_cell("@SUM") == "'@SUM" and export.csv_cell(-2) == -2
    # mrmc.csv is what the CLI analyses; it equals the analysis in the summary
    data = mrmc.read_answers_csv(tmp_path / "out" / "mrmc.csv")
    assert data.ratings.shape == (1, 3, len(records) // 3) and reader.reader_name not in data.readers
    direct = mrmc.analyse(mrmc.ratings_from_rows(mrmc.rows_for_mrmc(records)))
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["mrmc"]["conditions"][0]["auc"]["value"] == pytest.approx(direct.conditions[0].auc.value)
    for r in records:  # rating = signed confidence, call = said synthetic
        sign = 1 if r["said"] == "synthetic" else -1
        t, ri, ci = 0, data.readers.index(export.csv_cell(r["reader"])), data.cases.index(r["case_id"])
        assert data.ratings[t, ri, ci] == sign * r["confidence"] and data.calls[t, ri, ci] == (sign > 0)
    imrmc = (tmp_path / "out" / "imrmc.csv").read_text().splitlines()
    n_cases = len(data.cases)
    start = imrmc.index("BEGIN DATA:")
    assert "NR:3" in imrmc[:start] and "NM:1" in imrmc[:start]
    assert all(line.startswith("-1,") and ",truth," in line for line in imrmc[start + 1 : start + 1 + n_cases])
    assert len(imrmc) - start - 1 - n_cases == 3 * n_cases
    html_text = (tmp_path / "out" / "summary.html").read_text()
    assert "data:image/png;base64," in html_text and "http" not in html_text.replace("http://www.w3.org", "")
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "## MRMC analysis (readers and cases random)" in md and "## What this study shows" in md
    assert (tmp_path / "out" / "roc.png").read_bytes().startswith(b"\x89PNG")


def test_serve_defaults_to_localhost_warns_without_tls_and_passes_tls(monkeypatch, tmp_path, capsys):
    from eval.review import cli as review_cli
    from eval.review import serving

    calls = []
    monkeypatch.setattr(review_cli.subprocess, "call", lambda cmd, env: calls.append(cmd) or 0)
    assert main(["review", "serve"]) == 0
    opts = dict(zip(calls[-1][5::2], calls[-1][6::2]))
    assert opts["--server.address"] == "127.0.0.1" and "--server.sslCertFile" not in opts
    captured = capsys.readouterr()
    assert "warning" not in captured.err and "http://127.0.0.1:8502" in captured.out

    assert main(["review", "serve", "--address", "0.0.0.0"]) == 0
    assert capsys.readouterr().err.startswith("warning: serving on 0.0.0.0 over plain HTTP")

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("C")
    key.write_text("K")
    assert main(["review", "serve", "--address", "0.0.0.0", "--ssl-cert", str(cert), "--ssl-key", str(key)]) == 0
    opts = dict(zip(calls[-1][5::2], calls[-1][6::2]))
    assert (opts["--server.sslCertFile"], opts["--server.sslKeyFile"]) == (str(cert), str(key))
    captured = capsys.readouterr()
    assert "warning" not in captured.err and "https://0.0.0.0:8502" in captured.out

    assert main(["review", "serve", "--ssl-cert", str(cert)]) == 2
    assert "needs both --ssl-cert and --ssl-key" in capsys.readouterr().err
    assert main(["review", "serve", "--ssl-cert", str(cert), "--ssl-key", str(tmp_path / "nokey.pem")]) == 2
    assert "TLS file not found" in capsys.readouterr().err
    assert len(calls) == 3
    assert [serving.is_local(a) for a in ("127.0.0.1", "::1", "localhost", "10.1.2.3", "0.0.0.0", "myhost")] == [
        True,
        True,
        True,
        False,
        False,
        False,
    ]


def test_marks_export_and_heat_maps(db_url, cohorts, tmp_path):
    from PIL import Image

    sid = store.create_session(db_url, "s", *cohorts)
    reader = store.find_reader(db_url, store.add_reader(db_url, sid, "A"))
    from sqlalchemy import select

    from eval.review.db import Case, read_session

    with read_session(db_url) as s:
        syn = [c.code for c in s.scalars(select(Case).where(Case.cohort == "synthetic").order_by(Case.code))]
    store.add_mark(db_url, reader.reader_id, syn[0], (2, 3, 1))
    store.add_mark(db_url, reader.reader_id, syn[1], (4, 4, 2))
    paths = export.write_report(db_url, sid, tmp_path / "out")
    names = sorted(p.name for p in paths)
    assert {"marks.json", "marks-synthetic.png", f"marks-{syn[0]}.png", f"marks-{syn[1]}.png"} <= set(names)
    marks = json.loads((tmp_path / "out" / "marks.json").read_text())
    assert [(m["case_id"], m["voxel"], m["cohort"]) for m in marks] == [
        (syn[0], [2, 3, 1], "synthetic"),
        (syn[1], [4, 4, 2], "synthetic"),
    ]
    img = Image.open(tmp_path / "out" / "marks-synthetic.png")
    assert img.format == "PNG" and img.size[0] > 200
    html_text = (tmp_path / "out" / "summary.html").read_text()
    assert html_text.count("data:image/png;base64,") == 3  # 3 heat maps (no ROC: one reader)
    assert "2 mark(s)" in (tmp_path / "out" / "summary.md").read_text()


def test_two_generated_cohorts_are_compared_with_mrmc(db_url, tmp_path):
    from sqlalchemy import select

    from eval.review import mrmc
    from eval.review.db import Case, read_session
    from tests.eval.review.conftest import write_cohorts

    real, gen_a = write_cohorts(tmp_path / "a", n_real=6, n_gen=6, seed=1)
    _, gen_b = write_cohorts(tmp_path / "b", n_real=0, n_gen=6, seed=2)
    gen_a, gen_b = gen_a.rename(tmp_path / "modelA"), gen_b.rename(tmp_path / "modelB")
    sid = store.create_session(db_url, "two models", real, [gen_a, gen_b], seed=4)
    info = store.session_info(db_url, sid)
    assert info.conditions == (("modelA", str(gen_a)), ("modelB", str(gen_b)))
    assert (info.n_real, info.n_synthetic) == (6, 12)
    with read_session(db_url) as s:
        truth = {c.code: (c.cohort, c.condition) for c in s.scalars(select(Case))}
    assert sorted(Counter(v for v in truth.values()).items()) == [
        (("real", ""), 6),
        (("synthetic", "modelA"), 6),
        (("synthetic", "modelB"), 6),
    ]
    rng = __import__("numpy").random.default_rng(0)
    for name in ("A", "B", "C", "D", "E"):  # with 3 readers Hillis' ddf is ~3 and the CI too wide
        reader = store.find_reader(db_url, store.add_reader(db_url, sid, name))
        for pos in range(reader.total):
            code = store.reader_case(db_url, reader.reader_id, pos).code
            cohort, cond = truth[code]
            # model B is always spotted, model A's scans pass for real as often as real ones
            said = (
                cohort == "synthetic"
                and cond == "modelB"
                or (cohort != "synthetic" or cond == "modelA")
                and rng.random() < 0.3
            )
            store.submit_answer(
                db_url, reader.reader_id, code, said_synthetic=bool(said), confidence=int(rng.integers(2, 6)), realism=3
            )
    files = export.build_report(db_url, sid)
    rows = list(csv.DictReader(io.StringIO(files["mrmc.csv"])))
    assert len(rows) == 5 * (2 * 6 + 12)  # each real case once per condition
    assert {r["condition"] for r in rows} == {"modelA", "modelB"}
    result = json.loads(files["summary.json"])["mrmc"]
    auc = {c["name"]: c["auc"]["value"] for c in result["conditions"]}
    assert auc["modelB"] > 0.8 and abs(auc["modelA"] - 0.5) < 0.2
    (cmp,) = result["comparisons"]
    assert (cmp["first"], cmp["second"]) == ("modelA", "modelB") and cmp["difference"]["ci_high"] < 0
    direct = mrmc.analyse(mrmc.ratings_from_rows(mrmc.rows_for_mrmc(store.answer_records(db_url, sid))))
    assert cmp["difference"]["value"] == pytest.approx(direct.comparisons[0].difference.value)
    assert "from 2 generated cohorts (modelA, modelB)" in files["summary.md"]
    assert "AUC modelA - modelB" in files["summary.md"]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


@pytest.mark.parametrize(
    "counts, needle",
    [
        (["--n", "0"], "cases per cohort"),
        (["--n", "-2"], "cases per cohort"),
        (["--n-real", "0"], "real cases"),
        (["--n-generated", "0"], "generated cases"),
        (["--n", "3", "--n-generated", "-1"], "generated cases"),
    ],
)
def test_cli_zero_or_negative_case_counts_are_one_line_errors(db_url, cohorts, capsys, counts, needle):
    real, gen = cohorts
    argv = ["review", "--db", db_url, "create", "--name", "x", "--real", str(real), "--generated", str(gen), *counts]
    assert main(argv) == 2
    err = _one_line_error(capsys)
    assert needle in err and ">= 1" in err
    assert store.list_sessions(db_url) == []  # nothing created ("0" is not "take every case")


def test_cli_bad_database_url_is_one_line_error(tmp_path, cohorts, capsys):
    missing = tmp_path / "no" / "such" / "dir" / "x.sqlite"
    for url, needle in (
        ("nonsense://x", "nonsense://x: cannot use this database URL"),
        (f"sqlite:///{missing}", "folder of the SQLite database does not exist"),
        ("not a url", "not a database URL"),
    ):
        assert main(["review", "--db", url, "list"]) == 2
        assert needle in _one_line_error(capsys)
        real, gen = cohorts  # create fails on the URL too, before reading any case
        assert main(["review", "--db", url, "create", "--name", "x", "--real", str(real), "--generated", str(gen)]) == 2
        assert needle in _one_line_error(capsys)
    assert not (tmp_path / "no").exists()  # a mistyped path makes no folders


def test_cli_seeds_and_session_ids_out_of_range_are_one_line_errors(db_url, cohorts, capsys):
    """Were tracebacks (numpy's seed check, SQLite's integer overflow) after every case had been read."""
    real, gen = cohorts
    create = ["review", "--db", db_url, "create", "--name", "x", "--real", str(real), "--generated", str(gen)]
    for seed, needle in (("-1", "--seed must be >= 0"), (str(2**70), "--seed must be <= 4294967295")):
        assert main([*create, "--seed", seed]) == 2
        assert needle in _one_line_error(capsys)
    assert main([*create, "--practice", str(10**30)]) == 2
    assert "practice cases per cohort must be an integer in 0..100000" in _one_line_error(capsys)
    assert store.list_sessions(db_url) == [] and not (store.cache_root(db_url)).exists()  # nothing read or cached
    for argv in (["report", "--session", str(10**30)], ["add-reader", "--session", str(2**63), "--name", "r"]):
        assert main(["review", "--db", db_url, *argv]) == 2
        assert "--session must be <= 9223372036854775807" in _one_line_error(capsys)
    with pytest.raises(ConfigError, match="no review session with id"):
        store.session_info(db_url, 10**30)  # the library too
    with pytest.raises(ConfigError, match="seed must be an integer in"):
        store.create_session(db_url, "x", real, gen, seed=-1)
