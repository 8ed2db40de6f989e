"""benchmarks/decode_tiling.py: each variant codes as it says, the errors are on the scan's masks, and the
samples' latents are the ones ``ctdiff sample`` decodes."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch

from ctdiff.data.body import body_mask
from ctdiff.data.io import read_volume, write_nifti
from ctdiff.data.phantom import make_phantom
from ctdiff.data.tensors import array_to_tensor, hu_to_model, model_to_hu, tensor_to_array
from ctdiff.diffusion.sample import load_bundle, sample
from ctdiff.model.autoencoder import AutoencoderTrainer, autoencoder_config, decode, encode_mean
from eval.metrics.intensity import tissue_masks

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "ctdiff_app" / "demo" / "assets" / "model.pt"
TINY_AE = {"channels": [8, 8], "latent_channels": 2, "norm_groups": 4, "patch": [8, 16, 16], "disc_layers": 1}
WINDOW = (-1024.0, 1500.0)


@pytest.fixture(scope="module")
def dt():
    return runpy.run_path(str(REPO / "benchmarks" / "decode_tiling.py"), run_name="decode_tiling")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiling")
    (root / "scans").mkdir()
    for i in range(2):
        vol, _ = make_phantom(shape=(32, 32, 16), seed=i, noise_hu=10.0)
        write_nifti(vol, root / "scans" / f"case_{i:03d}.nii.gz")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        trainer = AutoencoderTrainer(autoencoder_config(TINY_AE))
    torch.save(trainer.state(), root / "autoencoder.pt")
    return root, trainer.ae.eval()


def test_parse_variant_and_tiles(dt):
    v = dt["parse_variant"]("whole, 4x16x16 ,2")
    assert (v.encode, v.decode, v.z_pad, v.name) == ("whole", "4x16x16", 2, "whole,4x16x16,2")
    cfg = autoencoder_config(TINY_AE)  # downsampling 2, patch 8x16x16
    assert dt["latent_tile"]("whole", cfg) is None and dt["encode_tile"]("whole", cfg) is None
    assert dt["latent_tile"]("patch", cfg) == (4, 8, 8) and dt["encode_tile"]("patch", cfg) == (8, 16, 16)
    assert dt["latent_tile"]("2x3x4", cfg) == (2, 3, 4) and dt["encode_tile"]("2x3x4", cfg) == (4, 6, 8)
    for bad in ("whole,whole", "whole,whole,-1", "whole,4x16,0", "tiles,whole,0", "whole,0x4x4,1"):
        with pytest.raises(ValueError):
            dt["parse_variant"](bad)


def test_compare_measures_on_the_scans_masks(dt):
    scan = make_phantom((48, 48, 8), seed=3)[0].array
    same = dt["compare"](scan, scan.copy())
    assert all(b == 0.0 for b in same["bias"].values())
    assert same["class_mean"] == same["scan_class_mean"]
    assert 0 < same["scan_class_mean"]["soft_tissue"] < 100 and -150 < same["scan_class_mean"]["fat"] < -50
    shifted = dt["compare"](scan, scan + 10.0)
    assert shifted["bias"] == pytest.approx({"body": 10.0, "soft_tissue": 10.0, "fat": 10.0})
    # only soft tissue brighter: the body's error is the soft tissue's share of the body
    body = body_mask(scan)
    masks = tissue_masks(scan, body)
    part = dt["compare"](scan, scan + 20.0 * masks["soft_tissue"])
    assert part["bias"]["soft_tissue"] == pytest.approx(20.0) and part["bias"]["fat"] == 0.0
    share = masks["soft_tissue"].sum() / body.sum()
    assert part["bias"]["body"] == pytest.approx(20.0 * share)


def _direct(ae, path, enc_tile, dec_tile, z_pad):
    x = hu_to_model(array_to_tensor(read_volume(path).array), WINDOW)[None]
    with torch.no_grad():
        y = decode(ae, encode_mean(ae, x, enc_tile), dec_tile, z_pad).clamp(-1, 1)[0]
    return tensor_to_array(model_to_hu(y, WINDOW))


def test_reconstructions_code_each_variant_as_named(dt, setup):
    root, ae = setup
    record, _ = runpy.run_path(str(REPO / "benchmarks" / "bench_ae_ceiling.py"))["load_record"](root / "autoencoder.pt")
    scans = sorted((root / "scans").iterdir())
    variants = [dt["parse_variant"](t) for t in ("whole,whole,0", "patch,patch,0", "whole,whole,1", "patch,whole,1")]
    out = dt["reconstructions"](record, scans, variants)
    assert list(out) == [v.name for v in variants] and all(len(rows) == 2 for rows in out.values())
    ways = {"whole,whole,0": (None, None, 0), "patch,patch,0": ((8, 16, 16), (4, 8, 8), 0)}
    ways |= {"whole,whole,1": (None, None, 1), "patch,whole,1": ((8, 16, 16), None, 1)}
    for name, (enc, dec, pad) in ways.items():
        for row, path in zip(out[name], scans):
            want = dt["compare"](read_volume(path).array, _direct(ae, path, enc, dec, pad))
            assert row["scan"] == path.name
            assert row["bias"] == pytest.approx(want["bias"], abs=1e-6)
            assert row["class_mean"] == pytest.approx(want["class_mean"], abs=1e-6)
    # the ways differ (an untrained coder: tiles, padding and windows all change its output)
    biases = {name: out[name][0]["bias"]["body"] for name in ways}
    assert len({round(b, 3) for b in biases.values()}) == 4


def test_samples_latents_are_what_ctdiff_sample_decodes(dt):
    latents, bundle = dt["sample_latents"](MODEL, 2, 1000, steps=2)
    cfg = bundle.config.sample
    assert latents.shape[0] == 2
    # the config's own decode of the captured latents is ctdiff sample's noise-free output
    own = dt["parse_variant"](f"whole,{'x'.join(map(str, cfg.decode_tile))},{cfg.decode_z_pad}")
    got = dt["decoded_samples"](latents, bundle, [own, dt["parse_variant"]("whole,patch,0")])
    volumes = sample(load_bundle(MODEL, device="cpu"), 2, sampler=cfg.sampler, steps=2, seed=1000, noise=False)
    for row, vol in zip(got[own.name], volumes):
        want = dt["class_means"](vol.array)
        assert row == pytest.approx(want, abs=0.05)  # float32 decode vs the same decode; HU floats
    assert got["whole,patch,0"] != got[own.name]


def test_cli_writes_json_and_refuses_to_overwrite(dt, setup, tmp_path, capsys):
    root, _ = setup
    out = tmp_path / "tiling.json"
    args = ["--scans", str(root / "scans"), "--n", "2", "--autoencoder", f"tiny={root / 'autoencoder.pt'}"]
    args += ["--variant", "whole,whole,0", "--variant", "patch,patch,1", "--threads", "1", "--json", str(out)]
    assert dt["main"](args) == 0
    result = json.loads(out.read_text())
    rows = result["reconstructions"]["tiny"]["patch,patch,1"]
    mean = np.mean([r["bias"]["soft_tissue"] for r in rows])
    assert result["summary"]["reconstructions"]["tiny"]["patch,patch,1"]["bias_soft_tissue"] == pytest.approx(mean)
    assert result["scans"] == ["case_000.nii.gz", "case_001.nii.gz"]
    assert "| patch,patch,1 |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        dt["main"](args)  # exists, no --force
    assert dt["main"]([*args, "--force"]) == 0
    for bad in (["--variant", "whole,whole"], ["--n", "0"], ["--scans", str(tmp_path / "none")]):
        with pytest.raises(SystemExit):
            dt["main"]([*args[:6], *bad, "--force", "--json", str(out)])


def test_cli_samples_per_named_checkpoint(dt, tmp_path):
    out = tmp_path / "samples.json"
    args = ["--samples", f"demo={MODEL}", "--n-samples", "1", "--steps", "2", "--seed", "7", "--threads", "1"]
    args += ["--variant", "whole,whole,2", "--variant", "whole,patch,0", "--json", str(out)]
    assert dt["main"](args) == 0
    result = json.loads(out.read_text())
    assert result["sampling"]["demo"]["seed"] == 7 and result["sampling"]["demo"]["steps"] == 2
    rows = result["samples"]["demo"]["whole,patch,0"]
    assert len(rows) == 1
    summary = result["summary"]["samples"]["demo"]["whole,patch,0"]
    assert summary["class_mean_soft_tissue"] == pytest.approx(rows[0]["soft_tissue"])
    assert "reconstructions" not in result
    for bad in ([f"--samples=demo={MODEL}"], [f"--samples=x={tmp_path / 'none.pt'}"], ["--samples=nameonly"]):
        with pytest.raises(SystemExit):
            dt["main"]([*args, "--force", *bad])  # a name twice, a missing checkpoint, no NAME=
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match="decode_tiling: .*junk.pt"):  # one line naming the file
        dt["main"](["--samples", f"junk={junk}", "--n-samples", "1", "--steps", "2"])
