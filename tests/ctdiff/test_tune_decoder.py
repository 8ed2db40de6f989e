"""tune-decoder: the decoder learns to decode whole volumes while the encoder (so the latents, and a
latent diffusion model trained on them) stays as it was; checkpoints keep sampling; resume repeats an
uninterrupted run; bad input and existing files are refused with one line."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from ctdiff.cli import main
from ctdiff.diffusion import tune_decoder as td
from ctdiff.model.autoencoder import autoencoder_record, build_autoencoder, encode_mean

# fixtures: a tiny autoencoder and a latent run on it; one torch thread per test (autouse)
from tests.ctdiff.test_noise_resynthesis import _one_thread, latent_run  # noqa: F401


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _volumes(data, cfg):
    from ctdiff.config import DataConfig
    from ctdiff.data.dataset import dataset_files, load_cases

    return load_cases(dataset_files(data), DataConfig(hu_window=cfg.hu_window)).tensors


def _first_step(ae_file, data):
    """The autoencoder of ``ae_file`` (in train mode, as the tuning steps it), its config, and the
    volume and posterior sample of the tuning's first step at seed 0 (volume order and sample stream
    as ``tune_decoder`` draws them)."""
    ckpt = torch.load(ae_file, map_location="cpu", weights_only=True)
    ae, cfg = build_autoencoder(ckpt["config"])
    ae.load_state_dict(ckpt["autoencoder"])
    vols = _volumes(data, cfg)
    g = torch.Generator().manual_seed(0)
    x = vols[int(torch.randint(len(vols), (1,), generator=g))][None]
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(500_000)
        z = ae.sampling(*ae.encode(x))
    ae.train()
    return ae, cfg, vols, x, z


def _shifted_autoencoder(ae_file, out, shift_hu):
    """A copy of ``ae_file`` whose decoder adds ``shift_hu`` everywhere (its last conv's bias): the
    whole-volume error a decoder calibrated on patches makes, exaggerated and known."""
    ckpt = torch.load(ae_file, map_location="cpu", weights_only=True)
    ae, cfg = build_autoencoder(ckpt["config"])
    ae.load_state_dict(ckpt["autoencoder"])
    last = [m for m in ae.decoder.modules() if isinstance(m, torch.nn.Conv3d)][-1]
    with torch.no_grad():
        last.bias += shift_hu * 2.0 / (cfg.hu_window[1] - cfg.hu_window[0])
    torch.save({**ckpt, "autoencoder": ae.state_dict()}, out)
    return ae, cfg


def _ctrl_c_at_l1(monkeypatch, n: int):
    """The tuning's n-th L1 computation raises KeyboardInterrupt (Ctrl-C during step n); returns the undo."""
    l1 = torch.nn.functional.l1_loss
    calls = {"n": 0}

    def stop(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return l1(*args, **kwargs)

    monkeypatch.setattr(td.F, "l1_loss", stop)
    return lambda: monkeypatch.setattr(td.F, "l1_loss", l1)


def _interrupted(monkeypatch, at: int, model, data, out, **kwargs) -> dict:
    """``td.tune_decoder(model, data, out, **kwargs)`` stopped by Ctrl-C during step ``at``; returns the
    progress it saved (``OUT.tuning.pt``)."""
    undo = _ctrl_c_at_l1(monkeypatch, at)
    try:
        with pytest.raises(KeyboardInterrupt):
            td.tune_decoder(model, data, out, progress=False, **kwargs)
    finally:
        undo()
    return torch.load(td.state_path(out), weights_only=True)


def test_tuning_removes_a_decoder_bias_and_leaves_the_encoder_alone(latent_run, tmp_path, capsys):  # noqa: F811
    _, data, ae_file = latent_run
    shifted = tmp_path / "shifted.pt"
    ae, cfg = _shifted_autoencoder(ae_file, shifted, 150.0)
    vols = _volumes(data, cfg)
    bias_before = td.tissue_bias(ae, cfg, vols)["soft_tissue_bias_hu"]
    assert bias_before > 100.0
    out = tmp_path / "tuned.pt"
    cmd = ["tune-decoder", "--model", str(shifted), "--data", str(data), "--out", str(out), "--no-progress"]
    assert main([*cmd, "--steps", "40", "--lr", "5e-3", "--adv-weight", "0", "--eval", str(data)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 40 and summary["before"]["soft_tissue_bias_hu"] == pytest.approx(bias_before, rel=1e-4)
    new = torch.load(out, map_location="cpu", weights_only=True)
    tuned, _ = build_autoencoder(new["config"])
    tuned.load_state_dict(new["autoencoder"])
    bias_after = td.tissue_bias(tuned, cfg, vols)["soft_tissue_bias_hu"]
    assert abs(bias_after) < 0.3 * bias_before
    assert summary["after"]["soft_tissue_bias_hu"] == pytest.approx(bias_after, rel=1e-4)
    assert summary["after"]["l1_hu"] < summary["before"]["l1_hu"]
    # the encoder and the latents are untouched; the decoder changed
    old_state, new_state = ae.state_dict(), tuned.state_dict()
    decoder_keys = {k for k in new_state if k.startswith(("decoder.", "post_quant_conv."))}
    assert decoder_keys and all(torch.equal(old_state[k], new_state[k]) for k in new_state if k not in decoder_keys)
    assert any(not torch.equal(old_state[k], new_state[k]) for k in decoder_keys)
    x = vols[0][None]
    torch.testing.assert_close(encode_mean(tuned, x), encode_mean(ae, x), rtol=0, atol=0)
    assert new["decoder_tuning"]["from_sha256"] == _sha(shifted) and "noise_model" not in new
    assert new["decoder_tuning"]["discriminator"] == "not used (adv_weight 0)"
    assert autoencoder_record(out)["step"] == autoencoder_record(shifted)["step"]
    assert (tmp_path / "tuned.pt.history.csv").read_text().count("\n") == 41
    assert not td.state_path(out).exists()


def test_a_tuned_checkpoint_samples_with_the_same_latent_space(latent_run, tmp_path, capsys):  # noqa: F811
    from ctdiff.diffusion.sample import load_bundle, sample
    from ctdiff.model.checkpoint import load_checkpoint

    run, data, ae_file = latent_run
    ckpt = run / "checkpoints" / "last.pt"
    before = _sha(ckpt), _sha(ae_file)
    out = tmp_path / "tuned.pt"
    assert td.tune_decoder(ckpt, data, out, steps=2, progress=False)["steps"] == 2
    assert (_sha(ckpt), _sha(ae_file)) == before  # inputs untouched
    old, new = load_checkpoint(ckpt), load_checkpoint(out)
    assert new["space"]["scale"] == old["space"]["scale"]
    rec = new["space"]["autoencoder"]
    assert rec["noise_model"] is None and rec["decoder_tuning"]["steps"] == 2
    assert rec["decoder_tuning"]["discriminator"] == "the autoencoder's (the file the checkpoint names)"  # by sha256
    assert all(torch.equal(v, new["model"][k]) for k, v in old["model"].items())  # the U-Net is unchanged
    vol = sample(load_bundle(out, device="cpu"), 1, sampler="euler", steps=2, seed=1)[0]
    assert vol.array.shape == (32, 32, 8) and vol.meta["noise_resynthesis"] is False
    cmd = ["sample", "--checkpoint", str(out), "--n", "1", "--steps", "2", "--out", str(tmp_path / "s")]
    assert main(cmd) == 0
    capsys.readouterr()


def test_an_interrupted_tuning_resumes_to_the_uninterrupted_result(latent_run, tmp_path, monkeypatch, capsys):  # noqa: F811
    _, data, ae_file = latent_run
    whole = tmp_path / "whole.pt"
    td.tune_decoder(ae_file, data, whole, steps=4, checkpoint_every=1, progress=False)
    out = tmp_path / "resumed.pt"
    state = _interrupted(monkeypatch, 3, ae_file, data, out, steps=4, checkpoint_every=10)
    assert "resume with: python -m ctdiff tune-decoder" in capsys.readouterr().err and not out.exists()
    assert state["step"] == 2
    # neither a fresh start nor a second input may take the unfinished tuning's place
    with pytest.raises(Exception, match="unfinished tuning"):
        td.tune_decoder(ae_file, data, out, steps=4, progress=False)
    cmd = ["tune-decoder", "--model", str(whole), "--data", str(data), "--out", str(out), "--resume"]
    assert main(cmd) == 2 and "was started from another --model" in capsys.readouterr().err
    td.tune_decoder(ae_file, data, out, steps=4, resume=True, progress=False)
    assert torch.load(whole, weights_only=True)["decoder_tuning"]["discriminator"] == "the autoencoder's"
    a = torch.load(whole, weights_only=True)["autoencoder"]
    b = torch.load(out, weights_only=True)["autoencoder"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not td.state_path(out).exists()


def test_bad_input_is_refused_with_one_line(latent_run, tmp_path, capsys):  # noqa: F811
    from ctdiff.data.io import write_nifti
    from ctdiff.data.phantom import make_phantom

    run, data, ae_file = latent_run
    base = ["tune-decoder", "--data", str(data), "--no-progress"]
    new = str(tmp_path / "new.pt")
    assert main([*base, "--model", str(ae_file), "--out", str(ae_file), "--force"]) == 2
    assert "is the input --model" in capsys.readouterr().err
    assert main([*base, "--model", str(tmp_path / "none.pt"), "--out", new]) == 2
    assert "model file not found" in capsys.readouterr().err
    assert main([*base, "--model", str(ae_file), "--out", new, "--resume"]) == 2
    assert "no unfinished tuning to resume" in capsys.readouterr().err
    for flag, value, text in (
        ("--steps", "0", "--steps"),
        ("--lr", "nan", "--lr must be a finite number"),
        ("--lr", "0", "--lr must be > 0"),
        ("--adv-weight", "-1", "--adv-weight must be >= 0"),
    ):
        assert main([*base, "--model", str(ae_file), "--out", new, flag, value]) == 2
        err = capsys.readouterr().err
        assert text in err and len(err.strip().splitlines()) == 1
    odd = tmp_path / "odd"
    odd.mkdir()
    vol, _ = make_phantom(shape=(33, 32, 8), seed=0)
    write_nifti(vol, odd / "case_0.nii.gz")
    assert main(["tune-decoder", "--model", str(ae_file), "--data", str(odd), "--out", new]) == 2
    err = capsys.readouterr().err
    assert "case_0.nii.gz" in err and "downsampling 2" in err
    assert not (tmp_path / "new.pt").exists()


def test_slice_weights_weight_the_ends_and_keep_the_mean():
    w = td.slice_weights(8, 2, 3.0).flatten()
    assert w.shape == (8,) and float(w.mean()) == pytest.approx(1.0)
    assert torch.allclose(w[:2], w[-2:]) and float(w[0] / w[3]) == pytest.approx(3.0)
    assert torch.equal(w[2:6], torch.full((4,), float(w[2])))
    assert torch.equal(td.slice_weights(8, 2, 1.0).flatten(), torch.ones(8))
    assert torch.equal(td.slice_weights(8, 0, 5.0).flatten(), torch.ones(8))
    # more end slices than half the depth: every slice is an end slice, so all weigh alike
    assert torch.allclose(td.slice_weights(4, 9, 5.0).flatten(), torch.ones(4))


def test_end_weight_weights_the_l1_of_the_end_slices(latent_run, tmp_path, monkeypatch, capsys):  # noqa: F811
    """The first step's L1 is the slice-weighted mean absolute error of that step's reconstruction,
    recomputed here from the same volume and posterior sample; the weights are kept for a resume."""
    _, data, ae_file = latent_run
    out = tmp_path / "ends.pt"
    cmd = ["tune-decoder", "--model", str(ae_file), "--data", str(data), "--out", str(out), "--no-progress"]
    assert main([*cmd, "--steps", "1", "--adv-weight", "0", "--end-weight", "4", "--end-slices", "1"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["end_weight"], summary["end_slices"]) == (4.0, 1)
    ae, cfg, vols, x, z = _first_step(ae_file, data)
    with torch.no_grad():
        err = (ae.decode(z) - x).abs().mean(dim=(0, 1, 3, 4))  # per slice
    depth = err.numel()
    w = torch.ones(depth)
    w[[0, depth - 1]] = 4.0
    want = float((err * w).sum() / w.sum())
    history = (tmp_path / "ends.pt.history.csv").read_text().splitlines()
    assert float(history[1].split(",")[1]) == pytest.approx(want, rel=1e-4)
    assert want != pytest.approx(float(err.mean()), rel=1e-3)  # the weighting changes the value
    # a resumed tuning keeps the weights it was started with
    part = tmp_path / "part.pt"
    state = _interrupted(monkeypatch, 2, ae_file, data, part, steps=2, adv_weight=0, end_weight=4.0, end_slices=1)
    assert "resume with" in capsys.readouterr().err
    assert (state["end_weight"], state["end_slices"], state["step"]) == (4.0, 1, 1)
    resumed = td.tune_decoder(ae_file, data, part, steps=2, resume=True, progress=False)
    assert (resumed["end_weight"], resumed["end_slices"], resumed["steps"]) == (4.0, 1, 2)
    bad = ["--model", str(ae_file), "--data", str(data), "--out", str(tmp_path / "x.pt")]
    for flag, value, text in (
        ("--end-weight", "0", "--end-weight must be > 0"),
        ("--end-weight", "nan", "--end-weight must be a finite number"),
        ("--end-slices", "-1", "--end-slices"),
    ):
        assert main(["tune-decoder", *bad, flag, value]) == 2
        err = capsys.readouterr().err
        assert text in err and len(err.strip().splitlines()) == 1


def test_discriminator_file_starts_the_adversary(latent_run, tmp_path, capsys):  # noqa: F811
    """``--discriminator FILE`` starts the adversary from that autoencoder file's trained discriminator
    (a checkpoint whose own autoencoder file is gone would otherwise start a new one); a file without a
    fitting discriminator is refused with one line, and the input files are not touched."""
    run, data, ae_file = latent_run
    ckpt_file = run / "checkpoints" / "last.pt"
    ckpt = torch.load(ckpt_file, map_location="cpu", weights_only=True)
    ae_state = torch.load(ae_file, map_location="cpu", weights_only=True)
    own = ae_state["discriminator"]
    kind, loaded, record = "checkpoint", ckpt, dict(ckpt["space"]["autoencoder"], path=str(tmp_path / "gone.pt"))
    _, cfg = build_autoencoder(record["config"])
    fresh, source = td._discriminator(kind, loaded, record, cfg)
    assert source.startswith("new") and not all(torch.equal(fresh.state_dict()[k], v) for k, v in own.items())
    disc, source = td._discriminator(kind, loaded, record, cfg, ae_file)
    assert source == f"from {ae_file}" and all(torch.equal(disc.state_dict()[k], v) for k, v in own.items())

    before = _sha(ae_file), _sha(ckpt_file)
    out = tmp_path / "tuned.pt"
    cmd = ["tune-decoder", "--model", str(ckpt_file), "--data", str(data), "--no-progress", "--steps", "1"]
    assert main([*cmd, "--out", str(out), "--discriminator", str(ae_file)]) == 0
    capsys.readouterr()
    tuned = torch.load(out, map_location="cpu", weights_only=True)
    assert tuned["space"]["autoencoder"]["decoder_tuning"]["discriminator"] == f"from {ae_file}"
    assert (_sha(ae_file), _sha(ckpt_file)) == before

    wrong = tmp_path / "wrong-disc.pt"
    first = next(iter(own))
    torch.save({**ae_state, "discriminator": {**own, first: torch.zeros(3)}}, wrong)
    none = tmp_path / "no-disc.pt"
    torch.save({k: v for k, v in ae_state.items() if k != "discriminator"}, none)
    for path, text in (
        (wrong, "does not fit this autoencoder's"),
        (none, "has no discriminator"),
        (ckpt_file, "not a ctdiff autoencoder"),
        (tmp_path / "missing.pt", "autoencoder not found"),
    ):
        assert main([*cmd, "--out", str(tmp_path / "x.pt"), "--discriminator", str(path)]) == 2
        err = capsys.readouterr().err
        assert text in err and str(path.name) in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.pt").exists()


def test_z_pad_tunes_the_decoder_on_padded_latents(latent_run, tmp_path, monkeypatch, capsys):  # noqa: F811
    """``--z-pad N``: the first step's L1 is that of the latent reflect-padded by N slices, decoded and
    cropped back (recomputed here by hand); a latent checkpoint defaults to its sample.decode_z_pad, an
    autoencoder file to 0; a resumed tuning keeps the padding; --eval judges with it; out-of-range
    paddings are refused with one line."""
    run, data, ae_file = latent_run
    ae, cfg, vols, x, z = _first_step(ae_file, data)
    with torch.no_grad():
        f = cfg.downsampling
        padded = torch.nn.functional.pad(z, (0, 0, 0, 0, 1, 1), mode="reflect")
        y = ae.decode(padded)[:, :, f : f + x.shape[2]]
        want, plain = float((y - x).abs().mean()), float((ae.decode(z) - x).abs().mean())
    assert want != pytest.approx(plain, rel=1e-3)  # the padding changes what the decoder is trained on
    out = tmp_path / "pad.pt"
    cmd = ["tune-decoder", "--model", str(ae_file), "--data", str(data), "--no-progress", "--adv-weight", "0"]
    assert main([*cmd, "--out", str(out), "--steps", "1", "--z-pad", "1", "--eval", str(data)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["z_pad"] == 1
    history = (tmp_path / "pad.pt.history.csv").read_text().splitlines()
    assert float(history[1].split(",")[1]) == pytest.approx(want, rel=1e-4)
    # --eval judged the reconstructions decoded as they were tuned: padded
    from ctdiff.model.autoencoder import evaluate

    ae.eval()
    assert summary["before"]["l1_hu"] == pytest.approx(evaluate(ae, cfg, vols, z_pad=1)["l1_hu"], rel=1e-5)
    assert summary["before"]["l1_hu"] != pytest.approx(evaluate(ae, cfg, vols)["l1_hu"], rel=1e-4)
    # defaults: an autoencoder file 0; a latent checkpoint its own sample.decode_z_pad
    assert td.tune_decoder(ae_file, data, tmp_path / "a.pt", steps=1, adv_weight=0, progress=False)["z_pad"] == 0
    lat = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    lat["config"]["sample"]["decode_z_pad"] = 2
    padded_ckpt = tmp_path / "padded-ckpt.pt"
    torch.save(lat, padded_ckpt)
    summary = td.tune_decoder(padded_ckpt, data, tmp_path / "b.pt", steps=1, adv_weight=0, progress=False)
    assert summary["z_pad"] == 2
    # a resumed tuning keeps the padding it was started with
    part = tmp_path / "part.pt"
    assert _interrupted(monkeypatch, 2, ae_file, data, part, steps=2, adv_weight=0, z_pad=3)["z_pad"] == 3
    capsys.readouterr()
    assert td.tune_decoder(ae_file, data, part, steps=2, resume=True, progress=False)["z_pad"] == 3
    # the latents have 4 slices (8 slices, downsampling 2): reflect padding takes at most 3
    for value, text in (("4", "--z-pad must be from 0 to 3"), ("-1", "--z-pad")):
        assert main([*cmd, "--out", str(tmp_path / "x.pt"), "--z-pad", value]) == 2
        err = capsys.readouterr().err
        assert text in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.pt").exists()


def test_a_new_discriminator_is_warmed_up_before_the_decoder_trains(latent_run, tmp_path, monkeypatch, capsys):  # noqa: F811
    """A checkpoint whose autoencoder file is gone starts a new discriminator, which is trained alone
    first (NEW_DISC_WARMUP steps by default, --disc-warmup N): the warm-up changes the discriminator
    and not the decoder, is a pure function of the seed, is not repeated by a resume (which then ends
    where an uninterrupted tuning ends), and a trained discriminator is not warmed up."""
    from monai.losses import PatchAdversarialLoss

    run, data, ae_file = latent_run
    lat = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    lat["space"]["autoencoder"]["path"] = str(tmp_path / "gone.pt")
    orphan = tmp_path / "orphan.pt"
    torch.save(lat, orphan)
    record = lat["space"]["autoencoder"]
    ae, cfg = build_autoencoder(record["config"])
    ae.load_state_dict(record["state"])
    vols = _volumes(data, cfg)
    adv = PatchAdversarialLoss(criterion="least_squares")

    def warm(n):
        disc, source = td._discriminator("checkpoint", lat, record, cfg)
        assert source.startswith("new")
        torch.manual_seed(7)  # the new discriminator's initial weights
        disc.apply(lambda m: m.reset_parameters() if hasattr(m, "reset_parameters") else None)
        start = {k: v.clone() for k, v in disc.state_dict().items()}
        opt = torch.optim.Adam(disc.parameters(), lr=1e-3)
        losses = td._warm_up_discriminator(ae, disc, opt, adv, 0.05, vols, n, 0, 0, torch.device("cpu"), False)
        return start, disc.state_dict(), losses

    decoder_before = {k: v.clone() for k, v in ae.state_dict().items()}
    start, after, losses = warm(5)
    assert any(not torch.equal(start[k], after[k]) for k in after)  # the discriminator learned
    assert all(torch.equal(decoder_before[k], v) for k, v in ae.state_dict().items())  # the decoder did not
    assert losses[1] < losses[0]
    _, again, losses_again = warm(5)
    assert losses_again == losses and all(torch.equal(after[k], again[k]) for k in after)

    # the command: a new discriminator is warmed up by default; a trained one is not
    summary = td.tune_decoder(orphan, data, tmp_path / "w.pt", steps=1, progress=False)
    assert summary["disc_warmup"] == td.NEW_DISC_WARMUP and summary["discriminator"].startswith("new")
    assert summary["disc_warmup_loss"][1] < summary["disc_warmup_loss"][0]
    trained = td.tune_decoder(run / "checkpoints" / "last.pt", data, tmp_path / "t.pt", steps=1, progress=False)
    assert trained["disc_warmup"] == 0 and trained["disc_warmup_loss"] is None
    # warmed up, interrupted in the tuning and resumed: the uninterrupted result, without a second warm-up
    whole = tmp_path / "whole.pt"
    td.tune_decoder(orphan, data, whole, steps=3, disc_warmup=4, progress=False)
    part = tmp_path / "part.pt"
    assert _interrupted(monkeypatch, 2, orphan, data, part, steps=3, disc_warmup=4, checkpoint_every=10)["step"] == 1
    capsys.readouterr()
    calls = {"n": 0}
    real_warm_up = td._warm_up_discriminator
    monkeypatch.setattr(
        td, "_warm_up_discriminator", lambda *a, **k: calls.update(n=calls["n"] + 1) or real_warm_up(*a, **k)
    )
    resumed = td.tune_decoder(orphan, data, part, steps=3, resume=True, progress=False)
    assert calls["n"] == 0 and resumed["disc_warmup"] == 4
    a = torch.load(whole, weights_only=True)["space"]["autoencoder"]["state"]
    b = torch.load(part, weights_only=True)["space"]["autoencoder"]["state"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    cmd = ["tune-decoder", "--model", str(orphan), "--data", str(data), "--out", str(tmp_path / "x.pt")]
    assert main([*cmd, "--disc-warmup", "-1"]) == 2
    err = capsys.readouterr().err
    assert "--disc-warmup" in err and len(err.strip().splitlines()) == 1


def test_tissue_bias_runs_the_coder_on_its_own_device():
    # the coder on CUDA, the held-out volumes on CPU (seen failing on an H100 in reconstruct, 2026-12-06)
    from ctdiff.model.autoencoder import autoencoder_config
    from tests.ctdiff.test_autoencoder import MetaCoder

    seen = []
    # every voxel decoded 0.1 model units (1/20 of the window) too bright
    coder = MetaCoder(seen, lambda x: torch.zeros(x.shape), lambda z: z + 0.1)
    cfg = autoencoder_config({"channels": [8], "hu_window": [-1000.0, 1000.0]})
    vol = torch.zeros(1, 4, 8, 8)  # 0 HU: soft tissue
    bias = td.tissue_bias(coder, cfg, [vol])
    assert seen[0] == ("encode", "meta")
    assert bias["soft_tissue_bias_hu"] == pytest.approx(100.0)
