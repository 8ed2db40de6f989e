"""Progress that tells the truth: sub-step progress and a heartbeat during feature extraction, the
radiomics duration line printed before it starts, and no absurd rate on a bar's first tick."""

from __future__ import annotations

import io
import json
import re
import time
import types

import numpy as np
import pytest

from ctdiff.data.volume import Volume
from eval.features.registry import FeatureExtractor
from eval.report import extract as extract_mod
from eval.report import radiomics_eta
from eval.report.extract import extract_features
from eval.report_cli import _Bars


class SlowSteps(FeatureExtractor):
    """Three sub-steps per item, each ``pause`` seconds (a stand-in for radiomics' image types)."""

    name = "slow-steps-test"

    def __init__(self, pause: float = 0.3):
        self.pause = pause

    def steps_per_item(self) -> int:
        return 3

    def extract(self, item):
        for _ in range(3):
            time.sleep(self.pause)
            self.step()
        return ["size"], np.array([float(len(item.read_bytes()))])


@pytest.mark.parametrize("workers", [1, 2])
def test_extraction_reports_sub_steps_and_a_heartbeat(tmp_path, monkeypatch, workers):
    monkeypatch.setattr(extract_mod, "HEARTBEAT_S", 0.1)
    files = []
    for i in range(2):
        f = tmp_path / f"f{i}.bin"
        f.write_bytes(b"x" * (i + 1))
        files.append(f)
    seen = []
    out = extract_features(
        SlowSteps(),
        [(f, f) for f in files],
        None,
        workers=workers,
        progress=lambda d, t: seen.append((d, t, time.monotonic())),
    )
    assert out.matrix([0, 1])[:, 0].tolist() == [1.0, 2.0]
    done = [d for d, _, _ in seen]
    assert {t for _, t, _ in seen} == {6}  # 2 items x 3 steps
    assert done[0] == 0 and done[-1] == 6 and done == sorted(done)
    assert min(d for d in done if d > 0) < 3  # steps inside the first items were reported before any finished
    # the heartbeat (every 0.1 s here) repeats the current value between steps 0.3 s apart
    repeats = sum(a == b for a, b in zip(done, done[1:]))
    assert repeats >= 3, done
    gaps = np.diff([s for _, _, s in seen])
    assert gaps.max() < 1.5, gaps.max()  # generous: 2 shared cores under load
    assert sorted(out.seconds) == [0, 1] and all(0.85 < s < 10 for s in out.seconds.values())


def test_single_step_extractors_still_count_items(tmp_path):
    class One(FeatureExtractor):
        name = "one-step-test"

        def extract(self, item):
            return ["v"], np.array([1.0])

    seen = []
    extract_features(One(), [(tmp_path, None)] * 3, None, progress=lambda d, t: seen.append((d, t)))
    assert seen[0] == (0, 3) and seen[-1] == (3, 3) and {t for _, t in seen} == {3}


def test_radiomics_steps_per_scan_follow_the_frd_config():
    from eval.features import create

    # Original + LoG sigma 2, 3, 4, 5 + 8 wavelet bands + the shape step
    assert create("radiomics-frd-v1", image_dim=3).steps_per_item() == 14
    assert create("radiomics-frd-v1", image_dim=2).steps_per_item() == 10


def test_radiomics_hook_counts_shape_and_each_image_type():
    from eval.features import create

    ex = create("radiomics-frd-v1", image_dim=3)
    fake = types.SimpleNamespace(
        computeShape=lambda *a, **k: {"s": 1}, computeFeatures=lambda img, m, name, **k: {name: 1}
    )
    counted = []
    ex.on_step = lambda: counted.append(1)
    ex._hook_steps(fake)
    assert fake.computeShape("i", "m", "bb") == {"s": 1}
    assert [fake.computeFeatures("i", "m", n) for n in ("original", "wavelet-LLH")] == [
        {"original": 1},
        {"wavelet-LLH": 1},
    ]
    assert len(counted) == 3


def _case(shape, spacing):
    return types.SimpleNamespace(volume=Volume.from_spacing(np.zeros(shape, np.float32), spacing))


def test_radiomics_estimate_from_the_reference_rate_then_from_runs_timed_here(tmp_path, monkeypatch):
    monkeypatch.setattr(radiomics_eta.os, "cpu_count", lambda: 2)
    # 420 x 420 x 160 mm -> 210 x 210 x 80 voxels at 2 mm; a single slice counts one 2 mm layer
    assert radiomics_eta.voxels(_case((32, 32, 16), (13.125, 13.125, 10.0))) == 210 * 210 * 80
    assert radiomics_eta.voxels(_case((64, 64, 1), (1.0, 1.0, 5.0))) == 32 * 32
    vox = [210 * 210 * 80] * 4
    path = radiomics_eta.timings_path(tmp_path)
    seconds, how = radiomics_eta.estimate(vox, workers=8, timings=path)
    assert seconds == pytest.approx(2.7e-5 * 4 * 3_528_000 / 2)  # two cores: two scans at a time
    assert "measured on the 2-core reference machine; no run timed here yet" in how
    radiomics_eta.record_run(path, vox[:2], wall_s=2 * radiomics_eta.modelled_seconds(vox[:2], 8), workers=8)
    radiomics_eta.record_run(path, vox[:1], wall_s=3 * radiomics_eta.modelled_seconds(vox[:1], 8), workers=8)
    radiomics_eta.record_run(path, vox[:1], wall_s=4 * radiomics_eta.modelled_seconds(vox[:1], 8), workers=8)
    assert len(json.loads(path.read_text())) == 3
    again, how = radiomics_eta.estimate(vox, workers=8, timings=path)
    assert again == pytest.approx(3 * seconds)  # the median of 2, 3, 4
    assert how.startswith("from 3 earlier radiomics run(s) timed on this machine") and "by 3.00" in how
    line = radiomics_eta.announce(4, again, how, radiomics_eta.FAST_FAMILIES)
    assert line.startswith(f"radiomics: about {again / 60:.0f} min for 4 scan(s) on this machine (from 3 earlier")
    assert line.endswith("use --metrics intensity,noise,texture,similarity for the fast families")
    assert radiomics_eta.announce(1, 20, "x", ["noise"]).startswith("radiomics: less than a minute for 1 scan(s)")


def test_report_prints_the_radiomics_line_before_extracting(tmp_path, monkeypatch):
    """build_report's notice gets the line before the first radiomics extraction starts; the run's
    measured wall time is recorded for the next estimate."""
    from eval.report import build

    events = []

    class Fake(FeatureExtractor):  # the registry's radiomics extractor, minus minutes of pyradiomics
        name = "radiomics-frd-v1"

        def settings(self):
            return {"fake": 1}

        def extract(self, item):
            return ["a", "b"], np.array([float(len(str(item))), 1.0])

    monkeypatch.setattr(
        build,
        "radiomics_features",
        lambda paths, image_dim, cache, workers, progress=None, client=None: (
            events.append(("extract", len(paths)))
            or extract_features(Fake(), [(p, p) for p in paths], cache, workers=1, progress=progress)
        ),
    )
    monkeypatch.setattr("eval.features.create", lambda name, **kw: Fake())
    cohorts = {
        k: [
            types.SimpleNamespace(
                path=tmp_path / f"{k}{i}.nii.gz",
                volume=Volume.from_spacing(np.zeros((10, 10, 4), np.float32), (2.0, 2.0, 2.0)),
            )
            for i in range(3)
        ]
        for k in ("real", "generated")
    }
    cohorts["train"] = []
    for cases in cohorts.values():
        for c in cases:
            c.path.write_bytes(c.path.name.encode())
    from eval.report.cache import FeatureCache

    cache_dir = tmp_path / "cache"
    FeatureCache(cache_dir)
    build._radiomics_metrics(
        [],
        cohorts,
        None,
        {"n_bootstrap": 0, "seed": 0},
        cache_dir,
        True,
        1,
        lambda stage: None,
        notice=lambda line: events.append(("notice", line)),
    )
    assert events[0][0] == "notice" and events[1:] == [("extract", 3), ("extract", 3)]
    assert re.match(
        r"radiomics: less than a minute for 6 scan\(s\) on this machine \(model 27 us per 2 mm voxel, 0.0 M voxels",
        events[0][1],
    )
    runs = json.loads(radiomics_eta.timings_path(cache_dir).read_text())
    assert [r["scans"] for r in runs] == [3, 3] and all(r["wall_s"] > 0 for r in runs)
    # everything cached now: no line, nothing extracted
    events.clear()
    build._radiomics_metrics(
        [],
        cohorts,
        None,
        {"n_bootstrap": 0, "seed": 0},
        cache_dir,
        True,
        1,
        lambda stage: None,
        notice=lambda line: events.append(("notice", line)),
    )
    assert events == [("extract", 3), ("extract", 3)]


def test_first_tick_of_a_bar_shows_no_absurd_rate():
    out = io.StringIO()
    bars = _Bars(file=out)
    bars("radiomics features (real)", 28, 56)  # two of four scans cached: the bar starts at 28
    time.sleep(0.5)
    bars("radiomics features (real)", 29, 56)  # one step in 0.5 s
    bars.close()
    text = out.getvalue().replace("\r", "\n")
    assert "28/56" in text and "29/56" in text
    rates = [float(r) for r in re.findall(r"([\d.]+)it/s", text)]
    secs = [float(s) for s in re.findall(r"([\d.]+)s/it", text)]
    assert rates or secs
    assert all(r < 10 for r in rates), text  # about 2 it/s, not 28 cached steps in a millisecond
