"""A compact 3D denoising U-Net with per-level downsampling factors.

Why hand-written: MONAI 1.6.1's ``DiffusionModelUNet`` downsamples every level by the same factor
along all spatial axes, so it cannot express the thesis' mix of full-3D levels (halve x, y and z) and
per-slice "2D" levels (1x3x3 convolutions, halve x and y only) that thin slabs of 26-32 slices need.
The structure follows diffusers' ``UNet2DModel`` (which the thesis adapted): ResNet blocks with a
sinusoidal timestep embedding (diffusers' ``get_timestep_embedding``), GroupNorm, attention blocks
(``torch.nn.functional.scaled_dot_product_attention``) at chosen levels and in the mid block, skip
connections after every ResNet block and downsampler, and no downsampling after the last level.

Tensors are ``(N, C, D, H, W)`` = ``(N, 1, z, y, x)`` (see :mod:`ctdiff.data.tensors`). Schedule math
lives in :mod:`ctdiff.diffusion.schedule`; this module only maps ``(x_t, t)`` to the network output.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import get_timestep_embedding
from torch import nn
from torch.utils.checkpoint import checkpoint

from ctdiff.config import BLOCK_KINDS, ModelConfig

AXIS_NAMES = ("z", "y", "x")  # tensor axes D, H, W


def _kernel(kind: str) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(kernel, padding) of a 3x3x3 ("3d") or per-slice 1x3x3 ("2d") convolution."""
    return ((3, 3, 3), (1, 1, 1)) if kind == "3d" else ((1, 3, 3), (0, 1, 1))


def down_factor(kind: str) -> tuple[int, int, int]:
    """Downsampling factor along (D, H, W) = (z, y, x) after a level of this kind."""
    return (2, 2, 2) if kind == "3d" else (1, 2, 2)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb_dim: int, kind: str, groups: int, dropout: float):
        super().__init__()
        k, p = _kernel(kind)
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv3d(cin, cout, k, padding=p)
        self.emb = nn.Linear(emb_dim, cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv3d(cout, cout, k, padding=p)
        nn.init.zeros_(self.conv2.weight)  # each block starts as identity (improved-diffusion)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv3d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head self-attention over all voxels of a level (used only at coarse levels)."""

    def __init__(self, channels: int, groups: int, head_channels: int):
        super().__init__()
        self.heads = max(1, channels // head_channels)
        if channels % self.heads:
            raise ValueError(f"attention channels {channels} not divisible into {self.heads} heads")
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv3d(channels, 3 * channels, 1)
        self.proj = nn.Conv3d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        n, c, d, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(n, 3, self.heads, c // self.heads, d * h * w)
        q, k, v = (qkv[:, i].transpose(-1, -2) for i in range(3))  # (n, heads, tokens, head_dim)
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(-1, -2).reshape(n, c, d, h, w)
        return x + self.proj(out)


class Downsample(nn.Module):
    def __init__(self, channels: int, kind: str):
        super().__init__()
        k, p = _kernel(kind)
        self.conv = nn.Conv3d(channels, channels, k, stride=down_factor(kind), padding=p)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int, kind: str):
        super().__init__()
        k, p = _kernel(kind)
        self.factor = down_factor(kind)
        self.conv = nn.Conv3d(channels, channels, k, padding=p)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=self.factor, mode="nearest"))


class UNet3D(nn.Module):
    """3D U-Net ``(x_t (N,C,D,H,W), t (N,)) -> (N,C,D,H,W)`` with per-level "2d"/"3d" blocks.

    ``block_kinds[i]`` sets level i's convolution kernels and the downsampling after it ("3d":
    (2,2,2) along (z,y,x); "2d": in-plane only). Inputs must be divisible by :attr:`multiple`.
    """

    def __init__(
        self,
        channels: Sequence[int] = (32, 64),
        block_kinds: Sequence[str] = ("3d", "3d"),
        attention: Sequence[bool] | None = None,
        mid_attention: bool = True,
        res_blocks: int = 2,
        norm_groups: int = 32,
        head_channels: int = 64,
        dropout: float = 0.0,
        gradient_checkpointing: bool = False,
        time_channels: int | None = None,
        in_channels: int = 1,
        out_channels: int = 1,
        condition: str | None = None,
        condition_dims: int = 1,
    ):
        super().__init__()
        channels, block_kinds = list(channels), list(block_kinds)
        attention = [False] * len(channels) if attention is None else list(attention)
        if not channels:
            raise ValueError("channels needs at least one level")
        if len(block_kinds) != len(channels) or len(attention) != len(channels):
            raise ValueError(
                f"block_kinds ({len(block_kinds)}) and attention ({len(attention)}) need one entry per level "
                f"({len(channels)} channels)"
            )
        if any(k not in BLOCK_KINDS for k in block_kinds):
            raise ValueError(f"block_kinds entries must be one of {BLOCK_KINDS}, got {block_kinds}")
        if any(c % norm_groups for c in channels):
            raise ValueError(f"every channel count must be divisible by norm_groups={norm_groups}, got {channels}")
        if res_blocks < 1:
            raise ValueError("res_blocks must be >= 1")
        self.channels, self.block_kinds, self.attention = channels, block_kinds, attention
        self.gradient_checkpointing = gradient_checkpointing
        levels = len(channels)
        mult = [1, 1, 1]
        for kind in block_kinds[:-1]:
            mult = [m * f for m, f in zip(mult, down_factor(kind))]
        self.multiple: tuple[int, int, int] = tuple(mult)  # required divisor of (D, H, W)

        c0 = channels[0]
        self.time_channels = time_channels or c0
        emb_dim = 4 * self.time_channels
        self.time_mlp = nn.Sequential(nn.Linear(self.time_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        # model.condition: a scalar (ctdiff.model.condition), standardised by the training values' mean
        # and SD (buffers, set by the trainer) and added to the timestep embedding through its own MLP,
        # whose last layer starts at zero (training starts from the unconditional network). A vector
        # condition (condition_dims > 1: latent_pcs) has a center and scale per coordinate.
        self.condition = condition
        self.condition_dims = int(condition_dims)
        if condition is not None:
            d = self.condition_dims
            self.cond_mlp = nn.Sequential(nn.Linear(d, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
            nn.init.zeros_(self.cond_mlp[2].weight)
            nn.init.zeros_(self.cond_mlp[2].bias)
            shape = () if d == 1 else (d,)  # () as every scalar-conditioned checkpoint stores them
            self.register_buffer("cond_center", torch.zeros(shape))
            self.register_buffer("cond_scale", torch.ones(shape))
        k, p = _kernel(block_kinds[0])
        self.conv_in = nn.Conv3d(in_channels, c0, k, padding=p)

        # encoder: each ResBlock (+ attention) and each downsampler pushes one skip
        self.down = nn.ModuleList()
        skips = [c0]
        cin = c0
        for i, (cout, kind) in enumerate(zip(channels, block_kinds)):
            for _ in range(res_blocks):
                layer = nn.ModuleList([ResBlock(cin, cout, emb_dim, kind, norm_groups, dropout)])
                if attention[i]:
                    layer.append(Attention(cout, norm_groups, head_channels))
                self.down.append(layer)
                skips.append(cout)
                cin = cout
            if i < levels - 1:
                self.down.append(nn.ModuleList([Downsample(cout, kind)]))
                skips.append(cout)

        last = block_kinds[-1]
        self.mid = nn.ModuleList([ResBlock(cin, cin, emb_dim, last, norm_groups, dropout)])
        if mid_attention:
            self.mid.append(Attention(cin, norm_groups, head_channels))
        self.mid.append(ResBlock(cin, cin, emb_dim, last, norm_groups, dropout))

        # decoder mirrors the encoder: res_blocks + 1 ResBlocks per level, each eating one skip
        self.up = nn.ModuleList()
        for i in reversed(range(levels)):
            cout, kind = channels[i], block_kinds[i]
            for _ in range(res_blocks + 1):
                layer = nn.ModuleList([ResBlock(cin + skips.pop(), cout, emb_dim, kind, norm_groups, dropout)])
                if attention[i]:
                    layer.append(Attention(cout, norm_groups, head_channels))
                self.up.append(layer)
                cin = cout
            if i > 0:
                # undo the downsampling that followed level i-1
                self.up.append(nn.ModuleList([Upsample(cout, block_kinds[i - 1])]))

        self.norm_out = nn.GroupNorm(norm_groups, cin)
        k, p = _kernel(block_kinds[0])
        self.conv_out = nn.Conv3d(cin, out_channels, k, padding=p)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    @classmethod
    def from_config(cls, cfg: ModelConfig, channels: int = 1) -> UNet3D:
        return cls(
            channels=cfg.channels,
            block_kinds=cfg.block_kinds,
            attention=cfg.attention,
            mid_attention=cfg.mid_attention,
            res_blocks=cfg.res_blocks,
            norm_groups=cfg.norm_groups,
            head_channels=cfg.head_channels,
            dropout=cfg.dropout,
            gradient_checkpointing=cfg.gradient_checkpointing,
            time_channels=cfg.time_channels,
            in_channels=channels,
            out_channels=channels,
            condition=cfg.condition,
            condition_dims=cfg.condition_components if cfg.condition == "latent_pcs" else 1,
        )

    def check_shape(self, spatial: Sequence[int]) -> None:
        """Raise ValueError unless (D, H, W) divide by the total downsampling, naming axis and fix."""
        if len(spatial) != 3:
            raise ValueError(f"expected (D, H, W) = (z, y, x) spatial shape, got {tuple(spatial)}")
        for size, m, axis in zip(spatial, self.multiple, AXIS_NAMES):
            if size % m:
                fit = math.ceil(size / m) * m
                hint = " (set data.pad_slices_to)" if axis == "z" else " (prepare the data with --shape)"
                raise ValueError(
                    f"input size {size} along {axis} is not divisible by {m}, the model's total downsampling "
                    f"along {axis}; pad or resize {axis} to {fit}{hint}"
                )

    def _run(self, layers: nn.ModuleList, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(_apply, layers, h, emb, use_reentrant=False)
        return _apply(layers, h, emb)

    def set_condition_scale(self, center, scale) -> None:
        """The training values' mean and SD (numbers, or one per coordinate of a vector condition), by
        which the condition is standardised (a conditioned model)."""
        if self.condition is None:
            raise ValueError("this model is not conditioned (model.condition is null)")
        c = torch.as_tensor(center, dtype=torch.float32).reshape(self.cond_center.shape)
        s = torch.as_tensor(scale, dtype=torch.float32).reshape(self.cond_scale.shape)
        self.cond_center.copy_(c)
        self.cond_scale.copy_(torch.where(s > 0, s, torch.ones_like(s)))

    def _condition_embedding(self, cond, n: int, like: torch.Tensor) -> torch.Tensor | None:
        """The condition's term of the embedding: zero for items whose value is NaN (no value), as for ``None``."""
        if cond is None:
            return None
        if self.condition is None:
            raise ValueError("a condition was given to a model without one (model.condition is null)")
        d = self.condition_dims
        c = torch.as_tensor(cond, device=like.device, dtype=torch.float32).reshape(-1)
        if c.numel() == d:
            c = c.repeat(n)
        if c.numel() != n * d:
            what = "" if d == 1 else f" ({d} numbers)"
            raise ValueError(f"expected one condition value{what} per item ({n}), got {c.numel()} numbers")
        c = c.reshape(n, d)
        known = torch.isfinite(c).all(dim=1, keepdim=True)  # an item with any NaN: no value
        z = torch.where(known, (c - self.cond_center.reshape(-1)) / self.cond_scale.reshape(-1), torch.zeros_like(c))
        return self.cond_mlp(z.to(like.dtype)) * known.to(like.dtype)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
        """``cond``: the condition per item (or one for all); None or NaN = none (a conditioned model's
        unconditional flow)."""
        if x.ndim != 5:
            raise ValueError(f"expected (N, C, D, H, W) input, got shape {tuple(x.shape)}")
        self.check_shape(x.shape[2:])
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        temb = get_timestep_embedding(t, self.time_channels, flip_sin_to_cos=True, downscale_freq_shift=0)
        emb = self.time_mlp(temb.to(x.dtype))
        cemb = self._condition_embedding(cond, x.shape[0], emb)
        if cemb is not None:
            emb = emb + cemb

        h = self.conv_in(x)
        hs = [h]
        for layer in self.down:
            h = self._run(layer, h, emb)
            hs.append(h)
        h = self._run(self.mid, h, emb)
        for layer in self.up:
            if isinstance(layer[0], ResBlock):
                h = torch.cat([h, hs.pop()], dim=1)
            h = self._run(layer, h, emb)
        return self.conv_out(F.silu(self.norm_out(h)))


def _apply(layers: nn.ModuleList, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    """Apply a list of (h, emb) layers in order (one unit for gradient checkpointing)."""
    for layer in layers:
        h = layer(h, emb)
    return h


def build_model(cfg: ModelConfig, channels: int = 1) -> UNet3D:
    """The U-Net of ``cfg`` for ``channels`` input/output channels (the space's: 1 pixel, 2^k wavelet, latent's)."""
    return UNet3D.from_config(cfg, channels)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
