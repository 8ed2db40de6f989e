"""Blinded review in a real browser: a reader signs in and answers two cases; the organiser sees
the result. The page source must not reveal which case is real, and images must be the same size.

The two cohorts differ on purpose in shape, spacing and noise, and their folders and files carry
telling names, so a leak would show up in the page source.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest

from ctdiff.data.io import write_nifti
from ctdiff.data.volume import Volume
from eval.review import store
from eval.review.db import dispose_engines

ORG_CODE = "organiser-browser-test"
NEEDLES = ("realcohortdir", "generatedcohortdir", "truescan_", "modelsample_", ".nii", "generated", "synthetic_")


def pelvis(shape, spacing, noise_hu: float, rng: np.random.Generator) -> Volume:
    """A crude pelvis-like slab: body, fat rim, two femoral heads, a bladder, noise."""
    x, y = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    sl = np.full(shape[:2], -1000.0)
    body = (x / 0.9) ** 2 + (y / 0.65) ** 2
    sl[body <= 1] = -90.0  # fat
    sl[body <= 0.8] = 45.0  # muscle / soft tissue
    sl[(x / 0.25) ** 2 + ((y + 0.15) / 0.2) ** 2 <= 1] = 10.0  # bladder
    for cx in (-0.55, 0.55):
        sl[((x - cx) / 0.14) ** 2 + ((y - 0.05) / 0.14) ** 2 <= 1] = 700.0  # femoral heads
    array = np.repeat(sl[:, :, None], shape[2], axis=2).astype(np.float32)
    array += rng.normal(0, noise_hu, size=shape).astype(np.float32)
    return Volume.from_spacing(array, spacing)


def simulated_readers(url: str, sid: int, n: int, rng: np.random.Generator) -> None:
    """Readers answering every case through the store, right about 70 % of the time."""
    for i in range(n):
        reader = store.find_reader(url, store.add_reader(url, sid, f"Simulated reader {i + 1}"))
        for pos in range(reader.total):
            code = store.reader_case(url, reader.reader_id, pos).code
            synthetic = store_cohort(url, code) == "synthetic"
            said = synthetic if rng.random() < 0.7 else not synthetic
            store.submit_answer(
                url,
                reader.reader_id,
                code,
                said_synthetic=said,
                confidence=int(rng.integers(2, 6)),
                realism=int(rng.integers(1, 4) if synthetic else rng.integers(3, 6)),
                flags=[f for f in ("noise", "texture") if synthetic and rng.random() < 0.5],
                seconds=float(rng.uniform(5, 40)),
            )


def store_cohort(url: str, code: str) -> str:
    from sqlalchemy import select

    from eval.review.db import Case, read_session

    with read_session(url) as s:
        return s.scalar(select(Case.cohort).where(Case.code == code))


@pytest.fixture
def study(tmp_path):
    rng = np.random.default_rng(7)
    real, gen = tmp_path / "realcohortdir", tmp_path / "generatedcohortdir"
    for i in range(3):
        write_nifti(pelvis((96, 96, 12), (4.0, 4.0, 10.0), 12.0, rng), real / f"truescan_{i:03d}.nii.gz")
        write_nifti(pelvis((64, 64, 10), (6.0, 6.0, 12.0), 35.0, rng), gen / f"modelsample_{i:03d}.nii.gz")
    url = f"sqlite:///{tmp_path / 'reviews.sqlite'}"
    sid = store.create_session(
        url,
        "Browser study",
        real,
        gen,
        seed=1,
        allow_change=False,
        instructions="Decide for each scan whether it is a real CT or made by the model.",
    )
    # the browser reader is the first whose first two cases are one real and one synthetic
    for i in range(20):
        code = f"READ-ER{i:02d}-TEST"
        reader = store.find_reader(url, store.add_reader(url, sid, f"Dr. Browser {i}", code=code))
        first_two = {store_cohort(url, store.reader_case(url, reader.reader_id, p).code) for p in (0, 1)}
        if first_two == {"real", "synthetic"}:
            break
    simulated_readers(url, sid, 2, rng)
    env = {"CTDIFF_WORKSPACE": str(tmp_path), "CTDIFF_REVIEW_DB": url, "CTDIFF_ORGANISER_CODE": ORG_CODE}
    yield {"url": url, "sid": sid, "env": env, "tmp": tmp_path, "code": code, "reader": reader.reader_name}
    dispose_engines()


def check_no_leaks(html: str, tmp: Path) -> None:
    low = html.lower()
    for needle in (*NEEDLES, str(tmp).lower()):
        assert needle not in low, f"page source contains {needle!r}"


def image_size(page) -> tuple[int, int]:
    img = page.locator("[data-testid='stImage'] img").first
    img.wait_for()
    page.wait_for_function(
        "() => { const i = document.querySelector(\"[data-testid='stImage'] img\"); return i && i.complete && i.naturalWidth > 0; }"
    )
    return tuple(img.evaluate("i => [i.naturalWidth, i.naturalHeight]"))


def wait_for_case(page, n: int, total: int) -> None:
    """Case n is shown and the page has finished its rerun (no stale form of the previous case)."""
    page.get_by_text(f"Case {n} of {total}").wait_for()
    page.wait_for_function(
        "() => !document.querySelector(\"[data-testid='stStatusWidgetRunningIcon']\")"
        " && !document.querySelector(\"[data-stale='true']\")"
    )
    page.wait_for_function(
        "() => { const g = document.querySelector(\"[role='radiogroup'][aria-label='This scan is']\");"
        " return g && g.querySelectorAll('input:checked').length === 0; }"
    )


def wait_until_still(locator, settle_ms: int = 300, timeout_ms: int = 30_000) -> dict:
    """The element's box in the page, once it has stopped moving: a press and its release must land on
    the same spot, or the viewer takes the click for a drag (the expander opening and the component
    setting its own height shift the page for a while; a click meanwhile was lost in CI)."""
    page = locator.page
    locator.scroll_into_view_if_needed()
    last = locator.bounding_box()
    for _ in range(timeout_ms // settle_ms):
        page.wait_for_timeout(settle_ms)
        box = locator.bounding_box()
        if box == last:
            return box
        last = box
    raise AssertionError(f"still moving after {timeout_ms} ms: {last}")


def answer(page, said: str, confidence: str, realism: str, flag: str) -> None:
    page.get_by_role("radiogroup", name="This scan is").get_by_text(said, exact=True).click()
    page.get_by_role("radiogroup", name="Confidence in that call").get_by_text(confidence, exact=True).click()
    page.get_by_role("radiogroup", name="How realistic does it look?").get_by_text(realism, exact=True).click()
    page.get_by_text(flag, exact=True).click()
    page.get_by_role("button", name="Submit and next").click()


@pytest.mark.browser
def test_reader_answers_two_cases_blinded(study, streamlit_server, browser_page, artifact_dir):
    page = browser_page
    base = streamlit_server("app.py", env=study["env"])
    page.goto(base + "/Review_reader")
    page.get_by_label("Access code").fill(study["code"])
    page.screenshot(path=str(artifact_dir / "review-reader-signin.png"))
    page.get_by_role("button", name="Start reading").click()

    page.set_viewport_size({"width": 1400, "height": 1500})
    wait_for_case(page, 1, 6)
    first_size = image_size(page)
    check_no_leaks(page.content(), study["tmp"])
    page.screenshot(path=str(artifact_dir / "review-reader-case.png"), full_page=True)
    answer(page, "Synthetic", "4", "2", "noise")

    wait_for_case(page, 2, 6)
    second_size = image_size(page)
    check_no_leaks(page.content(), study["tmp"])
    answer(page, "Real", "3", "5", "texture")
    wait_for_case(page, 3, 6)
    page.get_by_text("2 of 6 cases answered").wait_for()
    check_no_leaks(page.content(), study["tmp"])
    page.screenshot(path=str(artifact_dir / "review-reader-next.png"))

    # one real and one synthetic case of different source shape: same image size in the browser
    assert first_size == second_size and first_size[0] == 512
    records = [r for r in store.answer_records(study["url"], study["sid"]) if r["reader"] == study["reader"]]
    assert len(records) == 2
    assert sorted(r["cohort"] for r in records) == ["real", "synthetic"]
    assert [(r["said"], r["confidence"], r["realism"]) for r in records] == [("synthetic", 4, 2), ("real", 3, 5)]
    assert records[0]["flag_noise"] and records[1]["flag_texture"]

    # the organiser sees the two answers in the results
    page.goto(base + "/Review_organiser")
    page.get_by_label("Organiser code").fill(ORG_CODE)
    page.get_by_role("button", name="Open").click()
    page.get_by_role("tab", name="Results").click()
    page.get_by_text("Accuracy (pooled)").wait_for()
    page.get_by_text("Detection of synthetic scans").wait_for()
    page.get_by_text("Fleiss' kappa", exact=False).first.wait_for()
    page.screenshot(path=str(artifact_dir / "review-organiser-results.png"), full_page=True)
    for name in ("review-reader-case.png", "review-organiser-results.png"):
        assert (artifact_dir / name).stat().st_size > 10_000, name  # a real picture, not a blank page


@pytest.mark.browser
def test_reader_page_fits_1440x900_keyboard_answers_and_sizes_say_nothing(
    study, streamlit_server, browser_page, artifact_dir
):
    """Image and answer form above the fold at 1440x900; R/S, 1-5 and Enter answer a case with a
    visible confirmation; every image the browser receives has the same byte size."""
    page = browser_page
    # per (URL, Range asked for): the marks viewer asks for its opening slice first, then the volume
    sizes: dict[tuple[str, str | None], int] = {}
    wire: dict[tuple[str, str | None], int] = {}  # on the wire: a compressed answer would have its own size

    def on_response(response) -> None:
        if urlparse(response.url).path.startswith("/media/") and response.ok:  # case images, not /static/ fonts
            key = (response.url, response.request.headers.get("range"))
            sizes[key] = len(response.body())
            wire[key] = response.request.sizes()["responseBodySize"]

    page.on("response", on_response)
    page.set_viewport_size({"width": 1440, "height": 900})
    base = streamlit_server("app.py", env=study["env"])
    page.goto(base + "/Review_reader")
    page.get_by_label("Access code").fill(study["code"])
    page.get_by_role("button", name="Start reading").click()
    wait_for_case(page, 1, 6)
    image_size(page)
    img_box = page.locator("[data-testid='stImage'] img").first.bounding_box()
    submit_box = page.get_by_role("button", name="Submit and next").bounding_box()
    call_box = page.get_by_role("radiogroup", name="This scan is").bounding_box()
    page.screenshot(path=str(artifact_dir / "review-reader-1440x900.png"))
    assert img_box["y"] >= 0 and img_box["y"] + img_box["height"] <= 900, img_box
    assert call_box["y"] + call_box["height"] <= 900 and submit_box["y"] + submit_box["height"] <= 900, submit_box

    # keyboard: S, 4 (confidence), 2 (realism), Enter
    page.locator("[data-testid='stImage'] img").first.click()  # focus on the page, not a text field
    for key in ("s", "4", "2", "Enter"):
        page.keyboard.press(key)
    page.get_by_text("Answer to case 1 saved.").wait_for()  # the confirmation
    wait_for_case(page, 2, 6)
    page.get_by_text("1 of 6 cases answered").wait_for()
    (rec,) = [r for r in store.answer_records(study["url"], study["sid"]) if r["reader"] == study["reader"]]
    assert (rec["said"], rec["confidence"], rec["realism"]) == ("synthetic", 4, 2)
    assert page.evaluate("() => window.parent.scrollY") == 0

    # walk through every remaining case by keyboard; collect every image's byte size
    for n in range(2, 7):
        image_size(page)
        page.locator("[data-testid='stImage'] img").first.click()
        for key in ("r", "3", "3", "Enter"):
            page.keyboard.press(key)
        if n < 6:
            wait_for_case(page, n + 1, 6)
    page.get_by_text("All cases are answered").wait_for()
    records = [r for r in store.answer_records(study["url"], study["sid"]) if r["reader"] == study["reader"]]
    assert len(records) == 6 and {r["cohort"] for r in records} == {"real", "synthetic"}
    # one size per kind of payload (the slice PNGs; the marks viewer's fixed-size volume and its opening
    # slice, both sized by the shape alone), never per case
    by_kind: dict[str, set[int]] = {}
    for (url, asked), size in sizes.items():
        whole = asked in (None, "bytes=0-")
        by_kind.setdefault(urlparse(url).path.rsplit(".", 1)[-1] + ("" if whole else " part"), set()).add(size)
    assert len(sizes) >= 6 and "png" in by_kind and all(len(s) == 1 for s in by_kind.values()), sizes
    assert wire == sizes  # nothing was compressed on the way (the volume comes as an uncompressed range)


@pytest.mark.browser
def test_two_alternative_forced_choice_page(tmp_path, streamlit_server, browser_page, artifact_dir):
    """A 2AFC pair in the browser: two same-size images (same byte size), no cohort in the page,
    the arrow key and Enter answer it, and the choice is stored."""
    rng = np.random.default_rng(3)
    real, gen = tmp_path / "realcohortdir", tmp_path / "generatedcohortdir"
    for i in range(2):
        write_nifti(pelvis((96, 96, 12), (4.0, 4.0, 10.0), 12.0, rng), real / f"truescan_{i:03d}.nii.gz")
        write_nifti(pelvis((64, 64, 10), (6.0, 6.0, 12.0), 35.0, rng), gen / f"modelsample_{i:03d}.nii.gz")
    url = f"sqlite:///{tmp_path / 'reviews.sqlite'}"
    sid = store.create_session(url, "AFC study", real, gen, seed=1, design="2afc")
    code = store.add_reader(url, sid, "Dr. Pair")
    reader = store.find_reader(url, code)
    first = store.reader_pair(url, reader.reader_id, 0)
    real_side = "left" if store_cohort(url, first.left) == "real" else "right"
    env = {"CTDIFF_WORKSPACE": str(tmp_path), "CTDIFF_REVIEW_DB": url, "CTDIFF_ORGANISER_CODE": ORG_CODE}
    page = browser_page
    sizes: dict[str, int] = {}
    page.on(
        "response",
        lambda r: (
            sizes.__setitem__(r.url, len(r.body())) if urlparse(r.url).path.startswith("/media/") and r.ok else None
        ),
    )
    page.set_viewport_size({"width": 1440, "height": 900})
    base = streamlit_server("app.py", env=env)
    page.goto(base + "/Review_reader")
    page.get_by_label("Access code").fill(code)
    page.get_by_role("button", name="Start reading").click()
    page.get_by_text("Pair 1 of 2").wait_for()
    imgs = page.locator("[data-testid='stImage'] img")
    imgs.nth(1).wait_for()
    page.wait_for_function(
        "() => Array.from(document.querySelectorAll(\"[data-testid='stImage'] img\")).every(i => i.complete && i.naturalWidth > 0)"
    )
    dims = [tuple(imgs.nth(i).evaluate("i => [i.naturalWidth, i.naturalHeight]")) for i in range(2)]
    assert dims[0] == dims[1]
    check_no_leaks(page.content(), tmp_path)
    page.screenshot(path=str(artifact_dir / "review-2afc.png"))
    for box in (
        imgs.nth(0).bounding_box(),
        imgs.nth(1).bounding_box(),
        page.get_by_role("button", name="Submit and next").bounding_box(),
    ):
        assert box["y"] + box["height"] <= 900, box  # both scans and the form above the fold at 1440x900
    imgs.first.click()
    for key in ("ArrowLeft" if real_side == "left" else "ArrowRight", "5", "Enter"):
        page.keyboard.press(key)
    page.get_by_text("Answer to pair 1 saved.").wait_for()
    page.get_by_text("Pair 2 of 2").wait_for()
    (rec,) = store.pair_records(url, sid)
    assert (rec["chose"], rec["correct"], rec["confidence"]) == (real_side, True, 5)
    assert len(sizes) >= 2 and len(set(sizes.values())) == 1, sizes
    dispose_engines()


@pytest.mark.browser
def test_giveaway_mark_click_stores_the_clicked_voxel(study, streamlit_server, browser_page, artifact_dir):
    """A click in the marks viewer stores exactly the voxel the viewer shows under its crosshair."""
    page = browser_page
    page.set_viewport_size({"width": 1440, "height": 900})
    base = streamlit_server("app.py", env=study["env"])
    page.goto(base + "/Review_reader")
    page.get_by_label("Access code").fill(study["code"])
    page.get_by_role("button", name="Start reading").click()
    wait_for_case(page, 1, 6)
    page.get_by_text("Mark what gives it away (0 marks)").click()
    page.wait_for_selector("iframe[src*='ct_viewer']", timeout=60_000)
    frame = next(f for f in page.frames if "ct_viewer" in f.url)
    frame.wait_for_function("() => window.ctViewer && window.ctViewer.ready", timeout=60_000)
    wait_until_still(page.locator("iframe[src*='ct_viewer']"))
    box = frame.locator("#pane-0").bounding_box()
    # The page scrolls between press and release, as it did in CI (pressing focuses the viewer's iframe,
    # and the page may scroll it into view): in the viewer's window the release lands 60 px from the
    # press, on the screen it does not move. The click counts, at the voxel under the press.
    scroll = (
        "(d) => { const m = document.querySelector(\"[data-testid='stMain']\");"
        " m.scrollTop += m.scrollTop >= d ? -d : d; return m.scrollTop; }"
    )
    page.mouse.move(box["x"] + box["width"] * 0.4, box["y"] + box["height"] * 0.55)
    page.mouse.down()
    before = page.evaluate(scroll, 0)
    assert abs(page.evaluate(scroll, 60) - before) == 60
    page.mouse.up()
    shown = frame.evaluate(
        "() => Array.from(window.ctViewer.panes[0].nv.frac2vox(window.ctViewer.panes[0].nv.scene.crosshairPos))"
    )
    page.get_by_text("Mark what gives it away (1 mark)").wait_for()
    page.screenshot(path=str(artifact_dir / "review-reader-marks.png"))
    reader = store.find_reader(study["url"], study["code"])
    code = store.reader_case(study["url"], reader.reader_id, 0).code
    (mark,) = store.reader_marks(study["url"], reader.reader_id, code)
    assert list(mark) == [int(round(v)) for v in shown]
    assert all(0 <= v < n for v, n in zip(mark, reader.grid.shape))
    (rec,) = store.mark_records(study["url"], study["sid"])
    assert rec["voxel"] == list(mark) and rec["case_id"] == code
