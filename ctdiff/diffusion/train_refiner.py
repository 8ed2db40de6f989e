"""Train a residual refiner for a latent diffusion checkpoint and write a copy of it that uses it.

The refiner (:mod:`ctdiff.model.refiner`) is a small pixel-space diffusion model, conditioned on
the decoder's noise-free estimate of a volume, that draws what the latent decoder drops: the noise
and the fine structure. This command encodes and decodes every volume of ``--data`` through the
autoencoder the checkpoint carries (decoded whole, as sampling decodes, and floored at air), and
trains the refiner by rectified flow on the residuals: random in-plane crops (``--crop``) of the
full depth, so the volume's first and last slices are seen where they are. ``--out`` is the
checkpoint with the refiner's EMA weights (fp16) added; ``ctdiff sample`` and the app's Generate
form then refine every decoded sample with ``--refine-steps`` (default: the refiner's
``--sample-steps``) Euler steps, in place of the noise model (``ctdiff sample --no-noise``: neither).

Progress is saved every ``--checkpoint-every`` steps to ``OUT.refining.pt``; ``--resume`` continues
from it, and Ctrl-C or SIGTERM saves it. The input is never changed; ``--out`` must be a new file
unless ``--force``, which replaces only a ctdiff model file.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from ctdiff.errors import ConfigError, InputError

STATE_FORMAT = "ctdiff-refiner-training-1"
STATE_SUFFIX = ".refining.pt"

EXAMPLES = """\
  python -m ctdiff train-refiner --model runs/latent/best-tuned.pt --data data/phantom-128 \\
      --out runs/latent/best-refined.pt --steps 4000
  python -m ctdiff train-refiner --model runs/latent/best-tuned.pt --data data/phantom-128 \\
      --out runs/latent/best-refined.pt --steps 4000 --resume      # after Ctrl-C or a stop
  python -m ctdiff sample --checkpoint runs/latent/best-refined.pt --n 4 --out samples/refined
"""


def state_path(out: str | Path) -> Path:
    """Where an unfinished refiner training of ``out`` keeps its progress."""
    return Path(f"{out}{STATE_SUFFIX}")


@torch.no_grad()
def decoded_estimates(record: dict[str, Any], volumes: list[torch.Tensor]) -> torch.Tensor:
    """The autoencoder's noise-free estimates of ``volumes`` ((1, D, H, W) each, model units): encoded
    (posterior mean) and decoded whole, floored at air, as sampling decodes them: ``(N, 1, D, H, W)``."""
    from ctdiff.model.autoencoder import air_floor, build_autoencoder, reconstruct

    ae, cfg = build_autoencoder(record["config"])
    ae.load_state_dict({k: v.float() for k, v in record["state"].items()})
    ae.eval().requires_grad_(False)
    out = [air_floor(reconstruct(ae, v[None].float(), cfg.downsampling, None), cfg.hu_window)[0] for v in volumes]
    return torch.stack(out)


def random_crops(
    x: torch.Tensor, c: torch.Tensor, n: int, crop: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random full-depth crops of ``crop`` x ``crop`` voxels in-plane from random volumes, each
    flipped left-right at random (the same crop of ``x`` and of ``c``)."""
    xs, cs = [], []
    h, w = x.shape[-2:]
    for _ in range(n):
        i = int(torch.randint(x.shape[0], (1,), generator=gen))
        y0 = int(torch.randint(h - crop + 1, (1,), generator=gen))
        x0 = int(torch.randint(w - crop + 1, (1,), generator=gen))
        a = x[i, :, :, y0 : y0 + crop, x0 : x0 + crop]
        b = c[i, :, :, y0 : y0 + crop, x0 : x0 + crop]
        if float(torch.rand((), generator=gen)) < 0.5:
            a, b = a.flip(-1), b.flip(-1)
        xs.append(a)
        cs.append(b)
    return torch.stack(xs), torch.stack(cs)


def _check_sizes(shape: tuple[int, ...], crop: int, arch, where: str) -> None:
    d, h, w = shape
    mz, my, mx = arch.multiple
    if d % mz:
        raise InputError(f"volumes of {d} slices do not divide by the refiner's {mz} along z", where)
    if crop > min(h, w):
        raise ConfigError(f"--crop {crop} is larger than the volumes' {h} x {w} in-plane")
    if crop % my or crop % mx:
        raise ConfigError(f"--crop {crop} must be a multiple of {max(my, mx)} (the refiner's downsampling)")
    if h % my or w % mx:
        raise InputError(f"volumes of {h} x {w} in-plane do not divide by the refiner's {my}", where)


def train_refiner(
    model: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    steps: int = 4000,
    channels: tuple[int, ...] = (32, 40, 48),
    crop: int = 64,
    batch_size: int = 2,
    lr: float = 5e-4,
    ema: float = 0.999,
    warmup: int = 100,
    sample_steps: int = 8,
    seed: int = 0,
    checkpoint_every: int = 100,
    resume: bool = False,
    force: bool = False,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Write ``out``: the latent checkpoint ``model`` with a refiner trained on ``data``; returns a summary."""
    from ctdiff.config import DataConfig
    from ctdiff.data.dataset import dataset_files, load_cases
    from ctdiff.diffusion.fit_noise import check_new_model_file, load_model_file
    from ctdiff.diffusion.resumable import open_state, save_state
    from ctdiff.interrupt import sigterm_saves
    from ctdiff.model import refiner as rf
    from ctdiff.model.autoencoder import sha256_file

    model, out = Path(model), Path(out)
    if resume and force:
        raise ConfigError("--resume and --force contradict each other")
    check_new_model_file(model, out, force)
    sp = state_path(out)
    kind, ckpt, record = load_model_file(model)
    if kind != "checkpoint":
        raise InputError("is an autoencoder file; train the refiner for a latent diffusion checkpoint", model)
    model_sha = sha256_file(model)
    saved = open_state(sp, STATE_FORMAT, model_sha, model, "refiner training", resume, force)
    if saved is not None:
        s = saved["settings"]
        channels, crop, batch_size, lr, ema, warmup, seed = (
            tuple(s["arch"]["channels"]),
            s["crop"],
            s["batch_size"],
            s["lr"],
            s["ema"],
            s["warmup"],
            s["seed"],
        )
        sample_steps = s["sample_steps"]
    arch = rf.RefinerArch(channels=tuple(int(c) for c in channels))
    files = dataset_files(data)
    if not files:
        raise InputError("no volumes found", data)
    window = record["config"]["hu_window"]
    volumes = load_cases(files, DataConfig(hu_window=window)).tensors
    _check_sizes(tuple(int(s) for s in volumes[0].shape[1:]), crop, arch, files[0])
    if progress:
        print(f"train-refiner: encoding and decoding {len(volumes)} volume(s)", file=sys.stderr)
    x = torch.stack(volumes).float()
    c = decoded_estimates(record, volumes)
    scale = rf.residual_scale(x, c, arch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the same initial weights for the same seed
        net, avg = rf.build_net(arch), rf.build_net(arch)
    avg.load_state_dict(net.state_dict())
    avg.requires_grad_(False)
    # on the device before the optimizer: a resumed optimizer state is loaded onto its parameters' device
    dev = torch.device(device)
    net.to(dev)
    avg.to(dev)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.01)
    step, history, seconds = 0, [], 0.0
    if saved is not None:
        net.load_state_dict(saved["net"])
        avg.load_state_dict(saved["ema"])
        opt.load_state_dict(saved["opt"])
        step, history, seconds = int(saved["step"]), list(saved["history"]), float(saved["seconds"])
    settings = {
        "arch": arch.to_dict(),
        "crop": crop,
        "batch_size": batch_size,
        "lr": lr,
        "ema": ema,
        "warmup": warmup,
        "seed": seed,
        "sample_steps": sample_steps,
    }

    def save() -> None:
        save_state(
            sp,
            {
                "format": STATE_FORMAT,
                "model": str(model),
                "model_sha256": model_sha,
                "settings": settings,
                "net": net.state_dict(),
                "ema": avg.state_dict(),
                "opt": opt.state_dict(),
                "step": step,
                "history": history,
                "seconds": seconds,
            },
        )

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=steps, initial=min(step, steps), desc="train-refiner", unit="step", dynamic_ncols=True)
    net.train()
    try:
        with sigterm_saves():
            while step < steps:
                started = time.perf_counter()
                # the crops, timesteps and noise: a pure function of (seed, step), so a resumed run
                # repeats the step it continues
                gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
                xb, cb = random_crops(x, c, batch_size, crop, gen)
                for g in opt.param_groups:
                    g["lr"] = lr * min(1.0, (step + 1) / max(warmup, 1))
                loss = rf.flow_loss(net, xb.to(dev), cb.to(dev), scale.to(dev), arch, gen)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                opt.step()
                with torch.no_grad():
                    for pa, pn in zip(avg.parameters(), net.parameters()):
                        pa.lerp_(pn, 1.0 - ema)
                step += 1
                seconds += time.perf_counter() - started
                history.append({"step": step, "loss": float(loss.detach())})
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{history[-1]['loss']:.3f}")
                if step % checkpoint_every == 0:
                    save()
    except KeyboardInterrupt:
        save()
        if bar is not None:
            bar.close()
            bar = None
        print(
            f"\ninterrupted at step {step}; resume with: python -m ctdiff train-refiner --model {model} "
            f"--data {data} --out {out} --steps {steps} --resume",
            file=sys.stderr,
        )
        raise
    finally:
        if bar is not None:
            bar.close()
    save()
    from ctdiff.atomic import atomic_path

    training = {
        "steps": step,
        "seconds": round(seconds, 1),
        **{k: v for k, v in settings.items() if k not in ("arch", "sample_steps")},
        "data": [str(f) for f in files],
        "from_sha256": model_sha,
        "final_loss_mean_100": float(sum(h["loss"] for h in history[-100:]) / max(1, len(history[-100:]))),
    }
    rec = {
        "format": rf.FORMAT,
        "arch": arch.to_dict(),
        "state": {k: v.detach().cpu().half() for k, v in avg.state_dict().items()},
        "scale": [float(v) for v in scale],
        "steps": int(sample_steps),
        "training": training,
    }
    new = {**ckpt, "space": {**ckpt["space"], "refiner": rec}}
    with atomic_path(out, force=True) as tmp:
        torch.save(new, tmp)
    _write_history(Path(f"{out}.history.csv"), history)
    sp.unlink()
    return {k: v for k, v in training.items() if k != "data"}


def _write_history(path: Path, history: list[dict[str, float]]) -> None:
    from ctdiff.atomic import write_text

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(("step", "loss"))
    for r in history:
        w.writerow([r["step"], f"{r['loss']:.6g}"])
    write_text(path, buf.getvalue())


def add_arguments(parser) -> None:
    from ctdiff.distributed import add_device_arguments

    parser.add_argument("--model", required=True, help="a latent diffusion checkpoint (e.g. a demo model.pt)")
    parser.add_argument("--data", required=True, help="the training volumes, at the size you sample")
    parser.add_argument("--out", required=True, help="the new checkpoint file (the input is never changed)")
    parser.add_argument("--steps", type=int, default=4000, help="training steps (default 4000)")
    parser.add_argument(
        "--channels", type=int, nargs="+", default=[32, 40, 48], help="U-Net channels per level (default 32 40 48)"
    )
    parser.add_argument("--crop", type=int, default=64, help="in-plane crop side in voxels (default 64)")
    parser.add_argument("--batch-size", type=int, default=2, help="crops per step (default 2)")
    parser.add_argument("--lr", type=float, default=5e-4, help="AdamW learning rate (default 5e-4)")
    parser.add_argument("--ema", type=float, default=0.999, help="EMA decay of the saved weights (default 0.999)")
    parser.add_argument(
        "--sample-steps", type=int, default=8, help="Euler steps the refiner takes when sampling (default 8)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the crops, timesteps and noise")
    parser.add_argument("--checkpoint-every", type=int, default=100, help="save OUT.refining.pt every N steps")
    parser.add_argument("--resume", action="store_true", help="continue from OUT.refining.pt")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --out (never the input)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_device_arguments(parser)


def run(args) -> int:
    from ctdiff import validate
    from ctdiff.distributed import resolve_device

    if validate.threads(args.threads):
        torch.set_num_threads(args.threads)
    steps = validate.integer(args.steps, "--steps", low=1, high=10_000_000)
    every = validate.integer(args.checkpoint_every, "--checkpoint-every", low=1, high=10_000_000)
    crop = validate.integer(args.crop, "--crop", low=4, high=100_000)
    batch = validate.integer(args.batch_size, "--batch-size", low=1, high=4096)
    sample_steps = validate.integer(args.sample_steps, "--sample-steps", low=1, high=10_000)
    channels = [validate.integer(c, "--channels", low=8, high=4096) for c in args.channels]
    if any(c % 8 for c in channels):
        raise ConfigError(f"--channels must be multiples of 8 (GroupNorm of 8 groups), got {channels}")
    validate.seed(args.seed)
    lr = validate.number(args.lr, "--lr", low=0.0, low_open=True)
    ema = validate.number(args.ema, "--ema", low=0.0, high=0.99999)
    summary = train_refiner(
        args.model,
        args.data,
        args.out,
        steps=steps,
        channels=tuple(channels),
        crop=crop,
        batch_size=batch,
        lr=lr,
        ema=ema,
        sample_steps=sample_steps,
        seed=args.seed,
        checkpoint_every=every,
        resume=args.resume,
        force=args.force,
        device=str(resolve_device(validate.device(args.device))),
        progress=not args.no_progress,
    )
    print(json.dumps(summary))
    print(f"wrote {args.out}: python -m ctdiff sample --checkpoint {args.out} --n 4 --out SAMPLES", file=sys.stderr)
    return 0
