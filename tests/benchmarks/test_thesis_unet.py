"""The benchmark baseline must be the thesis network as described, not a convenient variant."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from thesis_unet import (  # noqa: E402
    THESIS_CHANNELS,
    THESIS_DOWN,
    ExplicitAttention,
    PerSlice,
    ThesisUNet3D,
    linear_alphas_cumprod,
    required_divisors,
    thesis_train_step,
)


def test_thesis_layout_and_shape_contract():
    assert THESIS_CHANNELS == (32, 64, 64, 128, 256, 512, 512)
    assert THESIS_DOWN == ("3d", "2d", "3d", "2d", "3d", "3d-attn", "3d")
    # 6 downsamplers: 4 of them full 3D (depth /16), all halve in-plane (/64): 26 slices pad to 32
    assert required_divisors() == (16, 64)
    model = ThesisUNet3D(channels=(32,) * 7)
    depth_factors = []
    x = torch.zeros(1, 32, 16, 64, 64)
    for block in model.down:
        if "down" in block:
            y = block["down"](x)
            depth_factors.append(x.shape[2] // y.shape[2])
            assert y.shape[3:] == (x.shape[3] // 2, x.shape[4] // 2)
            x = y
    assert depth_factors == [2, 1, 2, 1, 2, 2]
    assert isinstance(model.down[1]["resnets"][0].conv1, PerSlice)  # "2D" level runs per slice
    attn_levels = [i for i, b in enumerate(model.down) if isinstance(b["attns"][0], ExplicitAttention)]
    assert attn_levels == [5]
    assert [i for i, b in enumerate(model.up) if isinstance(b["attns"][0], ExplicitAttention)] == [1]
    assert isinstance(model.mid[1], ExplicitAttention)


def test_thesis_step_runs_and_learns_shape():
    torch.manual_seed(0)
    model = ThesisUNet3D(channels=(32,) * 7)
    x = torch.randn(1, 1, 32, 64, 64)  # bottom level is then 2x1x1 voxels
    out = model(x, torch.tensor([500]))
    assert out.shape == x.shape
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss = thesis_train_step(model, opt, x, linear_alphas_cumprod(), torch.Generator().manual_seed(0))
    assert 0.5 < loss < 3.0  # epsilon MSE of an untrained net is about Var(noise) = 1
    acp = linear_alphas_cumprod()
    assert acp.shape == (1000,) and abs(float(acp[0]) - (1 - 1e-4)) < 1e-7
