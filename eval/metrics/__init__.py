"""Pure metric functions: arrays in, numbers out (no file I/O, no plots, no device picking).

Modules are named after what they measure: ``intensity`` (HU histograms, contrast, tissue CNR),
``noise`` (homogeneous-ROI noise SD and noise power spectrum), ``texture`` (GLCM), ``similarity``
(3D SSIM / MS-SSIM), ``distribution`` (Fréchet, KID/MMD, precision/recall/density/coverage) and
``memorization`` (nearest-training-scan test).
"""
