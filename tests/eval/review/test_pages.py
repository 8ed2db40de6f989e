"""Review pages in AppTest: organiser gate, the full study flow, blinding of the reader page, resume."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from eval.review import export, store
from eval.review.db import Case, dispose_engines, read_session
from eval.review.stats import session_summary

REPO = Path(__file__).resolve().parents[3]
ORGANISER = str(REPO / "pages" / "4_Review_organiser.py")
READER = str(REPO / "pages" / "5_Review_reader.py")
ORG_CODE = "org-secret-42"
# conftest's distinctive folder and file names (a reader page must never show any of them)
LEAK_NEEDLES = ("truthcohortfolder", "modelcohortfolder", "patientscanreal", "diffusionsamplegen", ".nii", "generated")


@pytest.fixture
def env(monkeypatch, tmp_path, make_cohorts):
    real, gen = make_cohorts(n_real=3, n_gen=3, name="ws")
    url = f"sqlite:///{tmp_path / 'db' / 'reviews.sqlite'}"
    monkeypatch.setenv("CTDIFF_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.setenv("CTDIFF_REVIEW_DB", url)
    monkeypatch.setenv("CTDIFF_ORGANISER_CODE", ORG_CODE)
    yield {"real": real, "gen": gen, "url": url, "tmp": tmp_path}
    dispose_engines()


def button(at: AppTest, label: str):
    (found,) = [b for b in at.button if b.label == label]
    return found


def radio(at: AppTest, label: str):
    (found,) = [r for r in at.radio if r.label == label]
    return found


def selectbox(at: AppTest, label: str):
    (found,) = [r for r in at.selectbox if r.label == label]
    return found


def tree_text(at: AppTest) -> str:
    """Everything the page sends for its elements (protobuf text of every node)."""
    return "\n".join(str(node.proto) for node in at._tree if getattr(node, "proto", None) is not None)


def signature(at: AppTest, code: str) -> str:
    """The page with what legitimately differs between cases masked: the case's opaque ID, its
    place in the order, widget-ID hashes and image URLs. Real and synthetic cases must then match."""
    text = tree_text(at).replace(code, "<CODE>")
    text = re.sub(r"\$\$ID-[0-9a-f]+-", "$$ID-", text)
    text = re.sub(r"/media/[0-9a-f]+\.(png|bin)", r"/media/<IMG>.\1", text)  # image and volume URLs
    text = re.sub(r"Case \d+ of", "Case <N> of", text)
    text = re.sub(r"Answer to case \d+ saved", "Answer to case <N> saved", text)
    # the marks viewer's volume: its content differs, its size is fixed by the grid
    # (pages/components/viewer.nifti_bytes asserts 352 + 2 * voxels bytes)
    text = re.sub(r'bytes: "(?:[^"\\]|\\.)*"', "bytes: <VOLUME>", text)
    text = re.sub(r"\d+ of (\d+) cases answered", r"<K> of \1 cases answered", text)
    return re.sub(r"value: [0-9.e-]+\n", "value: <P>\n", text)  # the progress bar's value


def case_heading(at: AppTest) -> str:
    (heading,) = [m.value.replace("*", "") for m in at.markdown if m.value.startswith("**Case ")]
    return heading


def current_code(at: AppTest) -> str:
    (cap,) = [c.value for c in at.caption if c.value.startswith("case ID ")]
    return cap.removeprefix("case ID ").split(" ")[0]


def cohort_of(url: str) -> dict[str, tuple[str, str]]:
    with read_session(url) as s:
        return {c.code: (c.path, c.cohort) for c in s.scalars(select(Case))}


def organiser_signed_in() -> AppTest:
    at = AppTest.from_file(ORGANISER, default_timeout=60).run()
    at.text_input(key="review_org_code").input(ORG_CODE)
    button(at, "Open").click().run()
    return at


def reader_signed_in(code: str) -> AppTest:
    at = AppTest.from_file(READER, default_timeout=60).run()
    at.text_input(key="review_code_input").input(code)
    button(at, "Start reading").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    return at


def answer(at: AppTest, said: str, confidence: int, realism: int, flags=(), comment: str = "") -> None:
    radio(at, "This scan is").set_value(said)
    radio(at, "Confidence in that call").set_value(confidence)
    radio(at, "How realistic does it look?").set_value(realism)
    for cb in at.checkbox:
        if cb.label in flags:
            cb.check()
    if comment:
        at.text_area[0].input(comment)
    submit = [b for b in at.button if b.label in ("Submit and next", "Save changes")][0]
    submit.click().run()
    assert not at.exception, at.exception


# ------------------------------------------------------------------------------ organiser gate
def test_organiser_page_refuses_to_start_without_a_code(env, monkeypatch):
    monkeypatch.delenv("CTDIFF_ORGANISER_CODE")
    at = AppTest.from_file(ORGANISER, default_timeout=60).run()
    assert not at.exception
    (err,) = at.error
    assert "CTDIFF_ORGANISER_CODE" in err.value and "secrets.toml" in err.value and "organiser_code" in err.value
    assert len(at.text_input) == 0 and len(at.button) == 0


def test_organiser_code_from_secrets_and_wrong_code(env, monkeypatch):
    monkeypatch.delenv("CTDIFF_ORGANISER_CODE")
    at = AppTest.from_file(ORGANISER, default_timeout=60)
    at.secrets["organiser_code"] = "from-secrets"
    at.run()
    at.text_input(key="review_org_code").input("guess")
    button(at, "Open").click().run()
    assert [e.value for e in at.error] == ["Wrong organiser code."]
    assert not [x for x in at.expander if x.label == "Create a new session"]
    at.text_input(key="review_org_code").input("from-secrets")
    button(at, "Open").click().run()
    assert not at.error and [x for x in at.expander if x.label == "Create a new session"]


# ------------------------------------------------------------------------------ full flow
def test_full_flow_create_two_readers_answer_results(env):
    org = organiser_signed_in()
    org.text_input(key="review_new_name").input("pilot")
    org.text_input(key="review_new_real").input(str(env["real"]))
    org.text_input(key="review_new_gen").input(str(env["gen"]))
    org.text_area(key="review_new_instr").input("Look at **texture**.")
    button(org, "Create session").click().run()
    assert not org.exception and not org.error, [e.value for e in org.error]
    assert "Session 1 'pilot' created" in org.success[0].value
    codes = {}
    for name in ("Dr. A", "Dr. B"):
        org.text_input(key="review_reader_name").input(name)
        button(org, "Add reader").click().run()
        assert not org.error, [e.value for e in org.error]
        codes[name] = org.code[0].value
    assert len(set(codes.values())) == 2

    truth = cohort_of(env["url"])
    assert sorted(c for _, c in truth.values()) == ["real"] * 3 + ["synthetic"] * 3
    signatures = {}
    for name, code in codes.items():
        at = reader_signed_in(code)
        assert [x for x in at.expander if x.label == "Instructions"]
        for k in range(6):
            assert case_heading(at) == f"Case {k + 1} of 6"
            case = current_code(at)
            text = tree_text(at)
            for needle in (*LEAK_NEEDLES, str(env["tmp"]), *(Path(p).name for p, _ in truth.values())):
                assert needle.lower() not in text.lower(), f"reader page shows {needle!r}"
            if name == "Dr. A" and k > 0:  # (the instructions are open on the first case only)
                # the page of a real and of a synthetic case differ only in pixels
                signatures.setdefault(truth[case][1], signature(at, case))
            cohort = truth[case][1]
            if name == "Dr. A":  # always right, sure, finds synthetic noisy
                answer(
                    at,
                    "Synthetic" if cohort == "synthetic" else "Real",
                    5,
                    2 if cohort == "synthetic" else 4,
                    flags=("noise",) if cohort == "synthetic" else (),
                )
            else:  # calls everything synthetic, unsure
                answer(at, "Synthetic", 2, 3, flags=("edges / artefacts",), comment="hm")
        assert "All cases are answered" in at.success[0].value
    assert signatures["real"] == signatures["synthetic"]

    records = store.answer_records(env["url"], 1)
    assert len(records) == 12 and len({(r["reader"], r["case_id"]) for r in records}) == 12
    assert all(r["seconds"] > 0 for r in records)
    by_reader = {n: [r for r in records if r["reader"] == n] for n in codes}
    assert all(r["correct"] for r in by_reader["Dr. A"])
    assert all(r["said"] == "synthetic" and r["flag_edges"] and r["comment"] == "hm" for r in by_reader["Dr. B"])

    org.run()
    assert not org.exception
    summary = session_summary(records)
    assert summary["pooled"]["accuracy"]["value"] == pytest.approx(9 / 12)
    metrics = {m.label: m.value for m in org.metric}
    assert metrics["Accuracy (pooled)"] == "75.0 %"
    assert metrics["Sensitivity"] == "100.0 %" and metrics["Specificity"] == "50.0 %"
    assert metrics["ROC AUC"] == f"{summary['pooled']['auc']['value']:.3f}"
    frames = [d.value for d in org.dataframe]
    detection = next(f for f in frames if "sensitivity" in f.columns)
    assert list(detection["reader"]) == ["Dr. A", "Dr. B", "pooled"]
    assert detection.loc[0, "accuracy"].startswith("100.0 %") and detection.loc[1, "specificity"].startswith("0.0 %")
    assert any("Cohen's kappa" in m.value for m in org.markdown)
    progress = next(f for f in frames if "answered" in f.columns and "done" in f.columns)
    assert list(progress["answered"]) == [6, 6]
    downloads = org.get("download_button")
    assert sorted(d.proto.label for d in downloads) == sorted(export.REPORT_FILES)


# ------------------------------------------------------------------------------ resume, changes, options
def _session(env, **kw) -> tuple[int, str]:
    sid = store.create_session(env["url"], "s", env["real"], env["gen"], **kw)
    return sid, store.add_reader(env["url"], sid, "R")


def test_reader_resumes_where_they_left_off_and_may_change_when_allowed(env):
    sid, code = _session(env, allow_change=True)
    at = reader_signed_in(code)
    first = current_code(at)
    answer(at, "Real", 3, 4)
    answer(at, "Synthetic", 4, 2)
    again = reader_signed_in(code)  # a new browser session: closed tab, next day
    assert case_heading(again) == "Case 3 of 6"
    assert again.get("progress")[0].proto.text == "2 of 6 cases answered"
    button(again, "Previous case").click().run()
    button(again, "Previous case").click().run()
    assert current_code(again) == first and case_heading(again) == "Case 1 of 6"
    assert radio(again, "This scan is").value == "Real" and radio(again, "How realistic does it look?").value == 4
    answer(again, "Synthetic", 5, 1)
    rec = next(r for r in store.answer_records(env["url"], sid) if r["case_id"] == first)
    assert (rec["said"], rec["confidence"], rec["realism"], rec["changes"]) == ("synthetic", 5, 1, 1)
    assert case_heading(again) == "Case 3 of 6"  # back to the first unanswered case


def test_no_going_back_when_changes_are_not_allowed(env):
    _, code = _session(env)
    at = reader_signed_in(code)
    answer(at, "Real", 3, 4)
    assert not [b for b in at.button if b.label in ("Previous case", "Next case")]
    assert case_heading(at) == "Case 2 of 6"


def test_session_options_limit_the_viewer(env):
    _, code = _session(env, planes=["coronal"], windows=["bone"], scroll="middle")
    at = reader_signed_in(code)
    assert not [r for r in at.selectbox if r.label in ("Plane", "Window")]
    assert len(at.slider) == 0
    assert any(c.value.startswith("coronal · slice 9 of 16") for c in at.caption)  # middle of 16 (1-based)
    (img,) = at.get("image")
    assert img.proto.imgs[0].url.endswith(".png")


def test_slice_slider_plane_and_window_change_the_image(env):
    _, code = _session(env)
    at = reader_signed_in(code)
    urls = {at.get("image")[0].proto.imgs[0].url}
    at.slider[0].set_value(2).run()
    assert any(c.value.startswith("axial · slice 2 of 8") for c in at.caption)
    urls.add(at.get("image")[0].proto.imgs[0].url)
    selectbox(at, "Window").set_value("bone").run()
    urls.add(at.get("image")[0].proto.imgs[0].url)
    selectbox(at, "Plane").set_value("sagittal").run()
    assert any(c.value.startswith("sagittal · slice 9 of 16") for c in at.caption)
    urls.add(at.get("image")[0].proto.imgs[0].url)
    assert len(urls) == 4 and not at.exception


def test_unknown_reader_code_and_incomplete_answer(env):
    _, code = _session(env)
    at = AppTest.from_file(READER, default_timeout=60).run()
    at.text_input(key="review_code_input").input("NOPE-NOPE-NOPE")
    button(at, "Start reading").click().run()
    assert "Unknown access code" in at.error[0].value
    at = reader_signed_in(code)
    radio(at, "This scan is").set_value("Real")
    button(at, "Submit and next").click().run()
    assert "Please choose" in at.warning[0].value
    assert store.answer_records(env["url"], 1) == []


# ------------------------------------------------------------------------------ sign-in hardening
def test_organiser_attempt_limit_backs_off_and_sign_out_locks_again(env, monkeypatch):
    monkeypatch.setattr(store, "SIGNIN_BASE_WAIT_S", 600.0)  # longer than the test takes
    at = AppTest.from_file(ORGANISER, default_timeout=60).run()
    for _ in range(store.SIGNIN_FREE_ATTEMPTS):
        at.text_input(key="review_org_code").input("guess-guess")
        button(at, "Open").click().run()
        assert [e.value for e in at.error] == ["Wrong organiser code."]
    # the right code is now refused too until the back-off has passed
    at.text_input(key="review_org_code").input(ORG_CODE)
    button(at, "Open").click().run()
    assert at.error[0].value.startswith("Too many wrong codes. Try again in")
    assert not at.tabs
    store.record_signin(env["url"], "organiser", "unknown", ok=True)  # as if the wait had passed
    at = organiser_signed_in()
    assert not at.error and button(at, "Sign out") is not None
    button(at, "Sign out").click().run()
    assert at.text_input(key="review_org_code") is not None and not at.tabs


def test_reader_code_cannot_reach_organiser_data(env):
    sid, code = _session(env)
    store.submit_answer(
        env["url"],
        store.find_reader(env["url"], code).reader_id,
        store.reader_case(env["url"], store.find_reader(env["url"], code).reader_id, 0).code,
        said_synthetic=True,
        confidence=3,
        realism=3,
    )
    at = AppTest.from_file(ORGANISER, default_timeout=60).run()
    at.text_input(key="review_org_code").input(code)
    button(at, "Open").click().run()
    assert [e.value for e in at.error] == ["Wrong organiser code."]
    text = tree_text(at)
    assert not at.tabs and "synthetic" not in text.lower().replace("real or synthetic", "")
    for needle in LEAK_NEEDLES:
        assert needle not in text
    # and the reader page a code opens carries no cohort, path or other reader's answer
    at = reader_signed_in(code)
    text = tree_text(at)
    for needle in LEAK_NEEDLES:
        assert needle not in text
    view = at.session_state["review_reader_view"]
    assert not any(
        f in {f.name for f in __import__("dataclasses").fields(view)}
        for f in ("cohort", "path", "real_dir", "generated_dir")
    )


def test_reader_attempt_limit(env, monkeypatch):
    monkeypatch.setattr(store, "SIGNIN_BASE_WAIT_S", 600.0)
    _, code = _session(env)
    at = AppTest.from_file(READER, default_timeout=60).run()
    for _ in range(store.SIGNIN_FREE_ATTEMPTS):
        at.text_input(key="review_code_input").input("NOPE-NOPE-NOPE")
        button(at, "Start reading").click().run()
    at.text_input(key="review_code_input").input(code)
    button(at, "Start reading").click().run()
    assert at.error[0].value.startswith("Too many unknown codes")
    assert "review_reader_view" not in at.session_state


def test_practice_cases_come_first_with_feedback_and_are_not_scored(env, make_cohorts):
    real, gen = make_cohorts(n_real=4, n_gen=4, name="practice")
    sid = store.create_session(env["url"], "p", real, gen, n_practice=1)
    info = store.session_info(env["url"], sid)
    assert (info.n_real, info.n_synthetic) == (3, 3)  # balanced: 4 per folder, 1 of each kept for practice
    code = store.add_reader(env["url"], sid, "R")
    reader = store.find_reader(env["url"], code)
    cases = [store.reader_case(env["url"], reader.reader_id, p) for p in range(reader.total)]
    assert reader.total == 8 and [c.practice for c in cases] == [True, True] + [False] * 6
    assert sorted(c.practice_truth for c in cases[:2]) == ["real", "synthetic"]
    assert all(c.practice_truth is None for c in cases[2:])  # scored cases stay blinded
    at = reader_signed_in(code)
    assert case_heading(at) == "Case 1 of 8 · practice"
    answer(at, "Synthetic", 4, 2)
    (fb,) = [i.value for i in at.info if i.value.startswith("Practice case 1")]
    assert f"this scan was **{cases[0].practice_truth}**; you said synthetic" in fb
    answer(at, "Real", 3, 3)
    assert case_heading(at) == "Case 3 of 8"
    answer(at, "Real", 3, 3)
    assert not [i for i in at.info if i.value.startswith("Practice case")]  # no feedback on scored cases
    recs = store.answer_records(env["url"], sid)
    assert [r["case_id"] for r in recs] == [cases[2].code]  # the two practice answers are not scored
    assert store.session_progress(env["url"], sid)[0]["answered"] == 3
