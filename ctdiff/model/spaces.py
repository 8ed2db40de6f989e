"""What the diffusion U-Net works on: the volume itself, its Haar sub-bands, or an autoencoder latent.

A :class:`Space` maps a batch of padded volumes in model units (``(N, 1, D, H, W)``, HU window ->
[-1, 1]) to the network's tensors and back:

- ``pixel``: identity (the thesis' setup, every checkpoint before spaces existed).
- ``wavelet``: the orthonormal 3D Haar transform of :mod:`ctdiff.model.wavelet`, divided by
  ``2**(k/2)`` (k = number of axis-levels) so the low-pass band stays in [-1, 1]; every detail
  band is then within [-1, 1] too, so the samplers' x_0 clipping to [-1, 1] stays valid. Lossless.
  With ``model.wavelet_scale: band`` each band is instead divided by its SD over the training set
  (stored in the checkpoint), so the small detail bands are not drowned by the diffusion noise;
  the samplers then do not clip.
- ``latent``: a MONAI ``AutoencoderKL`` (:mod:`ctdiff.model.autoencoder`), posterior mean times a scale
  factor (1 / SD of the training latents, as MAISI and Stable Diffusion do). Encoding and decoding
  of volumes larger than ``decode_tile`` go through MONAI's ``SlidingWindowInferer``. The samplers
  do not clip (latents are unbounded). An autoencoder that carries a noise model adds the noise it
  drops back after decoding when asked to (``decode(z, noise_seeds)``; :mod:`ctdiff.model.noise_resynthesis`).

The checkpoint stores :meth:`Space.state` (``ckpt["space"]``); a checkpoint without it is pixel space.
A pixel or wavelet space may carry a noise model too (``ckpt["space"]["noise_model"]``, written by
``fit-noise --samples``): the noise the model's own samples lack against its training scans, added
after decoding exactly as a latent space adds its autoencoder's (:meth:`Space.add_noise`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from ctdiff.config import Config
from ctdiff.model import wavelet

AXIS_NAMES = ("z", "y", "x")


class Space:
    kind = "pixel"
    channels = 1  # network input/output channels
    factor: tuple[int, int, int] = (1, 1, 1)  # (D, H, W) shrink of encode
    clip_sample = True  # may a sampler clip its x_0 estimate to [-1, 1]?
    cache = False  # encode the training set once (expensive encoders) instead of every step

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x

    # a noise model fitted to this space's samples (fit-noise --samples) and the HU window its decoded
    # volumes are in; None: no noise is added (a latent space reads its autoencoder's instead)
    _noise_model: dict[str, Any] | None = None
    _noise_window: tuple[float, float] | None = None

    def decode(self, z: torch.Tensor, noise_seeds: Sequence[int] | None = None) -> torch.Tensor:
        """Volumes in model units. ``noise_seeds`` (one per volume) asks a space with a noise model to
        add its re-synthesised noise (:mod:`ctdiff.model.noise_resynthesis`); without one it is ignored."""
        y = self._decode(z)
        return y if noise_seeds is None else self.add_noise(y, noise_seeds)

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        return z

    @property
    def noise_model(self) -> dict[str, Any] | None:
        return self._noise_model

    @property
    def noise_window(self) -> tuple[float, float] | None:
        """The HU window of the decoded volumes' model units (what :meth:`add_noise` converts by)."""
        return self._noise_window

    def set_noise_model(self, noise_model: dict[str, Any] | None, hu_window: Sequence[float]) -> None:
        """Carry ``noise_model`` (:mod:`ctdiff.model.noise_resynthesis`; None: none) for volumes in model
        units on ``hu_window``."""
        self._noise_model = noise_model
        self._noise_window = (float(hu_window[0]), float(hu_window[1]))

    def add_noise(self, y: torch.Tensor, noise_seeds: Sequence[int]) -> torch.Tensor:
        """``y`` (decoded, model units) floored at air plus the noise model's noise, volume i from
        ``noise_seeds[i]`` (:func:`ctdiff.model.autoencoder.add_noise`); ``y`` itself without a model."""
        from ctdiff.model.autoencoder import add_noise

        if self.noise_model is None:
            return y
        if len(noise_seeds) != y.shape[0]:
            raise ValueError(f"{len(noise_seeds)} noise seeds for {y.shape[0]} volumes")
        return add_noise(y, self.noise_model, self.noise_window, noise_seeds)

    def _with_noise(self, state: dict[str, Any]) -> dict[str, Any]:
        return state if self._noise_model is None else {**state, "noise_model": self._noise_model}

    def encoded_shape(self, spatial: Sequence[int]) -> tuple[int, int, int, int]:
        """(C, d, h, w) of the network tensor for a padded volume of (D, H, W) ``spatial``."""
        return (self.channels, *(int(s) // f for s, f in zip(spatial, self.factor)))

    def check_shape(self, spatial: Sequence[int]) -> None:
        """ValueError unless (D, H, W) divide by this space's shrink, naming the axis and the fix."""
        for size, f, axis in zip(spatial, self.factor, AXIS_NAMES):
            if int(size) % f:
                fit = math.ceil(int(size) / f) * f
                hint = " (set data.pad_slices_to)" if axis == "z" else " (prepare the data with --shape)"
                raise ValueError(
                    f"size {size} along {axis} is not divisible by {f}, the {self.kind} space's "
                    f"shrink along {axis}; pad or resize {axis} to {fit}{hint}"
                )

    def to(self, device: torch.device | str) -> Space:
        return self

    def state(self) -> dict[str, Any] | None:
        return None


class PixelSpace(Space):
    def state(self) -> dict[str, Any] | None:
        # nothing to store (a checkpoint without a space entry is pixel space) unless a noise model
        return None if self._noise_model is None else self._with_noise({"kind": self.kind})


class WaveletSpace(Space):
    kind = "wavelet"

    def __init__(self, levels: Sequence[int], scale: str = "lowpass", band_scale: Sequence[float] | None = None):
        self.levels = tuple(int(k) for k in levels)
        self.channels = wavelet.bands(self.levels)
        self.factor = wavelet.factor(self.levels)
        self.mode = scale
        if scale == "lowpass":
            # orthonormal Haar scales the low-pass band by sqrt(2) per axis-level; undo that
            self.scale: float | torch.Tensor = 2.0 ** (-sum(self.levels) / 2.0)
        else:  # "band": 1 / SD per band, fitted on the training set (fit_band_scale) or restored
            self.scale = None if band_scale is None else _band_tensor(band_scale)
        self.clip_sample = scale == "lowpass"  # unit-variance bands are not bounded by [-1, 1]

    @property
    def needs_fit(self) -> bool:
        return self.scale is None

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return wavelet.dwt(x, self.levels) * self._scale(x)

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        return wavelet.idwt(z / self._scale(z), self.levels)

    def _scale(self, like: torch.Tensor) -> float | torch.Tensor:
        if self.scale is None:
            raise ValueError("the wavelet space's band scales are not fitted yet (set from the training set)")
        if isinstance(self.scale, float):
            return self.scale
        return self.scale.to(like.device, like.dtype)

    def fit_band_scale(self, volumes: Sequence[torch.Tensor]) -> list[float]:
        """1 / SD of each sub-band over ``volumes`` (``(1, D, H, W)`` padded, model units), so every
        band the U-Net sees has unit variance (detail bands of CT are ~100x smaller than the low-pass)."""
        bands = torch.cat([wavelet.dwt(v[None].double(), self.levels)[0].flatten(1) for v in volumes], dim=1)
        sd = bands.std(dim=1).clamp_min(1e-8)
        self.scale = _band_tensor((1.0 / sd).tolist())
        return self.scale.flatten().tolist()

    def state(self) -> dict[str, Any]:
        if self.mode == "lowpass":
            # as checkpoints before wavelet_scale
            return self._with_noise({"kind": self.kind, "levels": list(self.levels)})
        scale = None if self.scale is None else self.scale.flatten().tolist()
        state = {"kind": self.kind, "levels": list(self.levels), "scale_mode": self.mode, "band_scale": scale}
        return self._with_noise(state)


def _band_tensor(values: Sequence[float]) -> torch.Tensor:
    return torch.tensor([float(v) for v in values], dtype=torch.float32).view(1, -1, 1, 1, 1)


class LatentSpace(Space):
    kind = "latent"
    clip_sample = False
    cache = True

    def __init__(
        self,
        autoencoder: dict[str, Any],
        scale: float | None = None,
        tile: Sequence[int] = (16, 32, 32),
        refiner: dict[str, Any] | None = None,
    ):
        from ctdiff.model.autoencoder import build_autoencoder

        self.record = autoencoder  # {"config", "state", "sha256", "path"}
        # a residual refiner after the decoder (python -m ctdiff train-refiner; ctdiff.model.refiner)
        self.refiner_record = refiner
        self.refiner = None
        if refiner is not None:
            from ctdiff.model.refiner import Refiner

            self.refiner = Refiner(refiner)
        self.ae, self.ae_config = build_autoencoder(autoencoder["config"])
        self.ae.load_state_dict(autoencoder["state"])
        self.ae.eval().requires_grad_(False)
        self.channels = self.ae_config.latent_channels
        f = self.ae_config.downsampling
        self.factor = (f, f, f)
        self.scale = scale
        self.tile = tuple(int(t) for t in tile)

    def to(self, device) -> LatentSpace:
        self.ae.to(device)
        if self.refiner is not None:
            self.refiner.to(device)
        return self

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        from ctdiff.model.autoencoder import encode_mean

        z = encode_mean(self.ae, x.contiguous(), tuple(t * f for t, f in zip(self.tile, self.factor)))
        return z if self.scale is None else z * self.scale

    @property
    def noise_model(self) -> dict[str, Any] | None:
        return self.record.get("noise_model")  # the autoencoder's (fit-noise on a latent checkpoint)

    def set_noise_model(self, noise_model: dict[str, Any] | None, hu_window: Sequence[float]) -> None:
        raise TypeError("a latent space's noise model is its autoencoder's (space.autoencoder.noise_model)")

    def decode(self, z: torch.Tensor, noise_seeds: Sequence[int] | None = None, z_pad: int = 0) -> torch.Tensor:
        """As :meth:`Space.decode`. ``z_pad`` (``sample.decode_z_pad``): the latent is reflect-padded by
        that many slices at each end for the decoder and its output cropped back before the noise, so
        the decoder's zero-padded z borders fall outside the volume."""
        from ctdiff.model.autoencoder import decode

        if self.scale is None:
            raise ValueError("the latent space has no scale factor yet (set from the training latents)")
        y = decode(self.ae, z.float().contiguous() / self.scale, self.tile, z_pad)
        return y if noise_seeds is None else self.add_noise(y, noise_seeds)

    @property
    def noise_window(self) -> tuple[float, float]:
        return tuple(float(w) for w in self.ae_config.hu_window)

    def fit_scale(self, latents: Sequence[torch.Tensor]) -> float:
        """1 / SD of unscaled training latents, so the diffused latents have unit variance."""
        sd = float(torch.cat([z.flatten() for z in latents]).std())
        self.scale = 1.0 / max(sd, 1e-8)
        return self.scale

    def state(self) -> dict[str, Any]:
        state = {"kind": self.kind, "autoencoder": self.record, "scale": self.scale}
        if self.refiner_record is not None:
            state["refiner"] = self.refiner_record
        return state


def build_space(config: Config, saved: dict[str, Any] | None = None) -> Space:
    """The space of ``config``; ``saved`` (a checkpoint's ``space`` entry) restores a latent
    space's carried autoencoder and scale, a wavelet space's band scales, and a pixel or wavelet
    space's noise model. Latent without ``saved`` reads ``model.autoencoder``."""
    m = config.model
    if m.space in ("pixel", "wavelet"):
        if m.space == "pixel":
            space: Space = PixelSpace()
        else:
            band = saved.get("band_scale") if saved is not None and saved.get("kind") == "wavelet" else None
            space = WaveletSpace(m.wavelet_levels, m.wavelet_scale, band)
        if saved is not None and saved.get("kind") == m.space and saved.get("noise_model") is not None:
            space.set_noise_model(saved["noise_model"], config.data.hu_window)  # fit-noise --samples
        return space
    if saved is not None and saved.get("kind") == "latent":
        return LatentSpace(saved["autoencoder"], saved.get("scale"), config.sample.decode_tile, saved.get("refiner"))
    from ctdiff.model.autoencoder import autoencoder_record

    return LatentSpace(autoencoder_record(m.autoencoder), None, config.sample.decode_tile)
