"""Train a 3D KL autoencoder for latent diffusion (MAISI's recipe, small for CPU) and judge it.

``python -m ctdiff train-autoencoder --data DIR --out DIR`` trains a MONAI ``AutoencoderKL`` on
random patches of the prepared volumes with an L1 reconstruction loss + ``kl_weight`` x KL +
``adv_weight`` x a patch-adversarial loss (MONAI ``PatchDiscriminator`` + ``PatchAdversarialLoss``,
least squares), optionally + ``perceptual_weight`` x MONAI's ``PerceptualLoss`` (a torchvision
ResNet-50 read from ``perceptual_weights``, a local file: nothing is downloaded; off by default).
The output folder holds ``autoencoder.pt`` (config, weights, discriminator, optimizers, step,
split, history; resumable with ``--resume``), ``history.csv`` and ``eval.json``: on the held-out
volumes, PSNR and SSIM of the reconstruction and the noise SD (HU) kept, see :func:`evaluate`.

A latent-space diffusion config names ``autoencoder.pt`` in ``model.autoencoder``; the diffusion
checkpoints then carry its config and weights with the file's sha256 (:func:`autoencoder_record`).
Volumes larger than one tile are encoded/decoded with MONAI's ``SlidingWindowInferer``.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ctdiff.atomic import atomic_path, write_json, write_text
from ctdiff.config import DataConfig, _build
from ctdiff.errors import ConfigError, InputError, OverwriteError
from ctdiff.outputs import check_no_overlap, check_output, register_output
from ctdiff.validate import MAX_SEED

FORMAT = "ctdiff-autoencoder-1"
AIR_HU = -1000.0  # air on the Hounsfield scale: the floor of a decoded noise-free estimate (add_noise)
AUTOENCODER_FILE, HISTORY_FILE, EVAL_FILE = "autoencoder.pt", "history.csv", "eval.json"


HISTORY_HEADER = ("step", "l1", "kl", "gen_adv", "disc")


def _is_autoencoder_dir(folder: Path) -> bool:
    # train-autoencoder saves autoencoder.pt with history.csv every checkpoint_every steps (eval.json
    # at the end); a lone autoencoder.pt or eval.json may be someone else's
    try:
        with open(folder / HISTORY_FILE, encoding="utf-8") as fh:
            header = fh.readline().strip()
    except (OSError, UnicodeDecodeError):
        return False
    return (folder / AUTOENCODER_FILE).is_file() and header == ",".join(HISTORY_HEADER)


register_output("train-autoencoder", "an autoencoder folder", _is_autoencoder_dir)
SOFT_TISSUE_HU = (-150.0, 150.0)  # where the noise SD is measured


LR_SCHEDULES = ("constant", "cosine")


@dataclasses.dataclass
class AutoencoderConfig:
    hu_window: tuple[float, float] = (-1024.0, 1500.0)
    # MONAI AutoencoderKL: one entry per level; every level but the last halves z, y and x
    channels: tuple[int, ...] = (16, 32, 32)
    latent_channels: int = 4
    res_blocks: int = 1
    norm_groups: int = 8
    patch: tuple[int, int, int] = (16, 64, 64)  # (z, y, x) training patch, clipped to the volume
    batch_size: int = 2
    steps: int = 2000
    lr: float = 1e-4
    # "constant" (as before), or "cosine": both optimisers' learning rate follows lr x (1 + cos(pi x
    # step / steps)) / 2, from lr at step 0 to 0 at `steps` (set from the step alone, so a resumed run
    # continues it exactly; raising `steps` on resume stretches the rest of the curve)
    lr_schedule: str = "constant"
    kl_weight: float = 1e-6
    adv_weight: float = 0.05
    adv_start: int = 0  # step from which the adversarial losses are used
    disc_channels: int = 16
    disc_layers: int = 2  # each halves the patch: a 16-slice patch allows 2
    perceptual_weight: float = 0.3
    perceptual_weights: str | None = None  # a torchvision ResNet-50 state dict file; null = no perceptual loss
    val_fraction: float = 0.2
    seed: int = 0
    checkpoint_every: int = 100
    # fit the noise the autoencoder drops, re-added after decoding (ctdiff.model.noise_resynthesis)
    noise_resynthesis: bool = True

    @property
    def downsampling(self) -> int:
        return 2 ** (len(self.channels) - 1)


def autoencoder_config(values: dict[str, Any] | None, where: str | os.PathLike | None = None) -> AutoencoderConfig:
    """A validated config from a (partial) dict; ConfigError naming the key otherwise."""
    where = None if where is None else os.fspath(where)
    cfg = _build(AutoencoderConfig, values or {}, "", where)

    def bad(msg: str) -> None:
        raise ConfigError(msg, where)

    if not cfg.hu_window[1] > cfg.hu_window[0]:
        bad(f"hu_window must be [low, high] with low < high, got {list(cfg.hu_window)}")
    if not cfg.channels or any(c < 1 or c % cfg.norm_groups for c in cfg.channels):
        bad(f"channels must be positive multiples of norm_groups ({cfg.norm_groups}), got {list(cfg.channels)}")
    for key in (
        "latent_channels",
        "res_blocks",
        "batch_size",
        "steps",
        "disc_channels",
        "disc_layers",
        "checkpoint_every",
    ):
        if getattr(cfg, key) < 1:
            bad(f"{key} must be >= 1, got {getattr(cfg, key)}")
    if any(p < cfg.downsampling or p % cfg.downsampling for p in cfg.patch):
        bad(f"patch sizes must be multiples of the downsampling {cfg.downsampling}, got {list(cfg.patch)}")
    if min(cfg.patch) < 2 ** (cfg.disc_layers + 2):
        bad(
            f"patch {list(cfg.patch)} is too small for disc_layers {cfg.disc_layers} (needs >= {2 ** (cfg.disc_layers + 2)} "
            f"voxels per axis): lower disc_layers or enlarge the patch"
        )
    for key in ("lr", "kl_weight", "adv_weight", "perceptual_weight"):
        v = getattr(cfg, key)
        if not (math.isfinite(v) and v >= 0) or (key == "lr" and v == 0):
            bad(f"{key} must be a finite number >= 0 (lr > 0), got {v}")
    if cfg.lr_schedule not in LR_SCHEDULES:
        bad(f"lr_schedule must be one of {LR_SCHEDULES}, got {cfg.lr_schedule!r}")
    if not 0.0 < cfg.val_fraction < 1.0:
        bad(f"val_fraction must be in (0, 1): the autoencoder is judged on held-out volumes, got {cfg.val_fraction}")
    if cfg.adv_start < 0:
        bad("adv_start must be >= 0")
    if not 0 <= cfg.seed <= MAX_SEED:
        bad(f"seed must be in [0, {MAX_SEED}], got {cfg.seed}")
    return cfg


def build_autoencoder(config: AutoencoderConfig | dict[str, Any]):
    """``(AutoencoderKL, AutoencoderConfig)``; no attention (memory grows with the voxel count)."""
    from monai.networks.nets import AutoencoderKL

    cfg = config if isinstance(config, AutoencoderConfig) else autoencoder_config(config)
    ae = AutoencoderKL(
        spatial_dims=3,
        in_channels=1,
        out_channels=1,
        channels=tuple(cfg.channels),
        latent_channels=cfg.latent_channels,
        num_res_blocks=(cfg.res_blocks,) * len(cfg.channels),
        norm_num_groups=cfg.norm_groups,
        attention_levels=(False,) * len(cfg.channels),
        with_encoder_nonlocal_attn=False,
        with_decoder_nonlocal_attn=False,
    )
    return ae, cfg


def build_discriminator(cfg: AutoencoderConfig):
    from monai.networks.nets import PatchDiscriminator

    return PatchDiscriminator(
        spatial_dims=3,
        num_layers_d=cfg.disc_layers,
        channels=cfg.disc_channels,
        in_channels=1,
        out_channels=1,
        norm="INSTANCE",
    )


# ---------------------------------------------------------------------------------- tiled coding
def _fits(spatial: Sequence[int], roi: Sequence[int]) -> bool:
    return all(int(s) <= int(r) for s, r in zip(spatial, roi))


def _sliding(x: torch.Tensor, roi: Sequence[int], fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    from monai.inferers import SlidingWindowInferer

    # the window's output may be smaller (encoder) or larger (decoder): MONAI scales the stitching
    inferer = SlidingWindowInferer(roi_size=tuple(int(r) for r in roi), sw_batch_size=1, overlap=0.25, mode="gaussian")
    return inferer(x, fn)


@torch.no_grad()
def encode_mean(ae, x: torch.Tensor, tile: Sequence[int] | None = None) -> torch.Tensor:
    """Posterior mean of ``(N, 1, D, H, W)``; windows of ``tile`` voxels when the volume is larger."""
    fn = lambda p: ae.encode(p)[0]  # noqa: E731
    if tile is None or _fits(x.shape[2:], tile):
        return fn(x)
    return _sliding(x, tile, fn)


@torch.no_grad()
def decode(ae, z: torch.Tensor, tile: Sequence[int] | None = None, z_pad: int = 0) -> torch.Tensor:
    """Decode ``(N, C, d, h, w)`` latents; windows of ``tile`` latent voxels when larger (bounded memory);
    the latent reflect-padded by ``z_pad`` slices (:func:`decode_padded`, which keeps the graph)."""
    return decode_padded(ae, z, tile, z_pad)


def decode_padded(ae, z: torch.Tensor, tile: Sequence[int] | None = None, z_pad: int = 0) -> torch.Tensor:
    """:func:`decode` with autograd (``tune-decoder`` trains through it).

    ``z_pad`` (``sample.decode_z_pad``): the latent is reflect-padded by that many slices at each end
    for the decoder and its output cropped back, so the decoder's zero-padded z borders fall outside
    the volume. (Written here, not taken from MONAI: its inferers pad the *input* of a network with
    constants, not a latent by reflection with the matching crop of the output.)
    """
    if z_pad:
        if not 0 < z_pad < z.shape[2]:  # reflect padding takes at most depth - 1 slices
            raise ValueError(f"decode z padding must be below the latent's {z.shape[2]} slices, got {z_pad}")
        z = F.pad(z, (0, 0, 0, 0, z_pad, z_pad), mode="reflect")
    y = ae.decode(z) if tile is None or _fits(z.shape[2:], tile) else _sliding(z, tile, ae.decode)
    if z_pad:
        k = (y.shape[2] // z.shape[2]) * z_pad  # decoded slices per latent slice, times the padding
        y = y[:, :, k : y.shape[2] - k]
    return y


# --------------------------------------------------------------------------------------- records
def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_file(path: str | os.PathLike) -> tuple[Path, Any]:
    p = Path(path)
    if p.is_dir():
        p = p / AUTOENCODER_FILE
    if not p.is_file():
        raise InputError("autoencoder not found (train one with 'python -m ctdiff train-autoencoder')", p)
    try:
        return p, torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated/foreign files
        raise InputError(f"not a readable autoencoder file ({type(exc).__name__})", p) from None


def load_autoencoder_file(path: str | os.PathLike) -> dict[str, Any]:
    p, ckpt = _read_file(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise InputError(f"not a ctdiff autoencoder (expected format {FORMAT})", p)
    return ckpt


def autoencoder_record(path: str | os.PathLike) -> dict[str, Any]:
    """What a diffusion checkpoint carries: the autoencoder's config and weights, its file's path and sha256.

    ``path`` may also be a latent-space diffusion checkpoint (``ctdiff train``'s, ``tune-decoder``'s,
    ``fit-noise``'s or a demo ``model.pt``): then the record is the autoencoder that checkpoint carries,
    with its tuned decoder, noise model and tuning record, and the checkpoint file's path and sha256
    (``from_checkpoint`` set). That is how a new diffusion model is trained on another model's
    autoencoder, e.g. on longer volumes (docs/generator.md)."""
    from ctdiff.model.checkpoint import FORMAT as CHECKPOINT_FORMAT

    p, ckpt = _read_file(path)
    if isinstance(ckpt, dict) and ckpt.get("format") == CHECKPOINT_FORMAT:
        space = ckpt.get("space") or {"kind": "pixel"}
        if space.get("kind") != "latent" or not isinstance(space.get("autoencoder"), dict):
            raise InputError(f"a {space.get('kind')}-space checkpoint carries no autoencoder", p)
        carried = space["autoencoder"]
        state = {k: v.float() if v.is_floating_point() else v for k, v in carried["state"].items()}
        return {**carried, "state": state, "sha256": sha256_file(p), "path": str(p.resolve()), "from_checkpoint": True}
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise InputError(f"not a ctdiff autoencoder (expected format {FORMAT})", p)
    return {
        "config": ckpt["config"],
        "state": ckpt["autoencoder"],
        "sha256": sha256_file(p),
        "path": str(p.resolve()),
        "step": int(ckpt["step"]),
        "noise_model": ckpt.get("noise_model"),
    }


# -------------------------------------------------------------------------------------- judging
def _smooth(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool3d(x, 3, stride=1, padding=1, count_include_pad=False)


def noise_sd(hu: torch.Tensor, mask: torch.Tensor) -> float:
    """SD (HU) of the high-pass residual ``x - mean3x3x3(x)`` over ``mask`` (soft tissue of the original)."""
    residual = hu - _smooth(hu)
    return float(residual[mask].std()) if int(mask.sum()) > 1 else float("nan")


def residual_nps(hu: torch.Tensor, mask: torch.Tensor, n_bins: int = 16) -> torch.Tensor:
    """Radial power spectrum of the noise residual ``x - mean3x3x3(x)`` inside ``mask``, per axial slice,
    averaged, as ``n_bins`` rings from 0 to the in-plane Nyquist frequency, scaled to unit sum.

    Compares an original with its reconstruction on the same mask (is the noise texture kept?). Not
    the calibrated ROI NPS of ``eval.metrics.noise``: ctdiff may not import eval (the package layers in
    pyproject.toml), and the relative check needs no ROI search; the residual is zero outside the mask,
    so both spectra carry the same window.
    """
    r = ((hu - _smooth(hu)) * mask).double()[0, 0]  # (z, y, x)
    power = torch.fft.fft2(r).abs().pow(2).mean(0)  # over slices
    ny, nx = power.shape
    fy, fx = torch.fft.fftfreq(ny).abs(), torch.fft.fftfreq(nx).abs()
    radius = torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2) / 0.5  # 1 = Nyquist
    ring = torch.clamp((radius * n_bins).long(), max=n_bins - 1)
    curve = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, ring.flatten(), power.flatten())
    curve[0] = 0.0  # the mean level of the masked residual, not noise
    total = curve.sum()
    return curve / total if total > 0 else torch.full_like(curve, float("nan"))


def air_floor(y: torch.Tensor, hu_window: Sequence[float], floor_hu: float = AIR_HU) -> torch.Tensor:
    """``y`` (model units on ``hu_window``) floored at ``floor_hu`` (air): a decoded noise-free estimate
    has nothing darker than air, values below it are decoder errors (:func:`add_noise`, the refiner)."""
    per_hu = 2.0 / (float(hu_window[1]) - float(hu_window[0]))
    return torch.clamp(y, min=-1.0 + (float(floor_hu) - float(hu_window[0])) * per_hu)


def add_noise(
    y: torch.Tensor,
    noise_model: dict[str, Any],
    hu_window: Sequence[float],
    seeds: Sequence[int],
    floor_hu: float | None = AIR_HU,
) -> torch.Tensor:
    """``y`` (``(N, 1, D, H, W)`` model units) plus the noise model's noise, volume i drawn from seed ``seeds[i]``.

    ``y`` is the decoder's noise-free estimate, so it is first floored at ``floor_hu`` (air, -1000 HU
    by the definition of the Hounsfield scale; None: no floor): nothing in a scan attenuates less than
    air, and the noise goes on top of the estimate. The tuned demo decoder left about 1,700 voxels
    per volume below -1040 HU, down to -1173, which then read as the darkest voxels of its samples;
    floored, its samples' FRD went from 9.80 to 9.45 (docs/benchmarks.md)."""
    from ctdiff.model import noise_resynthesis

    per_hu = 2.0 / (float(hu_window[1]) - float(hu_window[0]))  # model units per HU
    if floor_hu is not None:
        y = air_floor(y, hu_window, floor_hu)
    # a per-class model needs the decoded volume in HU (its local intensity sets the noise there)
    hu = (y[:, 0].detach().float().cpu() + 1.0) / per_hu + float(hu_window[0])
    noise = torch.stack(
        [noise_resynthesis.noise_for(noise_model, v, noise_resynthesis.noise_generator(s)) for v, s in zip(hu, seeds)]
    )[:, None]
    return y + (noise * per_hu).to(y.device, y.dtype)


def reconstruct(
    ae, x: torch.Tensor, downsampling: int, tile: Sequence[int] | None = None, z_pad: int = 0
) -> torch.Tensor:
    """Encode (posterior mean) and decode ``(N, 1, D, H, W)``, in tiles of ``tile`` latent voxels when
    larger; the latent reflect-padded by ``z_pad`` slices for decoding (:func:`decode`)."""
    roi = None if tile is None else tuple(t * downsampling for t in tile)
    # on the autoencoder's device (a CUDA model judged on CPU volumes), returned where ``x`` lives
    return decode(ae, encode_mean(ae, x.to(coder_device(ae, x.device)), roi), tile, z_pad).to(x.device)


def coder_device(ae, default: torch.device | str = "cpu") -> torch.device:
    """The device of ``ae``'s weights (``default`` for a coder without any)."""
    return next((p.device for p in ae.parameters()), torch.device(default))


def fit_noise_model(
    ae,
    cfg: AutoencoderConfig,
    volumes: Sequence[torch.Tensor],
    tile: Sequence[int] | None = None,
    per_class: bool = False,
    max_gain: float | None = None,
) -> dict[str, Any]:
    """The noise model of ``ae`` on up to ``noise_resynthesis.MAX_VOLUMES`` of ``volumes`` (``(1, z, y, x)``,
    model units): stationary (:func:`ctdiff.model.noise_resynthesis.fit`), or per class
    (:func:`ctdiff.model.noise_resynthesis.fit_classes`, its gains capped at ``max_gain``, default
    ``MAX_AMPLITUDE``) when ``per_class``."""
    from ctdiff.data.tensors import model_to_hu
    from ctdiff.model import noise_resynthesis

    ae.eval()
    pairs = []
    with torch.no_grad():
        for vol in volumes[: noise_resynthesis.MAX_VOLUMES]:
            x = vol[None].float()
            y = reconstruct(ae, x, cfg.downsampling, tile).clamp(-1.0, 1.0)
            pairs.append(tuple(model_to_hu(t, cfg.hu_window)[0, 0].numpy() for t in (x, y)))
    if per_class:
        pairs_o, pairs_r = [o for o, _ in pairs], [r for _, r in pairs]
        return noise_resynthesis.fit_classes(pairs_o, pairs_r, paired=True, max_gain=max_gain)
    return noise_resynthesis.fit(pairs)


@torch.no_grad()
def evaluate(
    ae,
    cfg: AutoencoderConfig,
    volumes: Sequence[torch.Tensor],
    tile: Sequence[int] | None = None,
    noise_model: dict[str, Any] | None = None,
    z_pad: int = 0,
) -> dict[str, Any]:
    """Reconstruct each held-out ``(1, z, y, x)`` volume (model units) through the posterior mean
    (decoded with the latent reflect-padded by ``z_pad`` slices, as ``sample.decode_z_pad`` decodes).

    Per volume and as means: PSNR (dB) and SSIM (MONAI metrics, data range = the HU window),
    noise SD (HU) of the original and the reconstruction in soft tissue (smoothed HU in -150..150)
    and their ratio (1 = the noise texture is kept; autoencoders tend to smooth it away), and the
    noise power spectrum kept: ``nps_distance`` (L1 between the two unit-sum radial spectra of
    :func:`residual_nps`, 0 = same shape, at most 2) and ``nps_mean_frequency_ratio`` (the
    reconstruction's mean frequency over the original's: below 1 = blurred noise). With
    ``noise_model``, ``with_noise_resynthesis`` holds the same means for the same reconstructions
    plus that model's noise (volume i from seed i).
    """
    from monai.metrics import PSNRMetric, SSIMMetric

    from ctdiff.data.tensors import model_to_hu

    psnr_m, ssim_m = PSNRMetric(max_val=2.0), SSIMMetric(spatial_dims=3, data_range=2.0, win_size=5)

    def judge(x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        hx, hy = model_to_hu(x, cfg.hu_window), model_to_hu(y, cfg.hu_window)
        mask = (_smooth(hx) >= SOFT_TISSUE_HU[0]) & (_smooth(hx) <= SOFT_TISSUE_HU[1])
        sd_x, sd_y = noise_sd(hx, mask), noise_sd(hy, mask)
        nps_x, nps_y = residual_nps(hx, mask), residual_nps(hy, mask)
        rings = torch.arange(len(nps_x), dtype=torch.float64)
        f_x, f_y = float((rings * nps_x).sum()), float((rings * nps_y).sum())
        return {
            "psnr_db": float(psnr_m(y, x).mean()),
            "ssim": float(ssim_m(y, x).mean()),
            "noise_sd_hu": sd_x,
            "noise_sd_recon_hu": sd_y,
            "noise_sd_ratio": sd_y / sd_x if sd_x > 0 else float("nan"),
            "nps_distance": float((nps_x - nps_y).abs().sum()),
            "nps_mean_frequency_ratio": f_y / f_x if f_x > 0 else float("nan"),
            "l1_hu": float((hy - hx).abs().mean()),
        }

    def means(cases: list[dict[str, float]]) -> dict[str, Any]:
        keys = cases[0].keys() if cases else ()
        return {"n": len(cases), **{k: float(sum(c[k] for c in cases) / len(cases)) for k in keys}}

    ae.eval()
    cases, noisy = [], []
    for i, vol in enumerate(volumes):
        x = vol[None].float()
        y = reconstruct(ae, x, cfg.downsampling, tile, z_pad)
        cases.append(judge(x, y.clamp(-1.0, 1.0)))
        if noise_model is not None:
            noisy.append(judge(x, add_noise(y, noise_model, cfg.hu_window, [i]).clamp(-1.0, 1.0)))
    result = {**means(cases), "cases": cases}
    if noise_model is not None:
        result["with_noise_resynthesis"] = means(noisy)
    return result


# ------------------------------------------------------------------------------------- training
def kl_loss(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) summed over latent voxels, averaged over the batch (MONAI tutorials)."""
    kl = 0.5 * (mu.pow(2) + sigma.pow(2) - torch.log(sigma.pow(2)) - 1.0)
    return kl.flatten(1).sum(1).mean()


def random_patches(
    volumes: Sequence[torch.Tensor], patch: Sequence[int], n: int, generator: torch.Generator, multiple: int
) -> torch.Tensor:
    """``n`` random crops ``(n, 1, pz, py, px)`` (each axis clipped to the volume, kept a multiple).

    Not MONAI's ``RandSpatialCrop``: it draws its offsets from its own numpy ``RandomState``, so the
    patches of every autoencoder run (drawn here from a ``torch.Generator`` seeded per step) would
    change, and a run resumed across the change would switch patch streams half-way.
    """
    shape = volumes[0].shape[1:]
    size = [min(int(p), int(s) // multiple * multiple) for p, s in zip(patch, shape)]
    if min(size) < 1:
        raise InputError(
            f"volumes of (z, y, x) {tuple(shape)} are smaller than the autoencoder's downsampling {multiple}"
        )
    out = []
    for _ in range(n):
        i = int(torch.randint(len(volumes), (1,), generator=generator))
        start = [int(torch.randint(s - p + 1, (1,), generator=generator)) for s, p in zip(shape, size)]
        v = volumes[i]
        out.append(v[:, start[0] : start[0] + size[0], start[1] : start[1] + size[1], start[2] : start[2] + size[2]])
    return torch.stack(out)


class AutoencoderTrainer:
    """Generator (AutoencoderKL) and discriminator steps; state round-trips through :meth:`state`."""

    def __init__(self, cfg: AutoencoderConfig, device: torch.device | str = "cpu"):
        from monai.losses import PatchAdversarialLoss

        self.cfg, self.device = cfg, torch.device(device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.ae = build_autoencoder(cfg)[0].to(self.device)
            self.disc = build_discriminator(cfg).to(self.device)
        self.opt_g = torch.optim.Adam(self.ae.parameters(), lr=cfg.lr)
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=cfg.lr)
        self.adv = PatchAdversarialLoss(criterion="least_squares")
        self.perceptual = None
        if cfg.perceptual_weights:
            from monai.losses import PerceptualLoss

            if not Path(cfg.perceptual_weights).is_file():
                raise InputError("perceptual_weights file not found", cfg.perceptual_weights)
            try:
                import torchvision  # noqa: F401  (MONAI's ResNet-50 perceptual network)
            except ImportError:
                raise ConfigError(
                    "perceptual_weights needs torchvision, which is not installed "
                    "(pip install the torchvision release matching torch)"
                ) from None
            # 2.5D ResNet-50 from a local file (MONAI would otherwise download weights)
            self.perceptual = PerceptualLoss(
                spatial_dims=3,
                network_type="resnet50",
                is_fake_3d=True,
                fake_3d_ratio=0.25,
                pretrained=True,
                pretrained_path=cfg.perceptual_weights,
            ).to(self.device)
        self.step = 0
        self.history: list[dict[str, float]] = []

    def learning_rate(self, step: int | None = None) -> float:
        """Both optimisers' learning rate at ``step`` (default: the next step) under ``lr_schedule``.

        A function of the step rather than torch's CosineAnnealingLR, whose state autoencoder.pt would
        have to carry (files written before the option have none) for a resumed run to continue it."""
        cfg = self.cfg
        step = self.step if step is None else int(step)
        if cfg.lr_schedule == "cosine":
            return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(step, cfg.steps) / cfg.steps))
        return cfg.lr

    def train_step(self, x: torch.Tensor) -> dict[str, float]:
        cfg = self.cfg
        x = x.to(self.device)
        lr = self.learning_rate()
        for opt in (self.opt_g, self.opt_d):
            for group in opt.param_groups:
                group["lr"] = lr
        self.ae.train()
        recon, mu, sigma = self.ae(x)
        l1 = F.l1_loss(recon.float(), x.float())
        kl = kl_loss(mu, sigma)
        loss_g = l1 + cfg.kl_weight * kl
        adversarial = self.step >= cfg.adv_start and cfg.adv_weight > 0
        gen_adv = torch.zeros(())
        if self.perceptual is not None and cfg.perceptual_weight > 0:
            loss_g = loss_g + cfg.perceptual_weight * self.perceptual(recon.float(), x.float())
        if adversarial:
            gen_adv = self.adv(self.disc(recon.contiguous().float())[-1], target_is_real=True, for_discriminator=False)
            loss_g = loss_g + cfg.adv_weight * gen_adv
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        loss_d = torch.zeros(())
        if adversarial:
            fake = self.adv(
                self.disc(recon.detach().contiguous().float())[-1], target_is_real=False, for_discriminator=True
            )
            real = self.adv(self.disc(x.contiguous().float())[-1], target_is_real=True, for_discriminator=True)
            loss_d = cfg.adv_weight * 0.5 * (fake + real)
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            self.opt_d.step()
        self.step += 1
        row = {
            "step": self.step,
            **{k: float(v.detach()) for k, v in (("l1", l1), ("kl", kl), ("gen_adv", gen_adv), ("disc", loss_d))},
        }
        self.history.append(row)
        return row

    def state(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "config": _plain(dataclasses.asdict(self.cfg)),
            "autoencoder": self.ae.state_dict(),
            "discriminator": self.disc.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "step": self.step,
            "history": list(self.history),
            "rng": torch.get_rng_state(),
        }

    def load_state(self, ckpt: dict[str, Any]) -> None:
        self.ae.load_state_dict(ckpt["autoencoder"])
        self.disc.load_state_dict(ckpt["discriminator"])
        self.opt_g.load_state_dict(ckpt["opt_g"])
        self.opt_d.load_state_dict(ckpt["opt_d"])
        self.step, self.history = int(ckpt["step"]), list(ckpt["history"])


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _save(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path, force=True) as tmp:
        torch.save(state, tmp)


def _write_history(out: Path, history: Sequence[dict[str, float]]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(HISTORY_HEADER)
    for r in history:
        w.writerow([r["step"], *(f"{r[k]:.6g}" for k in ("l1", "kl", "gen_adv", "disc"))])
    write_text(out / HISTORY_FILE, buf.getvalue())


def train_autoencoder(
    data_dir: str | os.PathLike | None,
    out: str | os.PathLike,
    overrides: Sequence[str] = (),
    config: dict[str, Any] | None = None,
    *,
    resume: bool = False,
    force: bool = False,
    device: str = "cpu",
    progress: bool = True,
    files: tuple[Sequence[str], Sequence[str]] | None = None,
    resume_hint: str | None = None,
    fit_discriminator: bool = False,
) -> dict[str, Any]:
    """Train (or continue) an autoencoder in ``out``; returns the held-out evaluation (eval.json).

    ``files`` = (train, held-out) volumes instead of a split of ``data_dir`` (a diffusion run's own
    autoencoder trains on that run's split); ``resume_hint`` replaces the command printed on Ctrl-C;
    ``fit_discriminator`` lowers ``disc_layers`` to what the volumes' patches allow (instead of an error).
    """
    from ctdiff.data.dataset import dataset_files, load_cases, make_split, warn_window_clipping
    from ctdiff.interrupt import sigterm_saves

    out = Path(out)
    ckpt = None
    if resume:
        ckpt = load_autoencoder_file(out / AUTOENCODER_FILE)
        cfg = autoencoder_config(_apply(ckpt["config"], overrides), out / AUTOENCODER_FILE)
        train_files, val_files = list(ckpt["split"]["train"]), list(ckpt["split"]["val"])
    else:
        if data_dir is None and files is None:
            raise ConfigError("a dataset is needed to train an autoencoder (--data DIR)")
        # before anything is deleted: --out must not overlap --data, and --force replaces only our own folder
        inputs = {"--data": data_dir} if data_dir is not None else {}
        check_no_overlap(out, inputs)
        if out.is_dir() and any(out.iterdir()) and not force and _is_autoencoder_dir(out):
            raise OverwriteError("output folder exists and is not empty; pass --resume to continue or --force", out)
        check_output(out, command="train-autoencoder", force=force, inputs=inputs)
        cfg = autoencoder_config(_apply(config or {}, overrides))
        if files is not None:
            train_files, val_files = [str(f) for f in files[0]], [str(f) for f in files[1]]
        else:
            train_files, val_files = make_split(dataset_files(data_dir), cfg.val_fraction, cfg.seed)
        if not val_files and len(train_files) > 1:  # small cohorts: hold out one volume at least
            val_files = [train_files.pop()]
        if not val_files:
            raise InputError("needs at least two volumes (one held out to judge the autoencoder)", data_dir)
        if out.exists() and force:
            from ctdiff.atomic import prepare_output_dir

            prepare_output_dir(out, force=True)
        out.mkdir(parents=True, exist_ok=True)
    data_cfg = DataConfig(hu_window=cfg.hu_window)
    train_cases, val_cases = load_cases(train_files, data_cfg), load_cases(val_files, data_cfg)
    warn_window_clipping([train_cases, val_cases], cfg.hu_window, "hu_window")
    train_set, val_set = train_cases.tensors, val_cases.tensors
    where = data_dir if data_dir is not None else train_files[0]
    cfg = _discriminator_fits(cfg, tuple(train_set[0].shape[1:]), fit_discriminator and ckpt is None, where)
    trainer = AutoencoderTrainer(cfg, device)
    if ckpt is not None:
        trainer.load_state(ckpt)

    noise_model = ckpt.get("noise_model") if ckpt is not None else None

    def save() -> None:
        state = {**trainer.state(), "split": {"train": train_files, "val": val_files}}
        if noise_model is not None and noise_model.get("step") == trainer.step:
            state["noise_model"] = noise_model  # fitted to these weights
        _save(out / AUTOENCODER_FILE, state)
        _write_history(out, trainer.history)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=trainer.step, desc="train-autoencoder", unit="step", dynamic_ncols=True)
    started = time.perf_counter()
    try:
        with sigterm_saves():
            while trainer.step < cfg.steps:
                g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + trainer.step)  # patches: pure function of step
                x = random_patches(train_set, cfg.patch, cfg.batch_size, g, cfg.downsampling)
                # the reparameterisation noise (drawn by MONAI from the global RNG) too, so that a
                # resumed run is exact and a run repeats itself
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(cfg.seed * 1_000_003 + trainer.step + 500_000)
                    row = trainer.train_step(x)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(l1=f"{row['l1']:.4f}", disc=f"{row['disc']:.3f}")
                if trainer.step % cfg.checkpoint_every == 0:
                    save()
    except KeyboardInterrupt:
        save()
        if bar is not None:  # the bar's last line before the message, not after it
            bar.close()
            bar = None
        hint = resume_hint or f"python -m ctdiff train-autoencoder --out {out} --resume"
        print(f"\ninterrupted at step {trainer.step}; resume with: {hint}", file=sys.stderr)
        raise
    finally:
        if bar is not None:
            bar.close()
    tile = (16, 32, 32)
    if cfg.noise_resynthesis and (noise_model is None or noise_model.get("step") != trainer.step):
        try:
            noise_model = {**fit_noise_model(trainer.ae, cfg, train_set, tile), "step": trainer.step}
        except ValueError as exc:  # no homogeneous soft tissue in the training volumes
            print(f"train-autoencoder: no noise re-synthesis: {exc}", file=sys.stderr)
            noise_model = None
    if not cfg.noise_resynthesis:
        noise_model = None
    save()
    result = evaluate(trainer.ae, cfg, val_set, tile=tile, noise_model=noise_model)
    if noise_model is not None:
        result["noise_model"] = {k: v for k, v in noise_model.items() if k != "nps_xy_hu2"}
    result.update(
        {
            "step": trainer.step,
            "train_seconds_this_call": round(time.perf_counter() - started, 1),
            "held_out": [str(p) for p in val_files],
        }
    )
    write_json(out / EVAL_FILE, result)
    return result


def _discriminator_fits(
    cfg: AutoencoderConfig, shape: tuple[int, ...], fit: bool, where: str | os.PathLike | None
) -> AutoencoderConfig:
    """``cfg`` if its discriminator fits the patches cut from volumes of (z, y, x) ``shape`` (the patch is
    clipped to the volume, see :func:`random_patches`), else ``disc_layers`` lowered to fit (``fit``) or
    a one-line ConfigError. Every layer halves the patch, so a side of n voxels allows log2(n) - 2."""
    side = min(min(int(p), int(s) // cfg.downsampling * cfg.downsampling) for p, s in zip(cfg.patch, shape))
    allowed = int(math.floor(math.log2(side))) - 2 if side > 0 else 0
    if cfg.disc_layers <= allowed:
        return cfg
    if fit and allowed >= 1:
        print(
            f"train-autoencoder: volumes of (z, y, x) {shape}: disc_layers {cfg.disc_layers} -> {allowed}",
            file=sys.stderr,
        )
        return dataclasses.replace(cfg, disc_layers=allowed)
    fix = f"pass --set disc_layers={allowed}" if allowed >= 1 else "the volumes are too small for the discriminator"
    raise ConfigError(
        f"volumes of (z, y, x) {shape} give {side}-voxel patches, too small for disc_layers {cfg.disc_layers} "
        f"(needs >= {2 ** (cfg.disc_layers + 2)} voxels per axis): {fix}",
        where,
    )


def _apply(values: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """``key=value`` overrides (YAML values) on a flat autoencoder config dict."""
    import yaml

    out = dict(values)
    names = {f.name for f in dataclasses.fields(AutoencoderConfig)}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = (s.strip() for s in item.split("=", 1))
        if key not in names:
            raise ConfigError(f"unknown autoencoder config key '{key}' (known: {', '.join(sorted(names))})")
        try:
            out[key] = yaml.safe_load(raw)
        except yaml.YAMLError:
            out[key] = raw
    return out


# ------------------------------------------------------------------------------------------ CLI
EXAMPLES = """\
  python -m ctdiff train-autoencoder --data data/phantom-128 --out runs/ae-128
  python -m ctdiff train-autoencoder --data data/phantom-128 --out runs/ae-128 --set steps=4000 --set patch=[16,64,64]
  python -m ctdiff train-autoencoder --out runs/ae-128 --resume --set steps=6000   # continue / train longer
  # then diffuse its latents:
  python -m ctdiff train --config configs/demo.yaml --data data/phantom-128 --out runs/latent \\
      --set model.space=latent --set model.autoencoder=runs/ae-128/autoencoder.pt
"""


def add_arguments(parser) -> None:
    parser.add_argument("--data", help="prepared dataset folder (NIfTI volumes of one shape); not needed with --resume")
    parser.add_argument("--out", required=True, help="output folder (autoencoder.pt, history.csv, eval.json)")
    parser.add_argument("--config", help="YAML with autoencoder settings (keys of AutoencoderConfig)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting, e.g. --set steps=4000 (repeatable)",
    )
    parser.add_argument("--resume", action="store_true", help="continue from --out/autoencoder.pt")
    parser.add_argument("--force", action="store_true", help="start over in a non-empty --out (deletes it)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N, mps or auto (cuda if present)")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    import json

    import yaml

    from ctdiff import validate
    from ctdiff.distributed import resolve_device

    if validate.threads(args.threads):
        torch.set_num_threads(args.threads)
    device = str(resolve_device(validate.device(args.device)))  # auto: cuda if present, else cpu
    if args.resume and args.force:
        raise ConfigError("--resume and --force contradict each other")
    # --force deletes --out: it must not hold the dataset or the config file
    check_no_overlap(args.out, {"--data": args.data, **({"--config": args.config} if args.force else {})})
    values = None
    if args.config:
        p = Path(args.config)
        if not p.is_file():
            raise ConfigError("config file not found", p)
        values = yaml.safe_load(p.read_text()) or {}
    result = train_autoencoder(
        args.data,
        args.out,
        args.overrides,
        values,
        resume=args.resume,
        force=args.force,
        device=device,
        progress=not args.no_progress,
    )
    summary = {
        k: result[k] for k in ("n", "psnr_db", "ssim", "noise_sd_hu", "noise_sd_recon_hu", "noise_sd_ratio", "step")
    }
    print(json.dumps(summary))
    return 0
