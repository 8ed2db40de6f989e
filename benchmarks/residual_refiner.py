#!/usr/bin/env python
"""Prototype (issue 20): a conditional diffusion refiner that generates what the latent decoder loses.

The demo's latent samples sit at their autoencoder's ceiling: the decoder's reconstructions of the
held-out phantoms, with the noise model's noise, are as far outside the phantoms' radiomics balls as
the samples are (docs/generator.md). This tries a second, pixel-space stage on top of the decoder,
the residual diffusion of SRDiff (Li et al. 2022) and of "diffusion decoders": a small U-Net learns
p(x - c | c), where c is the decoder's noise-free estimate of a volume (encode, decode, floored at
air) and x the volume itself, by rectified flow on the residual scaled to unit SD. Sampling draws
the residual with a few Euler steps from noise, conditioned on a decoded latent sample, and adds it:
the refiner then makes the noise and the fine structure itself, in place of the noise model.

    # 1. pairs: the 28 training phantoms and the demo autoencoder's estimates of them
    python benchmarks/residual_refiner.py pairs --data /work/data/ph128-train \
        --model ctdiff_app/demo/assets/model.pt --out /work/exp/refiner/pairs.pt
    # 2. train for a wall-clock budget (resumable: run the same command again)
    python benchmarks/residual_refiner.py train --pairs /work/exp/refiner/pairs.pt \
        --out /work/exp/refiner/run --minutes 50
    # 3. refine decoded estimates (ctdiff sample --no-noise output, or reconstructions)
    python benchmarks/residual_refiner.py refine --run /work/exp/refiner/run --input DIR --out DIR --steps 8

Written by hand: MONAI and diffusers have no conditional residual refiner; the U-Net is ctdiff's
(2 input channels: x_t and c), the flow is the same x_t = (1 - t) x_0 + t noise as ``diffusion.kind:
rflow``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ctdiff.data.io import find_cases, read_volume, write_nifti  # noqa: E402
from ctdiff.data.tensors import array_to_tensor, hu_to_model, model_to_hu, tensor_to_array  # noqa: E402
from ctdiff.data.volume import Volume  # noqa: E402
from ctdiff.model.unet import UNet3D  # noqa: E402
from ctdiff.model.wavelet import bands, dwt, idwt  # noqa: E402


def floor_air(c: torch.Tensor, window) -> torch.Tensor:
    from ctdiff.model.autoencoder import air_floor

    return air_floor(c, window)


def cmd_pairs(a) -> None:
    from ctdiff.model.autoencoder import autoencoder_record, build_autoencoder, reconstruct

    rec = autoencoder_record(a.model)
    ae, cfg = build_autoencoder(rec["config"])
    ae.load_state_dict(rec["state"])
    ae.eval().requires_grad_(False)
    window = [float(v) for v in cfg.hu_window]
    xs, cs, names = [], [], []
    for path in find_cases(a.data):
        vol = read_volume(path)
        x = hu_to_model(array_to_tensor(vol.array.astype(np.float32)), window)[None]  # (1, 1, D, H, W)
        with torch.no_grad():
            c = floor_air(reconstruct(ae, x, cfg.downsampling, None), window)
        xs.append(x[0])
        cs.append(c[0])
        names.append(path.name)
        print(f"{path.name}: L1 {float((x - c).abs().mean()) * (window[1] - window[0]) / 2:.1f} HU", flush=True)
    x, c = torch.stack(xs), torch.stack(cs)
    sd = float((x - c).std())
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"x": x, "c": c, "names": names, "window": window, "residual_sd": sd, "model": str(a.model)}, a.out)
    print(f"{len(names)} pairs, residual SD {sd:.4f} model units ({sd * (window[1] - window[0]) / 2:.1f} HU)")


def build_net(arch: dict) -> UNet3D:
    k = bands(arch["levels"]) if arch.get("levels") else 1
    return UNet3D(
        channels=arch["channels"],
        block_kinds=arch["block_kinds"],
        attention=[False] * len(arch["channels"]),
        mid_attention=False,
        res_blocks=arch["res_blocks"],
        norm_groups=8,
        in_channels=2 * k,
        out_channels=k,
    )


def to_space(v: torch.Tensor, arch: dict) -> torch.Tensor:
    return dwt(v, arch["levels"]) if arch.get("levels") else v


def from_space(v: torch.Tensor, arch: dict) -> torch.Tensor:
    return idwt(v, arch["levels"]) if arch.get("levels") else v


def crop_batch(x, c, n, size, gen):
    """n random (full-depth, size x size in-plane) crops of random pairs, flipped in x at random."""
    out_x, out_c = [], []
    _, _, d, h, w = x.shape
    for _ in range(n):
        i = int(torch.randint(0, x.shape[0], (1,), generator=gen))
        y0 = int(torch.randint(0, h - size + 1, (1,), generator=gen))
        x0 = int(torch.randint(0, w - size + 1, (1,), generator=gen))
        xx, cc = x[i, :, :, y0 : y0 + size, x0 : x0 + size], c[i, :, :, y0 : y0 + size, x0 : x0 + size]
        if float(torch.rand(1, generator=gen)) < 0.5:
            xx, cc = xx.flip(-1), cc.flip(-1)
        out_x.append(xx)
        out_c.append(cc)
    return torch.stack(out_x), torch.stack(out_c)


def cmd_train(a) -> None:
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    pairs = torch.load(a.pairs, weights_only=False)
    x, c = pairs["x"], pairs["c"]
    arch = {"channels": a.channels, "block_kinds": a.block_kinds, "res_blocks": a.res_blocks, "levels": a.levels}
    # the residual's SD per channel of the space (one for pixels; per sub-band for wavelets)
    sd = to_space(x - c, arch).transpose(0, 1).flatten(1).std(dim=1)[None, :, None, None, None]
    net = build_net(arch)
    ema = build_net(arch)
    opt = torch.optim.AdamW(net.parameters(), lr=a.lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(a.seed)
    step, elapsed = 0, 0.0
    ckpt_path = out / "refiner.pt"
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, weights_only=False)
        net.load_state_dict(ck["net"])
        ema.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["opt"])
        gen.set_state(ck["gen"])
        step, elapsed, arch = ck["step"], ck["elapsed"], ck["arch"]
        print(f"resumed at step {step} ({elapsed / 60:.1f} min)", flush=True)
    else:
        ema.load_state_dict(net.state_dict())
    ema.requires_grad_(False)
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))

    def save():
        state = {
            "net": net.state_dict(),
            "ema": ema.state_dict(),
            "opt": opt.state_dict(),
            "gen": gen.get_state(),
            "step": step,
            "elapsed": elapsed,
            "arch": arch,
            "residual_sd": sd,
            "window": pairs["window"],
            "pairs": str(a.pairs),
            "crop": a.crop,
            "batch": a.batch,
            "lr": a.lr,
        }
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(ckpt_path)

    log = open(out / "history.csv", "a")
    budget = a.minutes * 60
    losses = []
    while elapsed < budget and not stop["now"]:
        t0 = time.perf_counter()
        xb, cb = crop_batch(x, c, a.batch, a.crop, gen)
        r = to_space(xb - cb, arch) / sd
        cb = to_space(cb, arch)
        t = torch.rand(a.batch, generator=gen)
        noise = torch.randn(r.shape, generator=gen)
        tt = t[:, None, None, None, None]
        xt = (1 - tt) * r + tt * noise
        lr = a.lr * min(1.0, (step + 1) / 100)
        for g in opt.param_groups:
            g["lr"] = lr
        pred = net(torch.cat([xt, cb], 1), t * 1000)
        loss = F.mse_loss(pred, r - noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            for pe, pn in zip(ema.parameters(), net.parameters()):
                pe.lerp_(pn, 1 - a.ema)
        step += 1
        elapsed += time.perf_counter() - t0
        losses.append(float(loss.detach()))
        if step % 50 == 0:
            m = float(np.mean(losses[-50:]))
            print(f"step {step} loss {m:.4f} {elapsed / 60:.1f} min", flush=True)
            log.write(f"{step},{m:.5f},{elapsed:.1f}\n")
            log.flush()
        if step % a.save_every == 0:
            save()
    save()
    print(f"saved step {step} ({elapsed / 60:.1f} min)")


@torch.no_grad()
def refine(ema, c, sd, steps, seed, arch):
    gen = torch.Generator().manual_seed(seed)
    cw = to_space(c, arch)
    r = torch.randn((c.shape[0], sd.shape[1], *cw.shape[2:]), generator=gen)
    for i in range(steps):
        t = 1.0 - i / steps
        v = ema(torch.cat([r, cw], 1), torch.full((c.shape[0],), t * 1000))
        r = r + v / steps
    return c + from_space(r * sd, arch)


def cmd_refine(a) -> None:
    torch.set_num_threads(a.threads)
    ck = torch.load(Path(a.run) / "refiner.pt", weights_only=False)
    ema = build_net(ck["arch"])
    ema.load_state_dict(ck["ema" if not a.raw else "net"])
    ema.eval()
    window = ck["window"]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for k, path in enumerate(find_cases(a.input)):
        vol = read_volume(path)
        c = floor_air(hu_to_model(array_to_tensor(vol.array.astype(np.float32)), window)[None], window)
        t0 = time.perf_counter()
        y = refine(ema, c, ck["residual_sd"], a.steps, a.seed + k, ck["arch"])
        sec = time.perf_counter() - t0
        arr = tensor_to_array(model_to_hu(y[0], window))
        name = path.name if path.name.endswith(".nii.gz") else path.stem + ".nii.gz"
        write_nifti(Volume(arr.astype(np.float32), vol.affine, {}), out / name)
        print(f"{name}: {sec:.1f} s", flush=True)
    (out / "refiner.json").write_text(
        json.dumps({"run": str(a.run), "step": ck["step"], "steps": a.steps, "seed": a.seed, "input": str(a.input)})
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("pairs")
    s.add_argument("--data", required=True)
    s.add_argument("--model", required=True)
    s.add_argument("--out", required=True)
    s = sub.add_parser("train")
    s.add_argument("--pairs", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--minutes", type=float, default=50)
    s.add_argument("--channels", type=int, nargs="+", default=[32, 64, 64])
    s.add_argument("--block-kinds", nargs="+", default=["3d", "3d", "3d"])
    s.add_argument("--res-blocks", type=int, default=1)
    s.add_argument("--levels", type=int, nargs=3, default=[1, 1, 1], help="Haar levels (z y x); 0 0 0: pixels")
    s.add_argument("--crop", type=int, default=64)
    s.add_argument("--batch", type=int, default=2)
    s.add_argument("--lr", type=float, default=5e-4)
    s.add_argument("--ema", type=float, default=0.999)
    s.add_argument("--save-every", type=int, default=100)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--threads", type=int, default=2)
    s = sub.add_parser("refine")
    s.add_argument("--run", required=True)
    s.add_argument("--input", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--steps", type=int, default=8)
    s.add_argument("--seed", type=int, default=1000)
    s.add_argument("--raw", action="store_true", help="the raw weights, not the EMA")
    s.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    {"pairs": cmd_pairs, "train": cmd_train, "refine": cmd_refine}[a.cmd](a)


if __name__ == "__main__":
    main()
