"""Fine-tune an autoencoder's decoder on whole volumes, its encoder frozen (a latent model keeps working).

``train-autoencoder`` trains on random patches (16x64x64 voxels by default), and sampling decodes a
whole volume at once. The decoder's GroupNorm layers normalise over whatever they are given, so a
decoder that has only seen patches shifts intensities when it decodes a whole volume: the demo's
coder put the air of 12 held-out phantoms 52 HU too dark and fat 25 HU too bright (decoded in
patch-sized windows instead, the air was right but soft tissue 9 HU too dark). This command trains
the decoder (``post_quant_conv`` and ``decoder`` of MONAI's ``AutoencoderKL``) on whole volumes of
``--data`` with the autoencoder's own loss, L1 + ``--adv-weight`` x the patch-adversarial loss,
while the encoder stays as it was. The latents do not change, so a latent diffusion checkpoint
trained on them, and its latent scale factor, stay valid: only the decoder it carries is replaced
(Stable Diffusion's fine-tuned VAE decoders are made the same way).

``--model`` is an ``autoencoder.pt`` or a latent diffusion checkpoint; ``--out`` is a new file of
the same kind (the input is never changed). Progress is saved every ``--checkpoint-every`` steps to
``OUT.tuning.pt``; ``--resume`` continues from it, and Ctrl-C saves it. The noise model (see
``fit-noise``) was fitted to the old decoder, so it is left out: refit it on the new file.
``--eval DIR`` judges the reconstructions of DIR's volumes (whole, as sampling decodes) before and
after: PSNR, SSIM, L1 and the mean HU error in air, fat and soft tissue.

The adversary starts from the autoencoder's own trained discriminator when its file is found (the
``--model`` itself, or the ``autoencoder.pt`` a checkpoint names, matched by sha256), else from a new
one; ``--discriminator FILE`` starts it from another ``train-autoencoder`` file's discriminator (the
same architecture), e.g. one retrained with the same recipe when the original file is gone.

``--end-weight W`` weights the L1 term W times on the first and last ``--end-slices`` axial slices
(default 2). A decoder given whole volumes errs most at the volume's two ends, where its
convolutions see zero padding: on the demo's held-out phantoms the body's mean absolute error there
was 19 % above the other slices', and those slices carry much of what takes the reconstructions
outside the phantoms' radiomics balls (``benchmarks/decoder_attribution.py``).

A new discriminator has learned nothing about the volumes when the decoder starts to follow it, so it
is first trained alone for ``--disc-warmup`` steps (default 100; 0 for a trained one) on the untouched
decoder's reconstructions of ``--data`` against the volumes themselves, the decoder frozen; then the
tuning starts. Its weights come from ``--seed``. (On the demo model, continued tunings against a new
discriminator moved the samples away from the phantoms in radiomics space, 1.43x a ball's radius
against 1.17x, and one with a warm-up did too, 1.38x: docs/benchmarks.md. The warm-up does not stop
that drift, which comes with the smoother decoder a continued tuning gives.)

``--z-pad N`` tunes the decoder as ``sample.decode_z_pad N`` decodes: the latent reflect-padded by N
slices at each end, the decoded volume cropped back before the loss. A latent checkpoint's default is
its own ``sample.decode_z_pad`` (the demo model's is 2), an autoencoder file's 0; ``--eval`` judges
with the same padding. A decoder tuned on unpadded latents and used on padded ones sees, at the
volume's ends, latent slices it was not trained to take there.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ctdiff.errors import ConfigError, InputError

STATE_FORMAT = "ctdiff-decoder-tuning-1"
STATE_SUFFIX = ".tuning.pt"
NEW_DISC_WARMUP = 100  # discriminator-only steps that start a new discriminator (--disc-warmup)
# mean HU error of the reconstruction over voxels of the original in these HU ranges
TISSUES = {"air": (-1100.0, -900.0), "fat": (-150.0, -50.0), "soft_tissue": (0.0, 100.0)}

EXAMPLES = """\
  python -m ctdiff tune-decoder --model runs/latent/checkpoints/best.pt --data data/phantom-128 \\
      --out runs/latent/best-tuned.pt --steps 300 --eval data/phantom-128-held
  python -m ctdiff tune-decoder --model runs/latent/checkpoints/best.pt --data data/phantom-128 \\
      --out runs/latent/best-tuned.pt --resume          # after Ctrl-C or a stop
  python -m ctdiff fit-noise --model runs/latent/best-tuned.pt --data data/phantom-128 --samples 8 \\
      --out runs/latent/best-tuned-noise.pt             # the noise model for the new decoder
"""


def state_path(out: str | Path) -> Path:
    """Where an unfinished tuning of ``out`` keeps its progress."""
    return Path(f"{out}{STATE_SUFFIX}")


def decoder_parameters(ae) -> list[torch.nn.Parameter]:
    """What is trained: everything after the latent (MONAI AutoencoderKL's post_quant_conv and decoder)."""
    return [*ae.post_quant_conv.parameters(), *ae.decoder.parameters()]


@torch.no_grad()
def tissue_bias(ae, cfg, volumes: Sequence[torch.Tensor], z_pad: int = 0) -> dict[str, float]:
    """Mean HU error of whole-volume reconstructions (posterior mean; the latent reflect-padded by
    ``z_pad`` slices for decoding) per range of :data:`TISSUES`."""
    from ctdiff.data.tensors import model_to_hu
    from ctdiff.model.autoencoder import coder_device, decode

    ae.eval()
    sums = {k: 0.0 for k in TISSUES}
    counts = {k: 0 for k in TISSUES}
    dev = coder_device(ae)
    for vol in volumes:
        x = vol[None].float()
        with torch.no_grad():  # the coder on its device (CUDA while tuning there), the volumes on CPU
            y = decode(ae, ae.encode(x.to(dev))[0], None, z_pad).clamp(-1.0, 1.0).cpu()
        hx, hy = model_to_hu(x, cfg.hu_window), model_to_hu(y, cfg.hu_window)
        for name, (lo, hi) in TISSUES.items():
            m = (hx >= lo) & (hx <= hi)
            sums[name] += float((hy - hx)[m].sum())
            counts[name] += int(m.sum())
    return {f"{k}_bias_hu": (sums[k] / counts[k] if counts[k] else float("nan")) for k in TISSUES}


def _judge(ae, cfg, volumes: Sequence[torch.Tensor], z_pad: int = 0) -> dict[str, Any]:
    from ctdiff.model.autoencoder import evaluate

    result = evaluate(ae, cfg, volumes, tile=None, z_pad=z_pad)  # whole volumes, as sampling decodes them
    keys = ("n", "psnr_db", "ssim", "l1_hu", "noise_sd_hu", "noise_sd_recon_hu", "nps_distance")
    return {**{k: result[k] for k in keys}, **tissue_bias(ae, cfg, volumes, z_pad)}


def _judge_said(ae, cfg, volumes, when: str, say: bool, z_pad: int = 0) -> dict[str, Any] | None:
    """:func:`_judge` of the --eval volumes (None without them), announced on stderr: it takes a while."""
    if volumes is None:
        return None
    if say:
        print(f"tune-decoder: judging {len(volumes)} held-out volume(s) {when}", file=sys.stderr)
    return _judge(ae, cfg, volumes, z_pad)


def _discriminator(
    kind: str, ckpt: dict[str, Any], record: dict[str, Any], cfg, disc_file: Path | None = None
) -> tuple[torch.nn.Module, str]:
    """``disc_file``'s discriminator when given (an autoencoder.pt), else the autoencoder's own when it can
    be found (the file, or the file a checkpoint names with the same sha256), else a new one; with where
    it came from."""
    from ctdiff.model.autoencoder import build_discriminator, load_autoencoder_file, sha256_file

    disc = build_discriminator(cfg)
    if disc_file is not None:
        other = load_autoencoder_file(disc_file)
        if "discriminator" not in other:
            raise InputError("has no discriminator (not a train-autoencoder file)", disc_file)
        try:
            disc.load_state_dict(other["discriminator"])
        except RuntimeError:
            raise InputError(
                "its discriminator does not fit this autoencoder's (different channels or layers)", disc_file
            ) from None
        return disc, f"from {disc_file}"
    if kind == "autoencoder":
        disc.load_state_dict(ckpt["discriminator"])
        return disc, "the autoencoder's"
    if record.get("from_checkpoint"):
        return disc, "new (the autoencoder came from a diffusion checkpoint, which keeps no discriminator)"
    path = Path(str(record.get("path") or ""))
    if path.is_file() and record.get("sha256") and sha256_file(path) == record["sha256"]:
        disc.load_state_dict(load_autoencoder_file(path)["discriminator"])
        return disc, "the autoencoder's (the file the checkpoint names)"
    return disc, "new (the autoencoder file the checkpoint names is not here)"


def _check_shapes(volumes: Sequence[torch.Tensor], paths: Sequence[str], factor: int, disc_layers: int) -> None:
    shape = tuple(int(s) for s in volumes[0].shape[1:])
    if any(s % factor for s in shape):
        raise InputError(
            f"volumes of (z, y, x) {shape} do not divide by the autoencoder's downsampling {factor}; "
            f"prepare them at the size you sample (python -m ctdiff prepare --shape)",
            paths[0],
        )
    if min(shape) < 2 ** (disc_layers + 2):
        raise InputError(f"volumes of (z, y, x) {shape} are too small for the discriminator", paths[0])


def _discriminator_step(disc, opt_d, adv, adv_weight: float, recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """One step of the discriminator (least-squares patch-adversarial loss, weighted as in the
    autoencoder's training): ``recon`` fake, ``x`` real. Returns the loss, detached."""
    fake = adv(disc(recon.contiguous().float())[-1], target_is_real=False, for_discriminator=True)
    real = adv(disc(x.contiguous().float())[-1], target_is_real=True, for_discriminator=True)
    loss_d = adv_weight * 0.5 * (fake + real)
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    return loss_d.detach()


def _warm_up_discriminator(
    ae, disc, opt_d, adv, adv_weight: float, volumes, n: int, seed: int, z_pad: int, dev, progress: bool
) -> list[float]:
    """Train ``disc`` alone for ``n`` steps: one volume of ``volumes`` per step against the frozen
    decoder's reconstruction of it (a posterior sample, decoded as the tuning decodes), with the
    tuning's discriminator loss. A pure function of ``seed`` (its own stream, apart from the tuning's).
    Returns the loss at the first and the last step."""
    from ctdiff.model.autoencoder import decode

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, desc="tune-decoder: discriminator warm-up", unit="step", dynamic_ncols=True)
    losses = []
    try:
        for k in range(n):
            g = torch.Generator().manual_seed(seed * 1_000_003 + 900_000 + k)
            x = volumes[int(torch.randint(len(volumes), (1,), generator=g))][None].to(dev)
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                torch.manual_seed(seed * 1_000_003 + 1_400_000 + k)
                recon = decode(ae, ae.sampling(*ae.encode(x)), None, z_pad)
            losses.append(float(_discriminator_step(disc, opt_d, adv, adv_weight, recon, x)))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return [losses[0], losses[-1]]


def slice_weights(depth: int, end_slices: int, end_weight: float) -> torch.Tensor:
    """Per-slice L1 weights (``(1, 1, depth, 1, 1)``): ``end_weight`` on the first and last
    ``end_slices`` slices, 1 elsewhere, scaled to mean 1 so the L1 term keeps its size."""
    w = torch.ones(depth)
    n = min(end_slices, depth // 2)
    if n > 0:
        w[:n] = end_weight
        w[depth - n :] = end_weight
    return (w / w.mean()).view(1, 1, depth, 1, 1)


def tune_decoder(
    model: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    steps: int = 300,
    lr: float = 1e-4,
    adv_weight: float = 0.05,
    end_weight: float = 1.0,
    end_slices: int = 2,
    z_pad: int | None = None,
    discriminator: str | Path | None = None,
    disc_warmup: int | None = None,
    seed: int = 0,
    checkpoint_every: int = 25,
    eval_data: str | Path | None = None,
    resume: bool = False,
    force: bool = False,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Write ``out``: ``model`` with its decoder fine-tuned on whole volumes of ``data``; returns a summary.

    ``z_pad``: latent slices reflect-padded at each end for decoding (None: a latent checkpoint's
    ``sample.decode_z_pad``, an autoencoder file's 0). ``disc_warmup``: discriminator-only steps before
    the tuning (None: :data:`NEW_DISC_WARMUP` for a new discriminator, 0 for a trained one)."""
    from monai.losses import PatchAdversarialLoss

    from ctdiff.atomic import atomic_path
    from ctdiff.config import DataConfig
    from ctdiff.data.dataset import dataset_files, load_cases
    from ctdiff.diffusion.fit_noise import check_new_model_file, load_model_file
    from ctdiff.diffusion.resumable import open_state, save_state
    from ctdiff.interrupt import sigterm_saves
    from ctdiff.model.autoencoder import build_autoencoder, decode_padded, sha256_file

    model, out = Path(model), Path(out)
    if resume and force:
        raise ConfigError("--resume and --force contradict each other")
    check_new_model_file(model, out, force)
    sp = state_path(out)
    kind, ckpt, record = load_model_file(model)
    model_sha = sha256_file(model)
    saved = open_state(sp, STATE_FORMAT, model_sha, model, "tuning", resume, force)
    if saved is not None:
        lr, adv_weight, seed = saved["lr"], saved["adv_weight"], saved["seed"]
        # states written before --end-weight existed tuned without it
        end_weight, end_slices = float(saved.get("end_weight", 1.0)), int(saved.get("end_slices", 2))
        z_pad = int(saved.get("z_pad", 0))  # states written before --z-pad existed tuned without it
    elif z_pad is None:
        z_pad = (
            int(((ckpt.get("config") or {}).get("sample") or {}).get("decode_z_pad", 0)) if kind == "checkpoint" else 0
        )
    ae, cfg = build_autoencoder(record["config"])
    ae.load_state_dict(record["state"])
    files = dataset_files(data)
    if not files:
        raise InputError("no volumes found", data)
    volumes = load_cases(files, DataConfig(hu_window=cfg.hu_window)).tensors
    _check_shapes(volumes, files, cfg.downsampling, cfg.disc_layers)
    latent_depth = int(volumes[0].shape[1]) // cfg.downsampling
    if not 0 <= z_pad < latent_depth:  # reflect padding takes at most depth - 1 slices
        raise ConfigError(
            f"--z-pad must be from 0 to {latent_depth - 1} (the volumes' latents have {latent_depth} slices), got {z_pad}"
        )
    held = None
    if eval_data is not None:
        held_files = dataset_files(eval_data)
        if not held_files:
            raise InputError("no volumes found", eval_data)
        held = load_cases(held_files, DataConfig(hu_window=cfg.hu_window)).tensors
    with torch.random.fork_rng(devices=[]):  # a new discriminator's weights: from the seed (reproducible)
        torch.manual_seed(seed * 1_000_003 + 1_900_000)
        disc, disc_source = _discriminator(
            kind, ckpt, record, cfg, None if discriminator is None else Path(discriminator)
        )
    if disc_warmup is None:
        disc_warmup = NEW_DISC_WARMUP if disc_source.startswith("new") else 0
    if adv_weight == 0:
        disc_source, disc_warmup = "not used (adv_weight 0)", 0
    dev = torch.device(device)
    ae.to(dev).requires_grad_(False)
    params = decoder_parameters(ae)
    for p in params:
        p.requires_grad_(True)
    disc.to(dev)
    opt_g, opt_d = torch.optim.Adam(params, lr=lr), torch.optim.Adam(disc.parameters(), lr=lr)
    adv = PatchAdversarialLoss(criterion="least_squares")
    weights = slice_weights(int(volumes[0].shape[1]), end_slices, end_weight).to(dev)
    step, history = 0, []
    if saved is not None:
        ae.load_state_dict(saved["autoencoder"])
        disc.load_state_dict(saved["discriminator"])
        opt_g.load_state_dict(saved["opt_g"])
        opt_d.load_state_dict(saved["opt_d"])
        step, history = int(saved["step"]), list(saved["history"])
        before = saved.get("before")
        disc_source = saved["discriminator_source"]
        disc_warmup = int(saved.get("disc_warmup", 0))
    else:
        before = _judge_said(ae, cfg, held, "before tuning", progress, z_pad)

    def save() -> None:
        save_state(
            sp,
            {
                "format": STATE_FORMAT,
                "model": str(model),
                "model_sha256": model_sha,
                "lr": lr,
                "adv_weight": adv_weight,
                "end_weight": end_weight,
                "end_slices": end_slices,
                "z_pad": z_pad,
                "seed": seed,
                "autoencoder": ae.state_dict(),
                "discriminator": disc.state_dict(),
                "opt_g": opt_g.state_dict(),
                "opt_d": opt_d.state_dict(),
                "step": step,
                "history": history,
                "before": before,
                "discriminator_source": disc_source,
                "disc_warmup": disc_warmup,
                "disc_warmup_loss": warmup_loss,
            },
        )

    started = time.perf_counter()
    if saved is None and disc_warmup > 0:
        warmup_loss = _warm_up_discriminator(
            ae, disc, opt_d, adv, adv_weight, volumes, disc_warmup, seed, z_pad, dev, progress
        )
        save()  # a resume does not warm up again
    else:
        warmup_loss = saved.get("disc_warmup_loss") if saved is not None else None

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=steps, initial=min(step, steps), desc="tune-decoder", unit="step", dynamic_ncols=True)
    try:
        with sigterm_saves():
            while step < steps:
                # the volume and the posterior sample: a pure function of (seed, step), so a resumed
                # run repeats the one it continues
                g = torch.Generator().manual_seed(seed * 1_000_003 + step)
                i = int(torch.randint(len(volumes), (1,), generator=g))
                x = volumes[i][None].to(dev)
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed * 1_000_003 + step + 500_000)
                    with torch.no_grad():
                        z = ae.sampling(*ae.encode(x))
                ae.train()
                recon = decode_padded(ae, z, None, z_pad)
                # |w r - w x| = w |r - x| for w > 0: the slice-weighted L1 (the plain one at end_weight 1)
                l1 = F.l1_loss(recon.float() * weights, x.float() * weights)
                loss_g, gen_adv, loss_d = l1, torch.zeros(()), torch.zeros(())
                if adv_weight > 0:
                    gen_adv = adv(disc(recon.contiguous().float())[-1], target_is_real=True, for_discriminator=False)
                    loss_g = l1 + adv_weight * gen_adv
                opt_g.zero_grad(set_to_none=True)
                loss_g.backward()
                opt_g.step()
                if adv_weight > 0:
                    loss_d = _discriminator_step(disc, opt_d, adv, adv_weight, recon.detach(), x)
                step += 1
                row = {k: float(v.detach()) for k, v in (("l1", l1), ("gen_adv", gen_adv), ("disc", loss_d))}
                history.append({"step": step, **row})
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(l1=f"{row['l1']:.4f}")
                if step % checkpoint_every == 0:
                    save()
    except KeyboardInterrupt:
        save()
        if bar is not None:
            bar.close()
            bar = None
        print(
            f"\ninterrupted at step {step}; resume with: python -m ctdiff tune-decoder --model {model} "
            f"--data {data} --out {out} --steps {steps} --resume",  # the state keeps lr, weights, seed and z_pad
            file=sys.stderr,
        )
        raise
    finally:
        if bar is not None:
            bar.close()
    save()
    ae.eval().requires_grad_(False)
    after = _judge_said(ae, cfg, held, "after tuning", progress, z_pad)
    tuning = {
        "steps": step,
        "lr": lr,
        "adv_weight": adv_weight,
        "end_weight": end_weight,
        "end_slices": end_slices,
        "z_pad": z_pad,
        "seed": seed,
        "data": [str(f) for f in files],
        "from_sha256": model_sha,
        "discriminator": disc_source,
        "disc_warmup": disc_warmup,
        "disc_warmup_loss": warmup_loss,
        "seconds_this_call": round(time.perf_counter() - started, 1),
        "before": before,
        "after": after,
    }
    state = {k: v.detach().cpu() for k, v in ae.state_dict().items()}
    if kind == "autoencoder":
        new = {k: v for k, v in ckpt.items() if k != "noise_model"}
        new.update({"autoencoder": state, "discriminator": disc.state_dict(), "decoder_tuning": tuning})
    else:
        rec = {**record, "state": state, "noise_model": None, "decoder_tuning": tuning}
        new = {**ckpt, "space": {**ckpt["space"], "autoencoder": rec}}
    with atomic_path(out, force=True) as tmp:
        torch.save(new, tmp)
    _write_history(Path(f"{out}.history.csv"), history)
    sp.unlink()
    return {k: v for k, v in tuning.items() if k != "data"}


def _write_history(path: Path, history: Sequence[dict[str, float]]) -> None:
    from ctdiff.atomic import write_text

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(("step", "l1", "gen_adv", "disc"))
    for r in history:
        w.writerow([r["step"], *(f"{r[k]:.6g}" for k in ("l1", "gen_adv", "disc"))])
    write_text(path, buf.getvalue())


def add_arguments(parser) -> None:
    from ctdiff.distributed import add_device_arguments

    parser.add_argument("--model", required=True, help="an autoencoder.pt or a latent diffusion checkpoint file")
    parser.add_argument("--data", required=True, help="training volumes, at the size you sample (decoded whole)")
    parser.add_argument("--out", required=True, help="the new file (the input is never changed)")
    parser.add_argument("--steps", type=int, default=300, help="training steps, one whole volume each (default 300)")
    parser.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default 1e-4)")
    parser.add_argument(
        "--adv-weight",
        type=float,
        default=0.05,
        help="weight of the patch-adversarial loss (default 0.05; 0 = L1 only)",
    )
    parser.add_argument(
        "--end-weight",
        type=float,
        default=1.0,
        help="weight of the L1 term on the first and last --end-slices slices (default 1: none)",
    )
    parser.add_argument(
        "--end-slices", type=int, default=2, help="how many slices at each end --end-weight weights (default 2)"
    )
    parser.add_argument(
        "--z-pad",
        type=int,
        default=None,
        help="latent slices reflect-padded at each end for decoding, cropped before the loss, as "
        "sample.decode_z_pad decodes (default: a latent checkpoint's sample.decode_z_pad, an autoencoder's 0)",
    )
    parser.add_argument(
        "--discriminator",
        help="an autoencoder.pt whose trained discriminator starts the adversary (default: the model's own "
        "autoencoder file when it is here, else a new discriminator)",
    )
    parser.add_argument(
        "--disc-warmup",
        type=int,
        default=None,
        help=f"discriminator-only steps before the tuning (default: {NEW_DISC_WARMUP} for a new discriminator, "
        "0 for a trained one)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the volume order and posterior samples")
    parser.add_argument("--checkpoint-every", type=int, default=25, help="save OUT.tuning.pt every N steps")
    parser.add_argument("--eval", dest="eval_data", help="held-out volumes judged before and after (optional)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT.tuning.pt")
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
    validate.seed(args.seed)
    lr = validate.number(args.lr, "--lr", low=0.0, low_open=True)
    adv_weight = validate.number(args.adv_weight, "--adv-weight", low=0.0)
    end_weight = validate.number(args.end_weight, "--end-weight", low=0.0, low_open=True, high=1000.0)
    end_slices = validate.integer(args.end_slices, "--end-slices", low=0, high=10_000)
    z_pad = None if args.z_pad is None else validate.integer(args.z_pad, "--z-pad", low=0, high=10_000)
    warmup = (
        None if args.disc_warmup is None else validate.integer(args.disc_warmup, "--disc-warmup", low=0, high=1_000_000)
    )
    summary = tune_decoder(
        args.model,
        args.data,
        args.out,
        steps=steps,
        lr=lr,
        adv_weight=adv_weight,
        end_weight=end_weight,
        end_slices=end_slices,
        z_pad=z_pad,
        discriminator=args.discriminator,
        disc_warmup=warmup,
        seed=args.seed,
        checkpoint_every=every,
        eval_data=args.eval_data,
        resume=args.resume,
        force=args.force,
        device=str(resolve_device(validate.device(args.device))),
        progress=not args.no_progress,
    )
    print(json.dumps(summary))
    print(
        f"wrote {args.out}; its noise model is left out (fitted to the old decoder): "
        f"python -m ctdiff fit-noise --model {args.out} --data {args.data} --out NEW",
        file=sys.stderr,
    )
    return 0
