"""Odd text in the app's path and code fields: always one line naming the field, never a traceback or a server path."""

from __future__ import annotations

import pytest

from ctdiff.errors import InputError
from pages.components.paths import MAX_PATH, checked_path, shorten

from .conftest import REPO

ODD = {
    "500 characters": "/" + "a" * 500,
    "very long path": "x/" * 3000,
    "NUL byte": "/tmp/\x00bad",
    "line break": "/tmp/a\nb",
    "unknown home": "~no_such_user_ctdiff/x",
    "odd characters": "é😀<>|*?",
}
FIELDS = {
    "input_real_dir": "Real scans folder",
    "input_generated_dir": "Generated scans folder, or a training run dir",
    "input_report_dir": "Report folder",
    "input_run_dir": "Training run dir",
}


def test_checked_path_messages():
    with pytest.raises(InputError, match=r"^Real: a folder or file name in the path is 500 characters long"):
        checked_path("/" + "a" * 500, "Real")
    with pytest.raises(InputError, match=rf"is 6000 characters long; paths have at most {MAX_PATH}"):
        checked_path("x/" * 3000, "Real")
    with pytest.raises(InputError, match="control characters"):
        checked_path("/tmp/\x00bad", "Real")
    with pytest.raises(InputError, match="home folder that does not exist"):
        checked_path("~no_such_user_ctdiff/x", "Real")
    with pytest.raises(InputError, match="no path given"):
        checked_path("   ", "Real")
    assert checked_path(" /tmp ", "Real").as_posix() == "/tmp"
    assert shorten("a" * 100) == "a" * 40 + "… (100 characters)"


@pytest.mark.parametrize("case", list(ODD))
def test_home_fields_answer_odd_text_in_one_line(app_env, page, case):
    at = page("app.py")
    at.run()
    for key in FIELDS:
        at.text_input(key=key).set_value(ODD[case])
    at.button[0].click().run()  # "Use these folders"
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 4, errors
    for message, label in zip(errors, FIELDS.values()):
        assert message.startswith(label) and "\n" not in message and len(message) < 300, message
        assert str(REPO) not in message and "Traceback" not in message
    # the previous, good selection stays
    assert {m.label: m.value for m in at.metric}["Real volumes"] == "2"


def test_dashboard_compute_fields_answer_odd_text_in_one_line(app_env, page):
    at = page("pages/2_Metrics_dashboard.py")
    at.session_state["report_dir"] = None
    at.run()
    for out, train, metrics, expected in (
        ("/" + "r" * 600, "", "", "Write the report to: a folder or file name in the path is 600 characters long"),
        (str(app_env / "new"), "/tmp/\x00x", "", "Training scans folder: the path holds control characters"),
        (str(app_env / "new"), "", "frd\x00" * 900, "Metrics: 'frd"),
        (str(app_env / "new"), "", "no_such_metric", "no_such_metric"),
    ):
        at.text_input(key="report_out").set_value(out)
        at.text_input(key="report_train").set_value(train)
        at.text_input(key="report_metrics").set_value(metrics)
        at.button(key="compute_report").click().run()
        assert not at.exception, at.exception
        (message,) = [e.value for e in at.error]
        assert expected in message and "\n" not in message and str(REPO) not in message


def test_monitor_and_browser_with_an_odd_selected_folder(app_env, page):
    for script, key in (
        ("pages/3_Training_monitor.py", "run_dir"),
        ("pages/1_Slice_browser.py", "real_dir"),
        ("pages/2_Metrics_dashboard.py", "report_dir"),
    ):
        at = page(script)
        at.session_state[key] = "/" + "z" * 700
        at.run()
        assert not at.exception, (script, at.exception)
        messages = [e.value for e in at.error] + [w.value for w in at.warning]
        assert any("700 characters" in m or "File name too long" in m for m in messages), (script, messages)
        assert all("\n" not in m and str(REPO) not in m for m in messages)
