"""Sample-quality metrics on feature arrays: pure NumPy/SciPy, no deep-learning code.

Scope: the numbers of DESIGN.md "Evaluation". The functions take features that
something else has already produced (distgan's own evaluation classifier, its
penultimate layer) as ``(n, d)`` arrays, or 2-D points for the toy sets, and
return plain Python floats, ints and dicts. Nothing here runs a network.

==================================  ===========================================
``fid`` ``fid_from_stats``           Frechet distance of Gaussian fits
``feature_stats``                    (mu, sigma) to cache reference statistics
``kid``                              unbiased MMD^2, cubic polynomial kernel
``precision_recall``                 k-NN manifolds, k = 3
``density_coverage``                 k-NN balls around real samples, k = 5
``class_histogram_kl``               KL(data class histogram || sample's)
``mode_stats``                       2-D Gaussian mixtures: modes, high quality,
                                     reverse KL of the mode histogram
==================================  ===========================================

Letters: ``n`` samples (``n_real``, ``n_fake``), ``d`` feature dimension,
``M`` mixture components, ``C`` classes, ``k`` neighbours.

Numerical choices, common to all functions:

* Inputs are validated first (2-D, real-valued, finite, same ``d``, enough
  samples for ``k``) and raise ``ValueError`` naming the argument. They are then
  copied to float64; every sum and matrix product runs in float64 whatever the
  input dtype (float32 features lose digits in covariances and distances).
* Pairwise squared distances use ``|x|^2 + |y|^2 - 2 x.y`` (one GEMM per block),
  clamped at 0. Both sets are first shifted by the mean of the real set, which
  leaves distances unchanged and keeps the cancellation in that formula small
  for features far from the origin (ReLU features are all positive). The
  distance matrix is never held whole: rows go in blocks of at most
  ``_BLOCK_ELEMS`` entries (32 MiB of float64), so 10k x 10k at d = 128 needs
  about 100 MiB in all (input copies included) and a few seconds.
* Balls are closed (``dist <= radius``), as in the papers' definitions. The
  reference code of Naeem et al. (``clovaai/generative-evaluation-prdc``) uses a
  strict ``<``; the two differ only on exact ties. Ties are decided on rounded
  float64 squared distances. These are exact when the coordinates are small
  integers or short binary fractions (hand-made cases), so such ties are honoured;
  for continuous features exact ties have probability zero.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = [
    "fid", "fid_from_stats", "feature_stats", "kid", "precision_recall",
    "density_coverage", "class_histogram_kl", "mode_stats",
]

# Most float64 entries of a distance block (rows x columns) held at once: 32 MiB.
# Module-level so the tests can shrink it and check that blocking changes nothing.
_BLOCK_ELEMS = 1 << 22


# ---------------------------------------------------------------------------
# input validation
# ---------------------------------------------------------------------------

def _as_features(x, name, min_samples=1):
    """``x`` as a finite float64 (n, d) array with n >= min_samples, or ValueError."""
    arr = np.asarray(x)
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.integer)
                                     or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{name} must be an array of real numbers, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {arr.shape}")
    n, d = arr.shape
    if d < 1:
        raise ValueError(f"{name} must have at least 1 feature, got shape {arr.shape}")
    if n < min_samples:
        raise ValueError(f"{name} has {n} samples, at least {min_samples} are needed")
    arr = arr.astype(np.float64)  # always a copy: callers may shift it in place
    finite = np.isfinite(arr)
    if not finite.all():
        bad = np.argwhere(~finite)[0]
        raise ValueError(f"{name} has {int((~finite).sum())} non-finite values "
                         f"(first at row {bad[0]}, column {bad[1]})")
    return arr


def _same_dim(a, b, name_a, name_b):
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{name_a} and {name_b} must have the same number of features, "
                         f"got {a.shape[1]} and {b.shape[1]}")


def _check_int(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_positive(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _check_k(k, n, name):
    k = _check_int(k, "k", 1)
    if n < k + 1:
        raise ValueError(f"{name} has {n} samples; k={k} needs at least k+1={k + 1} "
                         "(each sample's own distance 0 is excluded from its k neighbours)")
    return k


# ---------------------------------------------------------------------------
# FID
# ---------------------------------------------------------------------------

def feature_stats(x):
    """Mean and covariance of features, the Gaussian fit that FID compares.

    Parameters
    ----------
    x : array_like, shape (n, d)
        Features, n >= 2, finite.

    Returns
    -------
    mu : ndarray, shape (d,), float64
    sigma : ndarray, shape (d, d), float64
        Unbiased sample covariance (divides by n - 1, as ``np.cov`` and pytorch-fid).
    """
    x = _as_features(x, "x", min_samples=2)
    mu = x.mean(axis=0)
    xc = x - mu
    sigma = (xc.T @ xc) / (x.shape[0] - 1)
    return mu, sigma


def _as_stats(mu, sigma, name_mu, name_sigma):
    mu = np.asarray(mu)
    sigma = np.asarray(sigma)
    for arr, name in ((mu, name_mu), (sigma, name_sigma)):
        if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.integer)
                                         or np.issubdtype(arr.dtype, np.floating)):
            raise ValueError(f"{name} must be an array of real numbers, got dtype {arr.dtype}")
    if mu.ndim != 1 or mu.shape[0] < 1:
        raise ValueError(f"{name_mu} must be 1-D of length d >= 1, got shape {mu.shape}")
    d = mu.shape[0]
    if sigma.shape != (d, d):
        raise ValueError(f"{name_sigma} must have shape ({d}, {d}) to match {name_mu}, "
                         f"got {sigma.shape}")
    mu = mu.astype(np.float64)
    sigma = sigma.astype(np.float64)
    if not np.isfinite(mu).all():
        raise ValueError(f"{name_mu} has non-finite values")
    if not np.isfinite(sigma).all():
        raise ValueError(f"{name_sigma} has non-finite values")
    scale = np.abs(sigma).max()
    if np.abs(sigma - sigma.T).max() > 1e-6 * scale:
        raise ValueError(f"{name_sigma} must be symmetric (a covariance matrix)")
    return mu, 0.5 * (sigma + sigma.T)


def _clip_eigenvalues(w):
    """Eigenvalues w of a symmetric PSD matrix with those below the rounding level
    ``len(w) * eps * max(w)`` set to 0. They are pure noise (of either sign),
    and a square root would amplify them: sqrt(1e-16) = 1e-8 per direction, which
    for singular covariances (n < d) summed to a ~1e-7 error in FID."""
    tol = w.shape[0] * np.finfo(np.float64).eps * max(float(w.max()), 0.0)
    return np.where(w > tol, w, 0.0)


def _psd_sqrt(sigma):
    """Symmetric square root of a symmetric PSD matrix via eigh."""
    w, v = np.linalg.eigh(sigma)
    return (v * np.sqrt(_clip_eigenvalues(w))) @ v.T


def fid_from_stats(mu1, sigma1, mu2, sigma2):
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2).

    ``|mu1 - mu2|^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))``
    (Dowson & Landau 1982; as FID: Heusel et al. 2017,
    https://arxiv.org/abs/1706.08500).

    The trace of the square root is computed without ``scipy.linalg.sqrtm``.
    ``sigma1 sigma2`` is not symmetric, and ``sqrtm`` of it can return complex
    output with rounding-size imaginary parts, or fail, when the covariances are
    singular (fewer samples than features). Instead, with ``s = sigma1^(1/2)``
    (symmetric, from ``eigh``), ``s sigma2 s`` is symmetric PSD and has the same
    eigenvalues as ``sigma1 sigma2`` (``AB`` and ``BA`` share their nonzero
    eigenvalues, here with ``A = s``, ``B = s sigma2``). So
    ``Tr((sigma1 sigma2)^(1/2)) = sum_i sqrt(lambda_i(s sigma2 s))``, with the
    eigenvalues from ``eigvalsh``. In both eigen-decompositions, eigenvalues
    below ``d * eps * max eigenvalue`` (rounding noise, possibly negative) are
    set to 0 before the square root, which would otherwise magnify them.
    The result is clamped at 0 (identical inputs can give -1e-13).

    Parameters
    ----------
    mu1, mu2 : array_like, shape (d,)
    sigma1, sigma2 : array_like, shape (d, d)
        Symmetric positive semi-definite covariances, e.g. from ``feature_stats``.

    Returns
    -------
    float
    """
    mu1, sigma1 = _as_stats(mu1, sigma1, "mu1", "sigma1")
    mu2, sigma2 = _as_stats(mu2, sigma2, "mu2", "sigma2")
    if mu1.shape != mu2.shape:
        raise ValueError(f"mu1 and mu2 must have the same length, got {mu1.shape[0]} "
                         f"and {mu2.shape[0]}")
    diff = mu1 - mu2
    s = _psd_sqrt(sigma1)
    m = s @ sigma2 @ s
    m = 0.5 * (m + m.T)  # symmetric up to rounding; eigvalsh reads one triangle
    tr_sqrt = np.sqrt(_clip_eigenvalues(np.linalg.eigvalsh(m))).sum()
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_sqrt
    return max(float(value), 0.0)


def fid(a, b):
    """Frechet (Inception) distance between the Gaussian fits of two feature sets.

    ``fid(a, b) = fid_from_stats(*feature_stats(a), *feature_stats(b))``; see
    ``fid_from_stats`` for the formula and how the matrix square root is taken.
    FID is biased upwards at finite n (Chong & Forsyth 2020): compare values
    computed with the same number of samples.

    Parameters
    ----------
    a, b : array_like, shape (n_a, d) and (n_b, d)
        Features, at least 2 samples each, finite.

    Returns
    -------
    float
    """
    a = _as_features(a, "a", min_samples=2)
    b = _as_features(b, "b", min_samples=2)
    _same_dim(a, b, "a", "b")
    return fid_from_stats(*feature_stats(a), *feature_stats(b))


# ---------------------------------------------------------------------------
# KID
# ---------------------------------------------------------------------------

def kid(a, b, num_subsets=100, subset_size=1000, degree=3, gamma=None, coef0=1,
        seed=0):
    """Kernel Inception Distance: unbiased MMD^2 with a polynomial kernel.

    Bińkowski et al. 2018, "Demystifying MMD GANs", https://arxiv.org/abs/1801.01401.
    Kernel ``k(x, y) = (gamma x.y + coef0)^degree``, by default
    ``(x.y / d + 1)^3``. For each of ``num_subsets`` subsets, ``m`` rows of ``a``
    and ``m`` rows of ``b`` are drawn without replacement and

    ``MMD^2_u = sum_{i!=j} k(x_i,x_j) / (m(m-1)) + sum_{i!=j} k(y_i,y_j) / (m(m-1))
    - 2 sum_{i,j} k(x_i,y_j) / m^2``

    (unbiased: the cross term needs no exclusion because x and y are
    independent; the same estimator as the paper's code, torch-fidelity and
    clean-fid). It can be negative when the distributions are equal.

    Parameters
    ----------
    a, b : array_like, shape (n_a, d) and (n_b, d)
        Features, finite.
    num_subsets : int
        Number of random subsets averaged over (>= 1).
    subset_size : int
        ``m``; if larger than ``n_a`` or ``n_b`` it is reduced to
        ``min(n_a, n_b)`` (as clean-fid does; the estimator stays unbiased, only
        its variance grows). ``m`` must end up >= 2.
    degree : int
        Polynomial degree (>= 1).
    gamma : float or None
        Scale of the dot product, ``None`` meaning ``1 / d``.
    coef0 : float
        Constant added before taking the power.
    seed : int, None or numpy.random.Generator
        Seeds ``numpy.random.default_rng`` for the subset draws.

    Returns
    -------
    mean, std : float
        Mean and standard deviation (``ddof=0``, as torch-fidelity) of MMD^2
        over the subsets.
    """
    a = _as_features(a, "a", min_samples=2)
    b = _as_features(b, "b", min_samples=2)
    _same_dim(a, b, "a", "b")
    num_subsets = _check_int(num_subsets, "num_subsets", 1)
    subset_size = _check_int(subset_size, "subset_size", 2)
    degree = _check_int(degree, "degree", 1)
    d = a.shape[1]
    gamma = 1.0 / d if gamma is None else _check_positive(gamma, "gamma")
    if isinstance(coef0, bool) or not isinstance(coef0, numbers.Real) \
            or not math.isfinite(coef0):
        raise ValueError(f"coef0 must be a finite number, got {coef0!r}")
    coef0 = float(coef0)
    rng = np.random.default_rng(seed)
    m = min(subset_size, a.shape[0], b.shape[0])

    def kernel(x, y):
        base = x @ y.T
        base *= gamma
        base += coef0
        # integer power by repeated multiplication: np.power's pow() per element
        # made this loop several times slower than the matrix products
        out = base.copy()
        for _ in range(degree - 1):
            out *= base
        return out

    values = np.empty(num_subsets)
    for s in range(num_subsets):
        x = a[rng.choice(a.shape[0], m, replace=False)]
        y = b[rng.choice(b.shape[0], m, replace=False)]
        kxx = kernel(x, x)
        kyy = kernel(y, y)
        kxy = kernel(x, y)
        within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        values[s] = within - 2.0 * kxy.sum() / (m * m)
    return float(values.mean()), float(values.std())


# ---------------------------------------------------------------------------
# k-NN manifold metrics
# ---------------------------------------------------------------------------

def _row_blocks(n_rows, n_cols):
    step = max(1, _BLOCK_ELEMS // max(n_cols, 1))
    for start in range(0, n_rows, step):
        yield slice(start, min(start + step, n_rows))


def _sq_dists(x, y, xx, yy):
    """Squared distances (b, m) between rows of x (b, d) and y (m, d), given the
    squared norms xx (b,) and yy (m,); clamped at 0 against cancellation."""
    d2 = x @ y.T
    d2 *= -2.0
    d2 += xx[:, None]
    d2 += yy[None, :]
    np.maximum(d2, 0.0, out=d2)
    return d2


def _knn_sq_radii(x, k):
    """Squared distance (n,) from each row of x (n, d) to its k-th nearest other
    row. The row itself is excluded by index, not by distance, so a duplicate
    sample counts as a neighbour at distance 0."""
    n = x.shape[0]
    xx = np.einsum("ij,ij->i", x, x)
    radii = np.empty(n)
    for sl in _row_blocks(n, n):
        d2 = _sq_dists(x[sl], x, xx[sl], xx)
        rows = np.arange(sl.start, sl.stop)
        d2[rows - sl.start, rows] = np.inf
        radii[sl] = np.partition(d2, k - 1, axis=1)[:, k - 1]
    return radii


def _ball_pass(real, fake, r2_real, r2_fake):
    """One blocked pass over the real x fake distances.

    real (n_real, d), fake (n_fake, d); r2_real (n_real,) squared k-NN radii of
    the real samples; r2_fake (n_fake,) those of the fake samples, or None.
    Returns, with B_i the closed ball around real_i and F_j the one around fake_j:
      fake_in_real  (n_fake,) bool: fake_j lies in some B_i
      fake_count    (n_fake,) int:  number of B_i containing fake_j
      real_covered  (n_real,) bool: B_i contains some fake_j
      real_in_fake  (n_real,) bool: real_i lies in some F_j (None if r2_fake is None)
    """
    n_real, n_fake = real.shape[0], fake.shape[0]
    rr = np.einsum("ij,ij->i", real, real)
    ff = np.einsum("ij,ij->i", fake, fake)
    fake_count = np.zeros(n_fake, dtype=np.int64)
    real_covered = np.empty(n_real, dtype=bool)
    real_in_fake = None if r2_fake is None else np.empty(n_real, dtype=bool)
    for sl in _row_blocks(n_real, n_fake):
        d2 = _sq_dists(real[sl], fake, rr[sl], ff)
        inside = d2 <= r2_real[sl, None]
        fake_count += inside.sum(axis=0)
        real_covered[sl] = inside.any(axis=1)
        if r2_fake is not None:
            real_in_fake[sl] = (d2 <= r2_fake[None, :]).any(axis=1)
    return fake_count > 0, fake_count, real_covered, real_in_fake


def _prepare_pair(real, fake):
    real = _as_features(real, "real")
    fake = _as_features(fake, "fake")
    _same_dim(real, fake, "real", "fake")
    # distances are shift-invariant; see the module docstring. The mean is rounded
    # to 8 significant bits so that subtracting it is exact for data with short
    # mantissas (integers, binary fractions): ties on a ball's boundary then stay
    # exact ties, as they would be without the shift.
    mant, expo = np.frexp(real.mean(axis=0))
    shift = np.ldexp(np.round(mant * 256.0), expo - 8)
    real -= shift
    fake -= shift
    return real, fake


def precision_recall(real, fake, k=3):
    """Improved precision and recall (Kynkäänniemi et al. 2019,
    https://arxiv.org/abs/1904.06991).

    The real manifold is the union of closed balls around each real sample with
    radius the distance to its k-th nearest other real sample. Precision is the
    share of fake samples inside the real manifold (quality); recall is the
    share of real samples inside the fake manifold, built the same way from the
    fake samples (coverage of the real distribution). Exact distances, computed
    in blocks.

    Parameters
    ----------
    real, fake : array_like, shape (n_real, d) and (n_fake, d)
        Features, finite, each with at least k + 1 samples.
    k : int
        Neighbour rank for the radii (the paper uses 3).

    Returns
    -------
    dict
        ``{"precision": float, "recall": float}``, both in [0, 1].
    """
    real, fake = _prepare_pair(real, fake)
    k = _check_k(k, real.shape[0], "real")
    _check_k(k, fake.shape[0], "fake")
    fake_in_real, _, _, real_in_fake = _ball_pass(
        real, fake, _knn_sq_radii(real, k), _knn_sq_radii(fake, k))
    return {"precision": float(fake_in_real.mean()), "recall": float(real_in_fake.mean())}


def density_coverage(real, fake, k=5):
    """Density and coverage (Naeem et al. 2020, https://arxiv.org/abs/2002.09797).

    With ``B_i`` the closed ball around real sample i of radius its distance to
    the k-th nearest other real sample:

    ``density = 1/(k n_fake) sum_j sum_i 1[fake_j in B_i]``  (expected 1 when the
    distributions match; it can exceed 1),

    ``coverage = 1/n_real sum_i 1[some fake_j in B_i]``  (in [0, 1]).

    Parameters
    ----------
    real : array_like, shape (n_real, d)
        Real features, finite, at least k + 1 samples.
    fake : array_like, shape (n_fake, d)
        Generated features, finite, at least 1 sample.
    k : int
        Neighbour rank for the radii (the paper uses 5).

    Returns
    -------
    dict
        ``{"density": float, "coverage": float}``.
    """
    real, fake = _prepare_pair(real, fake)
    k = _check_k(k, real.shape[0], "real")
    _, fake_count, real_covered, _ = _ball_pass(real, fake, _knn_sq_radii(real, k), None)
    return {"density": float(fake_count.sum() / (k * fake.shape[0])),
            "coverage": float(real_covered.mean())}


# ---------------------------------------------------------------------------
# class histogram
# ---------------------------------------------------------------------------

def _as_labels(x, name, num_classes):
    arr = np.asarray(x)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be an array of integer class labels, "
                         f"got dtype {arr.dtype}")
    if arr.ndim != 1 or arr.shape[0] < 1:
        raise ValueError(f"{name} must be 1-D and non-empty, got shape {arr.shape}")
    if arr.min() < 0 or arr.max() >= num_classes:
        raise ValueError(f"{name} must lie in [0, {num_classes}), got values in "
                         f"[{arr.min()}, {arr.max()}]")
    return arr


def class_histogram_kl(pred_labels, data_labels, num_classes, smoothing=1.0):
    """KL(data class histogram || sample class histogram), in nats.

    ``pred_labels`` are the evaluation classifier's predictions on generated
    samples, ``data_labels`` the labels of the real data. Both histograms are
    smoothed additively (Laplace, "add-one" by default): ``p_c = (n_c + smoothing)
    / (n + smoothing * C)``. Without smoothing a class that the generator never
    produces would make the KL infinite whatever else it does; with it, such a
    class costs about ``p_data_c * log(p_data_c * n_samples)``, finite and
    still large. ``smoothing=0`` gives the raw plug-in KL (``inf`` when a data
    class is missing from the samples). The direction puts the data first, so
    missing classes (mode dropping) are what is penalised.

    Parameters
    ----------
    pred_labels : array_like of int, shape (n_samples,)
    data_labels : array_like of int, shape (n_data,)
        Labels in ``[0, num_classes)``.
    num_classes : int
        ``C`` >= 1.
    smoothing : float
        Pseudocount added to every class of both histograms, >= 0.

    Returns
    -------
    float
    """
    num_classes = _check_int(num_classes, "num_classes", 1)
    if isinstance(smoothing, bool) or not isinstance(smoothing, numbers.Real) \
            or not math.isfinite(smoothing) or smoothing < 0:
        raise ValueError(f"smoothing must be a finite number >= 0, got {smoothing!r}")
    pred = _as_labels(pred_labels, "pred_labels", num_classes)
    data = _as_labels(data_labels, "data_labels", num_classes)
    q = np.bincount(pred, minlength=num_classes) + float(smoothing)
    p = np.bincount(data, minlength=num_classes) + float(smoothing)
    q /= q.sum()
    p /= p.sum()
    nz = p > 0  # 0 log 0 = 0
    if np.any(q[nz] == 0):
        return math.inf
    return float(np.sum(p[nz] * np.log(p[nz] / q[nz])))


# ---------------------------------------------------------------------------
# toy sets: Gaussian mixtures with known modes
# ---------------------------------------------------------------------------

def mode_stats(samples, centers, sigma, threshold=3.0):
    """Mode coverage of samples from a Gaussian mixture with known modes.

    The VEEGAN protocol (Srivastava et al. 2017, https://arxiv.org/abs/1705.07761,
    Sec. 5.1), which PacGAN (Lin et al. 2018, https://arxiv.org/abs/1712.04086,
    Table 1) reuses for its 2-D ring and grid:

    * each sample goes to its nearest mode, by the distance in units of that
      mode's standard deviation, ``|x - c_j| / sigma_j`` (the Euclidean nearest
      mode when ``sigma`` is one number);
    * a sample is *high quality* if that distance is below ``threshold`` (3
      standard deviations). The comparison is strict, ``< threshold``, as in
      PacGAN's code (``MetricLogger``, fjxmlzn/PacGAN);
    * a mode is *captured* if at least one high-quality sample goes to it
      (VEEGAN: "mixture components whose mean is nearest to at least one high
      quality sample"; PacGAN's code counts the nonzero histogram bins). Some
      later papers require more samples per mode; that is not done here;
    * ``reverse_kl`` = ``KL(p || uniform)`` with ``p`` the mode histogram of the
      high-quality samples, normalised: ``sum_j p_j log(M p_j)``, in nats, in
      ``[0, log M]`` (PacGAN: the generated mode distribution against the true,
      uniform one). It is ``nan`` when no sample is high quality.

    Parameters
    ----------
    samples : array_like, shape (n, D)
        Generated points (D = 2 for the ring and grid sets).
    centers : array_like, shape (M, D)
        Mixture means; the mixture is assumed to have equal weights.
    sigma : float or array_like of shape (M,)
        Standard deviation of each (isotropic) component.
    threshold : float
        High-quality radius in standard deviations (3 in VEEGAN and PacGAN).

    Returns
    -------
    dict
        ``modes`` (int, captured modes), ``high_quality`` (float, share of
        high-quality samples), ``reverse_kl`` (float), ``histogram`` (int64
        ndarray (M,), high-quality samples per mode).
    """
    samples = _as_features(samples, "samples")
    centers = _as_features(centers, "centers")
    _same_dim(samples, centers, "samples", "centers")
    n_modes = centers.shape[0]
    sig = np.asarray(sigma)
    if sig.ndim == 0:
        sig = np.full(n_modes, _check_positive(sig.item(), "sigma"))
    else:
        if sig.shape != (n_modes,):
            raise ValueError(f"sigma must be a number or have shape ({n_modes},) "
                             f"(one per center), got shape {sig.shape}")
        if sig.dtype == np.bool_ or not (np.issubdtype(sig.dtype, np.integer)
                                         or np.issubdtype(sig.dtype, np.floating)):
            raise ValueError(f"sigma must hold real numbers, got dtype {sig.dtype}")
        sig = sig.astype(np.float64)
        if not (np.isfinite(sig).all() and (sig > 0).all()):
            raise ValueError("sigma must be positive and finite")
    threshold = _check_positive(threshold, "threshold")

    n = samples.shape[0]
    inv_var = 1.0 / (sig * sig)
    nearest = np.empty(n, dtype=np.int64)
    best = np.empty(n)  # squared distance to the nearest mode, in units of sigma^2
    # M is small (8, 25), so differences are taken directly: exact 0 at a center,
    # no cancellation next to the threshold
    for sl in _row_blocks(n, n_modes * centers.shape[1]):
        diff = samples[sl, None, :] - centers[None, :, :]
        z2 = np.einsum("bmd,bmd->bm", diff, diff) * inv_var[None, :]
        nearest[sl] = np.argmin(z2, axis=1)
        best[sl] = z2[np.arange(z2.shape[0]), nearest[sl]]
    good = best < threshold * threshold
    hist = np.bincount(nearest[good], minlength=n_modes).astype(np.int64)
    n_good = int(good.sum())
    if n_good == 0:
        reverse_kl = math.nan
    else:
        p = hist[hist > 0] / n_good
        reverse_kl = float(np.sum(p * np.log(n_modes * p)))
    return {"modes": int(np.count_nonzero(hist)), "high_quality": n_good / n,
            "reverse_kl": reverse_kl, "histogram": hist}
