"""Shared pytest fixtures: tiny volumes and folders written into tmp_path."""

from __future__ import annotations

import numpy as np
import pytest

from ctdiff.volume import Volume


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def small_volume(rng) -> Volume:
    """A 12x10x6 HU volume with anisotropic spacing and a non-zero origin."""
    array = rng.normal(0, 30, size=(12, 10, 6)).astype(np.float32)
    array[3:9, 2:8, 1:5] += 400
    return Volume.from_spacing(array, (0.8, 0.9, 2.5), origin=(-10.0, 20.0, 30.0))
