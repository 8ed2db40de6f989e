"""model.autoencoder may name a latent diffusion checkpoint: a new diffusion model is then trained on
the autoencoder that checkpoint carries (tuned decoder, noise model and all), as the demo model was
trained on longer phantoms with the earlier demo model's autoencoder."""

from __future__ import annotations

import hashlib

import pytest
import torch

from ctdiff.errors import InputError

# fixture: a tiny latent rflow run (32x32x8 volumes, an autoencoder that downsamples 2x); one thread
from tests.ctdiff.test_noise_resynthesis import _one_thread, latent_run  # noqa: F401


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tuned(latent_run, tmp_path_factory):  # noqa: F811
    """The run's checkpoint as a tuned, exported model: decoder weights changed, fp16 autoencoder
    state, a noise model and a tuning record, as tune-decoder, fit-noise and the demo export leave it."""
    run, _, _ = latent_run
    ckpt = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    rec = dict(ckpt["space"]["autoencoder"])
    state = {k: v.clone() for k, v in rec["state"].items()}
    name = next(k for k in state if k.startswith("decoder.") and k.endswith("weight"))
    state[name] += 0.01
    rec["state"] = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    rec["noise_model"] = {"format": "radial-nps-1", "sd_hu": 12.5}
    rec["decoder_tuning"] = {"steps": 3}
    out = tmp_path_factory.mktemp("tuned") / "model.pt"
    torch.save({**ckpt, "space": {**ckpt["space"], "autoencoder": rec}}, out)
    return out, state, name


def test_a_new_run_trains_on_the_autoencoder_a_checkpoint_carries(latent_run, tuned, tmp_path):  # noqa: F811
    from ctdiff.config import config_from_dict
    from ctdiff.training.train import train

    run, data, _ = latent_run
    path, state, changed = tuned
    old = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    values = old["config"]
    cfg = config_from_dict({**values, "model": {**values["model"], "autoencoder": str(path)}})
    with torch.random.fork_rng():
        train(cfg, data, tmp_path / "new", progress=False)
    new = torch.load(tmp_path / "new" / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    rec = new["space"]["autoencoder"]
    assert rec["from_checkpoint"] is True and rec["sha256"] == _sha(path) and rec["path"] == str(path.resolve())
    assert rec["noise_model"] == {"format": "radial-nps-1", "sd_hu": 12.5} and rec["decoder_tuning"] == {"steps": 3}
    # the tuned decoder travels (as float32: the fp16 export is read back at full width)
    assert rec["state"][changed].dtype == torch.float32
    assert torch.equal(rec["state"][changed], state[changed].half().float())
    assert not torch.equal(rec["state"][changed], old["space"]["autoencoder"]["state"][changed])
    # the encoder is the old run's, so the same training volumes give the old run's latent scale
    assert new["space"]["scale"] == pytest.approx(old["space"]["scale"], rel=1e-3)


def test_a_checkpoint_without_an_autoencoder_is_refused_in_one_line(latent_run, tmp_path):  # noqa: F811
    from ctdiff.model.autoencoder import autoencoder_record

    run, _, _ = latent_run
    ckpt = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    pixel = tmp_path / "pixel.pt"
    torch.save({**ckpt, "space": {"kind": "pixel"}}, pixel)
    with pytest.raises(InputError, match="a pixel-space checkpoint carries no autoencoder") as err:
        autoencoder_record(pixel)
    assert str(pixel) in str(err.value) and "\n" not in str(err.value)
    old = tmp_path / "old.pt"  # a checkpoint from before model.space: pixel space, no "space" entry
    torch.save({k: v for k, v in ckpt.items() if k != "space"}, old)
    with pytest.raises(InputError, match="a pixel-space checkpoint carries no autoencoder"):
        autoencoder_record(old)


def test_tune_decoder_starts_a_new_discriminator_for_a_carried_autoencoder(tuned):
    from ctdiff.diffusion.tune_decoder import _discriminator
    from ctdiff.model.autoencoder import autoencoder_record, build_autoencoder

    path, _, _ = tuned
    rec = autoencoder_record(path)
    _, cfg = build_autoencoder(rec["config"])
    _, where = _discriminator("diffusion", {}, rec, cfg)
    assert where.startswith("new (the autoencoder came from a diffusion checkpoint")
