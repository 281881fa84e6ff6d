r"""Distances between two samples, to score an approximate posterior against a reference.

All metrics take two samples :math:`x \in \mathbb{R}^{n \times p}` and
:math:`y \in \mathbb{R}^{m \times p}` (numpy arrays or torch tensors, any device; a 1-D input
of shape :math:`(n,)` is read as :math:`(n, 1)`), compute in float64 on the CPU and return a
Python ``float``. Weights, where accepted, are non-negative, need not sum to one and are
normalised.

* :func:`wasserstein2`: exact 2-Wasserstein distance between the two empirical measures,

  .. math:: W_2(\hat\mu, \hat\nu) = \Big( \min_{\pi \in \Pi(a, b)}
            \sum_{ij} \pi_{ij} \lVert x_i - y_j \rVert^2 \Big)^{1/2},

  solved as a linear program (POT's network simplex ``ot.emd2``); in one dimension by the
  monotone coupling, the exact optimum in closed form.
* :func:`c2st`: classifier two-sample test (Lopez-Paz & Oquab, 2017): the cross-validated
  accuracy of a classifier trained to tell :math:`x` from :math:`y`; 0.5 means the samples
  are indistinguishable to it, 1.0 means fully separated.
* :func:`mmd`: squared maximum mean discrepancy (Gretton et al., 2012) with a Gaussian kernel.
* :func:`posterior_mean_rmse`: root mean squared error of the posterior mean over parameters.

Two scoring rules of a posterior *predictive* sample against an observed series, for tasks
without a reference posterior (the Lorenz96 benchmark): :func:`energy_score` and
:func:`kernel_score` take predictive series :math:`x^{(i)} \in \mathbb{R}^{T \times K}`,
:math:`i = 1, \dots, n`, and the observation :math:`y \in \mathbb{R}^{T \times K}`, score the
predictive distribution of each time step's :math:`K`-vector against :math:`y_t` and sum over
:math:`t` (Pacchiardi & Dutta, 2022, Sec. 6.3). Both are strictly proper and negatively oriented:
**lower is better**, and the expected score is minimised by the true predictive distribution.

References:
    | A Kernel Two-Sample Test (Gretton et al., 2012)
    | https://jmlr.org/papers/v13/gretton12a.html

    | Revisiting Classifier Two-Sample Tests (Lopez-Paz & Oquab, 2017)
    | https://arxiv.org/abs/1610.06545

    | Strictly Proper Scoring Rules, Prediction, and Estimation (Gneiting & Raftery, 2007)
    | https://doi.org/10.1198/016214506000001437

    | Score Matched Neural Exponential Families for Likelihood-Free Inference
    | (Pacchiardi & Dutta, JMLR 2022) https://arxiv.org/abs/2012.10903
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
from scipy.spatial.distance import cdist, pdist
from torch import Tensor

__all__ = [
    "wasserstein2",
    "c2st",
    "mmd",
    "posterior_mean_rmse",
    "energy_score",
    "kernel_score",
]


def _as_samples(a: Any, name: str) -> np.ndarray:
    r"""Convert a sample to a finite float64 array of shape :math:`(n, p)`."""
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    try:
        arr = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be a numeric array or tensor, got {type(a).__name__}") from e
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape (n, p) or (n,), got {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} must be non-empty, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _as_weights(w: Any, n: int, name: str) -> np.ndarray:
    r"""Validate weights for :math:`n` samples and return them normalised, shape :math:`(n,)`."""
    if w is None:
        return np.full(n, 1.0 / n)
    if isinstance(w, torch.Tensor):
        w = w.detach().cpu().numpy()
    w = np.asarray(w, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) to match the sample, got {w.shape}")
    if not np.isfinite(w).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    if (w < 0).any():
        raise ValueError(f"{name} must be non-negative; {int((w < 0).sum())} are negative")
    total = w.sum()
    if total <= 0:
        raise ValueError(f"{name} are all zero")
    return w / total


def _check_dims(x: np.ndarray, y: np.ndarray) -> None:
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"x and y must have the same number of columns p, got shapes {x.shape} and {y.shape}"
        )


def _subsample(
    x: np.ndarray, w: np.ndarray, max_samples: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    r"""Keep at most ``max_samples`` rows, drawn uniformly without replacement."""
    if x.shape[0] <= max_samples:
        return x, w
    idx = np.sort(rng.choice(x.shape[0], size=max_samples, replace=False))
    w = w[idx]
    if w.sum() <= 0:  # only zero-weight rows were kept: fall back to equal weights
        w = np.ones_like(w)
    return x[idx], w / w.sum()


def wasserstein2(
    x: Any,
    y: Any,
    x_weights: Any = None,
    y_weights: Any = None,
    *,
    max_samples: int | None = None,
    seed: int | None = 0,
) -> float:
    r"""Exact 2-Wasserstein distance between two (weighted) empirical measures.

    The cost is the squared Euclidean distance; the optimal transport plan is found exactly by
    the network simplex (POT's ``ot.emd2``) and the square root of the optimal cost is returned.
    In one dimension the monotone coupling (quantile to quantile) is optimal and is computed
    directly, in :math:`O((n + m) \log(n + m))`: the same optimum, with no cost matrix.
    The cost matrix has :math:`n m` entries and the solver is super-quadratic, so for large
    samples pass ``max_samples`` to compute it on random subsets instead (an estimate, biased
    upwards).

    Arguments:
        x: First sample, shape :math:`(n, p)`.
        y: Second sample, shape :math:`(m, p)`.
        x_weights: Non-negative weights of the rows of ``x``, shape :math:`(n,)`; uniform if
            ``None``. Normalised to sum to one.
        y_weights: Same for ``y``, shape :math:`(m,)`.
        max_samples: If given, each sample larger than this is first subsampled to
            ``max_samples`` rows drawn without replacement (weights renormalised).
            ``None`` (default) is exact.
        seed: Seed of the subsampling; only used with ``max_samples``.

    Returns:
        :math:`W_2(x, y) \ge 0`.

    Example:
        >>> x = np.array([[0.0], [1.0]])
        >>> round(wasserstein2(x, x + 3.0), 12)
        3.0
    """
    x = _as_samples(x, "x")
    y = _as_samples(y, "y")
    _check_dims(x, y)
    a = _as_weights(x_weights, x.shape[0], "x_weights")
    b = _as_weights(y_weights, y.shape[0], "y_weights")
    if max_samples is not None:
        if int(max_samples) < 1:
            raise ValueError(f"max_samples must be a positive integer, got {max_samples}")
        rng = np.random.default_rng(seed)
        x, a = _subsample(x, a, int(max_samples), rng)
        y, b = _subsample(y, b, int(max_samples), rng)
    if x.shape[1] == 1:
        return float(np.sqrt(max(_w2_squared_1d(x[:, 0], a, y[:, 0], b), 0.0)))
    import ot

    cost = cdist(x, y, metric="sqeuclidean")
    num_iter = max(100_000, 50 * x.shape[0] * y.shape[0])
    value = float(ot.emd2(a, b, cost, numItermax=num_iter))
    return float(np.sqrt(max(value, 0.0)))


def _w2_squared_1d(x: np.ndarray, a: np.ndarray, y: np.ndarray, b: np.ndarray) -> float:
    r"""Squared :math:`W_2` of two weighted 1-D samples by the monotone coupling.

    On the line the optimal plan couples the quantile functions, :math:`W_2^2 = \int_0^1
    (F^{-1}(u) - G^{-1}(u))^2 \, du`; both are step functions, constant between the merged
    cumulative weights of the two sorted samples, so the integral is a finite sum.
    """
    order_x, order_y = np.argsort(x, kind="stable"), np.argsort(y, kind="stable")
    x, y = x[order_x], y[order_y]
    cum_a, cum_b = np.cumsum(a[order_x]), np.cumsum(b[order_y])
    levels = np.sort(np.concatenate([cum_a, cum_b]))
    mass = np.diff(levels, prepend=0.0)
    middle = levels - 0.5 * mass  # inside each interval between breakpoints
    i = np.minimum(np.searchsorted(cum_a, middle), x.shape[0] - 1)
    j = np.minimum(np.searchsorted(cum_b, middle), y.shape[0] - 1)
    return float(np.sum(mass * (x[i] - y[j]) ** 2))


def c2st(
    x: Any,
    y: Any,
    *,
    seed: int = 0,
    folds: int = 5,
    z_score: bool = True,
    max_iter: int = 1000,
    classifier: Any = None,
) -> float:
    r"""Classifier two-sample test: cross-validated accuracy of telling ``x`` from ``y``.

    The two samples are labelled 0 and 1; if their sizes differ, the larger is subsampled
    (without replacement, with ``seed``) to the size of the smaller, so that chance level is
    exactly 0.5. Features are z-scored with the mean and standard deviation of the pooled
    sample. The default classifier is scikit-learn's ``MLPClassifier`` with two hidden layers
    of :math:`10 p` ReLU units (the standard of the sbi benchmark), scored by stratified
    ``folds``-fold cross-validation; the mean test accuracy is returned.

    Arguments:
        x: First sample, shape :math:`(n, p)`.
        y: Second sample, shape :math:`(m, p)`.
        seed: Seed of the subsampling, the fold split and the classifier's initialisation.
        folds: Number of cross-validation folds, at least 2.
        z_score: Whether to standardise the features with the pooled mean and std.
        max_iter: Maximum number of training epochs of the default classifier.
        classifier: Optional scikit-learn classifier to use instead of the default MLP (it is
            cloned, never fitted in place).

    Returns:
        Mean accuracy in :math:`[0, 1]`; about 0.5 when the samples come from one
        distribution, near 1.0 when they are well separated.
    """
    from sklearn.base import clone
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neural_network import MLPClassifier

    x = _as_samples(x, "x")
    y = _as_samples(y, "y")
    _check_dims(x, y)
    folds = int(folds)
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    n = min(x.shape[0], y.shape[0])
    if n < folds:
        raise ValueError(
            f"c2st needs at least folds={folds} rows in each sample, got shapes "
            f"{x.shape} and {y.shape}"
        )
    rng = np.random.default_rng(seed)
    if x.shape[0] > n:
        x = x[np.sort(rng.choice(x.shape[0], size=n, replace=False))]
    if y.shape[0] > n:
        y = y[np.sort(rng.choice(y.shape[0], size=n, replace=False))]

    data = np.concatenate([x, y], axis=0)
    labels = np.concatenate([np.zeros(n, dtype=np.int64), np.ones(n, dtype=np.int64)])
    if z_score:
        std = data.std(axis=0)
        data = (data - data.mean(axis=0)) / np.where(std > 0, std, 1.0)

    p = data.shape[1]
    if classifier is None:
        classifier = MLPClassifier(
            hidden_layer_sizes=(10 * p, 10 * p),
            activation="relu",
            solver="adam",
            max_iter=int(max_iter),
            random_state=seed,
        )
    else:
        classifier = clone(classifier)
    split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        scores = cross_val_score(classifier, data, labels, cv=split, scoring="accuracy")
    return float(np.mean(scores))


def _kernel_sum(
    a: np.ndarray, x: np.ndarray, b: np.ndarray, y: np.ndarray, gamma: float, chunk: int = 1024
) -> float:
    r""":math:`\sum_{ij} a_i b_j \exp(-\gamma \lVert x_i - y_j \rVert^2)`, in row blocks."""
    total = 0.0
    for start in range(0, x.shape[0], chunk):
        stop = start + chunk
        k = np.exp(-gamma * cdist(x[start:stop], y, metric="sqeuclidean"))
        total += float(a[start:stop] @ k @ b)
    return total


def _median_heuristic(x: np.ndarray, y: np.ndarray, max_points: int, seed: int | None) -> float:
    r"""Median of the pairwise distances of the pooled sample (at most ``max_points`` rows)."""
    pooled = np.concatenate([x, y], axis=0)
    if pooled.shape[0] > max_points:
        rng = np.random.default_rng(seed)
        pooled = pooled[rng.choice(pooled.shape[0], size=max_points, replace=False)]
    distances = pdist(pooled)
    distances = distances[distances > 0]
    return float(np.median(distances)) if distances.size else 1.0


def mmd(
    x: Any,
    y: Any,
    bandwidth: float | None = None,
    x_weights: Any = None,
    y_weights: Any = None,
    *,
    biased: bool = False,
    seed: int | None = 0,
) -> float:
    r"""Squared maximum mean discrepancy with a Gaussian kernel.

    With :math:`k(u, v) = \exp(-\lVert u - v \rVert^2 / 2h^2)` and normalised weights
    :math:`a` of ``x`` and :math:`b` of ``y`` (uniform by default), the unbiased estimate
    (default) is

    .. math:: \widehat{\mathrm{MMD}}^2_u =
        \frac{\sum_{i \ne j} a_i a_j k(x_i, x_j)}{1 - \sum_i a_i^2}
        + \frac{\sum_{i \ne j} b_i b_j k(y_i, y_j)}{1 - \sum_j b_j^2}
        - 2 \sum_{i, j} a_i b_j k(x_i, y_j),

    which for uniform weights is the U-statistic of Gretton et al. (2012, eq. 3): its
    expectation is the population :math:`\mathrm{MMD}^2`, so it may be slightly negative when the
    distributions are equal. With ``biased=True`` the diagonal terms are kept and the
    denominators are one (the V-statistic, always :math:`\ge 0`, zero for identical samples).

    Arguments:
        x: First sample, shape :math:`(n, p)`, :math:`n \ge 2`.
        y: Second sample, shape :math:`(m, p)`, :math:`m \ge 2`.
        bandwidth: Kernel bandwidth :math:`h > 0`. If ``None``, the median heuristic: the
            median Euclidean distance between distinct points of the pooled sample
            (unweighted; computed on a random subset of 1000 pooled rows when larger).
        x_weights: Non-negative weights of the rows of ``x``, shape :math:`(n,)`.
        y_weights: Non-negative weights of the rows of ``y``, shape :math:`(m,)`.
        biased: Return the biased V-statistic instead of the unbiased estimate.
        seed: Seed of the subset used by the median heuristic.

    Returns:
        The estimate of :math:`\mathrm{MMD}^2` (not its square root).
    """
    x = _as_samples(x, "x")
    y = _as_samples(y, "y")
    _check_dims(x, y)
    a = _as_weights(x_weights, x.shape[0], "x_weights")
    b = _as_weights(y_weights, y.shape[0], "y_weights")
    if bandwidth is None:
        bandwidth = _median_heuristic(x, y, max_points=1000, seed=seed)
    bandwidth = float(bandwidth)
    if not np.isfinite(bandwidth) or bandwidth <= 0:
        raise ValueError(f"bandwidth must be a positive finite number, got {bandwidth}")
    gamma = 0.5 / bandwidth**2

    kxx = _kernel_sum(a, x, a, x, gamma)
    kyy = _kernel_sum(b, y, b, y, gamma)
    kxy = _kernel_sum(a, x, b, y, gamma)
    if biased:
        return float(kxx + kyy - 2.0 * kxy)
    sa, sb = float(a @ a), float(b @ b)
    if sa >= 1.0 - 1e-12 or sb >= 1.0 - 1e-12:
        raise ValueError(
            "the unbiased MMD needs at least two samples with positive weight on each side; "
            "use biased=True"
        )
    # k(u, u) = 1, so the diagonal contributes sum_i a_i^2.
    return float((kxx - sa) / (1.0 - sa) + (kyy - sb) / (1.0 - sb) - 2.0 * kxy)


def posterior_mean_rmse(samples: Any, truth: Any, weights: Any = None) -> float:
    r"""Root mean squared error of the (weighted) posterior mean over the parameters.

    .. math:: \mathrm{RMSE} = \Big( \frac{1}{p} \sum_{k=1}^p
              (\bar\theta_k - \theta^\star_k)^2 \Big)^{1/2},
              \qquad \bar\theta = \sum_i w_i \theta_i .

    Arguments:
        samples: Posterior sample, shape :math:`(n, p)`.
        truth: The true parameter, shape :math:`(p,)`, or a reference sample, shape
            :math:`(m, p)`, whose mean is then used as :math:`\theta^\star`.
        weights: Non-negative weights of the rows of ``samples``, shape :math:`(n,)`.

    Returns:
        The RMSE, :math:`\ge 0`.

    Example:
        >>> round(posterior_mean_rmse([[0.0, 0.0], [2.0, 2.0]], [1.0, 3.0]) ** 2, 12)
        2.0
    """
    samples = _as_samples(samples, "samples")
    p = samples.shape[1]
    w = _as_weights(weights, samples.shape[0], "weights")
    if isinstance(truth, torch.Tensor):
        truth = truth.detach().cpu().numpy()
    try:
        truth = np.asarray(truth, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"truth must be numeric, got {type(truth).__name__}") from e
    if truth.ndim == 0 and p == 1:
        truth = truth.reshape(1)
    if truth.ndim == 2:
        if truth.shape[1] != p or truth.shape[0] == 0:
            raise ValueError(
                f"a reference sample truth must have shape (m, {p}), got {truth.shape}"
            )
        truth = truth.mean(axis=0)
    if truth.shape != (p,):
        raise ValueError(f"truth must have shape ({p},) or (m, {p}), got {truth.shape}")
    if not np.isfinite(truth).all():
        raise ValueError("truth contains NaN or infinite values")
    mean = w @ samples
    return float(np.sqrt(np.mean((mean - truth) ** 2)))


_INTEGER_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)
_PAIR_BUDGET = 1 << 22  # pairwise entries per chunk of time steps


def _as_series(predictive: Any, x_o: Any) -> tuple[Tensor, Tensor]:
    r"""Predictive series as float64 :math:`(n, T, K)` and the observation as :math:`(T, K)`."""
    pred = torch.as_tensor(
        predictive.detach() if isinstance(predictive, Tensor) else np.asarray(predictive)
    )
    obs = torch.as_tensor(x_o.detach() if isinstance(x_o, Tensor) else np.asarray(x_o))
    if not (pred.dtype.is_floating_point or pred.dtype in _INTEGER_DTYPES) or not (
        obs.dtype.is_floating_point or obs.dtype in _INTEGER_DTYPES
    ):
        raise TypeError("predictive and x_o must be real-valued arrays or tensors")
    pred, obs = pred.to("cpu", torch.float64), obs.to("cpu", torch.float64)
    if obs.ndim == 1:
        obs = obs[:, None]
        if pred.ndim == 2:
            pred = pred[:, :, None]
    if obs.ndim != 2 or pred.ndim != 3 or tuple(pred.shape[1:]) != tuple(obs.shape):
        raise ValueError(
            "predictive must have shape (n, T, K) and x_o shape (T, K) (or (n, T) and (T,)), "
            f"got {tuple(pred.shape)} and {tuple(obs.shape)}"
        )
    if pred.shape[0] < 2:
        raise ValueError(f"need at least 2 predictive samples, got {pred.shape[0]}")
    if obs.shape[0] == 0 or obs.shape[1] == 0:
        raise ValueError(f"x_o must be non-empty, got shape {tuple(obs.shape)}")
    if not (torch.isfinite(pred).all() and torch.isfinite(obs).all()):
        raise ValueError("predictive or x_o contains NaN or infinite values")
    return pred, obs


def _per_step(predictive: Any, x_o: Any, transform: Any) -> tuple[Tensor, Tensor]:
    r"""Per-step means :math:`\frac1n \sum_i h(\lVert x^{(i)}_t - y_t \rVert)` and
    :math:`\frac{1}{n(n-1)} \sum_{i \ne j} h(\lVert x^{(i)}_t - x^{(j)}_t \rVert)`, shape
    :math:`(T,)` each, for the elementwise map ``transform`` = :math:`h` of the distances."""
    pred, obs = _as_series(predictive, x_o)
    n, T, _ = pred.shape
    steps = pred.transpose(0, 1)  # (T, n, K)
    chunk = max(1, _PAIR_BUDGET // (n * n))
    to_obs, between = [], []
    for start in range(0, T, chunk):
        block = steps[start : start + chunk]
        to_obs.append(
            transform(
                torch.linalg.vector_norm(block - obs[start : start + chunk, None], dim=-1)
            ).mean(-1)
        )
        pair = transform(torch.cdist(block, block))
        diagonal = torch.diagonal(pair, dim1=-2, dim2=-1).sum(-1)
        between.append((pair.sum((-2, -1)) - diagonal) / (n * (n - 1)))
    return torch.cat(to_obs), torch.cat(between)


def energy_score(predictive: Any, x_o: Any, *, per_step: bool = False) -> float | np.ndarray:
    r"""Energy score of a predictive sample of series against an observed series (lower is better).

    For each time step :math:`t`, the energy score of the predictive distribution :math:`P_t` of
    the :math:`K`-vector :math:`X_t` at the observed :math:`y_t`,

    .. math:: \mathrm{ES}(P_t, y_t) = 2\, \mathbb{E} \lVert X_t - y_t \rVert
        - \mathbb{E} \lVert X_t - X_t' \rVert, \qquad X_t, X_t' \sim P_t \text{ iid},

    estimated without bias from the :math:`n` predictive samples (the second term by the
    U-statistic over pairs :math:`i \ne j`), then summed over :math:`t`. This is the scale of the
    paper (twice Gneiting & Raftery's :math:`\mathbb{E}\lVert X - y \rVert - \frac12
    \mathbb{E}\lVert X - X' \rVert`, i.e. the energy distance between :math:`P_t` and a point
    mass at :math:`y_t`), so figures compare with its tables. Strictly proper: its expectation
    over :math:`y` is minimised by the true distribution of :math:`y`.

    Arguments:
        predictive: Predictive series, shape :math:`(n, T, K)` (or :math:`(n, T)` for scalar
            steps), :math:`n \ge 2`.
        x_o: The observed series, shape :math:`(T, K)` (or :math:`(T,)`).
        per_step: Return the :math:`T` per-step scores instead of their sum.

    Returns:
        The summed score (a float), or the per-step scores, shape :math:`(T,)`.

    Example:
        >>> x = np.array([[[0.0]], [[2.0]]])  # two predictive series of one step
        >>> energy_score(x, np.array([[1.0]]))  # 2 * 1 - 2
        0.0
    """
    to_obs, between = _per_step(predictive, x_o, lambda d: d)
    scores = 2.0 * to_obs - between
    return scores.numpy() if per_step else float(scores.sum())


def kernel_score(
    predictive: Any, x_o: Any, bandwidth: float, *, per_step: bool = False
) -> float | np.ndarray:
    r"""Gaussian-kernel score of a predictive sample of series against an observed series
    (lower is better).

    With :math:`k(u, v) = \exp(-\lVert u - v \rVert^2 / 2\gamma^2)` and bandwidth
    :math:`\gamma`, for each time step :math:`t`

    .. math:: S_k(P_t, y_t) = \mathbb{E}\, k(X_t, X_t') - 2\, \mathbb{E}\, k(X_t, y_t),

    estimated without bias (the first term by the U-statistic over pairs :math:`i \ne j`), then
    summed over :math:`t`: the paper's form, the squared MMD between :math:`P_t` and a point
    mass at :math:`y_t` minus :math:`k(y_t, y_t) = 1`, so it lies in :math:`[-2, 1]` per step.
    Strictly proper for a characteristic kernel such as the Gaussian.

    Arguments:
        predictive: Predictive series, shape :math:`(n, T, K)` (or :math:`(n, T)`), :math:`n \ge 2`.
        x_o: The observed series, shape :math:`(T, K)` (or :math:`(T,)`).
        bandwidth: :math:`\gamma > 0` (the paper: 6.385 for ``lorenz96``, 1.535 for
            ``lorenz96-small``; :data:`ebm_lfi.benchmarks.lorenz96.KERNEL_BANDWIDTH`).
        per_step: Return the :math:`T` per-step scores instead of their sum.

    Returns:
        The summed score (a float), or the per-step scores, shape :math:`(T,)`.

    Example:
        >>> x = np.zeros((3, 1, 2))  # every predictive series equals the observation
        >>> kernel_score(x, np.zeros((1, 2)), bandwidth=1.0)  # 1 - 2
        -1.0
    """
    try:
        gamma = float(bandwidth)
    except (TypeError, ValueError) as e:
        raise TypeError(f"bandwidth must be a positive number, got {bandwidth!r}") from e
    if not math.isfinite(gamma) or gamma <= 0:
        raise ValueError(f"bandwidth must be a positive finite number, got {bandwidth!r}")
    k_obs, k_between = _per_step(predictive, x_o, lambda d: torch.exp(-0.5 * (d / gamma).square()))
    scores = k_between - 2.0 * k_obs
    return scores.numpy() if per_step else float(scores.sum())
