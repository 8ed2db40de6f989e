"""benchmarks/bench_ae_ceiling.py: the reconstructions are the autoencoder's, on the scans' grid, and the
report step resumes."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from ctdiff.data.io import read_volume, write_nifti
from ctdiff.data.phantom import make_phantom
from ctdiff.data.tensors import array_to_tensor, hu_to_model, model_to_hu, tensor_to_array
from ctdiff.model.autoencoder import (
    AutoencoderTrainer,
    autoencoder_config,
    decode,
    encode_mean,
    evaluate,
    reconstruct,
    sha256_file,
)

REPO = Path(__file__).resolve().parents[2]
TINY_AE = {"channels": [8, 8], "latent_channels": 2, "norm_groups": 4, "patch": [8, 16, 16], "disc_layers": 1}


def ae_config():
    return autoencoder_config(TINY_AE)


@pytest.fixture(scope="module")
def bench():
    return runpy.run_path(str(REPO / "benchmarks" / "bench_ae_ceiling.py"), run_name="bench_ae_ceiling")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ceiling")
    (root / "held").mkdir()
    for i in range(2):
        vol, _ = make_phantom(shape=(16, 16, 8), seed=i, noise_hu=10.0)
        vol.affine[:3, 3] = [10.0 * i, -5.0, 3.0]  # every scan its own grid
        write_nifti(vol, root / "held" / f"case_{i}.nii.gz")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        trainer = AutoencoderTrainer(autoencoder_config(TINY_AE))
    torch.save(trainer.state(), root / "autoencoder.pt")
    return root, trainer.ae.eval()


def test_reconstructions_are_decode_of_encode_on_each_scans_grid(bench, setup, tmp_path):
    root, ae = setup
    record, facts = bench["load_record"](root / "autoencoder.pt")
    assert facts["source"] == "autoencoder file" and record["sha256"] == sha256_file(root / "autoencoder.pt")
    scans = sorted((root / "held").iterdir())
    names = bench["reconstruct"](record, scans, tmp_path / "rec")
    assert names == ["case_0.nii.gz", "case_1.nii.gz"]
    for scan in scans:
        vol = read_volume(scan)
        x = hu_to_model(array_to_tensor(vol.array), (-1024.0, 1500.0))[None]
        with torch.no_grad():
            want = tensor_to_array(model_to_hu(decode(ae, encode_mean(ae, x))[0].clamp(-1, 1), (-1024.0, 1500.0)))
        got = nib.load(tmp_path / "rec" / scan.name)
        np.testing.assert_allclose(got.affine, vol.affine)
        np.testing.assert_allclose(np.asarray(got.dataobj, dtype=np.float32), want, atol=0.51)  # int16 HU
        assert np.abs(want - vol.array).mean() > 1.0  # an untrained coder: not the scan itself


def test_tile_codes_in_sliding_windows_of_that_many_latent_voxels(bench, setup, tmp_path):
    root, ae = setup
    record, _ = bench["load_record"](root / "autoencoder.pt")
    scan = sorted((root / "held").iterdir())[0]
    bench["reconstruct"](record, [scan], tmp_path / "whole")
    bench["reconstruct"](record, [scan], tmp_path / "tiled", tile=(2, 4, 4))
    vol = read_volume(scan)
    x = hu_to_model(array_to_tensor(vol.array), (-1024.0, 1500.0))[None]
    with torch.no_grad():  # latents of (4, 8, 8): windows of (2, 4, 4), i.e. (4, 8, 8) voxels when encoding
        want = tensor_to_array(model_to_hu(reconstruct(ae, x, 2, (2, 4, 4))[0].clamp(-1, 1), (-1024.0, 1500.0)))
    tiled = np.asarray(nib.load(tmp_path / "tiled" / scan.name).dataobj, dtype=np.float32)
    whole = np.asarray(nib.load(tmp_path / "whole" / scan.name).dataobj, dtype=np.float32)
    np.testing.assert_allclose(tiled, want, atol=0.51)
    assert np.abs(tiled - whole).max() > 5.0  # the windows change the reconstruction


def test_a_checkpoint_without_an_autoencoder_is_refused(bench):
    with pytest.raises(SystemExit, match="neither an autoencoder file nor a latent checkpoint"):
        bench["load_record"](REPO / "tests" / "data" / "pixel-demo-64-before-spaces.pt")


def test_the_report_is_made_once_and_again_with_radiomics(bench, setup, tmp_path):
    root, _ = setup
    calls = []

    def fake_run(cmd, log, threads=2):
        calls.append(cmd)
        out = Path(cmd[cmd.index("--out") + 1])
        out.mkdir(parents=True, exist_ok=True)
        gap = 3.0 if "radiomics" in cmd[cmd.index("--metrics") + 1] else 2.0
        metrics = {
            "noise_sd": {"value": 1.0, "gap": gap},
            "nps_distance": {"value": None, "gap": None, "status": "n/a"},
        }
        (out / "report.json").write_text(json.dumps({"metrics": metrics}))
        return 1.0, 1.0

    main = bench["main"]
    main.__globals__["_run"] = fake_run
    try:
        argv = ["--held-out", str(root / "held"), "--train-data", str(root / "held"), "--threads", "1"]
        argv += ["--autoencoder", f"tiny={root / 'autoencoder.pt'}", "--work", str(tmp_path), "--json"]
        assert main([*argv, str(tmp_path / "a.json")]) == 0
        first = json.loads((tmp_path / "a.json").read_text())["autoencoders"]["tiny"]
        assert len(calls) == 1 and first["median_gap"] == 2.0 and first["latent_channels"] == 2
        assert first["not_measured"] == ["nps_distance"]
        assert first["reconstructed"] == ["case_0.nii.gz", "case_1.nii.gz"]
        assert first["judged"]["whole"]["psnr_db"] == pytest.approx(
            bench["judge"](bench["load_record"](root / "autoencoder.pt")[0], sorted((root / "held").iterdir()))[
                "whole"
            ]["psnr_db"]
        )
        assert main([*argv, str(tmp_path / "b.json")]) == 0  # complete: nothing runs again
        assert len(calls) == 1
        assert main([*argv, str(tmp_path / "c.json"), "--radiomics"]) == 0
        again = json.loads((tmp_path / "c.json").read_text())["autoencoders"]["tiny"]
        assert len(calls) == 2 and again["median_gap"] == 3.0 and again["tile"] == [16, 32, 32]
        assert main([*argv, str(tmp_path / "e.json"), "--radiomics", "--tile", "2", "4", "4"]) == 0
        tiled = json.loads((tmp_path / "e.json").read_text())["autoencoders"]["tiny"]
        assert len(calls) == 3 and tiled["tile"] == [2, 4, 4]  # another window: reconstructed and reported again
        with pytest.raises(SystemExit):
            main([*argv, str(tmp_path / "d.json"), "--autoencoder", "no-equals-sign"])
        before = len(calls)
        with pytest.raises(SystemExit):
            main([*argv, str(tmp_path / "f.json"), "--tile", "0", "4", "4"])
        assert len(calls) == before and not (tmp_path / "f.json").exists()  # refused before any work
    finally:
        main.__globals__["_run"] = bench["_run"]


def test_the_reconstructions_are_judged_whole_and_in_windows(bench, setup):
    root, ae = setup
    record, _ = bench["load_record"](root / "autoencoder.pt")
    scans = sorted((root / "held").iterdir())
    judged = bench["judge"](record, scans, tile=(2, 4, 4))
    volumes = [hu_to_model(array_to_tensor(read_volume(p).array), (-1024.0, 1500.0)) for p in scans]
    with torch.no_grad():
        whole = evaluate(ae, ae_config(), volumes, tile=None)
        windows = evaluate(ae, ae_config(), volumes, tile=(2, 4, 4))
    for key in ("psnr_db", "ssim", "l1_hu", "noise_sd_recon_hu"):
        assert judged["whole"][key] == pytest.approx(whole[key], rel=1e-5)
        assert judged["windows"][key] == pytest.approx(windows[key], rel=1e-5)
    assert abs(judged["whole"]["l1_hu"] - judged["windows"]["l1_hu"]) > 0.1  # the windows change it
    assert set(judged["whole"]) >= {"air_bias_hu", "fat_bias_hu", "soft_tissue_bias_hu"}
    assert "air_bias_hu" not in judged["windows"]


def test_histogram_match_maps_each_reconstructions_body_as_sample_does(bench, setup, tmp_path):
    from ctdiff.diffusion import histogram

    root, ae = setup
    record, _ = bench["load_record"](root / "autoencoder.pt")
    scans = sorted((root / "held").iterdir())
    ref = histogram.fit([read_volume(s).array for s in scans])
    bench["reconstruct"](record, scans, tmp_path / "plain")
    bench["reconstruct"](record, scans, tmp_path / "matched", histogram=ref)
    for scan in scans:
        plain = np.asarray(nib.load(tmp_path / "plain" / scan.name).dataobj, dtype=np.float32)
        got = np.asarray(nib.load(tmp_path / "matched" / scan.name).dataobj, dtype=np.float32)
        x = hu_to_model(array_to_tensor(read_volume(scan).array), (-1024.0, 1500.0))[None]
        with torch.no_grad():
            est = tensor_to_array(model_to_hu(decode(ae, encode_mean(ae, x))[0].clamp(-1, 1), (-1024.0, 1500.0)))
        # no noise model: the estimate is the volume as drawn, and the matching maps it alone
        want = np.clip(histogram.match(est, est, ref), -1024.0, 1500.0)
        np.testing.assert_allclose(got, want, atol=0.51)  # int16 HU
        body = plain > -500
        real = read_volume(scan).array
        qs = [np.quantile(a[a > -500], [0.25, 0.5, 0.75]) for a in (real, got, plain)]
        # the body's quantiles moved toward the scans'
        assert body.any() and np.abs(qs[1] - qs[0]).max() < np.abs(qs[2] - qs[0]).max()
        assert np.array_equal(got[~body], plain[~body])  # air as decoded
    with pytest.raises(SystemExit, match="needs a histogram reference"):
        bench["load_histogram"](root / "autoencoder.pt")


def test_clean_reconstructs_the_noise_free_twin_and_adds_the_scans_own_noise(bench, setup, tmp_path):
    root, ae = setup
    record, _ = bench["load_record"](root / "autoencoder.pt")
    scans = sorted((root / "held").iterdir())
    clean = tmp_path / "clean"
    clean.mkdir()
    for i, scan in enumerate(scans):  # the same phantoms without their noise, on the same grids
        vol, _ = make_phantom(shape=(16, 16, 8), seed=i, noise_hu=0.0)
        vol.affine[:] = read_volume(scan).affine
        write_nifti(vol, clean / scan.name)
    bench["reconstruct"](record, scans, tmp_path / "rec", clean=clean)
    for scan in scans:
        real, free = read_volume(scan).array, read_volume(clean / scan.name).array
        assert np.abs(real - free).std() > 3.0  # the scan's own noise is there to be added back
        x = hu_to_model(array_to_tensor(free), (-1024.0, 1500.0))[None]
        with torch.no_grad():
            est = tensor_to_array(model_to_hu(decode(ae, encode_mean(ae, x))[0].clamp(-1, 1), (-1024.0, 1500.0)))
        want = np.clip(est + (real - free), -1024.0, 1500.0)
        got = nib.load(tmp_path / "rec" / scan.name)
        np.testing.assert_allclose(got.affine, read_volume(scan).affine)
        np.testing.assert_allclose(np.asarray(got.dataobj, dtype=np.float32), want, atol=0.51)  # int16 HU
    # a twin missing or on another grid is refused by name
    (clean / scans[1].name).unlink()
    with pytest.raises(SystemExit, match=f"no {scans[1].name}"):
        bench["reconstruct"](record, scans, tmp_path / "rec2", clean=clean)
    vol, _ = make_phantom(shape=(16, 16, 8), seed=1, noise_hu=0.0)
    write_nifti(vol, clean / scans[1].name)  # the phantom's default grid, not the scan's
    with pytest.raises(SystemExit, match="not on the grid"):
        bench["reconstruct"](record, scans, tmp_path / "rec3", clean=clean)


def test_clean_and_histogram_match_are_refused_together(bench, setup, tmp_path):
    root, _ = setup
    argv = ["--held-out", str(root / "held"), "--train-data", str(root / "held"), "--work", str(tmp_path / "w")]
    argv += ["--autoencoder", f"a={root / 'autoencoder.pt'}", "--clean", str(root / "held"), "--histogram-match"]
    with pytest.raises(SystemExit):
        bench["main"](argv)


def test_decode_z_pad_decodes_as_sample_does_and_is_checked(bench, setup, tmp_path):
    root, ae = setup
    record, _ = bench["load_record"](root / "autoencoder.pt")
    scan = sorted((root / "held").iterdir())[0]
    bench["reconstruct"](record, [scan], tmp_path / "plain")
    bench["reconstruct"](record, [scan], tmp_path / "padded", z_pad=1)
    x = hu_to_model(array_to_tensor(read_volume(scan).array), (-1024.0, 1500.0))[None]
    with torch.no_grad():  # a latent of 4 slices, reflect-padded to 6 for the decoder and cropped back
        want = tensor_to_array(model_to_hu(decode(ae, encode_mean(ae, x), z_pad=1)[0].clamp(-1, 1), (-1024.0, 1500.0)))
    padded = np.asarray(nib.load(tmp_path / "padded" / scan.name).dataobj, dtype=np.float32)
    plain = np.asarray(nib.load(tmp_path / "plain" / scan.name).dataobj, dtype=np.float32)
    assert padded.shape == plain.shape == read_volume(scan).array.shape
    np.testing.assert_allclose(padded, want, atol=0.51)
    assert np.abs(padded - plain)[:, :, [0, -1]].max() > 5.0  # the end slices change
    argv = ["--held-out", str(root / "held"), "--train-data", str(root / "held"), "--work", str(tmp_path / "w")]
    argv += ["--autoencoder", f"a={root / 'autoencoder.pt'}", "--decode-z-pad", "-1"]
    with pytest.raises(SystemExit):
        bench["main"](argv)
