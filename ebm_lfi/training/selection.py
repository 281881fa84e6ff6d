r"""Choosing the architecture and the number of statistics by held-out score-matching loss.

For a model :math:`\tilde p_w(y \mid \theta)` of data whose conditional density is
:math:`p(y \mid \theta)`, the Hyvärinen objective

.. math:: J(w) = \mathbb{E}_{p(y, \theta)}\Big[\sum_i \tfrac12 (\partial_i f_w)^2
    + \partial_i^2 f_w\Big], \qquad f_w = \log \tilde p_w,

equals the Fisher divergence :math:`\frac12 \mathbb{E}\|\nabla_y f_w - \nabla_y \log p\|^2`
minus a constant that depends on the data distribution only. On one validation set, in one
transformed space, a lower held-out :math:`J` is therefore a better fit, whatever the
architecture or the number :math:`k` of statistics: the models can be ranked by it.
Two details make the comparison sound:

* every candidate sees the same data transform :math:`y = t(x)` (the standardisation pools over
  the time / draw axis for all of them when structured networks compete), since :math:`J` is
  not invariant to a change of variables;
* :math:`J` is estimated by sliced score matching with the *same* random projections and the
  same validation rows for every candidate (common random numbers), so the projection noise
  largely cancels in the differences, whose standard errors are reported.

The search (:func:`select_model`) is a pilot: each candidate is trained for a few epochs on a
subset, scored, and the winner is returned warm for the full training. It runs in stages:
structures at the largest :math:`k` (Markov networks with their window monomials only); if a
Markov network wins, the same with learned window features, kept only if they lower the loss by
more than ``tolerance`` standard errors (they cost about eight times more per epoch); then the
number of statistics for the winning structure,
taking the smallest :math:`k` whose loss is within ``tolerance`` standard errors of the best
(more statistics cost ABC efficiency, so a larger :math:`k` must earn its place; the smallest
tried is twice the number of parameters, see ``SelectionConfig.k_factors``). The same
parsimony rule picks the structure: the candidates are ordered from the most constrained
(exchangeable draws, then Markov of increasing order) to the generic MLP, and the first one within
``tolerance`` standard errors of the best wins. A Markov network contains the exchangeable
family (window features that ignore all but one step), so on iid data it ties, and the rule
keeps the exchangeable one.

A ratio model fitted by NCE does not model :math:`p(y \mid \theta)` (its energy is
:math:`\log p(y \mid \theta) - \log p(y)`), so its score-matching loss means nothing; a loss
that brings its own held-out score (``loss.heldout``, the NCE loss with fixed pairings, also a
proper scoring rule of the ratio) is used instead.

References:
    | Estimation of Non-Normalized Statistical Models by Score Matching (Hyvärinen, 2005)
    | https://jmlr.org/papers/v6/hyvarinen05a.html

    | Score Matched Neural Exponential Families for Likelihood-Free Inference
      (Pacchiardi & Dutta, JMLR 2022) https://arxiv.org/abs/2012.10903
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, replace

import pandas as pd
import torch
from torch import Tensor

from ..energy.model import ExpFamEBM
from ..losses.score_matching import sample_projections
from ..progress import progress_bar
from .config import TrainConfig
from .loop import train

__all__ = [
    "Candidate",
    "SelectionConfig",
    "candidates",
    "heldout_score_matching",
    "select_model",
    "simplest_within",
]

logger = logging.getLogger(__name__)

_RING_SITES = 5  # a ring of radius-2 neighbourhoods needs 5 sites


@dataclass(frozen=True)
class Candidate:
    r"""One architecture to try.

    Arguments:
        structure: ``"mlp"``, ``"iid"``, ``"markov"`` or ``"ring"``.
        num_statistics: Number :math:`k` of statistics.
        order: Markov order (``"markov"`` only).
        learned: Add learned window features to the Markov (or ring) network's monomials.
    """

    structure: str
    num_statistics: int
    order: int | None = None
    learned: bool = False

    @property
    def label(self) -> str:
        """Short name, e.g. ``"markov(2)"``, ``"markov(2)+learned"`` or ``"ring+learned"``."""
        if self.structure == "ring":
            return "ring" + ("+learned" if self.learned else "")
        if self.structure != "markov":
            return self.structure
        return f"markov({self.order})" + ("+learned" if self.learned else "")


@dataclass(frozen=True)
class SelectionConfig:
    r"""Budget of the pilot search.

    Arguments:
        epochs: Pilot epochs per candidate.
        batch_size: Pilot mini-batch size (small, for many optimiser steps on a small subset).
        train_size: Training rows used by the pilot (a random subset).
        validation_size: Held-out rows on which candidates are scored.
        num_projections: Sliced-score-matching projections per validation row.
        tolerance: A smaller :math:`k` is kept when its loss is within this many standard errors
            of the best one.
        orders: Markov orders tried.
        learned_features: When a Markov network wins, also try it with learned window features
            (kept if they lower the loss by more than ``tolerance`` standard errors).
        k_factors: Numbers of statistics tried, as multiples of the number :math:`p` of
            parameters; by default :math:`2p` and :math:`3p`, not :math:`p`. The held-out loss
            is dominated by the base measure and hardly sees whether
            :math:`\eta(\theta)^\top s(x)` carries :math:`\theta`, and with exactly :math:`p`
            statistics the fit can stop at a poor solution of that bilinear coupling which a
            few more statistics avoid: on a linear regression with five Gaussian coefficients
            at 10³ simulations :math:`k = p` was chosen (held-out losses within their errors)
            and left the ABC posterior 2.5 times too wide (C2ST 0.94, :math:`R^2` of the
            adjustment 0.48), :math:`k = 2p` 1.2 times (C2ST 0.80, :math:`R^2` 0.86), and the
            same on two more seeds of the fit. Of 37 other fits (14 problems, 10³ and 10⁴
            simulations, sliced score matching and NCE) one more chose :math:`k = p` (SLCP at
            10⁴: C2ST 0.976, with :math:`2p` 0.968); the others chose :math:`2p` or
            :math:`3p` either way (``scripts/check_num_statistics.py``).
        validation_batch_size: Rows per evaluation of a pilot's validation loss after each
            epoch (``TrainConfig.validation_batch_size``): its best epoch is the one kept.
            Larger than the pilot's batches, it costs a fifth less of a pilot (10⁴ pairs of
            the counts and flat problems, sliced score matching: 16.0 → 12.8 s and 11.6 →
            9.2 s, the same losses and choices; NCE 5.0 → 4.2 s, 5.5 → 4.7 s).
    """

    epochs: int = 10
    batch_size: int = 64
    train_size: int = 2000
    validation_size: int = 2000
    num_projections: int = 8
    tolerance: float = 2.0
    orders: tuple[int, ...] = (1, 2, 3, 4, 6)
    learned_features: bool = True
    k_factors: tuple[int, ...] = (2, 3)
    validation_batch_size: int = 500

    def __post_init__(self):
        sizes = (self.epochs, self.batch_size, self.train_size, self.validation_size)
        sizes += (self.validation_batch_size,)
        if min(*sizes, self.num_projections) < 1:
            raise ValueError(
                "epochs, batch_size, train_size, validation_size, validation_batch_size, "
                "num_projections must be >= 1"
            )
        if not self.orders or min(self.orders) < 1 or not self.k_factors:
            raise ValueError("orders must be >= 1 and k_factors non-empty")


def candidates(
    x_shape: Sequence[int],
    theta_dim: int,
    structure: str | Sequence[str] = "auto",
    num_statistics: int | str | None = "auto",
    config: SelectionConfig | None = None,
) -> tuple[list[str], list[int], list[int]]:
    r"""The structures, Markov orders and numbers of statistics an ``"auto"`` search tries.

    Data of shape :math:`(T,)` or :math:`(T, d)` may be a series or a set of exchangeable
    draws, so ``"mlp"``, ``"iid"`` and ``"markov"`` of each order compete; data of shape
    :math:`(T, K)` with :math:`K \ge 5` may also be a series of states on a ring of :math:`K`
    sites (``"ring"``, :class:`~ebm_lfi.energy.ring_nets.RingMarkovNet` of radius 2); any other
    shape gets the MLP only. :math:`k` ranges over ``k_factors`` times the number of parameters.

    Returns:
        ``(structures, orders, ks)``.
    """
    config = config or SelectionConfig()
    x_shape = tuple(int(s) for s in x_shape)
    if structure == "auto":
        series = len(x_shape) in (1, 2) and x_shape[0] > 1
        structures = ["mlp", "iid", "markov"] if series else ["mlp"]
        if series and len(x_shape) == 2 and x_shape[1] >= _RING_SITES:
            structures.append("ring")
    elif isinstance(structure, str):
        structures = [structure]
    else:
        structures = list(structure)
    for s in structures:
        if s not in ("mlp", "iid", "markov", "ring"):
            raise ValueError(
                f"structure must be 'auto', 'mlp', 'iid', 'markov' or 'ring', got {s!r}"
            )
    orders = [r for r in config.orders if r < x_shape[0]] if "markov" in structures else []
    if "markov" in structures and not orders:
        structures.remove("markov")
    if num_statistics == "auto":
        ks = sorted({int(f) * int(theta_dim) for f in config.k_factors})
    else:  # None: k = p
        ks = [int(theta_dim if num_statistics is None else num_statistics)]
    return structures, orders, ks


def heldout_score_matching(
    model: ExpFamEBM,
    y: Tensor,
    theta: Tensor,
    *,
    num_projections: int = 8,
    seed: int = 0,
    batch_size: int = 500,
) -> Tensor:
    r"""Per-row sliced score-matching loss (variance-reduced), with reproducible projections.

    .. math:: \ell(y, \theta) = \tfrac12 \|\nabla_y f\|^2 + \frac1P \sum_{j=1}^P
        v_j^\top \nabla_y^2 f\, v_j, \qquad v_j \text{ Rademacher},

    an unbiased estimate of the per-row Hyvärinen loss. The projections depend on ``seed`` and
    the shape of ``y`` only, so two models scored with the same seed see the same ones.

    Arguments:
        model: Provides ``log_unnormalized_y(y, theta) -> (n,)``.
        y: Transformed data, shape :math:`(n, *x_{shape})`.
        theta: Parameters, shape :math:`(n, p)`.
        num_projections: :math:`P`.
        seed: Seed of the projections.
        batch_size: Rows per evaluation.

    Returns:
        Shape :math:`(n,)`.
    """
    gen = torch.Generator().manual_seed(seed)
    v_all = sample_projections(
        (num_projections, *y.shape), "rademacher", dtype=y.dtype, generator=gen
    )
    v_all = v_all.to(y.device)
    out = []
    for start in range(0, y.shape[0], batch_size):
        yb = y[start : start + batch_size].detach().requires_grad_(True)
        tb = theta[start : start + batch_size]
        vb = v_all[:, start : start + batch_size]
        with torch.enable_grad():
            f = model.log_unnormalized_y(yb, tb)
            (g,) = torch.autograd.grad(f.sum(), yb, create_graph=True)
            (hv,) = torch.autograd.grad(g, yb, grad_outputs=vb, is_grads_batched=True)
        n = yb.shape[0]
        vhv = (vb * hv).reshape(num_projections, n, -1).sum(-1).mean(0)
        out.append((0.5 * g.detach().reshape(n, -1).square().sum(-1) + vhv).detach())
    return torch.cat(out)


def select_model(
    theta: Tensor,
    x: Tensor,
    build: Callable[[Candidate, tuple[int, ...] | None], ExpFamEBM],
    *,
    structure: str | Sequence[str] = "auto",
    num_statistics: int | str = "auto",
    loss: Callable,
    config: SelectionConfig | None = None,
    training: TrainConfig | None = None,
    seed: int | None = None,
    progress: bool = False,
) -> tuple[ExpFamEBM, pd.DataFrame]:
    r"""Pilot-train candidate models and keep the one with the lowest held-out SM loss.

    Arguments:
        theta: Training parameters, shape :math:`(n, p)`.
        x: Training data, shape :math:`(n, *x_{shape})`.
        build: ``build(candidate, shared_dims) -> ExpFamEBM`` makes an untrained model
            (``shared_dims``: the standardisation axes every candidate must share).
        structure, num_statistics: ``"auto"`` or fixed choices (see :func:`candidates`).
        loss: The training loss ``loss(model, y, theta)``.
        config: A :class:`SelectionConfig`.
        training: Optimiser settings; ``epochs`` is replaced by the pilot's.
        seed: Seed of the subsets, initialisations and training.
        progress: Show a progress bar over the candidates (each score is also logged).

    Returns:
        The winning model (prepared and pilot-trained, ready for further training) and the
        table of candidates: ``stage`` (``"structure"``, ``"features"``, ``"statistics"``),
        ``structure``, ``order``, ``num_statistics``, ``learned``, ``loss`` (mean held-out
        loss), ``se`` (standard error of its paired difference to the structure kept before the
        choice of :math:`k`), ``seconds``, ``selected``.
    """
    config = config or SelectionConfig()
    training = training or TrainConfig()
    structures, orders, ks = candidates(
        x.shape[1:], theta.shape[1], structure, num_statistics, config
    )
    pilot = _Pilot.setup(theta, x, build, loss, structures, config, training, seed)
    rows: list[dict] = []
    models: dict[Candidate, ExpFamEBM] = {}
    scores: dict[Candidate, Tensor] = {}

    def run(cand: Candidate, stage: str) -> None:
        start = time.perf_counter()
        models[cand], scores[cand] = pilot(cand)
        rows.append(
            {
                "stage": stage,
                "structure": cand.structure,
                "order": cand.order,
                "num_statistics": cand.num_statistics,
                "loss": float(scores[cand].mean()),
                "seconds": time.perf_counter() - start,
            }
        )
        logger.info(
            "%s k=%d: held-out loss %.4f", cand.label, cand.num_statistics, rows[-1]["loss"]
        )
        bar.set_postfix_str(f"{cand.label} k={cand.num_statistics}: {rows[-1]['loss']:.3f}")
        bar.update()

    def simplest(ordered: Sequence[Candidate], reference: Candidate) -> Candidate | None:
        return simplest_within(ordered, reference, scores, config.tolerance)

    # stage 1: structures at the largest k, from the most constrained family to the MLP
    k_max = max(ks)
    stage1 = [
        Candidate(s, k_max, r)
        for s in sorted(structures, key=["iid", "ring", "markov", "mlp"].index)
        for r in (orders if s == "markov" else [None])
    ]
    bar = progress_bar(
        total=len(stage1) + len([k for k in ks if k != k_max]),
        desc="Model choice",
        unit="model",
        enabled=progress,
    )
    for cand in stage1:
        run(cand, "structure")
    lowest = min(stage1, key=lambda c: float(scores[c].mean()))
    best = simplest(stage1, lowest) or lowest
    # stage 1b: learned window features, kept only if they beat the monomials by the tolerance
    stage1b = []
    if best.structure in ("markov", "ring") and config.learned_features:
        stage1b = [replace(best, learned=True)]
        bar.total += 1
        run(stage1b[0], "features")
        best = simplest([best, *stage1b], stage1b[0]) or best
    # stage 2: the number of statistics for the winning structure, from the smallest
    stage2 = [replace(best, num_statistics=k) for k in ks if k != k_max]
    for cand in stage2:
        run(cand, "statistics")
    chosen = simplest(sorted(stage2, key=lambda c: c.num_statistics), best) or best
    bar.close()
    table = pd.DataFrame(rows)
    tried = [*stage1, *stage1b, *stage2]
    table["learned"] = [c.learned for c in tried]
    table["se"] = [_paired_se(scores, c, best) if c != best else 0.0 for c in tried]
    table["selected"] = [c == chosen for c in tried]
    return models[chosen], table


def simplest_within(
    ordered: Sequence[Hashable],
    reference: Hashable,
    scores: Mapping[Hashable, Tensor],
    tolerance: float,
) -> Hashable | None:
    r"""The parsimony rule: the first of ``ordered`` (simplest first) whose mean held-out loss
    exceeds the ``reference``'s by at most ``tolerance`` paired standard errors; ``None`` if
    none does. The same rule picks the structure, keeps learned features and picks
    :math:`k` (and :mod:`ebm_lfi.methods.reshape` the layout of flat data); the candidates
    are any keys of ``scores``. A candidate whose held-out losses are not all finite (a
    diverged pilot fit) is never chosen: its standard error is infinite and would let any gap
    through."""
    for cand in ordered:
        if cand != reference and not bool(torch.isfinite(scores[cand]).all()):
            continue
        gap = float(scores[cand].mean() - scores[reference].mean())
        if gap <= tolerance * _paired_se(scores, cand, reference):
            return cand
    return None


def _paired_se(scores: Mapping[Hashable, Tensor], a: Hashable, b: Hashable) -> float:
    r"""Standard error of the mean of the paired differences of the per-row losses of ``a``
    and ``b`` (common validation rows and projections); infinite if one is not finite."""
    d = scores[a] - scores[b]
    return float(d.std() / math.sqrt(d.numel())) if torch.isfinite(d).all() else math.inf


@dataclass(frozen=True, eq=False)
class _Pilot:
    r"""The common setting of the pilot runs: every candidate is built from the same seed,
    trained on the same rows with the same settings and seed, and scored on the same held-out
    rows with the same projections (common random numbers)."""

    theta: Tensor
    x: Tensor
    build: Callable[[Candidate, tuple[int, ...] | None], ExpFamEBM]
    loss: Callable
    shared: tuple[int, ...] | None
    training: TrainConfig
    train_idx: Tensor
    val_idx: Tensor
    num_projections: int
    seed: int

    @classmethod
    def setup(
        cls,
        theta: Tensor,
        x: Tensor,
        build: Callable[[Candidate, tuple[int, ...] | None], ExpFamEBM],
        loss: Callable,
        structures: Sequence[str],
        config: SelectionConfig,
        training: TrainConfig,
        seed: int | None,
    ) -> _Pilot:
        r"""The pilot's held-out rows (at most ``validation_size``, a fifth of the data at most
        otherwise), training rows (at most ``train_size`` of the rest) and settings."""
        n = theta.shape[0]
        base_seed = 0 if seed is None else int(seed)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(base_seed + 101))
        n_val = min(config.validation_size, max(2, n // 5))
        val_idx, train_idx = perm[:n_val].to(theta.device), perm[n_val:].to(theta.device)
        return cls(
            theta=theta,
            x=x,
            build=build,
            loss=loss,
            shared=(0, 1)
            if set(structures) == {"ring"}
            else (0,)
            if any(s != "mlp" for s in structures)
            else None,
            training=replace(
                training,
                epochs=config.epochs,
                batch_size=config.batch_size,
                validation_batch_size=config.validation_batch_size,
                patience=None,
            ),
            train_idx=train_idx[: config.train_size],
            val_idx=val_idx,
            num_projections=config.num_projections,
            seed=base_seed,
        )

    def __call__(self, cand: Candidate) -> tuple[ExpFamEBM, Tensor]:
        r"""Builds, prepares, pilot-trains and scores ``cand``.

        Returns:
            The trained model and its per-row held-out losses, shape :math:`(m,)` (all
            :math:`+\infty` if any is not finite).
        """
        theta, x = self.theta, self.x
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = self.build(cand, self.shared).to(device=x.device, dtype=theta.dtype)
        model.prepare(theta, x)
        y_val = model.transform_x(x[self.val_idx])
        train(
            model,
            self.loss,
            model.transform_x(x[self.train_idx]),
            theta[self.train_idx],
            config=self.training,
            validation=(y_val, theta[self.val_idx]),
            seed=self.seed,
            device=x.device,
            progress=False,
        )
        model.eval()
        if hasattr(self.loss, "heldout"):  # a loss with its own proper held-out score (NCE)
            score = self.loss.heldout(model, y_val, theta[self.val_idx], seed=self.seed)
        else:
            score = heldout_score_matching(
                model,
                y_val,
                theta[self.val_idx],
                num_projections=self.num_projections,
                seed=self.seed,
            )
        if not bool(torch.isfinite(score).all()):
            score = torch.full_like(score, math.inf)
        return model, score
