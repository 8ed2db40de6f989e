"""benchmarks/condition_follow.py: the slope against scipy's regression; on a tiny latent_pcs run, the
rebuilt coordinates are the checkpoint's record, a sampler that lands at a known share of its condition
is measured at that share (gain included), and other scans are refused."""

from __future__ import annotations

import json
import runpy
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from ctdiff.config import config_from_dict
from ctdiff.training.train import train
from tests.ctdiff.test_spaces import _one_thread, data, tiny  # noqa: F401  (fixtures)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cf():
    return runpy.run_path(str(REPO / "benchmarks" / "condition_follow.py"), run_name="condition_follow")


def test_follow_slope_and_correlation_match_scipy(cf):
    rng = np.random.default_rng(0)
    drawn = rng.normal(size=(12, 3)) * [1.0, 0.6, 0.4]
    got = drawn * [1.0, 0.5, 0.1] + rng.normal(size=(12, 3)) * 0.05
    axes = cf["follow"](drawn, got)
    for a, r in enumerate(axes):
        ref = stats.linregress(drawn[:, a], got[:, a])
        assert r["slope"] == pytest.approx(ref.slope, rel=1e-9)
        assert r["correlation"] == pytest.approx(ref.rvalue, rel=1e-9)
        assert r["drawn_sd"] == pytest.approx(np.std(drawn[:, a], ddof=1))
    assert [round(r["slope"], 1) for r in axes] == [1.0, 0.5, 0.1]


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):  # noqa: F811
    root, ae = data
    values = tiny("latent", "rflow", str(ae), condition="latent_pcs", condition_components=2)
    values["train"]["epochs"] = 1
    out = tmp_path_factory.mktemp("follow") / "run"
    with torch.random.fork_rng():
        train(config_from_dict(values), root, out, progress=False)
    return root, out


def test_a_sampler_at_a_known_share_of_its_condition_is_measured_at_it(cf, run, tmp_path, monkeypatch):
    """The rebuilt axes give the checkpoint's record back; a stand-in sampler that puts each latent at the
    basis' mean plus ``share`` times the fed coordinates along the axes is measured with slope share x gain
    against the drawn coordinates, correlation 1."""
    _, out = run
    share, seen, scales = 0.5, [], []

    def at_a_share(name, model, shape, diffusion, steps, seeds, condition=None, guidance=1.0, **kw):
        seen.append(np.asarray(condition))
        scales.append(guidance)
        basis = state["basis"]
        mean, axes = basis["mean"], basis["components"]
        z = mean[None] + share * torch.as_tensor(np.asarray(condition)) @ axes
        return z.float().reshape(len(seeds), *shape)

    state: dict = {}
    rebuild = cf["rebuild_basis"]

    def keep(bundle, record, latents):
        state["basis"], coords = rebuild(bundle, record, latents)
        np.testing.assert_allclose(coords, record["values"], rtol=1e-4, atol=1e-5)
        return state["basis"], coords

    monkeypatch.setitem(cf["main"].__globals__, "rebuild_basis", keep)
    monkeypatch.setattr("ctdiff.diffusion.schedule.run_sampler", at_a_share)
    report = tmp_path / "follow.json"
    args = ["--model", str(out / "checkpoints" / "last.pt"), "--train", str(out / "split.json"), "--n", "6"]
    assert cf["main"]([*args, "--steps", "2", "--json", str(report)]) == 0
    r = json.loads(report.read_text())
    assert [round(a["slope"], 6) for a in r["axes"]] == [share, share]
    assert all(a["correlation"] == pytest.approx(1.0) for a in r["axes"])
    assert cf["main"]([*args, "--condition-gain", "2,3", "--json", str(report)]) == 0
    r = json.loads(report.read_text())
    assert [round(a["slope"], 6) for a in r["axes"]] == [2 * share, 3 * share]
    # the gain is fed to the network; the slopes are against the drawn coordinates
    np.testing.assert_allclose(seen[1], np.asarray(r["drawn"]) * [2, 3], atol=1e-9)
    # classifier-free guidance reaches the sampler (the model's own 1 unless asked) and the report
    assert cf["main"]([*args, "--guidance", "2.5", "--json", str(report)]) == 0
    assert scales == [1.0, 1.0, 2.5] and json.loads(report.read_text())["guidance"] == 2.5
    with pytest.raises(SystemExit, match=r"--guidance: guidance must be a finite scale in \[0, 20\]"):
        cf["main"]([*args, "--guidance", "nan"])
    # the Gaussian condition draw (sample.condition_draw): the slopes are against its draws
    from ctdiff.model import condition as conditions
    from ctdiff.model.checkpoint import load_checkpoint

    assert cf["main"]([*args, "--condition-draw", "gaussian", "--json", str(report)]) == 0
    r = json.loads(report.read_text())
    record = load_checkpoint(out / "checkpoints" / "last.pt")["geometry"]["condition"]
    want = [conditions.draw(record, s, "gaussian") for s in range(1000, 1006)]
    assert r["condition_draw"] == "gaussian" and np.allclose(r["drawn"], want, atol=1e-9)
    assert [round(a["slope"], 6) for a in r["axes"]] == [share, share]


def test_other_scans_and_a_wrong_gain_are_refused(cf, run, tmp_path):
    root, out = run
    ckpt = str(out / "checkpoints" / "last.pt")
    split = json.loads((out / "split.json").read_text())
    other = tmp_path / "other"  # as many scans, one of them the held-out case
    other.mkdir()
    held = [p for p in sorted(root.glob("*.nii.gz")) if str(p) not in split["train"]]
    for p in [*split["train"][:-1], held[0]]:
        shutil.copy(p, other / Path(p).name)
    with pytest.raises(SystemExit, match="differ from the model's record"):
        cf["main"](["--model", ckpt, "--train", str(other), "--n", "3", "--steps", "1"])
    with pytest.raises(SystemExit, match="the model was trained on 3"):
        cf["main"](["--model", ckpt, "--train", str(root), "--n", "3", "--steps", "1"])
    with pytest.raises(SystemExit, match="missing: no such file or folder"):
        cf["main"](["--model", ckpt, "--train", str(tmp_path / "missing")])
    with pytest.raises(SystemExit, match="--condition-gain needs 2 finite numbers"):
        cf["main"](["--model", ckpt, "--train", str(out / "split.json"), "--condition-gain", "1,nan"])
    with pytest.raises(SystemExit, match="--condition-gain needs 2 finite numbers, got 'a,b'"):
        cf["main"](["--model", ckpt, "--train", str(out / "split.json"), "--condition-gain", "a,b"])
    with pytest.raises(SystemExit, match="not a run's split.json"):
        cf["main"](["--model", ckpt, "--train", str(out / "config.yaml")])
