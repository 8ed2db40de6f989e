"""DDP: two CPU processes (gloo) under torchrun train a few steps; ranks stay in sync, only rank 0 writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from ctdiff.data.io import write_nifti
from ctdiff.data.phantom import make_phantom

REPO = Path(__file__).resolve().parents[2]
CONFIG = {
    "name": "ddp",
    "data": {"val_fraction": 0.2},
    "model": {
        "space": "pixel",  # the library default is latent; these tests are about the voxel path
        "channels": [4, 8],
        "block_kinds": ["2d", "3d"],
        "attention": [False, False],
        "norm_groups": 4,
        "res_blocks": 1,
        "mid_attention": False,
    },
    "diffusion": {"kind": "ddpm", "timesteps": 100},
    "train": {
        "epochs": 2,
        "batch_size": 1,
        "lr": 2e-3,
        "warmup_steps": 1,
        "val_timesteps": 2,
        "preview_every": 2,
        "preview_steps": 2,
    },
}
WORKER = textwrap.dedent(
    """
    import faulthandler, json, os, sys
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    # a rank still running after 150 s (a run takes about 10) prints every thread's stack and exits, so
    # a hang fails the test with where it hung instead of the caller's bare timeout (seen 2026-12-05 and
    # 2026-12-08, in teardown after train(); train() now frees DDP and syncs the ranks before it)
    faulthandler.dump_traceback_later(150, exit=True)
    from ctdiff.config import config_from_dict
    from ctdiff.training.train import train

    tmp, data, cfg = Path(sys.argv[1]), sys.argv[2], config_from_dict(json.loads(sys.argv[3]))
    rank = int(os.environ["RANK"])
    # every rank gets its own run dir path: rank 1 must not create or write anything in its one
    out = tmp / ("run" if rank == 0 else f"run_rank{rank}")
    losses = []
    result = train(cfg, data, out, progress=False, on_step=lambda s, loss: losses.append(loss))
    torch.save(result.model.state_dict(), tmp / f"weights_rank{rank}.pt")
    (tmp / f"losses_rank{rank}.json").write_text(json.dumps(losses))
    """
)


def test_two_gloo_processes_stay_in_sync(tmp_path):
    data = tmp_path / "data"
    for i in range(5):  # 4 train cases -> 2 per rank per epoch
        vol, _ = make_phantom(shape=(16, 16, 4), seed=i, noise_hu=10.0)
        write_nifti(vol, data / f"case_{i}.nii.gz")
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(script),
        str(tmp_path),
        str(data),
        json.dumps(CONFIG),
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    w0 = torch.load(tmp_path / "weights_rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "weights_rank1.pt", weights_only=True)
    for name, value in w0.items():
        torch.testing.assert_close(w1[name], value, rtol=0, atol=1e-7, msg=name)
    l0 = json.loads((tmp_path / "losses_rank0.json").read_text())
    l1 = json.loads((tmp_path / "losses_rank1.json").read_text())
    assert len(l0) == len(l1) == 4  # 2 epochs x 2 steps
    assert l0 != l1  # the ranks saw different cases and noise, yet their weights agree

    run = tmp_path / "run"
    assert not (tmp_path / "run_rank1").exists()
    for name in (
        "config.yaml",
        "split.json",
        "history.csv",
        "loss.png",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
        "previews/epoch_0002.png",
    ):
        assert (run / name).is_file(), name
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["world_size"] == 2 and ckpt["step"] == 4
    for name, value in w0.items():
        torch.testing.assert_close(ckpt["model"][name], value, rtol=0, atol=0)
