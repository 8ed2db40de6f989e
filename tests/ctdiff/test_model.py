"""UNet3D: shape contracts for every downsampling mix, clear shape errors, per-slice "2d" levels,
the thesis preset at full size (on the meta device), gradient checkpointing."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from ctdiff.config import load_config
from ctdiff.model.unet import Attention, UNet3D, build_model

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Overwrite the zero-initialised layers so the output depends on the input."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


@pytest.mark.parametrize("kinds", list(itertools.product(["2d", "3d"], repeat=3)))
def test_shape_contract_every_mix(kinds):
    model = UNet3D((4, 8, 8), kinds, (False, False, True), norm_groups=4, head_channels=4, res_blocks=1)
    mult = [1, 1, 1]
    for k in kinds[:-1]:  # no downsampling after the last level
        mult = [m * f for m, f in zip(mult, (2, 2, 2) if k == "3d" else (1, 2, 2))]
    assert model.multiple == tuple(mult)
    d, h, w = mult[0] * 2, 8, 12
    x = torch.randn(2, 1, d, h, w)
    out = _randomise(model)(x, torch.tensor([0, 999]))
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


def test_zero_init_output_and_timestep_dependence():
    model = UNet3D((4, 8), ("3d", "3d"), norm_groups=4, head_channels=4, res_blocks=1)
    x = torch.randn(1, 1, 4, 8, 8)
    assert torch.count_nonzero(model(x, torch.tensor([5]))) == 0  # zero-initialised output conv
    _randomise(model)
    assert not torch.allclose(model(x, torch.tensor([5])), model(x, torch.tensor([500])))


@pytest.mark.parametrize(
    "spatial, axis, fit",
    [((6, 16, 16), "z", 8), ((8, 12, 16), "y", 16), ((8, 16, 20), "x", 24)],
)
def test_indivisible_shape_names_axis_and_fix(spatial, axis, fit):
    model = UNet3D((4, 4, 4, 4), ("3d", "3d", "2d", "3d"), norm_groups=4, res_blocks=1)
    assert model.multiple == (4, 8, 8)
    with pytest.raises(ValueError) as info:
        model(torch.zeros(1, 1, *spatial), torch.tensor([1]))
    msg = str(info.value)
    assert f"along {axis}" in msg and f"to {fit}" in msg


def test_time_embedding_size():
    small = UNet3D((4, 8), ("3d", "3d"), norm_groups=4, res_blocks=1)
    wide = UNet3D((4, 8), ("3d", "3d"), norm_groups=4, res_blocks=1, time_channels=64)
    assert small.time_mlp[0].in_features == 4 and wide.time_mlp[0].in_features == 64
    assert wide.down[0][0].emb.in_features == 256


def test_argument_errors():
    with pytest.raises(ValueError, match="norm_groups"):
        UNet3D((6, 8), ("3d", "3d"), norm_groups=4)
    with pytest.raises(ValueError, match="one entry per level"):
        UNet3D((4, 8), ("3d",), norm_groups=4)
    with pytest.raises(ValueError, match="block_kinds"):
        UNet3D((4, 8), ("3d", "4d"), norm_groups=4)


def _without_norms(model: torch.nn.Module) -> torch.nn.Module:
    """Replace every GroupNorm (whose statistics span all slices) by identity."""
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, torch.nn.GroupNorm):
                setattr(module, child_name, torch.nn.Identity())
    return model


def test_2d_levels_are_per_slice():
    # convolutions, down- and upsampling of "2d" levels never mix slices: with the norms removed,
    # changing slice 2 of the input changes slice 2 of the output and nothing else
    x = torch.randn(1, 1, 6, 8, 8)
    y = x.clone()
    y[:, :, 2] += 1.0
    t = torch.tensor([3])
    flat = _without_norms(
        _randomise(UNet3D((4, 8), ("2d", "2d"), (False, False), mid_attention=False, norm_groups=4, res_blocks=1))
    )
    diff = (flat(x, t) - flat(y, t)).abs().amax(dim=(0, 1, 3, 4))
    assert diff[2] > 1e-3
    assert torch.all(diff[[0, 1, 3, 4, 5]] == 0)
    # the same check on "3d" levels: 3x3x3 kernels do reach the neighbouring slices
    full = _without_norms(
        _randomise(UNet3D((4, 8), ("3d", "3d"), (False, False), mid_attention=False, norm_groups=4, res_blocks=1))
    )
    diff3 = (full(x, t) - full(y, t)).abs().amax(dim=(0, 1, 3, 4))
    assert diff3[1] > 1e-3 and diff3[3] > 1e-3


def test_thesis_preset_full_size_on_meta_device():
    cfg = load_config(CONFIGS / "thesis-256.yaml")
    with torch.device("meta"):
        model = build_model(cfg.model)
        out = model(torch.empty(1, 1, 32, 256, 256), torch.zeros(1, dtype=torch.long))
    assert out.shape == (1, 1, 32, 256, 256)
    assert model.multiple == (16, 64, 64)  # 26 slices -> padded to 32
    assert model.time_mlp[0].in_features == 32 and model.time_mlp[2].out_features == 128  # diffusers' sizes
    with pytest.raises(ValueError, match="along z .* to 32"):
        model.check_shape((26, 256, 256))
    n_attention = sum(isinstance(m, Attention) for m in model.modules())
    assert n_attention == 2 + 3 + 1  # level 6: 2 down + 3 up blocks, and the mid block


def test_gradient_checkpointing_same_values_and_grads():
    torch.manual_seed(0)
    a = _randomise(UNet3D((4, 8), ("3d", "2d"), (False, True), norm_groups=4, head_channels=4, res_blocks=1))
    b = _randomise(
        UNet3D(
            (4, 8),
            ("3d", "2d"),
            (False, True),
            norm_groups=4,
            head_channels=4,
            res_blocks=1,
            gradient_checkpointing=True,
        )
    )
    x = torch.randn(2, 1, 4, 8, 8)
    t = torch.tensor([1, 900])
    ya, yb = a(x, t), b(x, t)
    torch.testing.assert_close(ya, yb)
    ya.square().sum().backward()
    yb.square().sum().backward()
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, msg=n)
