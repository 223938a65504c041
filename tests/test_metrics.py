"""Tests of rediffuse.evaluation.metrics against independent references (scipy, closed forms, brute force)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import scipy.spatial.distance
import scipy.stats
import torch

from rediffuse.evaluation.metrics import (
    density_coverage,
    energy_distance,
    feature_stats,
    frechet_distance,
    frechet_from_stats,
    kernel_inception_distance,
    mmd_rbf,
    precision_recall,
    prdc,
    sliced_wasserstein,
)


def correlated_gaussian(rng: np.random.Generator, n: int, dim: int, shift: float = 0.0) -> np.ndarray:
    """n samples of a fixed, well-conditioned, correlated Gaussian in `dim` dimensions (mean `shift`)."""
    mixing = np.eye(dim) + 0.3 * np.random.default_rng(1234).normal(size=(dim, dim)) / np.sqrt(dim)
    return rng.normal(size=(n, dim)) @ mixing + shift


def ring_mixture(rng: np.random.Generator, n: int, modes: list[int], num_modes: int = 8) -> np.ndarray:
    """n points from equal-weight 2-D Gaussians (std 0.1) at the `modes` of `num_modes` points on a radius-4 circle."""
    angles = 2 * np.pi * np.asarray(modes)[rng.integers(len(modes), size=n)] / num_modes
    centres = 4 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return centres + 0.1 * rng.normal(size=(n, 2))


def assert_unbiased_under_null(metric, reps: int = 40, n: int = 30, dim: int = 3) -> None:
    """Mean of `metric(x, y)` over independent same-law draws is 0 within 4 standard errors."""
    values = []
    for r in range(reps):
        rng = np.random.default_rng(r)
        values.append(metric(rng.normal(size=(n, dim)), rng.normal(size=(n, dim))))
    values = np.asarray(values)
    assert abs(values.mean()) < 4 * values.std(ddof=1) / np.sqrt(reps)


# ----------------------------------------------------------------------------- Frechet


def scipy_frechet(x: np.ndarray, y: np.ndarray) -> float:
    """Reference: the usual FID formula with scipy.linalg.sqrtm."""
    mu1, mu2 = x.mean(0), y.mean(0)
    c1, c2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    root = scipy.linalg.sqrtm(c1 @ c2).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(c1) + np.trace(c2) - 2 * np.trace(root))


def test_feature_stats_match_numpy():
    x = correlated_gaussian(np.random.default_rng(0), 50, 6)
    mu, cov = feature_stats(torch.tensor(x, dtype=torch.float32))
    assert mu.dtype == torch.float64
    np.testing.assert_allclose(mu.numpy(), x.mean(0), rtol=1e-6)
    np.testing.assert_allclose(cov.numpy(), np.cov(x, rowvar=False), rtol=1e-5, atol=1e-7)


def test_frechet_matches_scipy_sqrtm():
    rng = np.random.default_rng(1)
    x = correlated_gaussian(rng, 400, 10)
    y = 1.3 * correlated_gaussian(rng, 300, 10, shift=0.2)
    assert frechet_distance(x, y) == pytest.approx(scipy_frechet(x, y), rel=1e-6)
    assert frechet_distance(torch.tensor(x), torch.tensor(y)) == pytest.approx(scipy_frechet(x, y), rel=1e-6)


def test_frechet_closed_form_diagonal_gaussians():
    rng = np.random.default_rng(2)
    mu1, mu2 = rng.normal(size=7), rng.normal(size=7)
    a, b = rng.uniform(0.1, 3.0, size=7), rng.uniform(0.1, 3.0, size=7)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_from_stats(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)


def test_frechet_zero_for_identical_stats():
    x = correlated_gaussian(np.random.default_rng(3), 20, 40)  # N < D: singular covariance
    mu, cov = feature_stats(x)
    assert frechet_from_stats(mu, cov, mu, cov) == pytest.approx(0.0, abs=1e-10 * float(cov.trace()))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-10 * float(cov.trace()))


def test_frechet_singular_covariance_matches_nuclear_norm():
    # With C1 = A^T A and C2 = B^T B, tr sqrt(C1 C2) is the nuclear norm of B A^T (an exact SVD identity).
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(12, 30)), 2.0 * rng.normal(size=(9, 30)) + 0.5
    a = (x - x.mean(0)) / np.sqrt(len(x) - 1)
    b = (y - y.mean(0)) / np.sqrt(len(y) - 1)
    nuclear = np.linalg.svd(b @ a.T, compute_uv=False).sum()
    expected = np.sum((x.mean(0) - y.mean(0)) ** 2) + np.sum(a**2) + np.sum(b**2) - 2 * nuclear
    value = frechet_distance(x, y)
    assert np.isfinite(value)
    assert value == pytest.approx(expected, rel=1e-10)
    assert frechet_distance(y, x) == pytest.approx(expected, rel=1e-10)


def test_frechet_halves_near_zero_and_monotone_in_noise():
    rng = np.random.default_rng(5)
    sample = correlated_gaussian(rng, 4000, 5)
    first, second = sample[:2000], sample[2000:]
    noise = rng.normal(size=second.shape)
    values = [frechet_distance(first, second + s * noise) for s in (0.0, 0.25, 0.5, 1.0, 2.0)]
    assert values[0] < 0.05
    assert all(lo < hi for lo, hi in zip(values, values[1:]))


# ----------------------------------------------------------------------------- sliced Wasserstein


def test_sliced_1d_p1_matches_scipy_unequal_sizes():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=137), rng.exponential(size=61)
    expected = scipy.stats.wasserstein_distance(x, y)
    assert sliced_wasserstein(x, y, num_projections=3, p=1) == pytest.approx(expected, rel=1e-12)


def test_sliced_1d_p2_matches_sorted_samples():
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=40), rng.uniform(size=60)
    # The empirical law of 40 points equals that of each point repeated 3 times (and of 60 repeated twice).
    xs, ys = np.sort(np.repeat(x, 3)), np.sort(np.repeat(y, 2))
    expected = np.sqrt(np.mean((xs - ys) ** 2))
    assert sliced_wasserstein(x, y, num_projections=2, p=2) == pytest.approx(expected, rel=1e-12)
    assert sliced_wasserstein(x, y[:40], num_projections=2) == pytest.approx(
        np.sqrt(np.mean((np.sort(x) - np.sort(y[:40])) ** 2)), rel=1e-12
    )


def test_sliced_zero_for_same_samples_and_deterministic():
    x = np.random.default_rng(8).normal(size=(300, 5))
    assert sliced_wasserstein(x, x) == 0.0
    y = x[::-1] + 0.3
    assert sliced_wasserstein(x, y, seed=3) == sliced_wasserstein(x, y, seed=3)
    assert sliced_wasserstein(x, y, seed=3) != sliced_wasserstein(x, y, seed=4)
    g = torch.Generator().manual_seed(3)
    assert sliced_wasserstein(x, y, generator=g) == sliced_wasserstein(x, y, seed=3)


def test_sliced_shift_closed_form():
    # For y = x + m every projection is shifted by <theta, m>, so SW_2^2 = E <theta, m>^2 = |m|^2 / d.
    dim = 4
    x = np.random.default_rng(9).normal(size=(200, dim))
    m = np.array([1.0, -2.0, 0.5, 3.0])
    value = sliced_wasserstein(x, x + m, num_projections=8192)
    assert value**2 == pytest.approx(np.sum(m**2) / dim, rel=0.04)


# ----------------------------------------------------------------------------- MMD, energy, KID


def naive_unbiased_mmd2(x: np.ndarray, y: np.ndarray, kernel) -> float:
    """Reference: full kernel matrices, off-diagonal means within each set."""
    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    n, m = len(x), len(y)
    return (
        (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
        + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        - 2 * kxy.mean()
    )


def numpy_rbf(bandwidths):
    def kernel(a, b):
        d2 = scipy.spatial.distance.cdist(a, b, "sqeuclidean")
        return sum(np.exp(-d2 / (2 * h**2)) for h in bandwidths)

    return kernel


def numpy_polynomial(a, b):
    return (a @ b.T / a.shape[1] + 1) ** 3


def test_mmd_rbf_matches_naive_reference():
    rng = np.random.default_rng(10)
    x, y = rng.normal(size=(50, 3)), rng.normal(size=(70, 3)) + 0.4
    expected = naive_unbiased_mmd2(x, y, numpy_rbf([0.7, 2.0]))
    assert mmd_rbf(x, y, [0.7, 2.0]) == pytest.approx(expected, rel=1e-10)
    assert mmd_rbf(x, y, [0.7, 2.0], chunk_size=7) == pytest.approx(expected, rel=1e-10)


def test_mmd_rbf_default_bandwidths_scale_invariant_and_detect_shift():
    rng = np.random.default_rng(11)
    x, y, z = rng.normal(size=(200, 4)), rng.normal(size=(200, 4)), rng.normal(size=(200, 4)) + 1.0
    same, shifted = mmd_rbf(x, y), mmd_rbf(x, z)
    assert abs(same) < 0.02
    assert shifted > 10 * abs(same) and shifted > 0.1
    assert mmd_rbf(5 * x, 5 * z) == pytest.approx(shifted, rel=1e-10)


def test_energy_matches_scipy_1d():
    rng = np.random.default_rng(12)
    x, y = rng.normal(size=40), rng.normal(size=55) + 0.7
    # scipy returns sqrt(2 E|X-Y| - E|X-X'| - E|Y-Y'|) with within-means over all n^2 pairs (diagonal zeros
    # included); the unbiased within-means are n/(n-1) times larger.
    n, m = len(x), len(y)
    dxx = np.abs(x[:, None] - x[None]).mean()
    dyy = np.abs(y[:, None] - y[None]).mean()
    scipy_squared = scipy.stats.energy_distance(x, y) ** 2
    expected = scipy_squared + dxx - dxx * n / (n - 1) + dyy - dyy * m / (m - 1)
    assert energy_distance(x, y) == pytest.approx(expected, rel=1e-10)


def test_energy_matches_naive_reference_and_detects_shift():
    rng = np.random.default_rng(13)
    x, y = rng.normal(size=(60, 5)), rng.normal(size=(45, 5)) + 0.5
    neg_distance = lambda a, b: -scipy.spatial.distance.cdist(a, b)  # noqa: E731
    assert energy_distance(x, y, chunk_size=8) == pytest.approx(naive_unbiased_mmd2(x, y, neg_distance), rel=1e-10)
    same = energy_distance(x, rng.normal(size=(45, 5)))
    assert energy_distance(x, y) > 0.2 > abs(same)


def test_kid_full_subset_equals_unbiased_mmd():
    rng = np.random.default_rng(14)
    x, y = rng.normal(size=(80, 16)), rng.normal(size=(80, 16)) + 0.3
    mean, std = kernel_inception_distance(x, y, subset_size=1000, num_subsets=3)
    assert mean == pytest.approx(naive_unbiased_mmd2(x, y, numpy_polynomial), rel=1e-10)
    assert std < 1e-10 * abs(mean)


def test_kid_subsets_deterministic_and_detect_shift():
    rng = np.random.default_rng(15)
    x, y, z = rng.normal(size=(300, 8)), rng.normal(size=(300, 8)), rng.normal(size=(300, 8)) + 0.5
    first = kernel_inception_distance(x, z, subset_size=100, num_subsets=10, seed=1)
    assert first == kernel_inception_distance(x, z, subset_size=100, num_subsets=10, seed=1)
    assert first != kernel_inception_distance(x, z, subset_size=100, num_subsets=10, seed=2)
    same_mean, same_std = kernel_inception_distance(x, y, subset_size=100, num_subsets=10)
    assert first[1] > 0 and same_std > 0
    assert first[0] > 10 * abs(same_mean)


@pytest.mark.parametrize(
    "metric",
    [
        pytest.param(lambda x, y: mmd_rbf(x, y, [0.5, 1.0, 2.0]), id="mmd_rbf"),
        pytest.param(energy_distance, id="energy"),
        pytest.param(lambda x, y: kernel_inception_distance(x, y, num_subsets=1)[0], id="kid"),
    ],
)
def test_unbiased_estimators_have_zero_mean_under_null(metric):
    assert_unbiased_under_null(metric)


# ----------------------------------------------------------------------------- precision, recall, density, coverage


def brute_force_prdc(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    """Reference: full distance matrices and the papers' definitions, in numpy."""
    real_radii = np.sort(scipy.spatial.distance.cdist(real, real), axis=1)[:, k]
    fake_radii = np.sort(scipy.spatial.distance.cdist(fake, fake), axis=1)[:, k]
    d = scipy.spatial.distance.cdist(fake, real)  # [fake, real]
    in_real = d <= real_radii[None, :]
    return {
        "precision": in_real.any(axis=1).mean(),
        "recall": (d <= fake_radii[:, None]).any(axis=0).mean(),
        "density": in_real.sum() / (k * len(fake)),
        "coverage": (d.min(axis=0) <= real_radii).mean(),
    }


def test_prdc_matches_brute_force_with_chunks():
    rng = np.random.default_rng(16)
    real, fake = rng.normal(size=(90, 3)), 1.2 * rng.normal(size=(70, 3)) + 0.3
    expected = brute_force_prdc(real, fake, k=4)
    for chunk_size in (7, 1024):
        got = prdc(real, fake, k=4, chunk_size=chunk_size)
        assert got == pytest.approx(expected, rel=1e-12)
    assert precision_recall(real, fake, k=4) == pytest.approx((expected["precision"], expected["recall"]))
    assert density_coverage(real, fake, k=4) == pytest.approx((expected["density"], expected["coverage"]))


def test_prdc_identical_sets():
    x = np.random.default_rng(17).normal(size=(400, 4))
    k = 5
    got = prdc(x, x, k=k)
    assert got["precision"] == got["recall"] == got["coverage"] == 1.0
    # Each real ball holds its own centre and its k nearest neighbours (the k-th on its boundary).
    assert got["density"] == pytest.approx((k + 1) / k, abs=1e-12)


def test_density_coverage_same_distribution():
    rng = np.random.default_rng(18)
    real, fake = rng.normal(size=(1500, 3)), rng.normal(size=(1500, 3))
    k = 5
    density, coverage = density_coverage(real, fake, k=k)
    assert density == pytest.approx(1.0, abs=0.1)
    # Naeem et al. 2020: for equal laws and N = M -> infinity, E[coverage] -> 1 - 1 / 2^k.
    assert coverage == pytest.approx(1 - 0.5**k, abs=0.03)


def test_dropping_modes_lowers_recall_not_precision():
    rng = np.random.default_rng(19)
    real = ring_mixture(rng, 1600, list(range(8)))
    full = ring_mixture(rng, 1600, list(range(8)))
    half = ring_mixture(rng, 1600, [0, 1, 2, 3])
    p_full, r_full = precision_recall(real, full)
    p_half, r_half = precision_recall(real, half)
    assert p_full > 0.9 and r_full > 0.9
    assert p_half > 0.9
    assert r_half == pytest.approx(0.5, abs=0.05)
    assert density_coverage(real, half)[1] == pytest.approx(0.5, abs=0.05)


# ----------------------------------------------------------------------------- inputs


@pytest.mark.parametrize(
    "metric",
    [frechet_distance, sliced_wasserstein, mmd_rbf, energy_distance, kernel_inception_distance, prdc],
)
def test_metrics_reject_mismatched_dimensions(metric):
    rng = np.random.default_rng(20)
    with pytest.raises(ValueError):
        metric(rng.normal(size=(20, 3)), rng.normal(size=(20, 4)))


def test_metrics_accept_float32_tensors_and_arrays_alike():
    rng = np.random.default_rng(21)
    x, y = rng.normal(size=(64, 3)).astype(np.float32), rng.normal(size=(48, 3)).astype(np.float32)
    for metric in (frechet_distance, sliced_wasserstein, mmd_rbf, energy_distance):
        assert metric(torch.from_numpy(x), torch.from_numpy(y)) == metric(x, y)
