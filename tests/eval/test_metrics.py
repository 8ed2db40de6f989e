"""Pure metric functions, cross-checked against reference implementations (scipy, scikit-image,
torchmetrics, frd-score, prdc) on small seeded data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage, stats

from eval.metrics import distribution, intensity, memorization, noise, similarity, texture
from eval.stats import bootstrap_ci


# ----------------------------------------------------------------------------------- intensity
def test_wasserstein_of_histograms_equals_the_cdf_formula_and_samples(rng):
    edges = intensity.hu_bin_edges(width=8.0)
    x, y = rng.normal(40, 30, 5000), rng.normal(-60, 80, 5000)
    a, b = intensity.hu_histogram(x, edges), intensity.hu_histogram(y, edges)
    centres = 0.5 * (edges[:-1] + edges[1:])
    # independent computation: W1 = integral |F_a - F_b| over the bin centres' steps
    ref = float(np.sum(np.abs(np.cumsum(a) - np.cumsum(b))[:-1] * np.diff(centres)))
    assert intensity.wasserstein_histograms(a, b, edges) == pytest.approx(ref, rel=1e-9)
    # and close to the W1 of the raw samples (binning moves mass by at most half a bin, 4 HU)
    assert intensity.wasserstein_histograms(a, b, edges) == pytest.approx(stats.wasserstein_distance(x, y), abs=4.0)
    # a pure shift by 100 HU moves W1 by 100 HU
    c = intensity.hu_histogram(rng.normal(40, 30, 20000), edges)
    d = intensity.hu_histogram(rng.normal(140, 30, 20000), edges)
    assert intensity.wasserstein_histograms(c, d, edges) == pytest.approx(100.0, abs=2.0)


def test_contrast_rms_and_cnr(rng):
    a = rng.normal(0, 25, (20, 20, 4))
    mask = np.zeros(a.shape, bool)
    mask[2:18, 2:18] = True
    assert intensity.contrast_rms(a, mask) == pytest.approx(a[mask].std())
    assert intensity.contrast_rms(0.5 * a, mask) == pytest.approx(0.5 * a[mask].std())
    assert intensity.contrast_to_noise(50.0, -100.0, 15.0) == pytest.approx(10.0)
    assert np.isnan(intensity.contrast_to_noise(50.0, float("nan"), 15.0))


def test_tissue_means_classify_fat_and_soft_tissue(rng):
    a = np.full((40, 40, 4), -1000.0)
    a[5:35, 5:20] = 50.0
    a[5:35, 20:35] = -100.0
    a += rng.normal(0, 10, a.shape)
    body = a > -500
    means = intensity.tissue_mean_hu(a, intensity.tissue_masks(a, body))
    assert means["soft_tissue"] == pytest.approx(50.0, abs=2.0)
    assert means["fat"] == pytest.approx(-100.0, abs=2.0)


def test_slice_banding_reads_the_sd_of_per_slice_offsets_and_ignores_smooth_trends(rng):
    nz = 400
    a = np.full((24, 24, nz), -1000.0)
    a[4:20, 4:20] = 40.0 + 0.1 * np.arange(nz)  # soft tissue brightening steadily along z
    mask = a > -500
    # a linear trend is no banding at all: its second differences vanish
    assert intensity.slice_banding(a, mask) == pytest.approx(0.0, abs=1e-9)
    offsets = rng.normal(0.0, 5.0, nz)
    banded = np.where(mask, a + offsets, a)
    got = intensity.slice_banding(banded, mask)
    # independent computation: per-slice means by a loop, numpy's second difference
    means = np.array([banded[..., k][mask[..., k]].mean() for k in range(nz)])
    assert got == pytest.approx(np.sqrt(np.mean(np.diff(means, 2) ** 2) / 6.0), rel=1e-12)
    assert got == pytest.approx(5.0, rel=0.12)  # the offsets' SD
    # slices with too few mask voxels are left out, and do not join the runs on either side
    sparse = mask.copy()
    sparse[..., 10] = False
    m = intensity.slice_means(banded, sparse)
    assert np.isnan(m[10]) and m[9] == pytest.approx(means[9])
    d = np.diff(np.delete(means, 10), 2)
    d = np.delete(d, [8, 9])  # the two triples that would bridge the gap
    assert intensity.slice_banding(banded, sparse) == pytest.approx(np.sqrt(np.mean(d**2) / 6.0), rel=1e-12)
    assert np.isnan(intensity.slice_banding(banded[..., :2], mask[..., :2]))  # fewer than 3 slices
    with pytest.raises(ValueError, match="mask of its shape"):
        intensity.slice_banding(banded, mask[..., :5])


# --------------------------------------------------------------------------------------- noise
def _uniform_phantom(rng, sd, shape=(64, 64, 8)):
    a = np.full(shape, -1000.0)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    inside = ((xx - 32) ** 2 + (yy - 32) ** 2) < 28**2
    a[inside] = 40.0
    return a + rng.normal(0, sd, shape), np.broadcast_to(inside[..., None], shape).copy()


@pytest.mark.parametrize("sd", [10.0, 40.0])
def test_noise_sd_matches_truth_and_skimage_wavelet_estimate(rng, sd):
    a, body = _uniform_phantom(rng, sd)
    rois = noise.find_homogeneous_rois(a, body, roi_size=12)
    assert len(rois) >= 8
    measured = noise.noise_sd_from_rois(noise.detrend_rois(noise.roi_stack(a, rois, 12)))
    assert measured == pytest.approx(sd, rel=0.08)
    assert noise.wavelet_noise_sd(a, body) == pytest.approx(measured, rel=0.15)


def test_rois_avoid_edges_and_non_soft_tissue(rng):
    a, body = _uniform_phantom(rng, 5.0)
    a[30:, :, :] += 400.0  # half of the disc is bone-like: out of the soft-tissue range
    rois = noise.find_homogeneous_rois(a, body, roi_size=8)
    assert rois
    for x0, y0, z in rois:
        assert body[x0 : x0 + 8, y0 : y0 + 8, z].all()
        assert x0 + 8 <= 30  # never straddles the 40/440 HU edge, never inside the bone half


def test_nps_integrates_to_variance_and_blur_lowers_peak(rng):
    white = rng.normal(0, 20, (30, 32, 32))
    det = noise.detrend_rois(white, order=0)
    freq, nps = noise.nps_radial(det, (0.5, 0.5))
    power2d_total = (np.abs(np.fft.fft2(det)) ** 2).mean(0).sum() * 0.25 / 32**2 / (32 * 0.5) ** 2
    assert power2d_total == pytest.approx(det.var(axis=(1, 2)).mean(), rel=1e-6)  # Parseval on the 2D NPS
    assert freq[-1] == pytest.approx(1.0)  # Nyquist of 0.5 mm pixels
    blurred = np.stack([ndimage.gaussian_filter(w, 1.5) for w in rng.normal(0, 20, (30, 32, 32))])
    f2, nps_b = noise.nps_radial(noise.detrend_rois(blurred), (0.5, 0.5))
    assert noise.nps_peak_frequency(f2, nps_b) < 0.3  # blurred noise: power at low frequencies
    assert nps_b[-3:].mean() < 0.01 * nps_b[1:4].mean()
    assert nps[-3:].mean() == pytest.approx(nps[1:].mean(), rel=0.3)  # white noise: flat NPS
    assert noise.nps_distance(freq, nps, nps) == 0.0
    assert noise.nps_distance(freq, nps, 3.0 * nps) == pytest.approx(0.0, abs=1e-12)  # shape only
    assert noise.nps_distance(freq, nps, nps_b) > 0.3


# ------------------------------------------------------------------------------------- texture
def test_glcm_features_see_texture_and_standardised_distance(rng):
    smooth = ndimage.gaussian_filter(rng.normal(40, 60, (40, 40, 4)), (3, 3, 0))
    rough = rng.normal(40, 60, (40, 40, 4))
    mask = np.ones(smooth.shape, bool)
    fs, fr = texture.glcm_features(smooth, mask), texture.glcm_features(rough, mask)
    assert fs["homogeneity"] > fr["homogeneity"]
    assert fs["contrast"] < fr["contrast"]
    real = rng.normal(0, 1, (10, 3))
    assert texture.standardised_mean_distance(real, real) == 0.0
    shifted = real + np.array([2.0, 0.0, 0.0]) * real.std(axis=0, ddof=1)
    assert texture.standardised_mean_distance(real, shifted) == pytest.approx(2.0 / np.sqrt(3))
    # a case without soft tissue (all-NaN GLCM row) is left out, on either side, instead of
    # removing every feature (which made the distance NaN on real-CT crops with a lung crop)
    nan_row = np.full((1, 3), np.nan)
    expected = texture.standardised_mean_distance(real, shifted)
    assert texture.standardised_mean_distance(np.vstack([real, nan_row]), shifted) == pytest.approx(expected)
    assert texture.standardised_mean_distance(real, np.vstack([nan_row, shifted])) == pytest.approx(expected)
    assert np.isnan(texture.standardised_mean_distance(np.vstack([real[:1], nan_row, nan_row]), shifted))


# ------------------------------------------------------------------------------------ SSIM
def test_ssim_3d_equals_skimage(rng):
    from skimage.metrics import structural_similarity

    a = rng.normal(0, 200, (30, 26, 14)).astype(np.float32)
    a[5:20, 5:20] += 300
    b = a + rng.normal(0, 150, a.shape).astype(np.float32)
    ua, ub = (np.clip((x.astype(np.float64) + 1000) / 2000, 0, 1) for x in (a, b))
    ref = structural_similarity(ua, ub, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert similarity.ssim(a, b) == pytest.approx(ref, abs=1e-7)
    assert similarity.ssim(a, a) == pytest.approx(1.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_to_unit_equals_monai_scaling(rng, dtype):
    from ctdiff.data.tensors import scale_range

    vols = [rng.uniform(-1600, 1600, (6, 5, 4)).astype(np.float32) for _ in range(3)]
    for window in (similarity.SSIM_WINDOW_HU, (-160.0, 240.0), (-57.5, 12.25)):
        got = similarity.to_unit(vols, window, dtype=dtype)
        want = scale_range(torch.stack([torch.as_tensor(v, dtype=dtype) for v in vols]), window, (0.0, 1.0))
        assert got.shape == (3, 1, 6, 5, 4) and got.dtype == dtype
        torch.testing.assert_close(got[:, 0], want, rtol=0, atol=0)
        assert got.min() == 0.0 and got.max() == 1.0


def test_ms_ssim_matches_torchmetrics(rng):
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure
    from torchmetrics.functional.image.ssim import _get_normalized_sim_and_cs

    a = rng.normal(0, 200, (24, 24, 24)).astype(np.float32)
    a[4:18, 6:20] += 300
    b = a + rng.normal(0, 250, a.shape).astype(np.float32)
    t = similarity.to_unit([a, b], dtype=torch.float64)
    betas = (0.2, 0.3, 0.5)
    kw = dict(sigma=0.5, win=5)
    # every scale's contrast-structure term equals torchmetrics' (same window, same pooling)
    x, y = t[:1], t[1:]
    for _ in range(3):
        _, cs_ref = _get_normalized_sim_and_cs(x, y, sigma=0.5, kernel_size=5, data_range=1.0)
        st_x, st_y = similarity._Stats(x, 0.5, 5), similarity._Stats(y, 0.5, 5)
        zero = torch.zeros(1, dtype=torch.long)
        _, cs = similarity._pair_maps(st_x, zero, st_y, zero, 0.5, 1.0)
        assert float(cs) == pytest.approx(float(cs_ref), abs=1e-9)
        x, y = similarity._downsample(x, 5), similarity._downsample(y, 5)
    ours = similarity.similarity_matrix(t[:1], t[1:], scales=3, betas=betas, **kw)[0, 0]
    ref = float(
        multiscale_structural_similarity_index_measure(
            t[:1], t[1:], data_range=1.0, kernel_size=5, sigma=0.5, betas=betas, normalize="relu"
        )
    )
    # torchmetrics averages its last-scale SSIM over the reflect-padded border as well; we use the
    # valid region (as scikit-image): the products agree to ~1 %
    assert ours == pytest.approx(ref, rel=0.015)
    assert ours < 0.95


def test_similarity_matrix_within_and_between_cohorts(rng):
    vols = [rng.normal(0, 300, (16, 16, 12)).astype(np.float32) for _ in range(3)]
    t = similarity.to_unit(vols)
    within = similarity.similarity_matrix(t)
    assert np.allclose(np.diag(within), 1.0)
    assert np.allclose(within, within.T)
    between = similarity.similarity_matrix(t[:2], t[1:])
    assert between[1, 0] == pytest.approx(1.0, abs=1e-6)  # volume 1 against itself
    assert between[0, 0] == pytest.approx(within[0, 1], abs=1e-6)
    assert similarity.mean_pairwise(within) == pytest.approx((within[0, 1] + within[0, 2] + within[1, 2]) / 3)
    assert np.isnan(similarity.mean_pairwise(within, np.array([1, 1, 1])))  # one case drawn thrice: no pair


# --------------------------------------------------------------------------- feature distances
def test_kid_equals_torchmetrics_poly_mmd(rng):
    from torchmetrics.image.kid import poly_mmd

    x = rng.normal(0, 1, (20, 16))
    y = rng.normal(0.3, 1.2, (20, 16))
    ref = float(poly_mmd(torch.from_numpy(x), torch.from_numpy(y)))
    assert distribution.kid_polynomial(x, y) == pytest.approx(ref, rel=1e-10)
    # unbiased: two samples of one distribution give ~0, can be negative
    same = [distribution.kid_polynomial(rng.normal(size=(30, 8)), rng.normal(size=(30, 8))) for _ in range(20)]
    assert abs(np.mean(same)) < 0.05 and min(same) < 0


def test_mmd_rbf_equals_explicit_sums(rng):
    x, y = rng.normal(0, 1, (7, 4)), rng.normal(1, 1, (9, 4))
    h = 1.7
    k = lambda a, b: np.exp(-np.sum((a - b) ** 2) / (2 * h * h))  # noqa: E731
    kxx = sum(k(x[i], x[j]) for i in range(7) for j in range(7) if i != j) / (7 * 6)
    kyy = sum(k(y[i], y[j]) for i in range(9) for j in range(9) if i != j) / (9 * 8)
    kxy = sum(k(a, b) for a in x for b in y) / (7 * 9)
    assert distribution.mmd_rbf(x, y, bandwidth=h) == pytest.approx(kxx + kyy - 2 * kxy, rel=1e-10)


def test_prdc_on_toy_sets_with_known_answers():
    real = np.arange(25, dtype=float)[:, None] * np.array([[1.0, 0.0]])  # points 0..24 on a line
    far = real + 1000.0
    out = distribution.prdc(real, far, nearest_k=5)
    assert out == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    one_spot = np.tile([[12.0, 0.0]], (25, 1))  # every generated scan the same, in the middle
    out = distribution.prdc(real, one_spot, nearest_k=5)
    assert out["precision"] == 1.0 and out["recall"] == 0.0
    # an interior point's 5th neighbour is 3 away (1, 1, 2, 2, 3): the ball of real point i holds
    # 12 strictly for |i - 12| < 3, i.e. 5 real points; density counts those 5 balls / k
    assert out["coverage"] == pytest.approx(5 / 25)
    assert out["density"] == pytest.approx(5 / 5)
    same = distribution.prdc(real, real + 0.1, nearest_k=5)
    assert same["precision"] == 1.0 and same["recall"] == 1.0 and same["coverage"] == 1.0


def test_lowrank_frechet_equals_frd_score(rng):
    a, b = rng.normal(0, 1, (6, 50)), rng.normal(0.5, 2, (8, 50))
    assert distribution.frechet_distance_squared_lowrank(a, b) == pytest.approx(
        distribution.frechet_distance_squared(a, b), rel=1e-6
    )


def test_frd_v1_replays_frd_score_statistics(rng):
    """frd-score's v1 statistics step, replayed with its own functions on the same arrays."""
    from frd_score import frd

    real = rng.normal(5, 2, (7, 30))
    gen = rng.normal(6, 3, (6, 30))
    real[:, 3] = 1.0  # constant in real: v1 drops the column (inf after the d1 z-score)
    base = real.astype(np.float32)
    normed = [
        frd.z_score_normalize(
            f.astype(np.float32), 0, 1, base_distribution=base, replace_nan=False, handle_std_zero=False
        )
        for f in (real, gen)
    ]
    keep = ~np.any([np.isinf(n).any(0) | np.isnan(n).any(0) for n in normed], axis=0)
    normed = [n[:, keep] for n in normed]
    d2 = frd.calculate_frechet_distance(
        normed[0].mean(0), np.cov(normed[0], rowvar=False), normed[1].mean(0), np.cov(normed[1], rowvar=False)
    )
    assert keep.sum() == 29
    assert distribution.frd_v1(real, gen) == pytest.approx(np.log(d2), rel=1e-9)
    assert distribution.frd_v1(real, gen, exact=False) == pytest.approx(np.log(d2), rel=1e-6)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the inf column, on purpose
def test_vectorised_v1_normalisation_equals_frd_score_bit_for_bit(rng):
    """The bootstrap path's z-score gives frd-score's z_score_normalize output exactly."""
    from frd_score import frd

    real = rng.lognormal(3, 2, (9, 40))
    gen = rng.lognormal(3.5, 2.5, (7, 40))
    real[:, 5] = 2.5  # constant in real: SD 0 -> inf/NaN, the column is dropped
    gen[:, 7] = np.inf  # inf in one set only: dropped
    real[:, 9] = np.inf  # inf in the base: mean NaN -> frd-score keeps the raw values, then drops it
    base = real.astype(np.float32)
    for f in (real, gen):
        ref = frd.z_score_normalize(
            f.astype(np.float32), 0, 1, base_distribution=base, replace_nan=False, handle_std_zero=False
        )
        ours = distribution._z_score_v1(f.astype(np.float32), base)
        assert ours.dtype == ref.dtype == np.float32
        np.testing.assert_array_equal(ours, ref)
    slow = distribution.frd_v1_normalise(real, gen, reference=True)
    fast = distribution.frd_v1_normalise(real, gen, reference=False)
    assert slow[2].sum() == 37  # columns 5, 7 and 9 dropped
    for a, b in zip(slow, fast):
        np.testing.assert_array_equal(a, b)


def test_standardise_is_joint_zscore(rng):
    a, b = rng.normal(3, 2, (5, 4)), rng.normal(5, 1, (6, 4))
    b[:, 2] = np.nan
    za, zb = distribution.standardise(a, b)
    assert za.shape == (5, 3) and zb.shape == (6, 3)
    pooled = np.concatenate([za, zb])
    assert np.allclose(pooled.mean(0), 0) and np.allclose(pooled.std(0), 1)


# ------------------------------------------------------------------------------ memorisation
def test_memorisation_threshold_and_flags():
    null = np.array([0.30, 0.25, 0.40, 0.35, 0.28, 0.33, 0.31, 0.29, 0.36, 0.27])
    thr = memorization.memorisation_threshold(null, 0.05)
    assert thr == pytest.approx(np.quantile(null, 0.05))
    assert 0.25 < thr < 0.27
    assert memorization.memorisation_flags(np.array([0.0, 0.26, 0.5]), thr).tolist() == [True, False, False]
    d = np.array([[0.0, 0.2, 0.3], [0.2, 0.0, 0.1], [0.3, 0.1, 0.0]])
    idx, dist = memorization.nearest(d, exclude_self=True)
    assert idx.tolist() == [1, 2, 1] and dist.tolist() == [0.2, 0.1, 0.1]


def test_bootstrap_resamples_cases():
    values = np.arange(10.0)
    ci = bootstrap_ci(lambda i: values[i].mean(), [10], n_boot=400, seed=1)
    assert ci[0] < 4.5 < ci[1]
    assert 2.0 < ci[0] and ci[1] < 7.0
    assert bootstrap_ci(lambda i: values[i].mean(), [1]) is None  # one case: no interval
    assert bootstrap_ci(lambda i: values[i].mean(), [10], n_boot=0) is None
