"""The latent space's autoencoder: shapes, a few steps lower the loss, tiled = full coding,
train-autoencoder CLI (resume, eval.json), records carried by hash, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ctdiff.cli import main
from ctdiff.data.io import write_nifti
from ctdiff.data.phantom import make_phantom
from ctdiff.errors import ConfigError, InputError
from ctdiff.model.autoencoder import (
    AutoencoderTrainer,
    autoencoder_config,
    autoencoder_record,
    build_autoencoder,
    decode,
    encode_mean,
    evaluate,
    random_patches,
    reconstruct,
    sha256_file,
    train_autoencoder,
)

TINY_AE = {
    "channels": [8, 8],
    "latent_channels": 2,
    "norm_groups": 4,
    "patch": [8, 16, 16],
    "batch_size": 2,
    "disc_channels": 4,
    "disc_layers": 1,
    "steps": 4,
    "lr": 2e-3,
    "checkpoint_every": 2,
}


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    root = tmp_path_factory.mktemp("ae-data")
    for i in range(4):
        vol, _ = make_phantom(shape=(16, 16, 8), seed=i, noise_hu=10.0)
        write_nifti(vol, root / f"case_{i}.nii.gz")
    return root


def test_shapes_follow_the_config():
    ae, cfg = build_autoencoder(autoencoder_config({**TINY_AE, "channels": [8, 8, 8], "latent_channels": 3}))
    assert cfg.downsampling == 4
    x = torch.zeros(2, 1, 8, 16, 24)
    recon, mu, sigma = ae(x)
    assert recon.shape == x.shape and mu.shape == sigma.shape == (2, 3, 2, 4, 6)
    assert decode(ae, encode_mean(ae, x)).shape == x.shape


def test_a_few_steps_lower_the_loss():
    cfg = autoencoder_config({**TINY_AE, "adv_weight": 0.05})
    vol, _ = make_phantom(shape=(16, 16, 8), seed=0, noise_hu=0.0)
    x = (torch.from_numpy(vol.array).permute(2, 1, 0)[None].float() + 1024) / 2524 * 2 - 1
    trainer = AutoencoderTrainer(cfg)
    g = torch.Generator().manual_seed(0)
    rows = [trainer.train_step(random_patches([x], cfg.patch, 2, g, cfg.downsampling)) for _ in range(30)]
    assert rows[-1]["disc"] > 0 and rows[-1]["gen_adv"] > 0  # the adversarial losses take part
    first, last = sum(r["l1"] for r in rows[:3]) / 3, sum(r["l1"] for r in rows[-3:]) / 3
    assert last < 0.6 * first


def test_tiled_coding_approximates_full_coding():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        ae, _ = build_autoencoder(autoencoder_config(TINY_AE))
    ae.eval()
    x = torch.rand(1, 1, 8, 32, 32) * 2 - 1
    z_full = encode_mean(ae, x)
    z_tiled = encode_mean(ae, x, (8, 16, 16))  # four overlapping windows
    assert z_tiled.shape == z_full.shape
    # windows see zero padding at their edges where the full volume sees neighbours: close, not equal
    # (an untrained coder on white noise is the hard case), and far closer than another volume's code
    other = encode_mean(ae, torch.rand(1, 1, 8, 32, 32) * 2 - 1)
    assert (z_tiled - z_full).abs().mean() < 0.2 * z_full.abs().mean()
    assert (z_tiled - z_full).abs().mean() < 0.5 * (other - z_full).abs().mean()
    y_full, y_tiled = decode(ae, z_full), decode(ae, z_full, (4, 12, 12))  # four overlapping windows
    assert y_tiled.shape == y_full.shape == x.shape
    assert (y_tiled - y_full).abs().mean() < 0.2 * y_full.abs().mean()
    assert (y_tiled - y_full).abs().mean() < 0.5 * (decode(ae, other) - y_full).abs().mean()
    assert not torch.equal(y_tiled, y_full)  # the tiled path really ran
    torch.testing.assert_close(decode(ae, z_full, (4, 16, 16)), y_full)  # one tile = full decode


def test_train_autoencoder_cli_resume_and_record(phantoms, tmp_path, capsys):
    out = tmp_path / "ae"
    sets = [f"--set={k}={json.dumps(v)}" for k, v in TINY_AE.items()]
    assert main(["train-autoencoder", "--data", str(phantoms), "--out", str(out), "--no-progress", *sets]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 4 and summary["n"] == 1 and 0 < summary["ssim"] <= 1 and summary["psnr_db"] > 5
    result = json.loads((out / "eval.json").read_text())
    assert result["noise_sd_hu"] > 0 and result["cases"][0]["noise_sd_ratio"] == pytest.approx(
        result["noise_sd_recon_hu"] / result["noise_sd_hu"]
    )
    assert main(["train-autoencoder", "--data", str(phantoms), "--out", str(out), *sets]) == 2  # not empty
    assert main(["train-autoencoder", "--out", str(out), "--resume", "--set", "steps=6", "--no-progress"]) == 0
    rec = autoencoder_record(out / "autoencoder.pt")
    assert rec["step"] == 6 and rec["sha256"] == sha256_file(out / "autoencoder.pt")
    assert rec["config"]["latent_channels"] == 2 and "encoder.blocks.0.conv.weight" in rec["state"]
    assert [r["step"] for r in torch.load(out / "autoencoder.pt", weights_only=True)["history"]] == list(range(1, 7))


def test_cosine_learning_rate_falls_from_lr_to_zero_and_resumes_where_it_was(phantoms):
    """lr_schedule cosine: lr (1 + cos(pi step / steps)) / 2 for both optimisers, set from the step alone,
    so a trainer restored from a checkpoint goes on at the rate it stopped at; constant keeps lr."""
    cfg = autoencoder_config({**TINY_AE, "steps": 8, "lr_schedule": "cosine"})
    trainer = AutoencoderTrainer(cfg)
    assert [trainer.learning_rate(s) for s in (0, 2, 4, 8)] == pytest.approx(
        [2e-3, 2e-3 * (1 + 2**-0.5) / 2, 1e-3, 0.0]
    )
    vol, _ = make_phantom(shape=(16, 16, 8), seed=0, noise_hu=0.0)
    x = (torch.from_numpy(vol.array).permute(2, 1, 0)[None].float() + 1024) / 2524 * 2 - 1
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        trainer.train_step(random_patches([x], cfg.patch, 2, g, cfg.downsampling))
    # the third step ran at step index 2's rate, in the generator's and the discriminator's optimiser
    rates = [grp["lr"] for opt in (trainer.opt_g, trainer.opt_d) for grp in opt.param_groups]
    assert rates == pytest.approx([trainer.learning_rate(2)] * len(rates)) and rates[0] < 2e-3
    restored = AutoencoderTrainer(cfg)
    restored.load_state(trainer.state())
    patch = random_patches([x], cfg.patch, 2, g, cfg.downsampling)
    with torch.random.fork_rng():
        row_a = trainer.train_step(patch)
    with torch.random.fork_rng():
        row_b = restored.train_step(patch)
    assert restored.opt_g.param_groups[0]["lr"] == pytest.approx(trainer.learning_rate(3))
    assert row_a == row_b  # the same step, at the same rate
    constant = AutoencoderTrainer(autoencoder_config({**TINY_AE, "steps": 8}))
    assert {constant.learning_rate(s) for s in (0, 4, 8)} == {2e-3}
    with pytest.raises(ConfigError, match="lr_schedule must be one of"):
        autoencoder_config({"lr_schedule": "step"})


def test_bad_settings_and_files(phantoms, tmp_path, capsys):
    with pytest.raises(ConfigError, match="patch"):
        autoencoder_config({"patch": [6, 16, 16]})
    with pytest.raises(ConfigError, match="unknown config key 'chanels'"):
        autoencoder_config({"chanels": [8]})
    # the default 16-slice patch is clipped to these 8-slice volumes: too small for 2 discriminator layers
    small = {k: v for k, v in TINY_AE.items() if k not in ("patch", "disc_layers")}
    with pytest.raises(ConfigError, match=r"8-voxel patches, too small for disc_layers 2 .*--set disc_layers=1"):
        train_autoencoder(phantoms, tmp_path / "small", config=small, progress=False)
    with pytest.raises(InputError, match="perceptual_weights file not found"):
        AutoencoderTrainer(autoencoder_config({**TINY_AE, "perceptual_weights": str(tmp_path / "none.pt")}))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"nope")
    demo_yaml = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"
    assert (
        main(
            [
                "train",
                "--config",
                str(demo_yaml),
                "--data",
                str(phantoms),
                "--out",
                str(tmp_path / "r"),
                "--set",
                "model.space=latent",
                "--set",
                f"model.autoencoder={junk}",
            ]
        )
        == 2
    )
    assert str(junk) in capsys.readouterr().err


def test_evaluate_reports_a_perfect_reconstruction_for_an_identity_coder():
    class Identity(torch.nn.Module):
        def encode(self, x):
            return x, torch.ones_like(x)

        def decode(self, z):
            return z

    cfg = autoencoder_config({"channels": [8]})
    vol = torch.rand(1, 8, 16, 16) * 0.2 - 0.35  # soft tissue-ish HU
    res = evaluate(Identity(), cfg, [vol])
    assert (
        res["ssim"] == pytest.approx(1.0, abs=1e-6)
        and res["l1_hu"] == 0.0
        and res["noise_sd_ratio"] == pytest.approx(1.0)
        and res["nps_distance"] == pytest.approx(0.0, abs=1e-12)
        and res["nps_mean_frequency_ratio"] == pytest.approx(1.0)
    )


class MetaCoder(torch.nn.Module):
    """A coder whose weights sit on the meta device, standing in for a GPU on this CPU-only machine: it
    records ("encode" | "decode", device of its input) in ``seen`` and computes with ``encode_fn`` /
    ``decode_fn`` (returning CPU tensors, as if handed back from the device)."""

    def __init__(self, seen: list, encode_fn, decode_fn):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1, device="meta"))
        self.seen, self.encode_fn, self.decode_fn = seen, encode_fn, decode_fn

    def encode(self, x):
        self.seen.append(("encode", x.device.type))
        return self.encode_fn(x), None

    def decode(self, z):
        self.seen.append(("decode", z.device.type))
        return self.decode_fn(z)


def test_reconstruct_runs_the_coder_on_its_own_device_and_returns_on_the_volumes():
    # train-autoencoder on CUDA judged its CPU held-out volumes with the CUDA coder and failed
    # (aten::slow_conv3d_forward on CUDA, seen on an H100, 2026-12-06)
    seen = []
    coder = MetaCoder(seen, lambda x: torch.full(x.shape, 0.25), lambda z: z * 2)
    vol = torch.zeros(1, 1, 4, 8, 8)
    out = reconstruct(coder, vol, downsampling=1)
    assert seen[0] == ("encode", "meta")
    assert out.device.type == "cpu" and torch.equal(out, torch.full(vol.shape, 0.5))


def test_evaluate_sees_noise_blurred_away_in_its_power_spectrum():
    """A coder that blurs (a 3x3x3 box on decode): noise SD and the NPS mean frequency drop, the NPS
    distance grows; white noise on a flat soft-tissue block is the test volume."""
    import torch.nn.functional as F

    class Blur(torch.nn.Module):
        def encode(self, x):
            return x, torch.ones_like(x)

        def decode(self, z):
            return F.avg_pool3d(z, 3, stride=1, padding=1, count_include_pad=False)

    cfg = autoencoder_config({"channels": [8]})
    g = torch.Generator().manual_seed(0)
    vol = torch.full((1, 8, 32, 32), -0.15) + 0.02 * torch.randn(1, 8, 32, 32, generator=g)  # ~40 HU +- 25
    res = evaluate(Blur(), cfg, [vol])
    assert res["noise_sd_ratio"] < 0.6
    assert res["nps_mean_frequency_ratio"] < 0.9 and res["nps_distance"] > 0.3  # measured 0.78 and 0.68


def test_train_autoencoder_warns_when_its_hu_window_clips_the_air_noise(tmp_path, capsys):
    data = tmp_path / "noisy"
    data.mkdir()
    for i in range(3):
        vol, _ = make_phantom(shape=(16, 16, 8), seed=i, noise_hu=25.0)  # air at -1000 HU, 25 HU of noise
        write_nifti(vol, data / f"case_{i}.nii.gz")
    sets = [f"--set={k}={json.dumps(v)}" for k, v in {**TINY_AE, "steps": 2}.items()]
    capsys.readouterr()
    assert main(["train-autoencoder", "--data", str(data), "--out", str(tmp_path / "a"), "--no-progress", *sets]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warned) == 1 and "of 3 volume(s) have voxels just outside hu_window [-1024, 1500]" in warned[0]
    assert "--set hu_window=[-1280,1500]" in warned[0]  # train-autoencoder's own key, not data.hu_window
    wide = ["--set", "hu_window=[-1280,1500]"]
    assert (
        main(["train-autoencoder", "--data", str(data), "--out", str(tmp_path / "b"), "--no-progress", *sets, *wide])
        == 0
    )
    assert "warning:" not in capsys.readouterr().err
