"""The feature extractor base class, in its own module so imports run one way (torch-fidelity style).

``registry`` imports the built-in extractors, and they import only this module, so the registry and
its extractors never import each other.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


class FeatureExtractor:
    """Base class. Subclasses set ``name`` and ``input`` and implement :meth:`extract`.

    ``input`` is ``"file"`` (``extract`` gets the case's path; the extractor reads it itself) or
    ``"volume"`` (``extract`` gets a :class:`~ctdiff.data.volume.Volume` on the report's common grid).
    Instances must be picklable before :meth:`setup` so worker processes can receive them.
    """

    name: str = ""
    input: str = "file"
    # Long extractions report sub-steps (radiomics: one per image type) through ``on_step()``, which
    # eval.report.extract sets; ``steps_per_item()`` says how many one item takes.
    on_step: Callable[[], None] | None = None

    def steps_per_item(self) -> int:
        return 1

    def step(self) -> None:
        """Called by an extractor after each sub-step of one item (no-op unless someone listens)."""
        if self.on_step is not None:
            self.on_step()

    def settings(self) -> dict[str, Any]:
        return {}

    def unavailable_reason(self) -> str | None:
        """Why this extractor cannot run here (missing weights...), or None when it can."""
        return None

    def setup(self) -> None:
        """Heavy initialisation (models, pyradiomics); called once per process before extracting."""

    def extract(self, item) -> tuple[list[str], np.ndarray]:
        raise NotImplementedError


def weights_id(path: str | os.PathLike) -> str:
    """The first 16 hex digits of a weights file's SHA-256: part of a slice extractor's cache key, so
    features computed with other weights are never reused."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def plane_slices(array: np.ndarray, slices_per_plane: int, window: tuple[float, float]) -> dict[str, list[np.ndarray]]:
    """``{plane: [windowed [0, 1] slices]}``: ``slices_per_plane`` evenly spaced in the central 80 %
    of each plane (axial, coronal, sagittal): what the 2D FID extractors feed their networks."""
    from ctdiff.data.display import PLANES, apply_window, n_slices, plane_slice

    out: dict[str, list[np.ndarray]] = {}
    for plane in PLANES:
        n = n_slices(array.shape, plane)
        lo, hi = int(0.1 * n), max(int(0.9 * n), int(0.1 * n) + 1)
        idx = np.unique(np.linspace(lo, hi - 1, slices_per_plane).round().astype(int))
        out[plane] = [apply_window(plane_slice(array, plane, int(i)), *window).astype(np.float32) / 255.0 for i in idx]
    return out


class WeightsSliceExtractor(FeatureExtractor):
    """A 2D network on windowed slices of every plane, with weights from a local file.

    Subclasses set ``weights_option`` (the CLI flag named in errors) and ``window`` and implement
    :meth:`find_weights`, :meth:`missing_reason` and :meth:`load`; the weights file's hash is part of
    :meth:`settings`, hence of the feature cache key.
    """

    input = "volume"
    weights_option = ""
    window: tuple[float, float] = (400.0, 40.0)

    def __init__(self, weights: str | os.PathLike | None = None, device: str = "cpu", slices_per_plane: int = 8):
        self.weights = self.find_weights(weights)
        self.explicit = weights
        self.device = device
        self.slices_per_plane = int(slices_per_plane)
        self._net = None
        self._weights_id = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_net"] = None  # picklable before setup(): worker processes load their own copy
        return state

    def find_weights(self, explicit: str | os.PathLike | None) -> Path | None:
        raise NotImplementedError

    def missing_reason(self) -> str:
        raise NotImplementedError

    def load(self):
        raise NotImplementedError

    def unavailable_reason(self) -> str | None:
        if self.weights is None:
            if self.explicit:
                return f"{self.weights_option} {self.explicit}: no such file"
            return self.missing_reason()
        return None

    def settings(self) -> dict[str, Any]:
        if self._weights_id is None and self.weights is not None:
            self._weights_id = weights_id(self.weights)
        return {
            "weights_sha256": self._weights_id,
            "slices_per_plane": self.slices_per_plane,
            "window": list(self.window),
        }

    def setup(self) -> None:
        if self._net is None:
            self._net = self.load()

    def slices(self, array: np.ndarray) -> dict[str, list[np.ndarray]]:
        return plane_slices(array, self.slices_per_plane, self.window)
