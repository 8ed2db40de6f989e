"""Train the 3D diffusion model on a prepared dataset and write a run dir.

The run dir's layout is owned by :class:`ctdiff.training.rundir.RunDir` (config.yaml, split.json,
history.csv, loss.png, checkpoints/{last,best}.pt (best: lowest validation loss, EMA weights),
previews/epoch_NNNN.png + .nii.gz every ``train.preview_every`` epochs); the trainer writes through it.

Training: AdamW, linear warm-up + cosine LR (diffusers' ``get_cosine_schedule_with_warmup``),
gradient clipping and accumulation, an EMA of the weights (``torch.optim.swa_utils.AveragedModel``
with a warm-up of the decay), bf16 autocast on CUDA only, optional ``torch.compile``, DDP under
``torchrun``. The validation loss is deterministic: every validation case is scored at the same
``train.val_timesteps`` timesteps with the same noise each epoch, using the EMA weights.

Spaces (``model.space``, :mod:`ctdiff.model.spaces`): each padded batch is mapped to the space's tensors
before the loss (wavelet: the Haar transform, every step, so augmentation still applies); a latent
space encodes every training and validation volume once at the start (the cached latents carry no
augmentation) and fixes its scale factor from them. The space (for latent: the autoencoder's
weights, file sha256 and path, and the scale) is saved in every checkpoint, so resume and sampling
never need the autoencoder file again.

Resume is exact: the data order, augmentation and training noise are pure functions of
``(seed, epoch, index/step)``, and the checkpoint stores the position down to the batch.
"""

from __future__ import annotations

import contextlib
import gc
import io
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel

from ctdiff.atomic import write_bytes, write_text
from ctdiff.config import Config, apply_overrides, config_from_dict, load_config
from ctdiff.data.dataset import (
    Augment,
    CaseSet,
    TrainDataset,
    dataset_files,
    epoch_batches,
    load_cases,
    make_split,
    pad_slices,
    padded_depth,
    seed_from,
    warn_window_clipping,
)
from ctdiff.diffusion.schedule import Diffusion
from ctdiff.distributed import (
    DistInfo,
    add_device_arguments,
    apply_threads,
    barrier,
    init_distributed,
    mean_across,
    shutdown,
)
from ctdiff.errors import ConfigError, InputError, OverwriteError
from ctdiff.interrupt import sigterm_saves
from ctdiff.model import condition as conditions
from ctdiff.model.checkpoint import (
    BEST,
    LAST,
    check_same_model,
    checkpoint_config,
    load_checkpoint,
    load_weights,
    save_checkpoint,
)
from ctdiff.model.spaces import LatentSpace, build_space
from ctdiff.model.unet import UNet3D, build_model, count_parameters
from ctdiff.outputs import check_output
from ctdiff.progress import counted
from ctdiff.training.rundir import RunDir

PREVIEW_WINDOW = "soft tissue"
SMOOTH_EPOCHS = 10


# ------------------------------------------------------------------------------------------- EMA
def ema_avg_fn(decay: float):
    """EMA update for AveragedModel with a warm-up: decay_n = min(decay, (1 + n) / (10 + n)).

    The warm-up lets early, short runs have useful EMA weights (a fixed 0.999 would still mostly
    hold the random initialisation after a few hundred steps).
    """

    def update(ema_params, model_params, num_averaged):
        n = float(num_averaged)
        d = min(decay, (1.0 + n) / (10.0 + n))
        torch._foreach_lerp_(ema_params, model_params, 1.0 - d)

    return update


# -------------------------------------------------------------------------------------- results
@dataclass
class TrainResult:
    run_dir: Path
    step: int
    epoch: int  # completed epochs
    best_val_loss: float
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False  # by train.max_steps
    model: torch.nn.Module | None = field(default=None, repr=False)  # the trained network (this rank's)
    ema: torch.nn.Module | None = field(default=None, repr=False)  # its EMA copy


def _cosine_with_warmup(optimizer, warmup: int, total: int):
    from diffusers.optimization import get_cosine_schedule_with_warmup

    return get_cosine_schedule_with_warmup(
        optimizer, num_warmup_steps=warmup, num_training_steps=max(total, warmup + 1)
    )


# ------------------------------------------------------------------------------------- run files
def _trailing_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last up-to-``window`` finite values at each epoch (NaNs skipped)."""
    out = np.full(len(values), np.nan)
    for i in range(len(values)):
        chunk = values[max(0, i - window + 1) : i + 1]
        chunk = chunk[np.isfinite(chunk)]
        if chunk.size:
            out[i] = chunk.mean()
    return out


def plot_losses(history: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path:
    """The thesis' loss figure: train and validation loss per epoch, log scale, raw and 10-epoch mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = np.array([r["epoch"] for r in history])
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    for key, colour, label in (("train_loss", "tab:blue", "train"), ("val_loss", "tab:orange", "validation")):
        y = np.array([np.nan if r[key] is None else r[key] for r in history], dtype=float)
        ok = np.isfinite(y) & (y > 0)
        if not ok.any():
            continue
        ax.plot(epochs[ok], y[ok], color=colour, alpha=0.35, lw=1, label=f"{label} (per epoch)")
        ax.plot(
            epochs[ok],
            _trailing_mean(y, SMOOTH_EPOCHS)[ok],
            color=colour,
            lw=2,
            label=f"{label} ({SMOOTH_EPOCHS}-epoch mean)",
        )
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE loss")
    ax.grid(True, which="both", alpha=0.3)
    if history:
        ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return write_bytes(Path(path), buf.getvalue())


def write_preview(volume, out_stem: Path) -> None:
    """An axial PNG mosaic (soft-tissue window) and the NIfTI of one preview volume."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg

    from ctdiff.data.display import WINDOW_PRESETS, mosaic
    from ctdiff.data.io import write_nifti

    width, level = WINDOW_PRESETS[PREVIEW_WINDOW]
    nz = volume.shape[2]
    img = mosaic(volume.array, "axial", max(1, nz // 12), width, level, columns=6)
    buf = io.BytesIO()
    mpimg.imsave(buf, img, cmap="gray", vmin=0, vmax=255, format="png")
    write_bytes(out_stem.with_suffix(".png"), buf.getvalue())
    write_nifti(volume, out_stem.with_suffix(".nii.gz"))


# -------------------------------------------------------------------------------------- trainer
class CachedDataset(torch.utils.data.Dataset):
    """Pre-encoded (latent) cases addressed like :class:`TrainDataset` by ``(epoch, index)``.

    ``versions[i]`` holds case i's encoded versions (the case itself first, then its augmented copies,
    ``data.latent_augment_copies``); the one an ``(epoch, index)`` gets is a pure function of the pair
    and ``seed``, so a resumed run draws what an uninterrupted one draws. With ``conditions`` (one value
    per version, measured on the image it encodes, or a vector measured on the latent: ``model.condition``)
    an item is ``(latent, value)``."""

    def __init__(self, versions: list[list[torch.Tensor]], seed: int = 0, conditions: list[list[float]] | None = None):
        self.versions, self.seed, self.conditions = versions, seed, conditions

    def __len__(self) -> int:
        return len(self.versions)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        v = self.versions[index]
        k = 0 if len(v) == 1 else int(np.random.default_rng(seed_from(self.seed, 6, epoch, index)).integers(len(v)))
        if self.conditions is None:
            return v[k]
        return v[k], torch.tensor(self.conditions[index][k], dtype=torch.float32)


def _model_shape_error(model: UNet3D, spatial: Sequence[int], cfg: Config) -> None:
    try:
        model.check_shape(spatial)
    except ValueError as exc:
        raise ConfigError(f"data/model mismatch: {exc}") from None


def _autocast(device: torch.device, enabled: bool):
    if device.type == "cuda" and enabled:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class Trainer:
    """One training run over in-memory cases; reports through ``on_step(step, loss)``."""

    def __init__(
        self,
        config: Config,
        run_dir: Path,
        train_cases: CaseSet,
        val_cases: CaseSet | None,
        dist: DistInfo,
        progress: bool = True,
        on_step: Callable[[int, float], None] | None = None,
        space_state: dict[str, Any] | None = None,
    ):
        self.cfg, self.run_dir, self.dist = config, Path(run_dir), dist
        self.files = RunDir(run_dir)
        self.train_cases, self.val_cases = train_cases, val_cases
        self.progress, self.on_step = progress and dist.is_main, on_step
        self.device = dist.device
        t = config.train
        # a resumed latent run restores the carried autoencoder and scale (space_state)
        self.space = build_space(config, space_state).to(self.device)
        if space_state is None:
            _check_autoencoder_window(config, self.space)
        self.diffusion = Diffusion(config.diffusion, clip_sample=self.space.clip_sample)
        # the layout of weights and batches only: values, RNG draws and checkpoints are the same either way
        self.memory_format = torch.channels_last_3d if t.channels_last else torch.contiguous_format
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's global RNG
            torch.manual_seed(t.seed)
            self.model = build_model(config.model, self.space.channels).to(
                self.device, memory_format=self.memory_format
            )
        shape = train_cases.shape
        self.depth = padded_depth(shape[2], config.data)
        spatial = (self.depth, shape[1], shape[0])
        try:
            self.space.check_shape(spatial)
        except ValueError as exc:
            raise ConfigError(f"data/space mismatch: {exc}") from None
        _model_shape_error(self.model, self.space.encoded_shape(spatial)[1:], config)
        # model.condition: the training cases' values (as the network sees them, padded) standardise it
        # and go into the checkpoint's geometry, from which sampling draws
        self.condition_record: dict[str, Any] | None = None
        self.condition_basis: dict[str, Any] | None = None  # latent_pcs: the latents' PCA
        if config.model.condition is not None and not conditions.is_image_condition(config.model.condition):
            if not self.space.cache:
                raise ConfigError(f"model.condition {config.model.condition} needs a space whose latents are cached")
        elif config.model.condition is not None:
            values = [
                float(self._measure(pad_slices(v, self.depth, config.data.pad_mode)[None])[0])
                for v in train_cases.tensors
            ]
            self.condition_record = conditions.make_record(config.model.condition, values)
            self.model.set_condition_scale(self.condition_record["mean"], self.condition_record["sd"])
        self.ema = AveragedModel(self.model, multi_avg_fn=ema_avg_fn(t.ema_decay), use_buffers=True)
        self.ema.requires_grad_(False)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
        self.dataset = TrainDataset(train_cases, config.data, t.seed, augment=True)
        self.val_encoded: list[torch.Tensor] | None = None
        if self.space.cache:
            self._cache_latents(space_state is None)
        if getattr(self.space, "needs_fit", False):  # wavelet_scale band, new run: SD of each band
            self.space.fit_band_scale([pad_slices(v, self.depth, config.data.pad_mode) for v in train_cases.tensors])
        self.n_batches = len(epoch_batches(len(self.dataset), 0, t.seed, t.batch_size, dist.rank, dist.world_size))
        self.steps_per_epoch = -(-self.n_batches // t.grad_accum)
        self.total_steps = t.epochs * self.steps_per_epoch
        self.lr_scheduler = _cosine_with_warmup(self.optimizer, t.warmup_steps, self.total_steps)
        self.geometry = {
            "shape": list(shape),
            "depth": self.depth,
            "affine": np.asarray(train_cases.affine).tolist(),
            "spacing": list(train_cases.spacing),
            **({"condition": self.condition_record} if self.condition_record is not None else {}),
        }
        # position: (epoch, optimizer steps done within it); step: optimizer steps in total
        self.step, self.epoch, self.group = 0, 0, 0
        self.epoch_loss_sum, self.epoch_loss_count, self.epoch_seconds = 0.0, 0, 0.0
        self.best_val = float("inf")
        self.history: list[dict[str, Any]] = []

        net: torch.nn.Module = self.model
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            net = DistributedDataParallel(self.model, device_ids=[self.device] if self.device.type == "cuda" else None)
        if t.compile:
            net = torch.compile(net)
        self.net = net

    @torch.no_grad()
    def _cache_latents(self, fit_scale: bool) -> None:
        """Encode every (un-augmented, padded) case once; a new run fixes the latent scale from them.
        With ``data.latent_augment_copies`` N, also N augmented versions of each training case (the
        data's flip and zoom, seeded by the run's seed, the copy and the case), scaled alike."""

        conditioned = self.cfg.model.condition is not None
        on_images = conditioned and conditions.is_image_condition(self.cfg.model.condition)
        values: list[list] = []

        def encode_one(v, measure_into: list[float] | None = None):
            padded = pad_slices(v, self.depth, self.cfg.data.pad_mode)[None]
            if measure_into is not None and on_images:
                measure_into.append(float(self._measure(padded)[0]))
            return self.space.encode(padded.to(self.device))[0].cpu()

        def encode(tensors):
            return [encode_one(v) for v in tensors]

        if fit_scale:
            self.space.scale = None
            raw = encode(self.train_cases.tensors)
            scale = self.space.fit_scale(raw)
            latents = [z * scale for z in raw]
        else:
            latents = encode(self.train_cases.tensors)
        versions = [[z] for z in latents]
        if on_images:
            values = [[v] for v in self.condition_record["values"]]
        copies = self.cfg.data.latent_augment_copies
        if copies:
            augment, seed, cases = Augment(self.cfg.data), self.cfg.train.seed, self.train_cases.tensors
            keys = [(k, i) for k in range(1, copies + 1) for i in range(len(cases))]
            for k, i in counted(keys, self.progress, "encoding augmented copies", "case"):
                into = values[i] if on_images else None
                versions[i].append(encode_one(augment(cases[i], seed_from(seed, 5, k, i)), into))
        if conditioned and not on_images:
            self._fit_latent_condition(latents)
            values = [[conditions.project(self.condition_basis, z) for z in v] for v in versions]
        self.dataset = CachedDataset(versions, self.cfg.train.seed, values if conditioned else None)
        if self.val_cases is not None and self.val_cases.tensors:
            self.val_encoded = encode(self.val_cases.tensors)

    def _fit_latent_condition(self, latents: list[torch.Tensor]) -> None:
        """``model.condition`` latent_pcs: the training cases' latents' principal axes, their coordinates
        (the record sampling draws from) and the network's standardisation, in the model and its EMA copy."""
        name, k = self.cfg.model.condition, self.cfg.model.condition_components
        try:
            self.condition_basis = conditions.pca_basis(latents, k, self.cfg.model.condition_grid)
        except ValueError as exc:
            raise ConfigError(f"model.condition {name}: {exc}") from None
        values = [conditions.project(self.condition_basis, z) for z in latents]
        self.condition_record = conditions.make_record(name, values)
        for model in (self.model, self.ema.module):
            model.set_condition_scale(self.condition_record["mean"], self.condition_record["sd"])

    # ---------------------------------------------------------------------------- state
    def state(self) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "config": self.cfg.to_dict(),
            "model": self.model.state_dict(),
            "ema": self.ema.module.state_dict(),
            "ema_updates": int(self.ema.n_averaged.item()),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "epoch_step": self.group,
            "epoch_loss_sum": self.epoch_loss_sum,
            "epoch_loss_count": self.epoch_loss_count,
            "epoch_seconds": self.epoch_seconds,
            "best_val_loss": self.best_val,
            "history": list(self.history),
            "rng": rng,
            "geometry": self.geometry,
            "world_size": self.dist.world_size,
            **({"space": self.space.state()} if self.space.state() is not None else {}),
        }

    def load_state(self, ckpt: dict[str, Any], path: Path) -> None:
        load_weights(self.model, ckpt["model"], path)
        load_weights(self.ema.module, ckpt["ema"], path)
        self.ema.n_averaged.fill_(int(ckpt["ema_updates"]))
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.lr_scheduler.load_state_dict(ckpt["lr_scheduler"])
        self.step, self.epoch, self.group = int(ckpt["step"]), int(ckpt["epoch"]), int(ckpt["epoch_step"])
        self.epoch_loss_sum, self.epoch_loss_count = float(ckpt["epoch_loss_sum"]), int(ckpt["epoch_loss_count"])
        self.epoch_seconds = float(ckpt["epoch_seconds"])
        self.best_val = float(ckpt["best_val_loss"])
        self.history = list(ckpt["history"])
        if int(ckpt.get("world_size", 1)) != self.dist.world_size:
            raise ConfigError(
                f"checkpoint was written by {ckpt.get('world_size')} process(es); resume with the same number "
                f"(now {self.dist.world_size}) so the data order continues exactly",
                path,
            )
        # dropout (if any) draws from the global torch RNG: restore it so a resumed run continues exactly
        torch.set_rng_state(ckpt["rng"]["torch"])
        if self.device.type == "cuda" and "cuda" in ckpt["rng"]:
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"], self.device)

    def save(self, name: str) -> Path | None:
        if not self.dist.is_main:
            return None
        return save_checkpoint(self.files.checkpoint(name), self.state())

    # ------------------------------------------------------------------------- pieces
    def _measure(self, images: torch.Tensor) -> torch.Tensor:
        """``model.condition`` of each item of a model-scaled image batch (N, C, D, H, W)."""
        return conditions.measure(self.cfg.model.condition, images, self.cfg.data.hu_window)

    def _jitter_condition(self, cond: torch.Tensor, micro: int) -> torch.Tensor:
        """``cond`` plus Gaussian noise of ``model.condition_jitter`` times the training values' SD, seeded by the position."""
        share = self.cfg.model.condition_jitter
        if share <= 0 or self.condition_record is None:
            return cond
        g = torch.Generator().manual_seed(seed_from(self.cfg.train.seed, 9, self.dist.rank, self.step, micro))
        eps = torch.randn(cond.shape, generator=g)
        sd = torch.as_tensor(self.condition_record["sd"], dtype=cond.dtype)  # per coordinate for a vector
        return cond + share * sd * eps.to(cond.dtype)

    def _drop_condition(self, cond: torch.Tensor, micro: int) -> torch.Tensor:
        """NaN (no value) for ``model.condition_dropout`` of the items, seeded by the position like the noise."""
        p = self.cfg.model.condition_dropout
        if p <= 0:
            return cond
        g = torch.Generator().manual_seed(seed_from(self.cfg.train.seed, 8, self.dist.rank, self.step, micro))
        drop = torch.rand(cond.shape[0], generator=g) < p
        drop = drop.reshape(-1, *([1] * (cond.ndim - 1)))  # a vector condition: the whole item's vector
        return torch.where(drop, torch.full_like(cond, float("nan")), cond)

    def _with_condition(self, net, cond: torch.Tensor | None):
        """``net`` as the ``(x, t)`` callable the diffusion loss takes, given ``cond`` if any."""
        if cond is None:
            return net
        cond = cond.to(self.device)
        return lambda x, t: net(x, t, cond=cond)

    def _noise_and_t(self, x0: torch.Tensor, micro: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(seed_from(self.cfg.train.seed, 4, self.dist.rank, self.step, micro))
        t = self.diffusion.sample_timesteps(x0.shape[0], g)
        noise = self.diffusion.noise(x0.shape, g)
        return noise.to(self.device), t.to(self.device)

    @torch.no_grad()
    def validation_loss(self) -> float:
        """Mean MSE of the EMA model over every validation case at fixed timesteps with fixed noise."""
        if self.val_cases is None or not self.val_cases.tensors:
            return float("nan")
        model = self.ema.module
        model.eval()
        ts = self.diffusion.fixed_timesteps(self.cfg.train.val_timesteps)
        losses = []
        for j, vol in enumerate(self.val_cases.tensors):
            if self.val_encoded is not None:
                x0 = self.val_encoded[j][None]
            else:
                x0 = self.space.encode(pad_slices(vol, self.depth, self.cfg.data.pad_mode)[None])
            g = torch.Generator().manual_seed(seed_from(self.cfg.train.seed, 3, j))
            noise = self.diffusion.noise((len(ts), *x0.shape[1:]), g)
            cond = None
            if self.condition_basis is not None:  # latent_pcs: the case's latent's coordinates
                cond = torch.tensor([conditions.project(self.condition_basis, x0[0])], dtype=torch.float32)
            elif self.cfg.model.condition is not None:
                cond = self._measure(pad_slices(vol, self.depth, self.cfg.data.pad_mode)[None])
            for k in range(0, len(ts), self.cfg.train.batch_size):
                t = ts[k : k + self.cfg.train.batch_size]
                xb = x0.expand(len(t), *x0.shape[1:]).to(self.device, memory_format=self.memory_format)
                net = self._with_condition(model, None if cond is None else cond.expand(len(t), *cond.shape[1:]))
                with _autocast(self.device, self.cfg.train.amp):
                    loss = self.diffusion.loss(net, xb, t.to(self.device), noise[k : k + len(t)].to(self.device))
                losses.append(float(loss) * len(t))
        return sum(losses) / (len(ts) * len(self.val_cases.tensors))

    def preview(self, epoch_number: int) -> None:
        from ctdiff.diffusion.sample import ModelBundle, sample

        t = self.cfg.train
        bundle = ModelBundle(
            self.ema.module, self.cfg, self.diffusion, self.device, self.geometry, None, self.step, "ema", self.space
        )
        vol = sample(bundle, 1, sampler=t.preview_sampler, steps=t.preview_steps, seed=t.seed)[0]
        write_preview(vol, self.files.preview(epoch_number))

    def _train_step(self, group: list[torch.Tensor]) -> float:
        self.net.train()
        total = 0.0
        n = len(group)
        for micro, item in enumerate(group):
            x0, cond = item if isinstance(item, (list, tuple)) else (item, None)
            if not self.space.cache:
                if self.cfg.model.condition is not None:
                    cond = self._measure(x0)
                x0 = self.space.encode(x0.to(self.device))
            if cond is not None:
                cond = self._drop_condition(self._jitter_condition(cond, micro), micro)
            x0 = x0.to(self.device, non_blocking=True, memory_format=self.memory_format)
            noise, t = self._noise_and_t(x0, micro)
            last = micro == n - 1
            sync = contextlib.nullcontext() if (last or not self.dist.enabled) else self.net.no_sync()
            with sync:
                with _autocast(self.device, self.cfg.train.amp):
                    loss = self.diffusion.loss(self._with_condition(self.net, cond), x0, t, noise)
                (loss / n).backward()
            total += float(loss.detach())
        if self.cfg.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.update_parameters(self.model)
        return total / n

    def _end_of_epoch(self) -> None:
        """Validation, history, plots, checkpoints, preview (rank 0); all ranks agree on the position."""
        t = self.cfg.train
        started = time.perf_counter()
        train_loss = mean_across(self.dist, self.epoch_loss_sum / max(1, self.epoch_loss_count))
        number = self.epoch + 1
        if self.dist.is_main:
            val = self.validation_loss() if number % t.val_every == 0 else float("nan")
            row = {
                "epoch": number,
                "step": self.step,
                "train_loss": train_loss,
                "val_loss": val,
                "lr": self.optimizer.param_groups[0]["lr"],
                "seconds": self.epoch_seconds + time.perf_counter() - started,  # training + validation
            }
            self.history.append(row)
            score = val if not (self.val_cases is None or not self.val_cases.tensors) else train_loss
            improved = math.isfinite(score) and score < self.best_val
            if improved:
                self.best_val = score
            self.epoch, self.group = self.epoch + 1, 0
            self.epoch_loss_sum, self.epoch_loss_count, self.epoch_seconds = 0.0, 0, 0.0
            self.files.write_history(self.history)
            plot_losses(self.history, self.files.loss_plot)
            if improved:
                self.save(BEST)
            if number % t.checkpoint_every == 0 or number == t.epochs:
                self.save(LAST)
            if t.preview_every and number % t.preview_every == 0:
                self.preview(number)
        else:
            self.epoch, self.group = self.epoch + 1, 0
            self.epoch_loss_sum, self.epoch_loss_count, self.epoch_seconds = 0.0, 0, 0.0
        barrier(self.dist)

    # ---------------------------------------------------------------------------- loop
    def fit(self) -> TrainResult:
        t = self.cfg.train
        stop_at = min(self.total_steps, t.max_steps) if t.max_steps else self.total_steps
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=stop_at, initial=min(self.step, stop_at), desc="train", unit="step", dynamic_ncols=True)
        smooth = None
        stopped_early = False
        try:
            while self.epoch < t.epochs and self.step < stop_at:
                batches = epoch_batches(
                    len(self.dataset), self.epoch, t.seed, t.batch_size, self.dist.rank, self.dist.world_size
                )
                groups = [batches[i : i + t.grad_accum] for i in range(0, len(batches), t.grad_accum)]
                remaining = [b for g in groups[self.group :] for b in g]
                loader = torch.utils.data.DataLoader(
                    self.dataset,
                    batch_sampler=remaining,
                    num_workers=self.cfg.data.num_workers,
                    pin_memory=self.device.type == "cuda",
                )
                it = iter(loader)
                for group in groups[self.group :]:
                    if self.step >= stop_at:
                        break
                    started = time.perf_counter()
                    loss = self._train_step([next(it) for _ in group])
                    self.step += 1
                    self.group += 1
                    self.epoch_loss_sum += loss
                    self.epoch_loss_count += 1
                    self.epoch_seconds += time.perf_counter() - started
                    smooth = loss if smooth is None else 0.95 * smooth + 0.05 * loss
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(
                            epoch=self.epoch + 1, loss=f"{smooth:.4f}", lr=f"{self.optimizer.param_groups[0]['lr']:.2e}"
                        )
                    if self.on_step is not None:
                        self.on_step(self.step, loss)
                del it, loader
                if self.group >= len(groups):
                    self._end_of_epoch()
            stopped_early = self.step >= stop_at and stop_at < self.total_steps
            self.save(LAST)
        except KeyboardInterrupt:
            if bar is not None:
                bar.close()
                bar = None
            path = self.save(LAST)
            if path is not None:
                print(
                    f"\ninterrupted at step {self.step} (epoch {self.epoch + 1}); saved {path}\n"
                    f"resume with: python -m ctdiff train --out {self.run_dir} --resume",
                    file=sys.stderr,
                )
            raise
        finally:
            if bar is not None:
                bar.close()
        return TrainResult(
            self.run_dir,
            self.step,
            self.epoch,
            self.best_val,
            list(self.history),
            stopped_early,
            self.model,
            self.ema.module,
        )


# ---------------------------------------------------------------------------------- entry point
def _check_autoencoder_window(config: Config, space) -> None:
    """A new latent run's data window must be its autoencoder's: the autoencoder learned [-1, 1] as its
    own window, and the noise it re-synthesises is scaled by it, so another window would shift and
    stretch every intensity it encodes and decodes without an error."""
    if not isinstance(space, LatentSpace):
        return
    want = [float(v) for v in space.ae_config.hu_window]
    if want != [float(v) for v in config.data.hu_window]:
        raise ConfigError(
            f"model.autoencoder {config.model.autoencoder} was trained on the HU window {want} but data.hu_window "
            f"is {list(config.data.hu_window)}: pass --set data.hu_window=[{want[0]:g},{want[1]:g}]"
        )


OWN_AUTOENCODER_DIR = "autoencoder"  # <run>/autoencoder/: the autoencoder a latent run trains first


def _needs_own_autoencoder(config: Config) -> bool:
    return config.model.space == "latent" and not config.model.autoencoder


def _one_process_for_own_autoencoder(info: DistInfo) -> None:
    if info.world_size > 1:
        raise ConfigError(
            "model.space latent with model.autoencoder null trains the run's autoencoder first, in one process: "
            "train it with 'python -m ctdiff train-autoencoder' and pass --set model.autoencoder=AE/autoencoder.pt"
        )


def _train_own_autoencoder(
    config: Config,
    run_dir: Path,
    train_files: Sequence[str],
    val_files: Sequence[str],
    info: DistInfo,
    progress: bool,
) -> Config:
    """Train, continue or (when finished) reuse the run's own autoencoder in ``<run>/autoencoder``.

    It trains on the run's own training cases for ``train.autoencoder_steps`` steps with
    ``train-autoencoder``'s other defaults, the run's HU window and seed, and is judged on the run's
    validation cases (eval.json). Returns ``config`` with ``model.autoencoder`` naming its file.
    """
    from ctdiff.model.autoencoder import AUTOENCODER_FILE, EVAL_FILE, load_autoencoder_file, train_autoencoder

    _one_process_for_own_autoencoder(info)
    out = run_dir / OWN_AUTOENCODER_DIR
    file = out / AUTOENCODER_FILE
    steps = config.train.autoencoder_steps
    done = False
    if file.is_file() and (out / EVAL_FILE).is_file():
        done = int(load_autoencoder_file(file)["step"]) >= steps
    if not done:
        print(
            f"model.space latent, model.autoencoder null: training the run's autoencoder first ({steps} steps, {out})",
            file=sys.stderr,
        )
        held_out = list(val_files) or list(train_files[-1:])  # judged on one volume at least
        fit_on = list(train_files) if val_files else list(train_files[:-1])
        train_autoencoder(
            None,
            out,
            overrides=[f"steps={steps}"],
            config={"hu_window": list(config.data.hu_window), "seed": config.train.seed},
            resume=file.is_file(),
            force=out.is_dir() and not file.is_file(),  # an empty or unfinished first 100 steps: ours to restart
            device=str(info.device),
            progress=progress,
            files=(fit_on, held_out),
            resume_hint=f"python -m ctdiff train --out {run_dir} --resume",
            fit_discriminator=True,
        )
    return _with_autoencoder(config, file)


def _with_autoencoder(config: Config, path: str | os.PathLike) -> Config:
    """``config`` with ``model.autoencoder`` set to ``path`` (a new object; set directly, not as YAML)."""
    values = config.to_dict()
    values["model"]["autoencoder"] = str(path)
    return config_from_dict(values)


def _start_run_dir(
    run_dir: Path, force: bool, config: Config, split_seed: int, train_files, val_files, data_dir
) -> None:
    """Create (with --force: empty) the run dir and write its split.json and config.yaml."""
    if run_dir.exists() and force:
        from ctdiff.atomic import prepare_output_dir

        prepare_output_dir(run_dir, force=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    RunDir(run_dir).write_split(split_seed, train_files, val_files, data_dir)
    write_text(RunDir(run_dir).config, config.to_yaml())


def _check_run_dir(run_dir: Path, force: bool, inputs: dict | None = None) -> None:
    """Refuse a run dir that is, holds or lies inside an input (--force would delete the dataset), a
    non-empty run dir without --force, and any other non-empty folder (with or without --force)."""
    from ctdiff.outputs import WRITTEN_BY

    if run_dir.is_dir() and any(run_dir.iterdir()) and not force and WRITTEN_BY["train"](run_dir):
        from ctdiff.outputs import check_no_overlap

        check_no_overlap(run_dir, inputs or {})
        raise OverwriteError(
            "run dir exists and is not empty; pass --resume to continue it or --force to start over", run_dir
        )
    check_output(run_dir, command="train", force=force, inputs=inputs)


def _resume_checkpoint(run_dir: Path) -> Path:
    """``checkpoints/last.pt`` of the run to resume, or a one-line InputError saying why there is none."""
    files = RunDir(run_dir)
    path = files.checkpoint(LAST)
    if path.is_file():
        return path
    if not files.is_run_dir():
        raise InputError(
            "is not a run dir, so there is nothing to resume; start a run with --config and --data", run_dir
        )
    raise InputError(
        f"has no {files.CHECKPOINTS}/{LAST} to resume from: the run stopped before it saved one (train.checkpoint_every "
        "epochs, the end, Ctrl-C and SIGTERM save it); start it again with --force",
        run_dir,
    )


def train(
    config: Config | None,
    data_dir: str | os.PathLike | None,
    run_dir: str | os.PathLike,
    *,
    resume: bool = False,
    force: bool = False,
    overrides: Sequence[str] = (),
    device: str | torch.device = "auto",
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train (or with ``resume`` continue) a run; see the module docstring for what is written.

    On resume, ``config`` may be None (the checkpoint's is used); if given, its data/model/diffusion
    sections must equal the checkpoint's, while train/sample settings (e.g. more epochs) may change.
    ``overrides`` (``section.key=value``) apply on top. Runs under torchrun as one DDP rank.
    """
    run_dir = Path(run_dir)
    info = init_distributed(device)
    try:
        ckpt = ckpt_path = None
        started = False  # the run dir already set up (a latent run's own autoencoder comes first)
        files = RunDir(run_dir)
        if resume and not files.checkpoint(LAST).is_file() and (run_dir / OWN_AUTOENCODER_DIR).is_dir():
            # stopped while (or right after) training its own autoencoder: finish it, then start the diffusion
            saved = load_config(files.config)
            base = config if config is not None else saved
            config = config_from_dict(apply_overrides(base.to_dict(), overrides))
            check_same_model(saved, config, files.config)
            split = files.read_split()
            split_seed, train_files, val_files = split["seed"], split["train"], split["val"]
            resume = False
            started = True
            config = _train_own_autoencoder(config, run_dir, train_files, val_files, info, progress)
        elif resume:
            ckpt_path = _resume_checkpoint(run_dir)
            ckpt = load_checkpoint(ckpt_path)
            saved = checkpoint_config(ckpt, ckpt_path)
            if config is not None and _needs_own_autoencoder(config) and saved.model.autoencoder:
                # the run's config file again: its autoencoder is the one the checkpoints carry
                config = _with_autoencoder(config, saved.model.autoencoder)
            base = config if config is not None else saved
            config = config_from_dict(apply_overrides(base.to_dict(), overrides))
            check_same_model(saved, config, ckpt_path)
            split = files.read_split()
            split_seed, train_files, val_files = split["seed"], split["train"], split["val"]
        else:
            if config is None:
                raise ConfigError("a config is needed to start a run (--config FILE)")
            if data_dir is None:
                raise ConfigError("a dataset is needed to start a run (--data DIR)")
            config = config_from_dict(apply_overrides(config.to_dict(), overrides))
            _check_run_dir(run_dir, force, {"--data": data_dir})
            split_seed = config.data.split_seed
            train_files, val_files = make_split(dataset_files(data_dir), config.data.val_fraction, split_seed)
            if _needs_own_autoencoder(config):
                _one_process_for_own_autoencoder(info)
                # the run dir is set up before the autoencoder trains, so that --resume continues it
                _start_run_dir(run_dir, force, config, split_seed, train_files, val_files, data_dir)
                started = True
                config = _train_own_autoencoder(config, run_dir, train_files, val_files, info, progress)
        missing = [f for f in train_files + val_files if not Path(f).exists()]
        if missing:
            raise InputError(f"case listed in split.json is missing ({len(missing)} in all)", missing[0])

        bar = None
        if progress and info.is_main:
            from tqdm import tqdm

            bar = tqdm(total=len(train_files) + len(val_files), desc="load data", unit="case", leave=False)
        tick = (lambda done, total: bar.update(1)) if bar is not None else None
        train_cases = load_cases(train_files, config.data, progress=tick)
        val_cases = (
            load_cases(val_files, config.data, expected_shape=train_cases.shape, progress=tick) if val_files else None
        )
        if bar is not None:
            bar.close()
        if info.is_main:
            warn_window_clipping([train_cases, val_cases], config.data.hu_window)

        trainer = Trainer(
            config,
            run_dir,
            train_cases,
            val_cases,
            info,
            progress=progress,
            on_step=on_step,
            space_state=None if ckpt is None else ckpt.get("space"),
        )
        if ckpt is not None:
            trainer.load_state(ckpt, ckpt_path)
            del ckpt
        if info.is_main:
            if not resume and not started:
                _start_run_dir(run_dir, force, config, split_seed, train_files, val_files, data_dir)
            write_text(RunDir(run_dir).config, config.to_yaml())
            n_params = count_parameters(trainer.model)
            print(
                f"{'resuming' if resume else 'training'} {config.name}: {n_params / 1e6:.2f} M parameters, "
                f"{len(train_files)} train / {len(val_files)} val cases of {train_cases.shape} "
                f"(network depth {trainer.depth}), {trainer.steps_per_epoch} steps/epoch x {config.train.epochs} epochs, "
                f"device {info.device}, {info.world_size} process(es)",
                file=sys.stderr,
            )
        barrier(info)
        result = trainer.fit()
        if info.enabled:
            # Teardown in the order PyTorch asks for: every rank is done (rank 0 may still be saving)
            # before any leaves, and the DDP wrapper, which holds the process group, is freed before the
            # group is destroyed rather than when this frame is cleared after it. Hardening, not a
            # confirmed fix: the 2-rank gloo test (tests/ctdiff/test_ddp.py) hung in two full test runs
            # (2026-12-05, 2026-12-08), a rank's main thread at the call of train() with no frame inside
            # it, i.e. in C++ teardown while train()'s locals were being freed.
            barrier(info)
            trainer.net = None
            del trainer
            gc.collect()  # DDP's hooks make reference cycles: free it now, not at a later collection
        return result
    finally:
        shutdown(info)


# ------------------------------------------------------------------------------------------ CLI
EXAMPLES = """\
  python -m ctdiff train --config configs/demo.yaml --data data/phantom-64 --out runs/demo
  python -m ctdiff train --config configs/demo.yaml --data data/phantom-64 --out runs/demo --set train.lr=2e-4 --set train.epochs=50
  python -m ctdiff train --out runs/demo --resume                        # continue after Ctrl-C
  python -m ctdiff train --out runs/demo --resume --set train.epochs=400 # train longer
  torchrun --nproc_per_node 4 -m ctdiff train --config configs/thesis-256.yaml --data data/prostate-256 --out runs/thesis
"""


def add_arguments(parser) -> None:
    parser.add_argument(
        "--config",
        help="YAML config (configs/demo.yaml, configs/thesis-256.yaml, ...); "
        "optional with --resume (the run's own config is used)",
    )
    parser.add_argument("--data", help="prepared dataset folder (NIfTI volumes of one shape); not needed with --resume")
    parser.add_argument("--out", required=True, help="run dir to create (or to continue with --resume)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value, e.g. --set train.lr=2e-4 (repeatable)",
    )
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from checkpoints/last.pt")
    parser.add_argument("--force", action="store_true", help="start over in a non-empty --out (deletes it)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_device_arguments(parser)


def run(args) -> int:
    from ctdiff import validate
    from ctdiff.outputs import check_no_overlap

    validate.threads(args.threads)
    validate.device(args.device)
    if args.resume and args.force:
        raise ConfigError("--resume and --force contradict each other")
    # --force deletes --out: it must not hold the config file either (a resumed run may read its own)
    check_no_overlap(args.out, {"--data": args.data, **({"--config": args.config} if args.force else {})})
    apply_threads(args)
    # the overrides also go in here, so that keys the file leaves out follow them (e.g. the sampler
    # follows --set diffusion.kind); train() applies them again on top (the same values)
    config = load_config(args.config, args.overrides) if args.config else None
    with sigterm_saves():
        result = train(
            config,
            args.data,
            args.out,
            resume=args.resume,
            force=args.force,
            overrides=args.overrides,
            device=args.device,
            progress=not args.no_progress,
        )
    if int(os.environ.get("RANK", "0")) == 0:
        best = f"{result.best_val_loss:.5g}" if math.isfinite(result.best_val_loss) else "n/a"
        print(f"{result.run_dir}: {result.epoch} epoch(s), {result.step} step(s), best validation loss {best}")
    return 0
