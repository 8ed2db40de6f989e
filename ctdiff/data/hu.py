"""Hounsfield-unit facts, in one place: air, tissue ranges, display window presets.

Every module that needs one of these numbers imports it from here (phantom, prepare, the report's
common grid, the metrics, the viewers), so they cannot disagree.
"""

from __future__ import annotations

AIR_HU = -1000.0  # by definition of the HU scale (water 0)
WATER_HU = 0.0

# Tissue classes by HU range (inclusive bounds). Adipose tissue -190..-30 HU is the range used for
# CT fat segmentation; 0..100 HU covers muscle and organs.
TISSUE_RANGES: dict[str, tuple[float, float]] = {
    "fat": (-190.0, -30.0),
    "soft_tissue": (0.0, 100.0),
}

# CT display windows: name -> (width, level) in HU
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "soft tissue": (400.0, 40.0),
    "bone": (1500.0, 300.0),
    "lung": (1500.0, -600.0),
    "abdomen": (350.0, 50.0),
}


def window_range(name: str) -> tuple[float, float]:
    """(lowest, highest) HU of a window preset: level -/+ width / 2."""
    width, level = WINDOW_PRESETS[name]
    return level - width / 2.0, level + width / 2.0
