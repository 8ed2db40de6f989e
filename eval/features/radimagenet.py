"""RadImageNet ResNet-50 features of axial, coronal and sagittal CT slices, for multi-plane 2D FID.

MAISI (MONAI's CT generator) reports FID per plane and their mean with a ResNet-50 trained on
RadImageNet (1.35 M radiology images). The architecture is torchvision's ResNet-50, built here
with MONAI's ``ResNet`` (bottleneck blocks 3-4-6-3, 7x7 stride-2 stem, no bias in the projection
shortcuts: the same parameter names as ``torchvision.models.resnet50``, which does not install
beside this project's CPU torch build). Features are the 2048-d global average pool.

Weights are never downloaded: ``weights`` (a path) or a file named in :data:`WEIGHT_FILES` in the
torch hub cache (``$TORCH_HOME/hub/checkpoints``). Any torchvision-format ResNet-50 state dict is
accepted (``module.``/``model.``/``backbone.`` prefixes stripped, ``fc`` ignored); without weights
the metrics are reported as not computed, with :data:`MISSING_REASON`.

Slices: ``slices_per_plane`` evenly spaced slices of each plane from the central 80 % of the
volume, soft-tissue window (W400/L40) to [0, 1], bilinear resize to ``image_size`` square, grey
-> 3 channels, the per-channel mean (0.406, 0.456, 0.485) subtracted (BGR order, as MONAI's
RadImageNet FID tutorials feed the network). Feature names are ``<plane><i>`` so the FID can be
computed per plane.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from eval.features.base import WeightsSliceExtractor
from eval.features.inception import SLICE_WINDOW

WEIGHT_FILES = ("RadImageNet-ResNet50.pth", "radimagenet_resnet50.pth", "RadImageNet-ResNet50_notop.pth")
MISSING_REASON = (
    "RadImageNet ResNet-50 weights not available offline; pass --fid2d-weights PATH (a torchvision-format "
    "ResNet-50 state dict, e.g. RadImageNet-ResNet50.pth) or place one named {names} in the torch hub cache ({hub}/checkpoints)"
)
CHANNEL_MEAN = (0.406, 0.456, 0.485)  # BGR, as in MONAI's RadImageNet FID tutorials
PREFIXES = ("module.", "model.", "backbone.", "encoder.")


def resnet50_2d() -> torch.nn.Module:
    """torchvision's ResNet-50 up to the global average pool (N, 3, H, W) -> (N, 2048), via MONAI."""
    from monai.networks.nets import ResNet

    return ResNet(
        block="bottleneck",
        layers=[3, 4, 6, 3],
        block_inplanes=[64, 128, 256, 512],
        spatial_dims=2,
        n_input_channels=3,
        conv1_t_size=7,
        conv1_t_stride=2,
        feed_forward=False,
        bias_downsample=False,
        num_classes=1000,
    )


def find_weights(explicit: str | os.PathLike | None = None) -> Path | None:
    """The weights file: ``explicit`` if given (must exist), else one in the torch hub cache."""
    if explicit:
        p = Path(explicit).expanduser()
        return p if p.is_file() else None
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    return next((checkpoints / n for n in WEIGHT_FILES if (checkpoints / n).is_file()), None)


def load_resnet50(path: str | os.PathLike, device: str = "cpu") -> torch.nn.Module:
    """The network with a torchvision-format state dict from ``path``; ValueError names what is missing."""
    net = resnet50_2d()
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a state dict")
    clean = {}
    for k, v in state.items():
        for p in PREFIXES:
            if k.startswith(p):
                k = k[len(p) :]
        clean[k] = v
    wanted = net.state_dict()
    missing = [k for k in wanted if k not in clean and not k.endswith("num_batches_tracked")]
    if missing:
        raise ValueError(
            f"{path}: not torchvision-format ResNet-50 weights ({len(missing)} parameters missing, e.g. {missing[0]})"
        )
    bad = [k for k in wanted if k in clean and tuple(clean[k].shape) != tuple(wanted[k].shape)]
    if bad:
        raise ValueError(
            f"{path}: parameter {bad[0]} has shape {tuple(clean[bad[0]].shape)}, expected {tuple(wanted[bad[0]].shape)}"
        )
    net.load_state_dict({k: v for k, v in clean.items() if k in wanted}, strict=False)
    return net.eval().to(device)


def preprocess(slices: list[np.ndarray], image_size: int) -> torch.Tensor:
    """(N, 3, S, S) network input from [0, 1] grey slices (resize, 3 channels, mean subtracted)."""
    x = torch.stack(
        [
            F.interpolate(
                torch.from_numpy(np.ascontiguousarray(s))[None, None],
                size=(image_size, image_size),
                mode="bilinear",
                align_corners=False,
            )[0, 0]
            for s in slices
        ]
    )
    x = x[:, None].expand(-1, 3, -1, -1)
    return x - torch.tensor(CHANNEL_MEAN, dtype=x.dtype)[None, :, None, None]


class RadImageNetSlices(WeightsSliceExtractor):
    """Per volume: (3 planes x slices_per_plane, 2048) features, flattened; names ``<plane><i>``."""

    name = "radimagenet-resnet50-2d"  # its key in eval.features.registry
    weights_option = "--fid2d-weights"
    window = SLICE_WINDOW

    def __init__(
        self,
        weights: str | os.PathLike | None = None,
        device: str = "cpu",
        slices_per_plane: int = 8,
        image_size: int = 224,
    ):
        super().__init__(weights, device, slices_per_plane)
        self.image_size = int(image_size)

    def find_weights(self, explicit: str | os.PathLike | None) -> Path | None:
        return find_weights(explicit)

    def missing_reason(self) -> str:
        return MISSING_REASON.format(names=" or ".join(WEIGHT_FILES), hub=torch.hub.get_dir())

    def load(self):
        return load_resnet50(self.weights, self.device)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "image_size": self.image_size}

    @torch.no_grad()
    def extract(self, item) -> tuple[list[str], np.ndarray]:
        self.setup()
        names, feats = [], []
        for plane, slices in self.slices(item.array).items():
            x = preprocess(slices, self.image_size).to(self.device)
            feats.append(self._net(x).double().cpu().numpy())
            names += [f"{plane}{i}" for i in range(len(slices))]
        return names, np.concatenate(feats).reshape(-1)
