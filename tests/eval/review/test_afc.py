"""Two-alternative forced choice: pairing, store round trip, statistics, report, reader page."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from ctdiff.errors import ConfigError
from eval.review import assign, export, stats, store
from eval.review.db import Case, dispose_engines, read_session
from tests.eval.review.test_pages import LEAK_NEEDLES, READER, button, radio, tree_text


def cohort_by_code(url: str) -> dict[str, str]:
    with read_session(url) as s:
        return {c.code: c.cohort for c in s.scalars(select(Case))}


@pytest.mark.parametrize("n_real, n_syn", [(6, 6), (4, 9), (9, 3)])
def test_pairs_never_show_two_scans_of_one_cohort(n_real, n_syn):
    real = [f"r{i}" for i in range(n_real)]
    syn = [f"s{i}" for i in range(n_syn)]
    sides = Counter()
    for reader in range(1, 41):
        pairs = assign.afc_pairs(real, syn, seed=7, reader_index=reader)
        assert len(pairs) == min(n_real, n_syn)
        for left, right in pairs:
            assert {left[0], right[0]} == {"r", "s"}  # one real, one synthetic
            sides[left[0]] += 1
        flat = [c for p in pairs for c in p]
        assert len(flat) == len(set(flat))  # each case at most once per reader
    assert pairs == assign.afc_pairs(real, syn, seed=7, reader_index=40)  # seeded
    assert pairs != assign.afc_pairs(real, syn, seed=8, reader_index=40)
    total = sum(sides.values())
    assert abs(sides["r"] / total - 0.5) < 0.1  # the real scan is on the left about half the time


def test_afc_session_round_trip_statistics_and_report(db_url, cohorts, tmp_path):
    sid = store.create_session(db_url, "afc", *cohorts, design="2afc", seed=2)
    assert store.session_info(db_url, sid).design == "2afc"
    cohort = cohort_by_code(db_url)
    readers = [store.find_reader(db_url, store.add_reader(db_url, sid, name)) for name in ("A", "B")]
    for reader in readers:
        assert reader.design == "2afc" and reader.total == 3
        for pos in range(reader.total):
            pair = store.reader_pair(db_url, reader.reader_id, pos)
            assert {cohort[pair.left], cohort[pair.right]} == {"real", "synthetic"}
            assert pair.chose_left is None
            real_left = cohort[pair.left] == "real"
            # A is always right, B always wrong except on the first pair
            right_answer = reader.reader_name == "A" or pos == 0
            store.submit_pair_answer(
                db_url,
                reader.reader_id,
                pos,
                chose_left=real_left if right_answer else not real_left,
                confidence=3,
                seconds=2.5,
            )
            # the display cache serves both cases of the pair to this reader
            assert store.load_case_array(db_url, reader.reader_id, pair.left)[0].shape == reader.grid.shape
        with pytest.raises(store.AnswerLockedError):
            store.submit_pair_answer(db_url, reader.reader_id, 0, chose_left=True, confidence=3)
        assert store.reader_pair_progress(db_url, reader.reader_id).next_position is None
    with pytest.raises(ConfigError, match="seconds"):
        store.submit_pair_answer(db_url, readers[0].reader_id, 0, chose_left=True, confidence=3, seconds=float("inf"))
    records = store.pair_records(db_url, sid)
    assert len(records) == 6 and [r["correct"] for r in records] == [True] * 3 + [True, False, False]
    assert all(r["left_name"] != r["right_name"] for r in records)
    summary = stats.afc_summary(records)
    pooled = summary["pooled"]
    assert (pooled["k"], pooled["n"]) == (4, 6)
    assert (pooled["ci_low"], pooled["ci_high"]) == pytest.approx(stats.proportion_ci(4, 6))
    assert pooled["p"] == pytest.approx(0.6875)  # two-sided exact binomial, 4 of 6 at p = 0.5
    assert summary["per_reader"]["A"]["value"] == 1.0 and summary["per_reader"]["B"]["k"] == 1
    assert [p["answered"] for p in store.session_progress(db_url, sid)] == [3, 3]
    files = export.build_report(db_url, sid)
    assert "picked the real scan" in files["summary.md"] and "66.7 % [30.0, 90.3] (4/6)" in files["summary.md"]
    assert json.loads(files["summary.json"])["pooled"]["k"] == 4
    assert files["answers.csv"].splitlines()[0].startswith("session_id,session,reader,position,left_case_id")
    assert [e["action"] for e in store.events(db_url, sid)].count("pair_answered") == 6


def test_afc_reader_page_shows_two_scans_and_stores_the_choice(db_url, cohorts, monkeypatch, tmp_path):
    monkeypatch.setenv("CTDIFF_REVIEW_DB", db_url)
    monkeypatch.setenv("CTDIFF_WORKSPACE", str(tmp_path))
    sid = store.create_session(db_url, "afc", *cohorts, design="2afc")
    code = store.add_reader(db_url, sid, "R")
    at = AppTest.from_file(READER, default_timeout=60).run()
    at.text_input(key="review_code_input").input(code)
    button(at, "Start reading").click().run()
    images = at.get("image")
    assert len(images) == 2 and [i.proto.imgs[0].caption for i in images] == ["Left", "Right"]
    text = tree_text(at)
    for needle in LEAK_NEEDLES:
        assert needle not in text
    assert "real" not in " ".join(str(i.proto) for i in images).lower()
    radio(at, "Which scan is real?").set_value("Right")
    radio(at, "Confidence in that call").set_value(4)
    button(at, "Submit and next").click().run()
    assert any(m.value.startswith("**Pair 2 of 3**") for m in at.markdown)
    (rec,) = store.pair_records(db_url, sid)
    assert (rec["chose"], rec["confidence"], rec["position"]) == ("right", 4, 1)
    dispose_engines()


def test_afc_practice_pairs_come_first_get_feedback_and_are_not_scored(db_url, make_cohorts, monkeypatch, tmp_path):
    real, gen = make_cohorts(n_real=5, n_gen=5, name="practice")
    sid = store.create_session(db_url, "afc-practice", real, gen, design="2afc", n_practice=2, seed=3)
    info = store.session_info(db_url, sid)
    assert (info.n_real, info.n_synthetic) == (3, 3)  # balanced: 5 per folder, 2 of each kept for practice
    cohort = cohort_by_code(db_url)
    with read_session(db_url) as s:
        practice = {c.code: bool(c.practice) for c in s.scalars(select(Case))}
    codes = [store.add_reader(db_url, sid, name) for name in ("A", "B")]
    for code in codes:
        reader = store.find_reader(db_url, code)
        assert reader.total == 5
        pairs = [store.reader_pair(db_url, reader.reader_id, pos) for pos in range(reader.total)]
        assert [p.practice for p in pairs] == [True, True, False, False, False]  # practice pairs first
        for p in pairs:
            # never two scans of one cohort, never a practice case beside a scored one
            assert {cohort[p.left], cohort[p.right]} == {"real", "synthetic"}
            assert practice[p.left] == practice[p.right] == p.practice
        assert [p.practice_real_side for p in pairs[:2]] == [
            "left" if cohort[p.left] == "real" else "right" for p in pairs[:2]
        ]
        assert all(p.practice_real_side is None for p in pairs[2:])  # scored pairs stay blinded
        flat = [c for p in pairs for c in (p.left, p.right)]
        assert len(flat) == len(set(flat))
    # reader A answers both practice pairs wrongly and every scored pair right
    reader = store.find_reader(db_url, codes[0])
    for pos in range(reader.total):
        pair = store.reader_pair(db_url, reader.reader_id, pos)
        real_left = cohort[pair.left] == "real"
        store.submit_pair_answer(
            db_url, reader.reader_id, pos, chose_left=real_left != pair.practice, confidence=3, seconds=1.0
        )
    records = store.pair_records(db_url, sid)
    assert [r["position"] for r in records] == [3, 4, 5] and all(r["correct"] for r in records)
    pooled = stats.afc_summary(records)["pooled"]
    assert (pooled["k"], pooled["n"]) == (3, 3)  # the two wrong practice answers are not scored
    files = export.build_report(db_url, sid)
    assert len(files["answers.csv"].splitlines()) == 1 + 3
    assert json.loads(files["summary.json"])["pooled"]["n"] == 3
    assert store.session_progress(db_url, sid)[0]["answered"] == 5  # progress counts practice pairs

    # the reader page: feedback after a practice pair (which scan was real), none after a scored one
    monkeypatch.setenv("CTDIFF_REVIEW_DB", db_url)
    monkeypatch.setenv("CTDIFF_WORKSPACE", str(tmp_path))
    reader_b = store.find_reader(db_url, codes[1])
    first = store.reader_pair(db_url, reader_b.reader_id, 0)
    at = AppTest.from_file(READER, default_timeout=60).run()
    at.text_input(key="review_code_input").input(codes[1])
    button(at, "Start reading").click().run()
    assert any(m.value.startswith("**Pair 1 of 5** · practice") for m in at.markdown)
    for _ in range(3):
        radio(at, "Which scan is real?").set_value("Left")
        radio(at, "Confidence in that call").set_value(2)
        button(at, "Submit and next").click().run()
        if _ == 0:
            (fb,) = [i.value for i in at.info if i.value.startswith("Practice pair 1")]
            assert f"the **{first.practice_real_side}** scan was real; you said left" in fb
    assert any(m.value.startswith("**Pair 4 of 5**") and "practice" not in m.value for m in at.markdown)
    assert not [i for i in at.info if i.value.startswith("Practice pair")]  # no feedback on scored pairs
    (rec,) = [r for r in store.pair_records(db_url, sid) if r["reader"] == "B"]  # only the scored pair 3
    assert rec["position"] == 3
    dispose_engines()
