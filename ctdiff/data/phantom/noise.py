"""CT noise for the phantom: FBP-shaped stationary noise (fast) and a Poisson + filtered
back-projection simulation (slow). Part of :mod:`ctdiff.data.phantom`.
"""

from __future__ import annotations

import math

import numpy as np

NOISE_METHODS = ("correlated", "fbp", "none")
# Linear attenuation coefficient of water at ~70 keV effective energy, per mm (NIST XCOM: 0.193 /cm).
MU_WATER_PER_MM = 0.0193

# ---- calibration to real CT (benchmarks/calibrate_phantom.py; table and figures in docs/real-ct.md)
# - Noise texture: the apodisation window of the FBP noise spectrum is Hann**NOISE_WINDOW_POWER. A
#   full Hann window (power 1) gave an NPS mean frequency of 0.29/mm against the real 0.31-0.39/mm
#   (a sharper clinical kernel); power 0.5 keeps the peak at mid frequency and moves power upwards.
NOISE_WINDOW_POWER = 0.5
# - Noise SD: ROI noise SD of the real scan is 9-17 HU (median 12) at 0.703 mm; the phantom's
#   ``noise_hu`` is a per-voxel SD at whatever spacing it renders, so match it at that spacing.
REAL_CT_NOISE_HU_AT_0703MM = 13.0


# ----------------------------------------------------------------------------------- noise
def fbp_noise_filter(shape_xy: tuple[int, int], spacing_xy=(1.0, 1.0), cutoff: float = 1.0) -> np.ndarray:
    """Amplitude filter (full 2D FFT grid) whose square is the FBP noise power spectrum.

    FBP noise has the 2D noise power spectrum NPS(f) ~ |f| * W(f)^2: the ramp filter squared
    (f^2) times the 1/|f| density of back-projected lines, times the apodisation window squared
    (Hanson 1979; Kijewski & Judy 1987). W is a Hann window reaching zero at ``cutoff`` times the
    Nyquist frequency. The amplitude filter is therefore sqrt(|f|) * W(f); it is zero at DC and at
    Nyquist and peaks at about 0.3 of the cut-off frequency.
    """
    nx, ny = shape_xy
    fx = np.fft.fftfreq(nx, d=float(spacing_xy[0]))[:, None]
    fy = np.fft.fftfreq(ny, d=float(spacing_xy[1]))[None, :]
    f = np.sqrt(fx**2 + fy**2)
    f_cut = cutoff * 0.5 / max(float(spacing_xy[0]), float(spacing_xy[1]))
    window = np.where(f < f_cut, 0.5 * (1.0 + np.cos(np.pi * np.minimum(f / f_cut, 1.0))), 0.0)
    return np.sqrt(f) * window**NOISE_WINDOW_POWER


def correlated_noise(shape, spacing, sd_hu: float, rng: np.random.Generator, cutoff: float = 1.0) -> np.ndarray:
    """Stationary FBP-like noise: white noise filtered per axial slice, SD ``sd_hu`` in expectation.

    Axial slices are independent (contiguous reconstruction); in-plane the spectrum is
    ``fbp_noise_filter``. The scale is analytic (Parseval: var = mean |H|^2 over the FFT grid),
    not the realised SD, so measuring the SD is a real check of the filter.
    """
    nx, ny, nz = shape
    H = fbp_noise_filter((nx, ny), spacing[:2], cutoff)
    if float(np.mean(H**2)) <= 0.0:  # a grid of 2 x 2 or so holds only DC and Nyquist: white noise
        H = np.ones_like(H)
    scale = sd_hu / math.sqrt(float(np.mean(H**2)))
    white = rng.standard_normal((nx, ny, nz), dtype=np.float32)
    spec = np.fft.fft2(white, axes=(0, 1)) * (H * scale)[:, :, None]
    return np.real(np.fft.ifft2(spec, axes=(0, 1))).astype(np.float32)


def simulated_fbp_noise(
    hu: np.ndarray,
    spacing,
    sd_hu: float,
    rng: np.random.Generator,
    n_angles: int | None = None,
    filter_name: str = "hann",
    ref_photons: float = 2.0e5,
) -> tuple[np.ndarray, float]:
    """Physically simulated noise: projections -> Poisson counts -> filtered back-projection.

    Each axial slice is turned into attenuation (mu = mu_water * (1 + HU/1000)), projected with
    ``skimage.transform.radon``, given Poisson noise on ``ref_photons`` transmitted photons per ray,
    log-converted and reconstructed with ``iradon`` (apodised ramp filter ``filter_name``). Because
    FBP is linear, the noise image is the reconstruction of (noisy - noiseless) line integrals. It is
    non-stationary (stronger behind bone and in the body centre) and scaled so that its SD inside
    the body is ``sd_hu``; the equivalent photon count is returned with it.
    """
    from skimage.transform import iradon, radon

    nx, ny, nz = hu.shape
    n = max(nx, ny)
    pix = float(max(spacing[0], spacing[1]))
    theta = np.linspace(0.0, 180.0, n_angles or max(180, n), endpoint=False)
    noise = np.zeros((n, n, nz), dtype=np.float32)
    for k in range(nz):
        mu = np.zeros((n, n))
        mu[:nx, :ny] = np.clip(MU_WATER_PER_MM * (1.0 + hu[:, :, k] / 1000.0), 0.0, None)
        line_integrals = radon(mu, theta=theta, circle=False) * pix
        counts = rng.poisson(ref_photons * np.exp(-line_integrals))
        noisy = -np.log(np.maximum(counts, 0.5) / ref_photons)
        recon = iradon(
            (noisy - line_integrals) / pix, theta=theta, filter_name=filter_name, circle=False, output_size=n
        )
        noise[:, :, k] = 1000.0 * recon / MU_WATER_PER_MM
    noise = noise[:nx, :ny, :]
    inside = hu > -500.0
    measured = float(noise[inside].std()) if inside.any() else float(noise.std())
    if measured <= 0:
        return noise, float("inf")
    factor = sd_hu / measured
    return noise * np.float32(factor), ref_photons / factor**2
