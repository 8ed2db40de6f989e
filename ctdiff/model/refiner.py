"""A conditional residual refiner after a latent decoder (issue 20): the fine structure and noise it drops.

A KL autoencoder with a 4x latent grid decodes a smooth estimate of a volume: CT noise is
incompressible, and edges, thin fat layers and the brightest bone come back blurred. The noise model
(:mod:`ctdiff.model.noise_resynthesis`) adds back stationary noise of the right spectrum, but not the
structure, and the demo's samples sat as far outside the phantoms' radiomics balls as the
decoder's own reconstructions did (docs/generator.md, "the autoencoder's ceiling").

The refiner is a second, small diffusion model in pixel space that learns the conditional
distribution of the residual ``x - c``, where ``c`` is the decoder's noise-free estimate of a
training volume ``x`` (posterior mean encoded, decoded whole, floored at air). It is the residual
diffusion of SRDiff (Li et al. 2022) and of the "diffusion decoders" that replace a VAE decoder's
last step by sampling. Here:

- the residual and the condition are taken to the 8 sub-bands of a one-level 3D Haar transform
  (:mod:`ctdiff.model.wavelet`, lossless): the U-Net then works at half resolution, about 3x
  cheaper per step on CPU than on the voxels;
- each residual sub-band is scaled to unit SD (``scale``: the training residual's SD per band);
- rectified flow, the same ``x_t = (1 - t) x_0 + t noise`` and velocity ``x_0 - noise`` as
  ``diffusion.kind: rflow``, with continuous t; the U-Net sees ``[x_t, Haar(c)]`` (2 x 8 channels);
- sampling draws the residual from noise (seeded per volume, so a sample repeats itself) with N
  Euler steps and adds it to ``c``. The refiner makes the noise itself, so the noise model is not
  added on top.

Written by hand: neither MONAI nor diffusers has a conditional residual refiner for 3D volumes; the
U-Net is ctdiff's (:class:`ctdiff.model.unet.UNet3D`). ``python -m ctdiff train-refiner`` trains one
for a latent checkpoint (:mod:`ctdiff.diffusion.train_refiner`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch

FORMAT = "ctdiff-refiner-1"


@dataclasses.dataclass(frozen=True)
class RefinerArch:
    """The refiner U-Net: levels of ``channels`` (all 3D blocks), no attention (any volume size)."""

    channels: tuple[int, ...] = (32, 40, 48)
    res_blocks: int = 1
    levels: tuple[int, int, int] = (1, 1, 1)  # Haar levels along (z, y, x)
    norm_groups: int = 8

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RefinerArch:
        return cls(
            channels=tuple(int(c) for c in d["channels"]),
            res_blocks=int(d["res_blocks"]),
            levels=tuple(int(v) for v in d["levels"]),
            norm_groups=int(d.get("norm_groups", 8)),
        )

    @property
    def bands(self) -> int:
        from ctdiff.model.wavelet import bands

        return bands(self.levels)

    @property
    def multiple(self) -> tuple[int, int, int]:
        """What a volume's (z, y, x) must divide by: the Haar factor times the U-Net's downsampling."""
        from ctdiff.model.wavelet import factor

        down = 2 ** (len(self.channels) - 1)
        return tuple(int(f) * down for f in factor(self.levels))


def build_net(arch: RefinerArch):
    from ctdiff.model.unet import UNet3D

    k = arch.bands
    n = len(arch.channels)
    return UNet3D(
        channels=arch.channels,
        block_kinds=["3d"] * n,
        attention=[False] * n,
        mid_attention=False,
        res_blocks=arch.res_blocks,
        norm_groups=arch.norm_groups,
        in_channels=2 * k,
        out_channels=k,
    )


def to_bands(v: torch.Tensor, arch: RefinerArch) -> torch.Tensor:
    from ctdiff.model.wavelet import dwt

    return dwt(v, arch.levels)


def from_bands(v: torch.Tensor, arch: RefinerArch) -> torch.Tensor:
    from ctdiff.model.wavelet import idwt

    return idwt(v, arch.levels)


def residual_scale(x: torch.Tensor, c: torch.Tensor, arch: RefinerArch) -> torch.Tensor:
    """SD of the residual ``x - c`` (``(N, 1, D, H, W)``) per Haar sub-band: ``(bands,)``."""
    r = to_bands((x - c).float(), arch)
    sd = r.transpose(0, 1).flatten(1).std(dim=1)
    return sd.clamp_min(1e-6)


def flow_loss(net, x: torch.Tensor, c: torch.Tensor, scale: torch.Tensor, arch: RefinerArch, gen) -> torch.Tensor:
    """Rectified-flow loss on one batch: ``x`` volumes and their decoded estimates ``c`` (model units)."""
    r = to_bands(x - c, arch) / scale.view(1, -1, 1, 1, 1)
    cw = to_bands(c, arch)
    # drawn from the CPU generator (the same draws on every device), used where the volumes are
    t = torch.rand(x.shape[0], generator=gen).to(x.device)
    noise = torch.randn(r.shape, generator=gen).to(r.device)
    tt = t.view(-1, 1, 1, 1, 1)
    xt = (1 - tt) * r + tt * noise
    pred = net(torch.cat([xt, cw], 1), t * 1000.0)
    return torch.nn.functional.mse_loss(pred.float(), (r - noise).float())


@torch.no_grad()
def refine(
    net,
    c: torch.Tensor,
    scale: torch.Tensor,
    arch: RefinerArch,
    seeds: Sequence[int],
    steps: int,
    callback: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """``c`` (``(N, 1, D, H, W)``, model units, the decoded estimate) plus a drawn residual; item i from ``seeds[i]``.

    N Euler steps of the flow from t = 1 (noise) to 0; ``callback(i)`` after network evaluation i."""
    if steps < 1:
        raise ValueError(f"refiner steps must be >= 1, got {steps}")
    if len(seeds) != c.shape[0]:
        raise ValueError(f"{len(seeds)} seeds for {c.shape[0]} volumes")
    cw = to_bands(c.float(), arch)
    shape = (arch.bands, *cw.shape[2:])
    r = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s) + 7_919)) for s in seeds])
    r = r.to(c.device)
    for i in range(steps):
        t = torch.full((c.shape[0],), (1.0 - i / steps) * 1000.0, device=c.device)
        r = r + net(torch.cat([r, cw], 1), t).float() / steps
        if callback is not None:
            callback(i + 1)
    return c.float() + from_bands(r * scale.to(c.device).view(1, -1, 1, 1, 1), arch)


class Refiner:
    """A loaded refiner record (what a latent checkpoint's ``space["refiner"]`` holds)."""

    def __init__(self, record: dict[str, Any]):
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            raise ValueError(f"not a refiner record (expected format {FORMAT})")
        self.record = record
        self.arch = RefinerArch.from_dict(record["arch"])
        self.net = build_net(self.arch)
        self.net.load_state_dict({k: v.float() for k, v in record["state"].items()})
        self.net.eval().requires_grad_(False)
        self.scale = torch.as_tensor(record["scale"], dtype=torch.float32)
        self.steps = int(record["steps"])

    def to(self, device) -> Refiner:
        self.net.to(device)
        return self

    def check_shape(self, spatial: Sequence[int]) -> None:
        bad = [f"{n} {s} (a multiple of {m})" for n, s, m in zip("zyx", spatial, self.arch.multiple) if s % m]
        if bad:
            raise ValueError(f"the refiner needs volume sides divisible by its downsampling: {', '.join(bad)}")

    def __call__(self, c: torch.Tensor, seeds: Sequence[int], steps: int | None = None, callback=None) -> torch.Tensor:
        self.check_shape(c.shape[2:])
        return refine(self.net, c, self.scale, self.arch, seeds, self.steps if steps is None else steps, callback)
