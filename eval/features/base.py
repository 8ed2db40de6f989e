"""The feature extractor base class, in its own module so imports run one way (torch-fidelity style).

``registry`` imports the built-in extractors, and they import only this module, so the registry and
its extractors never import each other.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
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
