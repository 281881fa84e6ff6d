r"""Tests of ebm_lfi.metrics: exact identities in float64, statistical checks within SEs."""

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import pdist
from scipy.stats import norm

from ebm_lfi.metrics import (
    c2st,
    energy_score,
    kernel_score,
    mmd,
    posterior_mean_rmse,
    wasserstein2,
)

# ---------------------------------------------------------------- wasserstein2


def test_w2_of_a_sample_with_itself_is_zero():
    x = np.random.default_rng(0).normal(size=(60, 3))
    assert wasserstein2(x, x) ** 2 <= 1e-12


def test_w2_translation_is_exact():
    # Any coupling of x with x + m has cost E|X - Y|^2 + |m|^2 >= |m|^2, with equality for the
    # identity coupling, so W2 is exactly |m|.
    x = np.random.default_rng(1).normal(size=(70, 2))
    m = np.array([3.0, -4.0])
    assert wasserstein2(x, x + m) == pytest.approx(5.0, abs=1e-9)


def test_w2_in_one_dimension_is_sorted_matching():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=80), rng.gamma(2.0, size=80)
    expected = np.sqrt(np.mean((np.sort(x) - np.sort(y)) ** 2))
    assert wasserstein2(x, y) == pytest.approx(expected, abs=1e-10)


@pytest.mark.parametrize("sizes", [(30, 30), (17, 45), (1, 9)])
def test_w2_in_one_dimension_equals_the_linear_program(sizes):
    # weighted samples of unequal sizes, with ties and a zero weight: the monotone coupling of
    # the 1-D path gives the optimum of the transport linear program, solved here by POT
    ot = pytest.importorskip("ot")
    rng = np.random.default_rng(sum(sizes))
    x, y = rng.normal(size=sizes[0]).round(1), rng.gamma(2.0, size=sizes[1]).round(1)
    a, b = rng.random(sizes[0]), rng.random(sizes[1])
    b[0] = 0.0
    cost = (x[:, None] - y[None, :]) ** 2
    expected = math.sqrt(ot.emd2(a / a.sum(), b / b.sum(), cost))
    assert wasserstein2(x, y, x_weights=a, y_weights=b) == pytest.approx(expected, abs=1e-12)
    assert wasserstein2(x[:, None], y[:, None] + 1.0) > 0  # and a shape (n, 1) takes it too


def test_w2_of_shifted_gaussians_is_the_shift():
    n, m = 2000, 2.0
    rng = np.random.default_rng(3)
    x, z = rng.normal(size=(n, 1)), rng.normal(size=(n, 1))
    w2 = wasserstein2(x, z + m)
    # Marginals fix E_pi[X - Z] = mean(x) - mean(z) for every coupling, hence the identity
    # W2(x, z + m)^2 = W2(x, z)^2 - 2 m (mean(x) - mean(z)) + m^2.
    identity = wasserstein2(x, z) ** 2 - 2 * m * (x.mean() - z.mean()) + m**2
    assert w2**2 == pytest.approx(identity, abs=1e-8)
    # Statistically: |mean(x) - mean(z)| <= 4 standard errors sqrt(2 / n), and W2(x, z)^2
    # between two N(0, 1) samples is of order log(log n) / n ~ 1e-3; allow 0.05 for it.
    tol_sq = 0.05 + 2 * m * 4 * math.sqrt(2 / n)
    assert abs(w2 - m) <= tol_sq / m


def test_w2_weights_equal_duplicated_samples():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(8, 2)), rng.normal(1.0, size=(10, 2))
    kx, ky = rng.integers(1, 4, size=8), rng.integers(1, 4, size=10)
    expected = wasserstein2(np.repeat(x, kx, axis=0), np.repeat(y, ky, axis=0))
    assert wasserstein2(x, y, x_weights=kx, y_weights=ky) == pytest.approx(expected, abs=1e-10)
    # weights need not be normalised, and a zero weight removes the row
    kx0 = np.append(kx, 0)
    x0 = np.vstack([x, [[100.0, 100.0]]])
    assert wasserstein2(x0, y, x_weights=7.0 * kx0, y_weights=ky) == pytest.approx(
        expected, abs=1e-10
    )


def test_w2_accepts_torch_and_max_samples():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(40, 2)), rng.normal(size=(50, 2))
    exact = wasserstein2(x, y)
    assert wasserstein2(torch.from_numpy(x), torch.from_numpy(y).float()) == pytest.approx(
        exact, abs=1e-6
    )
    assert wasserstein2(x, y, max_samples=50) == pytest.approx(exact, abs=1e-12)
    a = wasserstein2(x, y, max_samples=20, seed=1)
    assert a == wasserstein2(x, y, max_samples=20, seed=1)
    assert a != wasserstein2(x, y, max_samples=20, seed=2)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(x=np.zeros((5, 2)), y=np.zeros((5, 3))), ValueError),
        (dict(x=np.zeros((5, 2, 1)), y=np.zeros((5, 2))), ValueError),
        (dict(x=np.zeros((0, 2)), y=np.zeros((5, 2))), ValueError),
        (dict(x=np.full((5, 2), np.nan), y=np.zeros((5, 2))), ValueError),
        (dict(x=np.zeros((5, 2)), y=np.zeros((5, 2)), x_weights=np.ones(4)), ValueError),
        (dict(x=np.zeros((5, 2)), y=np.zeros((5, 2)), x_weights=-np.ones(5)), ValueError),
        (dict(x=np.zeros((5, 2)), y=np.zeros((5, 2)), y_weights=np.zeros(5)), ValueError),
        (dict(x=np.zeros((5, 2)), y=np.zeros((5, 2)), max_samples=0), ValueError),
        (dict(x=["a", "b"], y=np.zeros((5, 2))), TypeError),
    ],
)
def test_w2_bad_input(kwargs, error):
    with pytest.raises(error):
        wasserstein2(**kwargs)


# ------------------------------------------------------------------------ c2st


def test_c2st_same_distribution_is_chance():
    n = 500
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(n, 2)), rng.normal(size=(n, 2))
    acc = c2st(x, y, seed=0)
    # Accuracy over 2n held-out predictions of a chance-level classifier: binomial SE.
    se = math.sqrt(0.25 / (2 * n))
    assert abs(acc - 0.5) <= 4 * se


def test_c2st_well_separated_is_one():
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(300, 2)), rng.normal(5.0, size=(300, 2))
    # Bayes accuracy Phi(|mu| / 2) = Phi(3.54) > 0.9997; leave room for learning error.
    assert c2st(x, y, seed=0) >= 0.97


def test_c2st_matches_bayes_accuracy():
    n = 1000
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(n, 1)), rng.normal(1.0, size=(n, 1))
    bayes = norm.cdf(0.5)  # threshold at 1/2 between N(0, 1) and N(1, 1)
    se = math.sqrt(bayes * (1 - bayes) / (2 * n))
    acc = c2st(x, y, seed=0)
    assert acc <= bayes + 4 * se  # nothing beats the Bayes classifier beyond noise
    assert acc >= bayes - 4 * se - 0.02  # a 1-D threshold is easy to learn


def test_c2st_unequal_sizes_torch_and_seed():
    rng = np.random.default_rng(9)
    x, y = rng.normal(size=(300, 2)), rng.normal(size=(700, 2))
    acc = c2st(torch.from_numpy(x), torch.from_numpy(y), seed=1)
    assert abs(acc - 0.5) <= 4 * math.sqrt(0.25 / 600)
    assert acc == c2st(x, y, seed=1)


def test_c2st_custom_classifier_is_cloned():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(10)
    x, y = rng.normal(size=(200, 3)), rng.normal(4.0, size=(200, 3))
    clf = LogisticRegression()
    assert c2st(x, y, classifier=clf, folds=4) >= 0.97
    assert not hasattr(clf, "coef_")


def test_c2st_bad_input():
    x = np.zeros((10, 2))
    with pytest.raises(ValueError):
        c2st(x, x, folds=1)
    with pytest.raises(ValueError):
        c2st(x[:3], x, folds=5)
    with pytest.raises(ValueError):
        c2st(x, np.zeros((10, 3)))


# ------------------------------------------------------------------------- mmd


def _gauss(a, b, h):
    return math.exp(-np.sum((a - b) ** 2) / (2 * h**2))


def test_mmd_matches_explicit_sums():
    rng = np.random.default_rng(11)
    x, y, h = rng.normal(size=(5, 2)), rng.normal(size=(4, 2)), 0.7
    n, m = len(x), len(y)
    kxx = sum(_gauss(x[i], x[j], h) for i in range(n) for j in range(n) if i != j)
    kyy = sum(_gauss(y[i], y[j], h) for i in range(m) for j in range(m) if i != j)
    kxy = sum(_gauss(x[i], y[j], h) for i in range(n) for j in range(m))
    unbiased = kxx / (n * (n - 1)) + kyy / (m * (m - 1)) - 2 * kxy / (n * m)
    biased = (kxx + n) / n**2 + (kyy + m) / m**2 - 2 * kxy / (n * m)
    assert mmd(x, y, bandwidth=h) == pytest.approx(unbiased, abs=1e-12)
    assert mmd(x, y, bandwidth=h, biased=True) == pytest.approx(biased, abs=1e-12)
    # uniform weights given explicitly are the default
    assert mmd(x, y, h, np.ones(n), 3 * np.ones(m)) == pytest.approx(unbiased, abs=1e-12)


def test_mmd_weighted_unbiased_matches_definition():
    rng = np.random.default_rng(12)
    x, y, h = rng.normal(size=(5, 2)), rng.normal(size=(6, 2)), 1.3
    a, b = rng.uniform(size=5), rng.uniform(size=6)
    a, b = a / a.sum(), b / b.sum()
    kxx = sum(a[i] * a[j] * _gauss(x[i], x[j], h) for i in range(5) for j in range(5) if i != j)
    kyy = sum(b[i] * b[j] * _gauss(y[i], y[j], h) for i in range(6) for j in range(6) if i != j)
    kxy = sum(a[i] * b[j] * _gauss(x[i], y[j], h) for i in range(5) for j in range(6))
    expected = kxx / (1 - a @ a) + kyy / (1 - b @ b) - 2 * kxy
    assert mmd(x, y, h, x_weights=a, y_weights=b) == pytest.approx(expected, abs=1e-12)


def test_mmd_biased_weights_equal_duplicated_samples():
    rng = np.random.default_rng(13)
    x, y = rng.normal(size=(6, 2)), rng.normal(size=(7, 2))
    kx, ky = rng.integers(1, 4, size=6), rng.integers(1, 4, size=7)
    expected = mmd(np.repeat(x, kx, 0), np.repeat(y, ky, 0), bandwidth=0.9, biased=True)
    got = mmd(x, y, bandwidth=0.9, x_weights=kx, y_weights=ky, biased=True)
    assert got == pytest.approx(expected, abs=1e-12)


def test_mmd_median_heuristic():
    rng = np.random.default_rng(14)
    x, y = rng.normal(size=(30, 3)), rng.normal(size=(40, 3))
    h = np.median(pdist(np.vstack([x, y])))
    assert mmd(x, y) == pytest.approx(mmd(x, y, bandwidth=h), abs=1e-14)


def test_mmd_zero_for_identical_and_positive_for_different():
    x = np.random.default_rng(15).normal(size=(100, 2))
    assert abs(mmd(x, x, biased=True)) <= 1e-12
    assert mmd(x, x + 3.0) > 0.5


def test_mmd_unbiased_in_expectation():
    # 1-D N(0, 1) vs N(mu, 1) with bandwidth h: E k(X, X') = h / sqrt(h^2 + 2) and
    # E k(X, Y) = h / sqrt(h^2 + 2) exp(-mu^2 / (2 (h^2 + 2))), so
    # MMD^2 = 2 h / sqrt(h^2 + 2) (1 - exp(-mu^2 / (2 (h^2 + 2)))).
    h, n, reps = 1.0, 150, 40
    rng = np.random.default_rng(16)
    for mu in (0.0, 1.0):
        truth = 2 * h / math.sqrt(h**2 + 2) * (1 - math.exp(-(mu**2) / (2 * (h**2 + 2))))
        u, v = [], []
        for _ in range(reps):
            x, y = rng.normal(size=n), rng.normal(mu, size=n)
            u.append(mmd(x, y, bandwidth=h))
            v.append(mmd(x, y, bandwidth=h, biased=True))
        se = np.std(u, ddof=1) / math.sqrt(reps)
        assert abs(np.mean(u) - truth) <= 4 * se
    # the V-statistic is biased upwards under the null (last loop had mu = 1; redo mu = 0)
    v = [mmd(rng.normal(size=n), rng.normal(size=n), bandwidth=h, biased=True) for _ in range(reps)]
    assert np.mean(v) - 4 * np.std(v, ddof=1) / math.sqrt(reps) > 0


def test_mmd_bad_input():
    x = np.zeros((5, 2))
    with pytest.raises(ValueError):
        mmd(x, x, bandwidth=0.0)
    with pytest.raises(ValueError):
        mmd(x[:1], x, bandwidth=1.0)  # unbiased needs two rows
    with pytest.raises(ValueError):
        mmd(x, x, x_weights=np.ones(3))
    with pytest.raises(ValueError):
        mmd(x, np.zeros((5, 1)))


# ---------------------------------------------------------- posterior_mean_rmse


def test_rmse_exact_examples():
    assert posterior_mean_rmse([[0.0, 0.0], [2.0, 2.0]], [1.0, 3.0]) == pytest.approx(
        math.sqrt(2.0), abs=1e-15
    )
    # weighted mean (3 * 0 + 1 * 4) / 4 = 1, truth 2
    assert posterior_mean_rmse([[0.0], [4.0]], 2.0, weights=[3.0, 1.0]) == pytest.approx(1.0)
    assert posterior_mean_rmse(torch.tensor([0.0, 4.0]), torch.tensor([2.0])) == 0.0


def test_rmse_with_reference_sample():
    samples = np.array([[1.0, 1.0], [3.0, 1.0]])  # mean (2, 1)
    reference = np.array([[0.0, 5.0], [0.0, 3.0], [0.0, 4.0]])  # mean (0, 4)
    assert posterior_mean_rmse(samples, reference) == pytest.approx(math.sqrt((4 + 9) / 2))


def test_rmse_bad_input():
    with pytest.raises(ValueError):
        posterior_mean_rmse(np.zeros((4, 2)), np.zeros(3))
    with pytest.raises(ValueError):
        posterior_mean_rmse(np.zeros((4, 2)), np.zeros((5, 3)))
    with pytest.raises(ValueError):
        posterior_mean_rmse(np.zeros((4, 2)), np.zeros(2), weights=[1, -1, 1, 1])
    with pytest.raises(ValueError):
        posterior_mean_rmse(np.zeros((4, 2)), [np.nan, 0.0])


# ---------------------------------------------------------------- energy and kernel scores
# Closed forms for a Gaussian predictive N(mu, s^2 I_K) at an observation y:
#   E|X - y| = s (2 phi(z) + z (2 Phi(z) - 1)), z = (y - mu) / s   (K = 1),
#   E|X - X'| = 2 s Gamma((K + 1) / 2) / Gamma(K / 2),   E|X - mu| = that / sqrt(2),
#   E k(X, y) = (g^2 / (g^2 + s^2))^(K/2) exp(-|y - mu|^2 / (2 (g^2 + s^2))),
#   E k(X, X') = (g^2 / (g^2 + 2 s^2))^(K/2)   for k(u, v) = exp(-|u - v|^2 / (2 g^2)).


def _chi_mean_ratio(K):
    return math.exp(math.lgamma((K + 1) / 2) - math.lgamma(K / 2))


def _within_standard_errors(per_step, exact, z=4.0):
    r"""The per-step estimates are unbiased and independent across steps: their summed error
    must lie within z standard errors (estimated from the per-step errors)."""
    err = np.asarray(per_step) - np.asarray(exact)
    se = math.sqrt(np.sum(err**2))  # sqrt(sum of per-step variances), estimated
    return abs(err.sum()) <= z * se, err.sum(), se


def test_energy_score_equals_the_gaussian_closed_form_in_one_dimension():
    rng = np.random.default_rng(10)
    n, T, mu, s = 300, 400, 0.5, 1.7
    y = np.linspace(-3.0, 4.0, T)
    x = rng.normal(mu, s, size=(n, T))
    z = (y - mu) / s
    exact = 2 * s * (2 * norm.pdf(z) + z * (2 * norm.cdf(z) - 1)) - 2 * s / math.sqrt(math.pi)
    per_step = energy_score(x, y, per_step=True)
    assert per_step.shape == (T,)
    assert energy_score(x, y) == pytest.approx(per_step.sum(), rel=1e-12)
    ok, gap, se = _within_standard_errors(per_step, exact)
    assert ok, (gap, se)
    # negative control: Gneiting & Raftery's half scale is many standard errors away
    assert not _within_standard_errors(per_step, exact / 2)[0]


def test_energy_score_equals_the_gaussian_closed_form_in_K_dimensions():
    rng = np.random.default_rng(11)
    n, T, K, s = 200, 150, 5, 0.8
    mu = rng.normal(size=(T, K))
    x = mu + s * rng.normal(size=(n, T, K))
    c = _chi_mean_ratio(K)
    exact = np.full(T, 2 * math.sqrt(2) * s * c - 2 * s * c)  # at y_t = mu_t
    ok, gap, se = _within_standard_errors(energy_score(x, mu, per_step=True), exact)
    assert ok, (gap, se)


def test_kernel_score_equals_the_gaussian_closed_form():
    rng = np.random.default_rng(12)
    n, T, K, s, g = 200, 150, 3, 1.2, 1.5
    mu = rng.normal(size=(T, K))
    y = mu + rng.normal(size=(T, K))
    x = mu + s * rng.normal(size=(n, T, K))
    dist2 = ((y - mu) ** 2).sum(-1)
    exact = (g**2 / (g**2 + 2 * s**2)) ** (K / 2) - 2 * (g**2 / (g**2 + s**2)) ** (K / 2) * np.exp(
        -dist2 / (2 * (g**2 + s**2))
    )
    per_step = kernel_score(torch.as_tensor(x), torch.as_tensor(y), bandwidth=g, per_step=True)
    ok, gap, se = _within_standard_errors(per_step, exact)
    assert ok, (gap, se)
    # negative control: a kernel exp(-d^2 / g^2) (bandwidth read as sqrt(2) g) is rejected
    assert not _within_standard_errors(
        kernel_score(x, y, bandwidth=g / math.sqrt(2), per_step=True), exact
    )[0]


def test_scores_equal_a_brute_force_double_loop():
    rng = np.random.default_rng(13)
    n, T, K, g = 6, 4, 3, 0.9
    x, y = rng.normal(size=(n, T, K)), rng.normal(size=(T, K))
    es = ks = 0.0
    for t in range(T):
        for i in range(n):
            es += 2 * np.linalg.norm(x[i, t] - y[t]) / n
            ks -= 2 * np.exp(-np.sum((x[i, t] - y[t]) ** 2) / (2 * g**2)) / n
            for j in range(n):
                if i != j:
                    es -= np.linalg.norm(x[i, t] - x[j, t]) / (n * (n - 1))
                    ks += np.exp(-np.sum((x[i, t] - x[j, t]) ** 2) / (2 * g**2)) / (n * (n - 1))
    assert energy_score(x, y) == pytest.approx(es, abs=1e-12)
    assert kernel_score(x, y, g) == pytest.approx(ks, abs=1e-12)


def test_scores_prefer_the_true_predictive():
    # strictly proper: averaged over y from N(0, 1), N(0, 1) scores lower than N(0, 2^2)
    rng = np.random.default_rng(14)
    T, n = 500, 200
    y = rng.normal(size=(T, 2))
    right, wide = rng.normal(size=(n, T, 2)), 2 * rng.normal(size=(n, T, 2))
    assert energy_score(right, y) < energy_score(wide, y)
    assert kernel_score(right, y, 1.0) < kernel_score(wide, y, 1.0)


def test_scores_reject_bad_input():
    x, y = np.zeros((4, 3, 2)), np.zeros((3, 2))
    with pytest.raises(ValueError, match=r"\(n, T, K\)"):
        energy_score(x, np.zeros((3, 5)))
    with pytest.raises(ValueError, match="at least 2"):
        energy_score(x[:1], y)
    with pytest.raises(ValueError, match="NaN"):
        energy_score(np.full((4, 3, 2), np.nan), y)
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="bandwidth"):
            kernel_score(x, y, bad)
    with pytest.raises(TypeError, match="bandwidth"):
        kernel_score(x, y, "wide")


def test_predictive_scores_simulate_the_posterior_predictive_through_an_executor():
    from concurrent.futures import ThreadPoolExecutor

    from ebm_lfi.diagnostics.predictive import predictive_scores
    from ebm_lfi.posterior.posterior import Posterior

    T, K, s, g = 60, 3, 0.7, 1.1
    mu = np.linspace(-1, 1, T * K).reshape(T, K)
    y = mu + np.random.default_rng(15).normal(size=(T, K))

    def simulator(theta, rng):  # theta is a location shift
        return mu + float(theta[0]) + s * rng.normal(size=(T, K))

    post = Posterior(torch.zeros(40, 1, dtype=torch.float64))  # a point mass at 0
    out = predictive_scores(post, simulator, y, bandwidth=g, num_simulations=200, seed=3)
    assert out.x.shape == (200, T, K) and out.theta.shape == (200, 1)
    assert out.energy == pytest.approx(energy_score(out.x, y), rel=1e-12)
    assert out.kernel == pytest.approx(kernel_score(out.x, y, g), rel=1e-12)
    dist2 = ((y - mu) ** 2).sum(-1)
    exact = (g**2 / (g**2 + 2 * s**2)) ** (K / 2) - 2 * (g**2 / (g**2 + s**2)) ** (K / 2) * np.exp(
        -dist2 / (2 * (g**2 + s**2))
    )
    ok, gap, se = _within_standard_errors(out.kernel_per_step, exact)
    assert ok, (gap, se)
    with ThreadPoolExecutor(2) as executor:
        again = predictive_scores(
            post, simulator, y, bandwidth=g, num_simulations=200, seed=3, executor=executor
        )
    assert again.energy == out.energy and again.kernel == out.kernel
    assert predictive_scores(post, simulator, y, num_simulations=20).kernel is None
    with pytest.raises(ValueError, match="bandwidth"):
        predictive_scores(post, simulator, y, bandwidth=-1.0)
    with pytest.raises(ValueError, match="shape of one simulation"):
        predictive_scores(post, simulator, y[:, :2], num_simulations=20)
