"""Training: a tiny model overfits one volume; the run dir layout; exact resume after Ctrl-C;
deterministic validation; clear errors for a checkpoint from another config."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from ctdiff.cli import main
from ctdiff.config import DiffusionConfig, config_from_dict
from ctdiff.data.io import write_nifti
from ctdiff.data.phantom import make_phantom
from ctdiff.data.tensors import array_to_tensor, hu_to_model
from ctdiff.diffusion.schedule import Diffusion
from ctdiff.errors import ConfigError, OverwriteError
from ctdiff.model.checkpoint import load_checkpoint, load_weights
from ctdiff.model.unet import UNet3D, build_model
from ctdiff.training.rundir import HISTORY_COLUMNS
from ctdiff.training.rundir import read_history_file as read_history
from ctdiff.training.train import train

TINY = {
    "name": "tiny",
    "data": {"pad_slices_to": 8, "val_fraction": 0.2},
    "model": {
        "space": "pixel",  # the library default is latent; these tests are about the voxel path
        "channels": [4, 8],
        "block_kinds": ["2d", "3d"],
        "attention": [False, True],
        "norm_groups": 4,
        "head_channels": 4,
        "res_blocks": 1,
    },
    "diffusion": {"kind": "ddpm", "timesteps": 100, "beta_schedule": "cosine", "prediction": "v_prediction"},
    "train": {
        "epochs": 3,
        "batch_size": 2,
        "lr": 2e-3,
        "warmup_steps": 2,
        "val_timesteps": 2,
        "preview_every": 2,
        "preview_steps": 3,
        "ema_decay": 0.9,
    },
    "sample": {"sampler": "dpmpp", "steps": 3},
}


@pytest.fixture(autouse=True)
def _one_thread():
    # two PyTorch threads on a busy 2-core machine are several times slower than one
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Five 16x16x6 phantom cases (4 train / 1 validation with val_fraction 0.2)."""
    root = tmp_path_factory.mktemp("phantoms")
    for i in range(5):
        vol, _ = make_phantom(shape=(16, 16, 6), seed=i, noise_hu=10.0)
        write_nifti(vol, root / f"case_{i:03d}.nii.gz")
    return root


def tiny(**train) -> Config:  # noqa: F821
    cfg = json.loads(json.dumps(TINY))
    cfg["train"].update(train)
    return config_from_dict(cfg)


def test_tiny_model_overfits_one_volume():
    vol, _ = make_phantom(shape=(16, 16, 8), seed=3, noise_hu=10.0)
    x0 = hu_to_model(array_to_tensor(vol.array), (-1024.0, 1500.0))[None].expand(2, -1, -1, -1, -1)
    diffusion = Diffusion(DiffusionConfig(kind="ddpm", timesteps=1000, beta_schedule="linear", prediction="epsilon"))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = UNet3D((8, 16), ("3d", "3d"), (False, False), mid_attention=False, norm_groups=4, res_blocks=1)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(300):
        loss = diffusion.loss(model, x0, diffusion.sample_timesteps(2, g), torch.randn(x0.shape, generator=g))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    start, end = np.mean(losses[:10]), np.mean(losses[-50:])
    assert start > 0.5  # the zero-initialised output predicts no noise: MSE ~ 1
    assert end < start / 10


def test_run_dir_layout_and_deterministic_validation(dataset, tmp_path):
    run = tmp_path / "run"
    result = train(tiny(), dataset, run, progress=False)
    assert (result.epoch, result.step) == (3, 6)
    for name in (
        "config.yaml",
        "split.json",
        "history.csv",
        "loss.png",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
        "previews/epoch_0002.png",
        "previews/epoch_0002.nii.gz",
    ):
        assert (run / name).is_file(), name
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    split = json.loads((run / "split.json").read_text())
    assert split["seed"] == 0 and len(split["train"]) == 4 and len(split["val"]) == 1
    assert not set(split["train"]) & set(split["val"])
    with open(run / "history.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == HISTORY_COLUMNS
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3] and [int(r["step"]) for r in rows] == [2, 4, 6]
    history = read_history(run / "history.csv")
    best = min(r["val_loss"] for r in history)
    ckpt = load_checkpoint(run / "checkpoints" / "best.pt")
    assert ckpt["best_val_loss"] == pytest.approx(best, rel=1e-6)
    assert ckpt["geometry"]["shape"] == [16, 16, 6] and ckpt["geometry"]["depth"] == 8
    assert config_from_dict(ckpt["config"]) == tiny()

    # the validation loss is a fixed function of the weights: recomputing it gives the same number
    from ctdiff.data.dataset import load_cases
    from ctdiff.distributed import DistInfo
    from ctdiff.training.train import Trainer

    cfg = tiny()
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    trainer = Trainer(
        cfg,
        tmp_path / "unused",
        load_cases(split["train"], cfg.data),
        load_cases(split["val"], cfg.data),
        DistInfo(),
        progress=False,
    )
    trainer.load_state(last, run / "checkpoints" / "last.pt")
    v1, v2 = trainer.validation_loss(), trainer.validation_loss()
    assert v1 == v2 and v1 == pytest.approx(history[-1]["val_loss"], rel=1e-6)


def test_resume_after_ctrl_c_continues_exactly(dataset, tmp_path):
    straight = []
    train(tiny(), dataset, tmp_path / "a", progress=False, on_step=lambda s, loss: straight.append(loss))
    assert len(straight) == 6

    first = []

    def stop_at_3(step, loss):
        first.append(loss)
        if step == 3:  # mid-epoch (2 steps per epoch)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tiny(), dataset, tmp_path / "b", progress=False, on_step=stop_at_3)
    saved = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    assert (saved["step"], saved["epoch"], saved["epoch_step"]) == (3, 1, 1)

    rest = []
    result = train(None, None, tmp_path / "b", resume=True, progress=False, on_step=lambda s, loss: rest.append(loss))
    assert result.step == 6
    np.testing.assert_allclose(first + rest, straight, rtol=1e-6, atol=0)
    a = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    for key in ("model", "ema"):
        for name, w in a[key].items():
            torch.testing.assert_close(b[key][name], w, rtol=1e-6, atol=1e-7, msg=f"{key}.{name}")
    ha, hb = read_history(tmp_path / "a" / "history.csv"), read_history(tmp_path / "b" / "history.csv")
    for ra, rb in zip(ha, hb, strict=True):
        assert (ra["epoch"], ra["step"]) == (rb["epoch"], rb["step"])
        assert ra["train_loss"] == pytest.approx(rb["train_loss"], rel=1e-6)
        assert ra["val_loss"] == pytest.approx(rb["val_loss"], rel=1e-6)
    assert (
        json.loads((tmp_path / "a" / "split.json").read_text())["train"]
        == json.loads((tmp_path / "b" / "split.json").read_text())["train"]
    )


def test_channels_last_changes_the_layout_not_the_training(dataset, tmp_path):
    from ctdiff.data.dataset import load_cases
    from ctdiff.distributed import DistInfo
    from ctdiff.training.train import Trainer

    losses = {}
    for flag in (False, True):
        losses[flag] = []
        train(
            tiny(channels_last=flag),
            dataset,
            tmp_path / str(flag),
            progress=False,
            on_step=lambda s, loss, out=losses[flag]: out.append(loss),
        )
    assert len(losses[True]) == 6
    # the same RNG draws and arithmetic; only the convolution kernels' summation order may differ
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-4)
    # (weights are not compared one by one: Adam turns the last-bit differences of near-zero gradients
    # into lr-sized steps of the same sign-noise in either layout)
    val = [r["val_loss"] for flag in (False, True) for r in read_history(tmp_path / str(flag) / "history.csv")]
    np.testing.assert_allclose(val[3:], val[:3], rtol=1e-3)

    split = json.loads((tmp_path / "True" / "split.json").read_text())
    cfg = tiny(channels_last=True)
    trainer = Trainer(cfg, tmp_path / "unused", load_cases(split["train"], cfg.data), None, DistInfo(), progress=False)
    conv = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv3d) and m.in_channels > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d) and not conv.weight.is_contiguous()


def test_checkpoint_from_another_config_is_refused(dataset, tmp_path):
    run = tmp_path / "run"
    train(tiny(epochs=1, preview_every=0), dataset, run, progress=False)
    other = json.loads(json.dumps(TINY))
    other["model"]["channels"] = [8, 8]
    with pytest.raises(ConfigError) as info:
        train(config_from_dict(other), None, run, resume=True, progress=False)
    assert "model.channels" in str(info.value) and "last.pt" in str(info.value)
    # weights into a model built from another config: a clear error, not a torch traceback
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    with pytest.raises(ConfigError, match="does not fit this model"):
        load_weights(build_model(config_from_dict(other).model), ckpt["model"], "last.pt")
    # train/sample settings may change on resume (here: more epochs)
    result = train(None, None, run, resume=True, overrides=["train.epochs=2"], progress=False)
    assert (result.epoch, result.step) == (2, 4)


def test_cli_refuses_to_overwrite_a_run(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(tiny(epochs=1, preview_every=0).to_yaml())
    assert main(["train", "--config", str(cfg), "--data", str(dataset), "--out", str(run), "--no-progress"]) == 0
    assert main(["train", "--config", str(cfg), "--data", str(dataset), "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "--force" in err and str(run) in err
    assert (
        main(
            [
                "train",
                "--config",
                str(cfg),
                "--data",
                str(dataset),
                "--out",
                str(tmp_path / "r2"),
                "--set",
                "model.chanels=[4, 8]",
            ]
        )
        == 2
    )
    assert "model.chanels" in capsys.readouterr().err
    with pytest.raises(OverwriteError):
        train(tiny(), dataset, run, progress=False)


def test_force_replaces_only_a_run_dir_and_a_run_without_checkpoint_gives_one_line(dataset, tmp_path, capsys):
    """--out on someone else's folder is refused with or without --force (and --force is not suggested); a
    run stopped before its first checkpoint (config.yaml and split.json only) is refused by sample --run and
    train --resume in one line each, and replaced by train --force."""
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(tiny(epochs=1, preview_every=0).to_yaml())
    start = ["train", "--config", str(cfg), "--data", str(dataset), "--no-progress", "--out"]
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "thesis.docx").write_text("years of work")
    for extra in ([], ["--force"]):
        capsys.readouterr()
        assert main([*start, str(foreign), *extra]) == 2
        err = capsys.readouterr().err
        assert "is not a run dir" in err and "pass --force" not in err and err.count("\n") == 1, err
    assert [p.name for p in foreign.iterdir()] == ["thesis.docx"] and (foreign / "thesis.docx").read_text()

    early = tmp_path / "early"

    def stop(step, loss):  # a crash (or kill -9) before the first epoch ends: no checkpoint is saved
        raise RuntimeError("stopped")

    with pytest.raises(RuntimeError, match="stopped"):
        train(tiny(epochs=1, preview_every=0), dataset, early, progress=False, on_step=stop)
    assert sorted(p.name for p in early.iterdir()) == ["config.yaml", "split.json"]
    capsys.readouterr()
    assert main(["sample", "--run", str(early), "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "holds no checkpoints/best.pt or checkpoints/last.pt yet" in err and err.count("\n") == 1, err
    assert not (tmp_path / "s").exists()
    assert main(["train", "--out", str(early), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "has no checkpoints/last.pt to resume from" in err and "--force" in err and err.count("\n") == 1, err
    assert main([*start, str(early)]) == 2
    assert "pass --resume to continue it or --force" in capsys.readouterr().err
    assert main([*start, str(early), "--force"]) == 0  # a run dir ctdiff wrote: replaced
    assert load_checkpoint(early / "checkpoints" / "last.pt")["step"] == 2
    assert [r["epoch"] for r in read_history(early / "history.csv")] == [1]


def test_sigterm_saves_last_checkpoint_and_resume_hint(dataset, tmp_path):
    """`kill PID` on a running `python -m ctdiff train` saves last.pt like Ctrl-C and exits 130."""
    import signal
    import subprocess
    import sys
    import time

    import yaml

    cfg = json.loads(json.dumps(TINY))
    cfg["train"].update(epochs=10_000, preview_every=10_000)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ctdiff",
            "train",
            "--config",
            str(tmp_path / "tiny.yaml"),
            "--data",
            str(dataset),
            "--out",
            str(run),
            "--threads",
            "1",
            "--no-progress",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.time() + 120
        while not (run / "checkpoints" / "last.pt").exists():  # the first epoch's checkpoint
            assert proc.poll() is None, proc.communicate()
            assert time.time() < deadline, "no checkpoint within 120 s"
            time.sleep(0.2)
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted at step" in err and f"--out {run} --resume" in err
    saved = load_checkpoint(run / "checkpoints" / "last.pt")
    assert saved["step"] >= 2  # at least the first epoch (2 steps) and whatever ran after it
    rows = read_history(run / "history.csv")
    assert rows and saved["step"] >= rows[-1]["step"]


def test_train_warns_in_one_line_when_the_hu_window_clips_the_air_noise(tmp_path, capsys):
    """Phantoms with 25 HU of noise in their air (-1000 HU): ~17 % of the air voxels lie below the
    default window's -1024, so train says so (one line, naming a case); a window that holds them does not."""
    data = tmp_path / "noisy"
    data.mkdir()
    for i in range(3):
        vol, _ = make_phantom(shape=(16, 16, 6), seed=i, noise_hu=25.0)
        write_nifti(vol, data / f"case_{i:03d}.nii.gz")
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(tiny(epochs=1, preview_every=0).to_yaml())
    start = ["train", "--config", str(cfg), "--data", str(data), "--no-progress", "--out"]
    capsys.readouterr()
    assert main([*start, str(tmp_path / "a")]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warned) == 1 and "of 3 volume(s)" in warned[0] and "[-1024, 1500]" in warned[0], warned
    assert "case_00" in warned[0] and "widen data.hu_window" in warned[0]
    assert main([*start, str(tmp_path / "b"), "--set", "data.hu_window=[-1300,1500]"]) == 0
    assert "warning:" not in capsys.readouterr().err
