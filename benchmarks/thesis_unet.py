"""The 2023 thesis network and training step, re-implemented as its script configured it.

Written from ../shared/reference/thesis-facts.md only, as the *baseline* for the benchmarks (it is
not used by ctdiff itself):

- diffusers ``UNet2DModel`` adapted to 3D: ResNet blocks with a timestep embedding (sinusoidal
  position embedding -> MLP), GroupNorm(32), SiLU, dropout 0; attention blocks that build the full
  attention matrix explicitly (softmax(QK^T / sqrt(d)) V, heads of 8 channels as diffusers'
  default); down/up blocks with skip connections; a mid block ResNet-attention-ResNet.
- Seven levels, ``block_out_channels = (32, 64, 64, 128, 256, 512, 512)``, 2 ResNet blocks per
  level (3 on the way up, as in diffusers), a downsampler after every level but the last.
- Down blocks: 3D, 2D, 3D, 2D, 3D, 3D+attention, 3D. "2D" blocks run 2D convolutions on every
  slice and halve only the in-plane size; "3D" blocks halve all three axes. Up blocks mirror them,
  attention on the second. Tensors are (batch, channel, depth, height, width).
- Plain fp32, batch 1, AdamW(lr 1e-4), DDPM epsilon-prediction MSE loss with T = 1000 linear betas.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

THESIS_CHANNELS = (32, 64, 64, 128, 256, 512, 512)
THESIS_DOWN = ("3d", "2d", "3d", "2d", "3d", "3d-attn", "3d")


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)


class PerSlice(nn.Module):
    """Run a 2D module on every slice of a (B, C, D, H, W) tensor (the thesis' "2D" blocks)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, d, h, w = x.shape
        y = self.module(x.permute(0, 2, 1, 3, 4).reshape(b * d, c, h, w))
        return y.reshape(b, d, *y.shape[1:]).permute(0, 2, 1, 3, 4)


def conv(kind: str, cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Module:
    if kind == "2d":
        return PerSlice(nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2))
    return nn.Conv3d(cin, cout, k, stride=stride, padding=k // 2)


class ResnetBlock(nn.Module):
    def __init__(self, kind: str, cin: int, cout: int, temb: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(32, cin)
        self.conv1 = conv(kind, cin, cout)
        self.temb = nn.Linear(temb, cout)
        self.norm2 = nn.GroupNorm(32, cout)
        self.conv2 = conv(kind, cout, cout)
        self.skip = conv(kind, cin, cout, k=1) if cin != cout else nn.Identity()

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb(F.silu(emb))[:, :, None, None, None]
        h = self.conv2(F.silu(self.norm2(h)))  # dropout 0 in the thesis
        return self.skip(x) + h


class ExplicitAttention(nn.Module):
    """Self-attention over all voxels with an explicit (tokens x tokens) matrix, as in 2023 diffusers."""

    def __init__(self, channels: int, head_dim: int = 8):
        super().__init__()
        self.heads = channels // head_dim
        self.norm = nn.GroupNorm(32, channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = nn.Linear(channels, channels)

    def forward(self, x, emb=None):
        b, c, d, h, w = x.shape
        tokens = self.norm(x).reshape(b, c, -1).transpose(1, 2)
        q, k, v = self.qkv(tokens).chunk(3, dim=-1)
        split = lambda t: t.reshape(b, -1, self.heads, c // self.heads).transpose(1, 2)  # noqa: E731
        q, k, v = split(q), split(k), split(v)
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(c // self.heads), dim=-1)
        y = (weights @ v).transpose(1, 2).reshape(b, -1, c)
        return x + self.out(y).transpose(1, 2).reshape(b, c, d, h, w)


class Downsample(nn.Module):
    def __init__(self, kind: str, channels: int):
        super().__init__()
        self.conv = conv(kind, channels, channels, stride=2)

    def forward(self, x):
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, kind: str, channels: int):
        super().__init__()
        self.kind = kind
        self.conv = conv(kind, channels, channels)

    def forward(self, x):
        scale = (1, 2, 2) if self.kind == "2d" else (2, 2, 2)
        return self.conv(F.interpolate(x, scale_factor=scale, mode="nearest"))


class ThesisUNet3D(nn.Module):
    def __init__(self, channels=THESIS_CHANNELS, down=THESIS_DOWN, layers_per_block: int = 2, in_channels: int = 1):
        super().__init__()
        temb = channels[0] * 4
        self.channels0 = channels[0]
        self.time_mlp = nn.Sequential(nn.Linear(channels[0], temb), nn.SiLU(), nn.Linear(temb, temb))
        self.conv_in = nn.Conv3d(in_channels, channels[0], 3, padding=1)
        self.down = nn.ModuleList()
        skips = [channels[0]]
        cin = channels[0]
        for level, (cout, kind) in enumerate(zip(channels, down)):
            base = kind.split("-")[0]
            attn = kind.endswith("attn")
            block = nn.ModuleDict(
                {
                    "resnets": nn.ModuleList(
                        ResnetBlock(base, cin if i == 0 else cout, cout, temb) for i in range(layers_per_block)
                    ),
                    "attns": nn.ModuleList(
                        ExplicitAttention(cout) if attn else nn.Identity() for _ in range(layers_per_block)
                    ),
                }
            )
            skips += [cout] * layers_per_block
            if level < len(channels) - 1:
                block["down"] = Downsample(base, cout)
                skips.append(cout)
            self.down.append(block)
            cin = cout
        self.mid = nn.ModuleList(
            [ResnetBlock("3d", cin, cin, temb), ExplicitAttention(cin), ResnetBlock("3d", cin, cin, temb)]
        )
        self.up = nn.ModuleList()
        rev_channels = list(reversed(channels))
        # up blocks mirror the down blocks: 3D, 3D+attention (the second), 3D, 2D, 3D, 2D, 3D
        rev_down = list(reversed(down))
        for level, (cout, kind) in enumerate(zip(rev_channels, rev_down)):
            base = kind.split("-")[0]
            attn = kind.endswith("attn")
            resnets, attns = nn.ModuleList(), nn.ModuleList()
            for _ in range(layers_per_block + 1):
                resnets.append(ResnetBlock(base, cin + skips.pop(), cout, temb))
                attns.append(ExplicitAttention(cout) if attn else nn.Identity())
                cin = cout
            block = nn.ModuleDict({"resnets": resnets, "attns": attns})
            if level < len(channels) - 1:
                # undo the downsampling of the mirrored down level below: same 2D/3D kind
                block["up"] = Upsample(base_of(down[len(down) - 2 - level]), cout)
            self.up.append(block)
        self.norm_out = nn.GroupNorm(32, cin)
        self.conv_out = nn.Conv3d(cin, in_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.channels0))
        h = self.conv_in(x)
        hs = [h]
        for block in self.down:
            for resnet, attn in zip(block["resnets"], block["attns"]):
                h = attn(resnet(h, emb))
                hs.append(h)
            if "down" in block:
                h = block["down"](h)
                hs.append(h)
        h = self.mid[2](self.mid[1](self.mid[0](h, emb)), emb)
        for block in self.up:
            for resnet, attn in zip(block["resnets"], block["attns"]):
                h = attn(resnet(torch.cat([h, hs.pop()], dim=1), emb))
            if "up" in block:
                h = block["up"](h)
        return self.conv_out(F.silu(self.norm_out(h)))


def base_of(kind: str) -> str:
    return kind.split("-")[0]


def required_divisors(down=THESIS_DOWN) -> tuple[int, int]:
    """(depth divisor, in-plane divisor) the input shape must satisfy."""
    n_down = len(down) - 1
    depth = 2 ** sum(1 for k in down[:n_down] if base_of(k) == "3d")
    return depth, 2**n_down


def linear_alphas_cumprod(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    return torch.cumprod(1.0 - torch.linspace(beta_start, beta_end, T, dtype=torch.float64), 0).float()


def thesis_train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x0: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    generator: torch.Generator | None = None,
) -> float:
    """One fp32 DDPM epsilon-prediction MSE step at batch size 1, as the thesis script trained."""
    t = torch.randint(0, alphas_cumprod.numel(), (x0.shape[0],), generator=generator, device="cpu").to(x0.device)
    noise = torch.randn(x0.shape, generator=generator, device="cpu").to(x0.device)
    a = alphas_cumprod.to(x0.device)[t].view(-1, 1, 1, 1, 1)
    xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
    loss = F.mse_loss(model(xt, t), noise)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())
