"""Tests of distgan.metrics against closed forms, hand-worked cases and
brute-force O(n^2) references written with explicit loops."""
import math

import numpy as np
import pytest
import scipy.linalg
from numpy.testing import assert_allclose

from distgan import metrics


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def random_spd(rng, d, jitter=0.3):
    a = rng.standard_normal((d, d))
    return a @ a.T + jitter * np.eye(d)


def fid_sqrtm(mu1, s1, mu2, s2):
    """FID the textbook way (pytorch-fid): scipy.linalg.sqrtm of the product."""
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)


# ---------------------------------------------------------------------------
# FID
# ---------------------------------------------------------------------------

def test_fid_from_stats_diagonal_closed_form():
    # commuting (diagonal) covariances: Tr((S1 S2)^1/2) = sum sqrt(a_i b_i)
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(a + b - 2 * np.sqrt(a * b))
    assert_allclose(metrics.fid_from_stats(mu1, np.diag(a), mu2, np.diag(b)),
                    expected, rtol=1e-12)
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2
    assert_allclose(metrics.fid_from_stats([2.0], [[4.0]], [-1.0], [[1.0]]),
                    9.0 + 1.0, rtol=1e-12)


def test_fid_from_stats_2x2_noncommuting_closed_form():
    # for a 2x2 matrix with eigenvalues l1, l2 >= 0: Tr(M^1/2) = sqrt(Tr M + 2 sqrt(det M))
    s1 = np.array([[2.0, 0.9], [0.9, 1.0]])
    s2 = np.array([[1.0, -0.4], [-0.4, 3.0]])
    assert not np.allclose(s1 @ s2, s2 @ s1)
    m = s1 @ s2
    tr_sqrt = math.sqrt(np.trace(m) + 2 * math.sqrt(np.linalg.det(m)))
    mu1, mu2 = np.array([0.5, -1.0]), np.array([0.0, 2.0])
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    assert_allclose(metrics.fid_from_stats(mu1, s1, mu2, s2), expected, rtol=1e-12)


@pytest.mark.parametrize("d", [2, 5, 16])
def test_fid_from_stats_matches_sqrtm(rng, d):
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = random_spd(rng, d), random_spd(rng, d)
    assert not np.allclose(s1 @ s2, s2 @ s1)
    expected = fid_sqrtm(mu1, s1, mu2, s2)
    assert_allclose(metrics.fid_from_stats(mu1, s1, mu2, s2), expected, rtol=1e-9)
    # the formula is symmetric in its two Gaussians
    assert_allclose(metrics.fid_from_stats(mu2, s2, mu1, s1), expected, rtol=1e-9)


def test_fid_samples_close_to_analytic(rng):
    d = 3
    mu1, mu2 = np.zeros(d), np.array([1.0, -0.5, 0.25])
    s1, s2 = random_spd(rng, d, 0.5), random_spd(rng, d, 0.5)
    exact = fid_sqrtm(mu1, s1, mu2, s2)
    n = 100_000
    a = rng.multivariate_normal(mu1, s1, n)
    b = rng.multivariate_normal(mu2, s2, n)
    # the estimate's standard deviation here is about 0.5 % of the value
    assert_allclose(metrics.fid(a, b), exact, rtol=0.03)


def test_fid_identity_symmetry_and_dtype(rng):
    a = rng.standard_normal((300, 10)).astype(np.float32)
    b = (rng.standard_normal((200, 10)) * 1.5 + 0.3).astype(np.float32)
    assert metrics.fid(a, a) < 1e-9
    assert metrics.fid(a, b) > 0.5
    assert_allclose(metrics.fid(a, b), metrics.fid(b, a), rtol=1e-10)
    # float32 input is computed in float64 on the same values
    assert metrics.fid(a, b) == metrics.fid(a.astype(np.float64), b.astype(np.float64))
    # fid() is fid_from_stats() of feature_stats()
    assert metrics.fid(a, b) == metrics.fid_from_stats(*metrics.feature_stats(a),
                                                       *metrics.feature_stats(b))


def test_fid_singular_covariances(rng):
    # fewer samples than features: both covariances are singular
    a = rng.standard_normal((10, 40))
    b = rng.standard_normal((12, 40)) + 0.1
    assert metrics.fid(a, a) < 1e-9
    value = metrics.fid(a, b)
    assert np.isfinite(value) and value > 0
    assert_allclose(value, metrics.fid(b, a), rtol=1e-9)


def test_feature_stats(rng):
    x = rng.standard_normal((50, 4)) * [1.0, 2.0, 3.0, 4.0] + 7.0
    mu, sigma = metrics.feature_stats(x)
    assert mu.dtype == sigma.dtype == np.float64
    assert_allclose(mu, x.mean(axis=0), rtol=1e-12)
    assert_allclose(sigma, np.cov(x, rowvar=False), rtol=1e-12)


# ---------------------------------------------------------------------------
# KID
# ---------------------------------------------------------------------------

def mmd2_unbiased_loops(x, y, degree=3, gamma=None, coef0=1.0):
    m, d = x.shape
    gamma = 1.0 / d if gamma is None else gamma

    def k(u, v):
        return (gamma * sum(ui * vi for ui, vi in zip(u, v)) + coef0) ** degree

    kxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    kyy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    kxy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    return kxx / (m * (m - 1)) + kyy / (m * (m - 1)) - 2 * kxy / (m * m)


@pytest.mark.parametrize("params", [{}, {"degree": 2, "gamma": 0.5, "coef0": 0.0},
                                    {"degree": 1, "coef0": 2.5}])
def test_kid_matches_double_loop(rng, params):
    x = rng.standard_normal((7, 3))
    y = rng.standard_normal((7, 3)) + 0.4
    # subset_size = n: every subset is a permutation of the whole set, and the
    # estimator does not depend on the order
    mean, std = metrics.kid(x, y, num_subsets=3, subset_size=7, **params)
    assert_allclose(mean, mmd2_unbiased_loops(x, y, **params), rtol=1e-12)
    assert std < 1e-12
    # subset_size above the sample counts is reduced to min(n_a, n_b)
    mean_big, _ = metrics.kid(x, y, num_subsets=1, subset_size=1000, **params)
    assert_allclose(mean_big, mean, rtol=1e-12)


def test_kid_same_and_shifted_distributions(rng):
    a = rng.standard_normal((2000, 16))
    b = rng.standard_normal((2000, 16))
    same_mean, same_std = metrics.kid(a, b, num_subsets=20, subset_size=500)
    shifted_mean, shifted_std = metrics.kid(a, b + 0.5, num_subsets=20, subset_size=500)
    assert abs(same_mean) < 0.02
    assert shifted_mean > 0.1
    assert shifted_mean > 10 * abs(same_mean)
    assert same_std > 0 and shifted_std > 0


def test_kid_seeded(rng):
    a = rng.standard_normal((100, 5))
    b = rng.standard_normal((80, 5))
    r1 = metrics.kid(a, b, num_subsets=5, subset_size=30, seed=3)
    r2 = metrics.kid(a, b, num_subsets=5, subset_size=30, seed=3)
    r3 = metrics.kid(a, b, num_subsets=5, subset_size=30, seed=4)
    assert r1 == r2
    assert r1 != r3


# ---------------------------------------------------------------------------
# precision / recall, density / coverage
# ---------------------------------------------------------------------------

def knn_radius_loops(points, i, k):
    dists = sorted(math.dist(points[i], points[j]) for j in range(len(points)) if j != i)
    return dists[k - 1]


def prdc_loops(real, fake, k):
    real, fake = real.tolist(), fake.tolist()
    r_real = [knn_radius_loops(real, i, k) for i in range(len(real))]
    r_fake = [knn_radius_loops(fake, j, k) for j in range(len(fake))]
    precise = 0
    in_balls = 0
    for f in fake:
        hits = sum(1 for i, r in enumerate(real) if math.dist(f, r) <= r_real[i])
        precise += hits > 0
        in_balls += hits
    recalled = 0
    covered = 0
    for i, r in enumerate(real):
        recalled += any(math.dist(r, f) <= r_fake[j] for j, f in enumerate(fake))
        covered += any(math.dist(r, f) <= r_real[i] for f in fake)
    return {"precision": precise / len(fake), "recall": recalled / len(real),
            "density": in_balls / (k * len(fake)), "coverage": covered / len(real)}


@pytest.mark.parametrize("n_real,n_fake,d,k", [(30, 25, 2, 3), (40, 40, 5, 5),
                                                (12, 20, 3, 1), (25, 9, 8, 3)])
def test_prdc_match_loops(rng, n_real, n_fake, d, k):
    for _ in range(3):
        real = rng.standard_normal((n_real, d))
        fake = rng.standard_normal((n_fake, d)) * 1.3 + 0.4
        ref = prdc_loops(real, fake, k)
        pr = metrics.precision_recall(real, fake, k=k)
        dc = metrics.density_coverage(real, fake, k=k)
        assert pr == {"precision": pytest.approx(ref["precision"]),
                      "recall": pytest.approx(ref["recall"])}
        assert dc == {"density": pytest.approx(ref["density"]),
                      "coverage": pytest.approx(ref["coverage"])}


def test_prdc_hand_case():
    # 1-D points; k = 1.
    # real 0, 1, 3, 7: radii 1, 1, 2, 4 -> balls [-1,1] [0,2] [1,5] [3,11]
    # fake 2, 6, 12:   radii 4, 4, 6    -> balls [-2,6] [2,10] [6,18]
    real = np.array([[0.0], [1.0], [3.0], [7.0]])
    fake = np.array([[2.0], [6.0], [12.0]])
    pr = metrics.precision_recall(real, fake, k=1)
    assert pr == {"precision": 2 / 3, "recall": 1.0}
    # balls are closed: fake 2 lies on the boundary of [0,2] and counts, so
    # fake 2 is in 2 real balls, fake 6 in 1, fake 12 in none
    dc = metrics.density_coverage(real, fake, k=1)
    assert dc == {"density": 1.0, "coverage": 3 / 4}


@pytest.mark.parametrize("offset", [0, 1000, -77])
def test_prdc_integer_ties_are_exact(offset):
    # real x = 0, 2, 5 (mean 7/3, not a binary fraction); k = 1 radii 2, 2, 3.
    # fake -2 and 8 lie exactly on the boundaries of the balls around 0 and 5.
    real = np.array([[0, 0], [2, 0], [5, 0]]) + offset
    fake = np.array([[-2, 0], [8, 0], [9, 0]]) + offset
    assert metrics.precision_recall(real, fake, k=1)["precision"] == 2 / 3
    assert metrics.density_coverage(real, fake, k=1) == {"density": 2 / 3, "coverage": 2 / 3}


def test_prdc_identical_and_disjoint(rng):
    x = rng.standard_normal((50, 6))
    assert metrics.precision_recall(x, x) == {"precision": 1.0, "recall": 1.0}
    assert metrics.density_coverage(x, x)["coverage"] == 1.0
    far = x + 1000.0
    assert metrics.precision_recall(x, far) == {"precision": 0.0, "recall": 0.0}
    assert metrics.density_coverage(x, far) == {"density": 0.0, "coverage": 0.0}


def test_knn_radius_excludes_self_by_index():
    # a duplicate is a neighbour at distance 0, so both copies of 0 get radius 0
    real = np.array([[0.0], [0.0], [10.0], [11.0]])
    assert metrics.precision_recall(real, np.array([[0.5], [10.5]]), k=1)["precision"] == 0.5
    assert metrics.precision_recall(real, np.array([[0.0], [10.5]]), k=1)["precision"] == 1.0


def test_prdc_blocking_changes_nothing(rng, monkeypatch):
    real = rng.standard_normal((61, 4))
    fake = rng.standard_normal((47, 4)) + 0.2
    pr, dc = metrics.precision_recall(real, fake), metrics.density_coverage(real, fake)
    for elems in (1, 7, 100, 1000):
        monkeypatch.setattr(metrics, "_BLOCK_ELEMS", elems)
        assert metrics.precision_recall(real, fake) == pr
        assert metrics.density_coverage(real, fake) == dc


def test_prdc_far_from_origin(rng):
    # distances are shift-invariant; the shift by the real mean keeps the
    # |x|^2 + |y|^2 - 2xy formula accurate for features far from the origin
    real = rng.standard_normal((80, 16))
    fake = rng.standard_normal((70, 16)) + 0.3
    offset = 1e4
    assert (metrics.precision_recall(real + offset, fake + offset)
            == metrics.precision_recall(real, fake))
    assert (metrics.density_coverage(real + offset, fake + offset)
            == metrics.density_coverage(real, fake))


def test_inputs_not_modified(rng):
    real = rng.standard_normal((20, 3))
    fake = rng.standard_normal((20, 3))
    real_copy, fake_copy = real.copy(), fake.copy()
    metrics.precision_recall(real, fake)
    metrics.density_coverage(real, fake)
    metrics.fid(real, fake)
    metrics.kid(real, fake, num_subsets=2)
    metrics.mode_stats(real[:, :2], fake[:3, :2], 0.5)
    assert np.array_equal(real, real_copy) and np.array_equal(fake, fake_copy)


# ---------------------------------------------------------------------------
# class histogram
# ---------------------------------------------------------------------------

def test_class_histogram_kl():
    data = np.array([0, 1, 2, 3] * 5)
    assert metrics.class_histogram_kl(np.array([3, 2, 1, 0] * 2), data, 4) == pytest.approx(0)
    pred = np.array([0, 0, 0, 1, 1, 2, 3, 3])
    # smoothing=0: p = 1/4 each, q = (3, 2, 1, 2)/8
    q = np.array([3, 2, 1, 2]) / 8
    expected = np.sum(0.25 * np.log(0.25 / q))
    assert_allclose(metrics.class_histogram_kl(pred, data, 4, smoothing=0), expected,
                    rtol=1e-12)
    # add-one smoothing: data (5+1)/24 each, samples (4, 3, 2, 3)/12
    q1 = np.array([4, 3, 2, 3]) / 12
    expected1 = np.sum(0.25 * np.log(0.25 / q1))
    assert_allclose(metrics.class_histogram_kl(pred, data, 4), expected1, rtol=1e-12)
    # a missing class: infinite without smoothing, finite and large with it
    collapsed = np.zeros(100, dtype=np.int64)
    assert metrics.class_histogram_kl(collapsed, data, 4, smoothing=0) == math.inf
    smoothed = metrics.class_histogram_kl(collapsed, data, 4)
    assert np.isfinite(smoothed) and smoothed > 1.0
    # a class absent from both histograms contributes nothing
    assert metrics.class_histogram_kl(np.array([0, 1]), np.array([0, 1]), 3,
                                      smoothing=0) == 0.0


# ---------------------------------------------------------------------------
# toy-set mode statistics
# ---------------------------------------------------------------------------

def ring_centers(m=8, radius=2.0):
    t = 2 * np.pi * np.arange(m) / m
    return np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)


def test_mode_stats_hand_case():
    centers = ring_centers()
    sigma = 0.02
    out_dir = np.array([0.6, 0.8])  # unit vector
    samples = np.concatenate([
        np.repeat(centers[[0]], 5, axis=0),
        np.repeat(centers[[1]], 3, axis=0),
        np.repeat(centers[[2]], 2, axis=0),
        centers[[3]] + 2.9 * sigma * out_dir,   # high quality (< 3 sigma)
        centers[[4]] + 3.1 * sigma * out_dir,   # not high quality
        [[0.0, 0.0], [5.0, 5.0]],               # far from every mode
    ])
    out = metrics.mode_stats(samples, centers, sigma)
    assert out["modes"] == 4
    assert out["high_quality"] == 11 / 14
    assert out["histogram"].tolist() == [5, 3, 2, 1, 0, 0, 0, 0]
    p = np.array([5, 3, 2, 1]) / 11
    assert_allclose(out["reverse_kl"], np.sum(p * np.log(8 * p)), rtol=1e-12)


def test_mode_stats_uniform_and_collapsed(rng):
    g = np.arange(-4.0, 5.0, 2.0)
    centers = np.array([(x, y) for x in g for y in g])  # grid of 25
    sigma = 0.05
    samples = np.repeat(centers, 4, axis=0) + rng.normal(0, sigma, (100, 2)).clip(-2 * sigma,
                                                                                   2 * sigma)
    out = metrics.mode_stats(samples, centers, sigma)
    assert out["modes"] == 25 and out["high_quality"] == 1.0
    assert out["reverse_kl"] == pytest.approx(0.0, abs=1e-12)
    # all on one mode: reverse KL is log M
    out = metrics.mode_stats(np.repeat(centers[[7]], 10, axis=0), centers, sigma)
    assert out["modes"] == 1 and out["histogram"][7] == 10
    assert_allclose(out["reverse_kl"], np.log(25), rtol=1e-12)
    # nothing near a mode
    out = metrics.mode_stats(centers + 1.0, centers, sigma)
    assert out["modes"] == 0 and out["high_quality"] == 0.0
    assert math.isnan(out["reverse_kl"])


def test_mode_stats_per_mode_sigma():
    centers = np.array([[0.0, 0.0], [10.0, 0.0]])
    # the point is nearer to mode 0 in distance but nearer to mode 1 in sigmas
    x = np.array([[4.0, 0.0]])
    out = metrics.mode_stats(x, centers, [1.0, 2.5])
    assert out["histogram"].tolist() == [0, 1]
    out = metrics.mode_stats(x, centers, 1.0)
    assert out["histogram"].tolist() == [0, 0]
    out = metrics.mode_stats(x, centers, 1.0, threshold=4.5)
    assert out["histogram"].tolist() == [1, 0]


# ---------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------

GOOD = np.zeros((10, 3)) + np.arange(30).reshape(10, 3) % 7


def feature_calls():
    return [
        lambda a, b: metrics.fid(a, b),
        lambda a, b: metrics.kid(a, b, num_subsets=1),
        lambda a, b: metrics.precision_recall(a, b),
        lambda a, b: metrics.density_coverage(a, b),
        lambda a, b: metrics.mode_stats(a, b, 1.0),
    ]


@pytest.mark.parametrize("call", feature_calls())
@pytest.mark.parametrize("bad,match", [
    (np.zeros(10), "2-D"),
    (np.zeros((2, 5, 3)), "2-D"),
    (np.zeros((10, 0)), "at least 1 feature"),
    (np.zeros((10, 3), dtype=complex), "real numbers"),
    (np.zeros((10, 3), dtype=bool), "real numbers"),
    (np.array([["a", "b", "c"]] * 10), "real numbers"),
    (np.where(np.eye(10, 3) > 0, np.nan, 0.0), "non-finite"),
    (np.where(np.eye(10, 3) > 0, np.inf, 0.0), "non-finite"),
    (np.zeros((10, 4)), "same number of features"),
])
def test_feature_validation(call, bad, match):
    with pytest.raises(ValueError, match=match):
        call(bad, GOOD)
    with pytest.raises(ValueError, match=match):
        call(GOOD, bad)


@pytest.mark.parametrize("call,match", [
    (lambda: metrics.fid(GOOD[:1], GOOD), "at least 2"),
    (lambda: metrics.feature_stats(GOOD[:1]), "at least 2"),
    (lambda: metrics.precision_recall(GOOD[:3], GOOD, k=3), "k\\+1=4"),
    (lambda: metrics.precision_recall(GOOD, GOOD[:3], k=3), "fake has 3 samples"),
    (lambda: metrics.density_coverage(GOOD[:5], GOOD, k=5), "real has 5"),
    (lambda: metrics.density_coverage(GOOD, GOOD, k=0), "k must be >= 1"),
    (lambda: metrics.precision_recall(GOOD, GOOD, k=1.5), "k must be an integer"),
    (lambda: metrics.precision_recall(GOOD, GOOD, k=True), "k must be an integer"),
    (lambda: metrics.kid(GOOD, GOOD, num_subsets=0), "num_subsets"),
    (lambda: metrics.kid(GOOD, GOOD, subset_size=1), "subset_size"),
    (lambda: metrics.kid(GOOD, GOOD, degree=0), "degree"),
    (lambda: metrics.kid(GOOD, GOOD, gamma=-1.0), "gamma"),
    (lambda: metrics.kid(GOOD, GOOD, coef0=math.nan), "coef0"),
    (lambda: metrics.kid(GOOD[:1], GOOD), "at least 2"),
])
def test_argument_validation(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("args,match", [
    ((np.zeros((2, 2)), np.eye(2), np.zeros(2), np.eye(2)), "mu1 must be 1-D"),
    ((np.zeros(2), np.eye(3), np.zeros(2), np.eye(2)), "sigma1 must have shape"),
    ((np.zeros(2), np.eye(2), np.zeros(3), np.eye(3)), "same length"),
    ((np.zeros(2), [[1.0, 0.5], [0.0, 1.0]], np.zeros(2), np.eye(2)), "symmetric"),
    ((np.zeros(2), np.eye(2), [np.nan, 0.0], np.eye(2)), "mu2 has non-finite"),
    ((np.zeros(2), np.eye(2), np.zeros(2), np.full((2, 2), np.inf)), "sigma2 has non-finite"),
    ((np.zeros(2, dtype=complex), np.eye(2), np.zeros(2), np.eye(2)), "real numbers"),
])
def test_fid_from_stats_validation(args, match):
    with pytest.raises(ValueError, match=match):
        metrics.fid_from_stats(*args)


@pytest.mark.parametrize("call,match", [
    (lambda: metrics.class_histogram_kl(np.array([0.0, 1.0]), np.array([0, 1]), 2),
     "integer class labels"),
    (lambda: metrics.class_histogram_kl(np.array([0, 2]), np.array([0, 1]), 2),
     r"pred_labels must lie in \[0, 2\)"),
    (lambda: metrics.class_histogram_kl(np.array([0, 1]), np.array([-1, 1]), 2),
     "data_labels must lie"),
    (lambda: metrics.class_histogram_kl(np.array([[0, 1]]), np.array([0, 1]), 2), "1-D"),
    (lambda: metrics.class_histogram_kl(np.array([], dtype=int), np.array([0, 1]), 2),
     "non-empty"),
    (lambda: metrics.class_histogram_kl(np.array([0, 1]), np.array([0, 1]), 0), "num_classes"),
    (lambda: metrics.class_histogram_kl(np.array([0, 1]), np.array([0, 1]), 2, smoothing=-1),
     "smoothing"),
    (lambda: metrics.mode_stats(GOOD[:, :2], GOOD[:3, :2], 0.0), "sigma"),
    (lambda: metrics.mode_stats(GOOD[:, :2], GOOD[:3, :2], [1.0, 1.0]), "shape \\(3,\\)"),
    (lambda: metrics.mode_stats(GOOD[:, :2], GOOD[:3, :2], [1.0, -1.0, 1.0]), "positive"),
    (lambda: metrics.mode_stats(GOOD[:, :2], GOOD[:3, :2], 1.0, threshold=0), "threshold"),
])
def test_label_and_mode_validation(call, match):
    with pytest.raises(ValueError, match=match):
        call()
