"""Two hot spots of pyradiomics, computed faster with bit-identical results.

frd-score's v1 configuration runs pyradiomics' texture classes on 13 filtered images per scan, and
two of pyradiomics' own steps cost more than the texture matrices themselves:

- ``RadiomicsGLCM._calculateCoefficients`` builds the sum and difference marginals (``pxAddy``,
  ``pxSuby``) with one full Ng x Ng mask per value of k, which is O(Ng^3): two thirds of the
  extraction of one of the eval tests' 48x48x16 phantoms (5.8 of 8.8 s, profiled).
  :class:`FastGLCM` groups the cells by ``i + j`` (and ``|i - j|``) once with a stable sort and sums
  each group's cells, gathered in the same order as pyradiomics' boolean mask gathers them, so every
  sum is over the same array in the same order: the same bits.
- ``imageoperations.getBinEdges`` takes the minimum and maximum of every voxel with Python's
  built-in ``min``/``max`` (an element-by-element loop): about a fifth of a 128x128x32 scan's
  extraction. :func:`_bin_edges` hands pyradiomics the two extremes found by numpy instead; a min or
  max is exact, so the edges are the same.

Neither pyradiomics nor frd-score offers a faster path, hence these replacements. :func:`install`
puts them in place for this process (the feature extractor calls it in every worker);
:func:`uninstall` restores pyradiomics' own, which tests and ``benchmarks/bench_radiomics.py`` use
to compare the two side by side.
"""

from __future__ import annotations

import numpy
from radiomics import getFeatureClasses, imageoperations
from radiomics.glcm import RadiomicsGLCM

_STOCK_GLCM = getFeatureClasses()["glcm"]
_STOCK_BIN_EDGES = imageoperations.getBinEdges


def _grouped_sums(flat: numpy.ndarray, key: numpy.ndarray, values: numpy.ndarray) -> numpy.ndarray:
    """For each v in ``values``: ``flat[:, key == v, :].sum(1)``, with ``key`` the flattened Ng x Ng
    grid. A stable argsort keeps each group's cells in row-major order, the order a boolean mask
    gathers them, so each sum is bit-identical to the masked one."""
    order = numpy.argsort(key, kind="stable")
    sorted_key = key[order]
    lo = numpy.searchsorted(sorted_key, values, "left")
    hi = numpy.searchsorted(sorted_key, values, "right")
    sums = [numpy.sum(flat[:, order[a:b], :], 1) for a, b in zip(lo, hi)]
    return numpy.array(sums).transpose((1, 0, 2))


class FastGLCM(RadiomicsGLCM):
    """pyradiomics' GLCM with its coefficients computed without the O(Ng^3) masks (same values)."""

    def _calculateCoefficients(self):  # noqa: N802 (pyradiomics' name)
        ng = self.coefficients["Ng"]
        levels = self.coefficients["grayLevels"].astype("float")
        i, j = numpy.meshgrid(levels, levels, indexing="ij", sparse=True)
        k_sum = numpy.arange(2, (ng * 2) + 1, dtype="float")
        k_diff = numpy.arange(0, ng, dtype="float")
        p = self.P_glcm  # (Nv, Ng, Ng, angles)
        eps = numpy.spacing(1)
        flat = p.reshape(p.shape[0], -1, p.shape[3])
        full = (len(levels), len(levels))
        self.coefficients.update(
            eps=eps,
            i=i,
            j=j,
            kValuesSum=k_sum,
            kValuesDiff=k_diff,
            px=p.sum(2, keepdims=True),
            py=p.sum(1, keepdims=True),
            ux=numpy.sum(i[None, :, :, None] * p, (1, 2), keepdims=True),
            uy=numpy.sum(j[None, :, :, None] * p, (1, 2), keepdims=True),
            pxAddy=_grouped_sums(flat, numpy.broadcast_to(i + j, full).ravel(), k_sum),
            pxSuby=_grouped_sums(flat, numpy.broadcast_to(numpy.abs(i - j), full).ravel(), k_diff),
            HXY=(-1) * numpy.sum((p * numpy.log2(p + eps)), (1, 2)),
        )


def _bin_edges(parameterValues, **kwargs):  # noqa: N803 (pyradiomics' keyword)
    values = numpy.asarray(parameterValues)
    if kwargs.get("binCount") is None and values.size:
        extremes = numpy.array([values.min(), values.max()], dtype=values.dtype)
        if not numpy.isnan(extremes).any():  # numpy's min/max are NaN if any value is: then pyradiomics' own
            # the built-in min/max pyradiomics calls see only the two extremes: the same result
            values = extremes
    return _STOCK_BIN_EDGES(values, **kwargs)


def install() -> None:
    """Use :class:`FastGLCM` and :func:`_bin_edges` in this process (idempotent)."""
    getFeatureClasses()["glcm"] = FastGLCM
    imageoperations.getBinEdges = _bin_edges


def uninstall() -> None:
    """Put pyradiomics' own GLCM class and bin edges back."""
    getFeatureClasses()["glcm"] = _STOCK_GLCM
    imageoperations.getBinEdges = _STOCK_BIN_EDGES


def installed() -> bool:
    return getFeatureClasses()["glcm"] is FastGLCM and imageoperations.getBinEdges is _bin_edges
