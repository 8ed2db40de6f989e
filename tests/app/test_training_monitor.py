"""AppTest of pages/3_Training_monitor.py on the run dir of conftest.py (30 epochs, val every 5)."""

from __future__ import annotations

import os

import numpy as np
import pytest

MONITOR = "pages/3_Training_monitor.py"


@pytest.fixture
def monitor(app_env, page):
    os.utime(app_env / "run" / "history.csv", (1_000_000, 1_000_000))  # a finished run
    at = page(MONITOR)
    at.run()
    assert not at.exception, at.exception
    return at


def _loss(at, charts):
    return next(
        c
        for c in charts(at)
        if c["layout"].get("xaxis", {}).get("title", {}).get("text") == "epoch"
        and "MSE" in c["layout"]["yaxis"]["title"]["text"]
    )


def test_headline_and_loss_curves_with_10_epoch_means(monitor, charts):
    at = monitor
    assert at.title[0].value == "Training monitor"
    m = {x.label: x.value for x in at.metric}
    # history: train = 1/e + 0.01, val = 0.5/e + 0.02 every 5th epoch -> best at epoch 30
    assert m["epochs"] == "30" and m["best val loss"] == f"{0.5 / 30 + 0.02:.4g}" and m["training time"] == "0:19:22"
    assert m["time per epoch"] == "38.8 s"  # epochs of 2.5 .. 75 s (history.csv: each epoch's own time)
    loss = _loss(at, charts)
    assert loss["layout"]["yaxis"]["type"] == "log"
    traces = {t["name"]: t for t in loss["data"]}
    assert set(traces) == {"train (raw)", "train (10-epoch mean)", "validation (raw)", "validation (10-epoch mean)"}
    train = 1 / np.arange(1, 31) + 0.01
    np.testing.assert_allclose(traces["train (10-epoch mean)"]["y"], train.reshape(3, 10).mean(axis=1), rtol=1e-5)
    assert list(traces["train (10-epoch mean)"]["x"]) == [10, 20, 30]
    val = {e: 0.5 / e + 0.02 for e in range(5, 31, 5)}
    np.testing.assert_allclose(
        traces["validation (10-epoch mean)"]["y"],
        [(val[5] + val[10]) / 2, (val[15] + val[20]) / 2, (val[25] + val[30]) / 2],
        rtol=1e-5,
    )
    assert len(traces["validation (raw)"]["x"]) == 6
    assert any("Not running" in c.value for c in at.caption)


def test_mean_window_and_linear_scale(monitor, charts):
    at = monitor
    at.number_input(key="mean_every").set_value(15).run()
    at.checkbox(key="log_y").uncheck().run()
    assert not at.exception
    loss = _loss(at, charts)
    assert loss["layout"]["yaxis"].get("type") != "log"
    traces = {t["name"]: t for t in loss["data"]}
    assert list(traces["train (15-epoch mean)"]["x"]) == [15, 30]


def test_learning_rate_chart(monitor, charts):
    lr = next(c for c in charts(monitor) if c["layout"]["yaxis"]["title"]["text"] == "learning rate")
    np.testing.assert_allclose(lr["data"][0]["y"][:3], [1e-5, 2e-5, 3e-5])


def test_preview_slider_steps_through_epochs(monitor):
    at = monitor
    assert at.image[0].captions == ["Preview sample after epoch 15 (epoch_0015.png)"]
    at.select_slider(key="preview_epoch").set_value(5).run()
    assert at.image[0].captions == ["Preview sample after epoch 5 (epoch_0005.png)"]
    assert at.select_slider(key="preview_epoch").options == ["5", "10", "15"]


def test_config_and_split(monitor):
    at = monitor
    assert "lr: 0.0001" in at.code[0].value
    assert any("seed **7** · **1** training, **1** validation" in m.value for m in at.markdown)
    split = at.dataframe[0].value
    assert split.to_dict("list") == {"set": ["train", "val"], "file": ["real/case_a.nii.gz", "real/case_b.nii.gz"]}


def test_live_run_refreshes(app_env, page):
    at = page(MONITOR)
    at.run()  # history.csv was just written: training counts as running
    assert any("Training is running: refreshing every 10 s" in c.value for c in at.caption)


def test_generate_needs_a_checkpoint_and_refuses_overwrite(monitor, app_env, page):
    assert "No checkpoint yet" in monitor.info[0].value
    (app_env / "run" / "checkpoints" / "best.pt").write_bytes(b"not used: refused before loading")
    taken = app_env / "run" / "samples" / "ddpm-50-seed0"
    taken.mkdir(parents=True)
    (taken / "sample_000.nii.gz").write_bytes(b"x")
    at = page(MONITOR)
    at.run()
    at.button[0].click().run()  # the form's Generate button with defaults: ddpm, 50 steps, seed 0
    assert not at.exception, at.exception
    assert "already holds samples; tick overwrite" in at.error[0].value
    assert (taken / "sample_000.nii.gz").read_bytes() == b"x"


def test_missing_and_broken_run_dir(app_env, page):
    at = page(MONITOR)
    at.session_state["run_dir"] = str(app_env / "real")
    at.run()
    assert not at.exception and "not a training run dir" in at.error[0].value
    (app_env / "run" / "history.csv").write_text("a,b\n1,2\n")
    at = page(MONITOR)
    at.run()
    assert not at.exception and "lacks column(s)" in at.error[0].value
    at = page(MONITOR)
    at.session_state["run_dir"] = None
    at.session_state["selection_source"] = "test"
    at.run()
    assert not at.exception and "No training run dir selected" in at.info[0].value


def test_preview_volumes_open_in_the_slice_browser(app_env, page):
    from ctdiff.data.io import write_nifti
    from ctdiff.data.volume import Volume

    for e in (5, 10):
        write_nifti(
            Volume.from_spacing(np.full((8, 8, 4), 10.0 * e, dtype=np.float32), (1, 1, 2)),
            app_env / "run" / "previews" / f"epoch_{e:04d}.nii.gz",
        )
    at = page("app.py")
    at.run()
    at.switch_page(MONITOR).run()
    at.button(key="browse_previews").click().run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Slice browser"
    assert at.session_state["generated_dir"] == str(app_env / "run" / "previews")
    assert [case for case in at.selectbox(key="gen_case").options] == ["epoch_0005", "epoch_0010"]


def test_generate_panel_samples_into_the_run_and_selects_the_result(monitor, app_env, page, monkeypatch):
    """The panel's wiring (settings, progress, folder, selection) with a stand-in for ctdiff.diffusion.sample."""
    import importlib
    import sys
    import types

    from ctdiff.data.io import write_nifti
    from ctdiff.data.volume import Volume

    calls = {}

    def load_bundle(path, device="auto", use_ema=True):
        calls["load"] = (str(path), device, use_ema)
        return "bundle"

    def sample(bundle, n, sampler="dpmpp", steps=25, seed=0, batch_size=1, callback=None):
        calls["sample"] = (bundle, n, sampler, steps, seed)
        for i in range(steps):
            callback(i + 1, steps)
        return [
            Volume.from_spacing(np.full((8, 8, 4), 100.0 * seed + i, dtype=np.float32), (1, 1, 2)) for i in range(n)
        ]

    def write_samples(volumes, out_dir, info, force=False):
        calls["write"] = (str(out_dir), dict(info), force)
        for i, v in enumerate(volumes):
            write_nifti(v, out_dir / f"sample_{i:03d}.nii.gz")

    fake = types.SimpleNamespace(load_bundle=load_bundle, sample=sample, write_samples=write_samples)
    monkeypatch.setitem(sys.modules, "ctdiff.diffusion.sample", fake)
    monkeypatch.setattr(importlib.import_module("ctdiff.diffusion.schedule"), "sample", fake, raising=False)
    (app_env / "run" / "checkpoints" / "best.pt").write_bytes(b"weights")
    at = page(MONITOR)
    at.run()
    # the registry's samplers for the run's diffusion kind (ddpm): rflow's euler is not offered
    assert at.selectbox(key="gen_sampler").options == ["ddpm", "ddim", "dpmpp"]
    at.number_input(key="gen_n").set_value(3)
    at.selectbox(key="gen_sampler").set_value("ddim")
    at.number_input(key="gen_steps").set_value(10)
    at.number_input(key="gen_seed").set_value(7)
    at.button[0].click().run()
    assert not at.exception, at.exception
    out = app_env / "run" / "samples" / "ddim-10-seed7"
    assert calls["load"] == (str(app_env / "run" / "checkpoints" / "best.pt"), "auto", True)
    assert calls["sample"] == ("bundle", 3, "ddim", 10, 7)
    assert calls["write"][0] == str(out) and calls["write"][2] is False
    assert calls["write"][1]["checkpoint"].endswith("best.pt") and calls["write"][1]["steps"] == 10
    assert sorted(p.name for p in out.iterdir()) == ["sample_000.nii.gz", "sample_001.nii.gz", "sample_002.nii.gz"]
    assert at.session_state["generated_dir"] == str(out)
    assert "Wrote 3 volume(s)" in at.success[0].value
    assert at.get("progress")[-1].proto.value == 100


def test_generate_defaults_come_from_the_run_config(app_env, page):
    (app_env / "run" / "checkpoints" / "best.pt").write_bytes(b"weights")
    at = page(MONITOR)
    at.run()  # the fixture's config.yaml has no sample section: the library's DDPM, 50 steps
    assert at.selectbox(key="gen_sampler").value == "ddpm" and at.number_input(key="gen_steps").value == 50
    cfg = app_env / "run" / "config.yaml"
    cfg.write_text(cfg.read_text() + "sample:\n  sampler: dpmpp\n  steps: 250\n")
    at = page(MONITOR)
    at.run()
    assert at.selectbox(key="gen_sampler").value == "dpmpp" and at.number_input(key="gen_steps").value == 250


def test_sampling_defaults_survive_a_broken_config(tmp_path):
    from ctdiff_app.monitor import sampling_defaults

    assert sampling_defaults(tmp_path) == ("ddpm", 50)  # no config.yaml
    (tmp_path / "config.yaml").write_text("sample: [not, a, mapping\n")
    assert sampling_defaults(tmp_path) == ("ddpm", 50)
    (tmp_path / "config.yaml").write_text("sample:\n  sampler: ddim\n  steps: 0\n")
    assert sampling_defaults(tmp_path) == ("ddim", 50)


def test_run_without_history_or_checkpoint_yet(app_env, page):
    """A run dir as `train` leaves it before its first epoch ends: config.yaml and split.json only."""
    import shutil

    early = app_env / "early"
    early.mkdir()
    shutil.copy(app_env / "run" / "config.yaml", early / "config.yaml")
    shutil.copy(app_env / "run" / "split.json", early / "split.json")
    for script in (MONITOR, "app.py"):
        at = page(script)
        at.session_state["run_dir"] = str(early)
        at.session_state["selection_source"] = "test"
        at.run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        if script == MONITOR:
            infos = [i.value for i in at.info]
            assert "No history.csv yet: training has not finished its first epoch." in infos
            assert any(i.startswith("No checkpoint yet") for i in infos)
            assert not at.button  # no Generate form without a checkpoint
        else:
            assert "checkpoint: none yet" in [m.value for m in at.markdown]
