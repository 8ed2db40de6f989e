"""Feature extractors behind a small registry (``registry.create(name, **settings)``).

Built in: ``radiomics-frd-v1`` (frd-score's pyradiomics features, per file) and
``inception-v3-fid-2d`` (InceptionV3 pool features of slices, needs local weights).
"""

from eval.features.base import FeatureExtractor
from eval.features.registry import available_extractors, create, register

__all__ = ["FeatureExtractor", "available_extractors", "create", "register"]
