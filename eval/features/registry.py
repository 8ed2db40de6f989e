"""Feature extractors, pluggable by name (the torch-fidelity ``registry.py`` pattern).

An extractor turns one case into a named feature vector. Its :meth:`FeatureExtractor.settings`
are everything that changes the numbers; they go into the on-disk cache key together with the
case file's content hash, so a changed setting or file never reuses stale features.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from eval.features.base import FeatureExtractor

_REGISTRY: dict[str, type[FeatureExtractor]] = {}


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
    # The registry imports its built-in extractors (lazily: torch/pyradiomics are slow to import);
    # they import only eval.features.base, never the registry, so there is no import cycle.
    from eval.features.inception import InceptionSlices
    from eval.features.radimagenet import RadImageNetSlices
    from eval.features.radiomics import RadiomicsFRD

    for cls in (RadiomicsFRD, InceptionSlices, RadImageNetSlices):
        _REGISTRY.setdefault(cls.name, cls)
