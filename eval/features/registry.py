"""Feature extractors, pluggable by name (the torch-fidelity ``registry.py`` pattern).

An extractor turns one case into a named feature vector. Its :meth:`FeatureExtractor.settings`
are everything that changes the numbers; they go into the on-disk cache key together with the
case file's content hash, so a changed setting or file never reuses stale features.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

_REGISTRY: dict[str, type["FeatureExtractor"]] = {}


class FeatureExtractor:
    """Base class. Subclasses set ``name`` and ``input`` and implement :meth:`extract`.

    ``input`` is ``"file"`` (``extract`` gets the case's path; the extractor reads it itself) or
    ``"volume"`` (``extract`` gets a :class:`~ctdiff.volume.Volume` on the report's common grid).
    Instances must be picklable before :meth:`setup` so worker processes can receive them.
    """

    name: str = ""
    input: str = "file"

    def settings(self) -> dict[str, Any]:
        return {}

    def unavailable_reason(self) -> str | None:
        """Why this extractor cannot run here (missing weights...), or None when it can."""
        return None

    def setup(self) -> None:
        """Heavy initialisation (models, pyradiomics); called once per process before extracting."""

    def extract(self, item) -> tuple[list[str], np.ndarray]:
        raise NotImplementedError


def register(name: str) -> Callable[[type[FeatureExtractor]], type[FeatureExtractor]]:
    def deco(cls: type[FeatureExtractor]) -> type[FeatureExtractor]:
        if name in _REGISTRY:
            raise ValueError(f"feature extractor {name!r} registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def available_extractors() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def create(name: str, **kwargs: Any) -> FeatureExtractor:
    _load_builtins()
    if name not in _REGISTRY:
        raise KeyError(f"unknown feature extractor {name!r}; known: {sorted(_REGISTRY)}")
    return _REGISTRY[name](**kwargs)


def _load_builtins() -> None:
    # importing the modules registers their extractors
    from eval.features import inception, radiomics, radimagenet  # noqa: F401
