r"""Recovery of a known exponential family by score matching, up to an affine map.

The data are :math:`m = 10` iid draws :math:`x_j \sim \mathcal N(\mu, \sigma^2)` with
:math:`\theta = (\mu, \sigma)` uniform on :math:`[-2, 2] \times [0.5, 2]`: an exponential
family with sufficient statistics :math:`T(x) = (\sum_j x_j, \sum_j x_j^2)` and natural
parameters :math:`\eta^*(\theta) = (\mu / \sigma^2, -1 / (2\sigma^2))`.

If :math:`\eta(\theta)^\top s(y) + b(y)` has the same score as the truth for every
:math:`\theta`, then :math:`\eta = A \eta^* + c` and :math:`s = A^{-\top} T + d` for an
invertible :math:`A` (:math:`\eta^*` spans two affine dimensions), so the learned quantities
are compared with the true ones through the best affine map, fitted by least squares on
held-out data. The score is the *mean correlation coefficient* (MCC): the mean over true
coordinates of the Pearson correlation between the affinely mapped learned values and the
true ones, i.e. of :math:`\sqrt{R^2}` of each coordinate's regression.

The standardisation :math:`y = (x - a) / c` that :meth:`ExpFamEBM.prepare` fits is pooled over
the draws (scalar :math:`a, c`), so in :math:`y` the family is still Gaussian with statistics
:math:`T(y)`, an affine image of :math:`T(x)`, and natural parameters
:math:`(c\,\eta^*_1 + 2ac\,\eta^*_2,\; c^2 \eta^*_2)`, a linear image of :math:`\eta^*`: the
affine comparison in raw space is exact.

Calibration of the thresholds (0.99 with the true statistics fixed, 0.9 with them learned):
an *invertible affine function of* :math:`\theta` only reaches an MCC of about 0.82 with
:math:`\eta^*` on this prior (:func:`test_mcc_demands_more_than_a_smooth_reparametrisation`),
untrained networks and a model trained on shuffled :math:`(\theta, x)` pairs stay below 0.9,
so passing requires the family's nonlinear structure to be learned.

References:
    Khemakhem, Monti, Leech & Hyvärinen, "ICE-BeeM: Identifiable Conditional Energy-Based Deep
    Models Based on Nonlinear ICA", NeurIPS 2020, https://arxiv.org/abs/2002.11537
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from ebm_lfi.energy.mlp import MLP
from ebm_lfi.energy.model import ExpFamEBM
from ebm_lfi.losses import ScoreMatching, SlicedScoreMatching
from ebm_lfi.training.loop import train

F64 = torch.float64
M = 10  # draws per data set
MU_RANGE = (-2.0, 2.0)
SIGMA_RANGE = (0.5, 2.0)
NUM_TRAIN = 10_000
NUM_TEST = 2_000


@pytest.fixture(autouse=True)
def one_torch_thread():
    r"""Small dense networks: one thread avoids contention on shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def simulate(n: int, seed: int) -> tuple[Tensor, Tensor]:
    r"""``n`` pairs :math:`\theta \sim U`, :math:`x \sim \mathcal N(\mu, \sigma^2)^{M}`."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, 2, generator=g, dtype=F64)
    mu = MU_RANGE[0] + (MU_RANGE[1] - MU_RANGE[0]) * u[:, 0]
    sigma = SIGMA_RANGE[0] + (SIGMA_RANGE[1] - SIGMA_RANGE[0]) * u[:, 1]
    x = mu[:, None] + sigma[:, None] * torch.randn(n, M, generator=g, dtype=F64)
    return torch.stack([mu, sigma], -1), x


def true_natural_parameters(theta: Tensor) -> Tensor:
    mu, sigma = theta.unbind(-1)
    return torch.stack([mu / sigma**2, -0.5 / sigma**2], -1)


def true_statistics(x: Tensor) -> Tensor:
    return torch.stack([x.sum(-1), x.square().sum(-1)], -1)


def affine_correlations(learned: Tensor, true: Tensor) -> Tensor:
    r"""Per-coordinate correlations of ``true`` with its best affine prediction from ``learned``.

    Arguments:
        learned: Shape :math:`(n, k)`.
        true: Shape :math:`(n, k')`.

    Returns:
        Shape :math:`(k',)`; the MCC is their mean.
    """
    design = torch.cat([learned, torch.ones_like(learned[:, :1])], -1)
    fitted = design @ torch.linalg.lstsq(design, true).solution
    fitted, true = fitted - fitted.mean(0), true - true.mean(0)
    return (fitted * true).sum(0) / (fitted.norm(dim=0) * true.norm(dim=0))


def mcc(learned: Tensor, true: Tensor) -> float:
    return affine_correlations(learned, true).mean().item()


class GaussianStatistics(nn.Module):
    r"""The true statistics :math:`(\sum_j y_j, \sum_j y_j^2)` and a zero base measure."""

    def forward(self, y: Tensor) -> Tensor:
        return torch.stack([y.sum(-1), y.square().sum(-1), torch.zeros_like(y[..., 0])], -1)


def build(make_model, seed: int) -> ExpFamEBM:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make_model().to(F64)


def held_out_mcc(model: ExpFamEBM) -> tuple[float, float]:
    r"""MCC of :math:`\eta` with :math:`\eta^*` and of :math:`s` with :math:`T` on fresh data."""
    theta, x = simulate(NUM_TEST, seed=12345)
    with torch.no_grad():
        eta = model.natural_parameters(theta)
        s = model.statistics(x)
    return mcc(eta, true_natural_parameters(theta)), mcc(s, true_statistics(x))


# --------------------------------------------------------------------------- the metric
def test_mcc_is_one_for_affine_images_and_invariant_to_their_order():
    theta, _ = simulate(500, seed=0)
    eta = true_natural_parameters(theta)
    A = torch.tensor([[2.0, -1.0], [0.5, 3.0]], dtype=F64)
    image = eta @ A.T + torch.tensor([1.0, -4.0], dtype=F64)
    assert torch.allclose(affine_correlations(image, eta), torch.ones(2, dtype=F64), atol=1e-12)
    assert mcc(image.flip(-1), eta) == pytest.approx(mcc(image, eta), abs=1e-12)
    # A learned quantity of lower rank cannot explain both coordinates.
    assert mcc(image[:, :1], eta) < 0.99


def test_mcc_demands_more_than_a_smooth_reparametrisation():
    r"""An invertible affine function of :math:`\theta` stays far below both thresholds."""
    theta, _ = simulate(NUM_TEST, seed=1)
    assert mcc(theta, true_natural_parameters(theta)) < 0.9


# --------------------------------------------------------------------------- recovery
def test_fixed_true_statistics_recover_natural_parameters():
    r"""True :math:`T(y)`, learned :math:`\eta(\theta)`, exact score matching: MCC >= 0.99."""
    theta, x = simulate(NUM_TRAIN, seed=2)
    model = build(
        lambda: ExpFamEBM(
            GaussianStatistics(),
            MLP(2, 2, hidden=(32, 32)),
            x_shape=(M,),
            theta_dim=2,
            num_statistics=2,
            shared_dims=(0,),
        ),
        seed=0,
    ).prepare(theta, x)
    untrained, _ = held_out_mcc(model)

    train(
        model,
        ScoreMatching(),
        model.transform_x(x),
        theta,
        config={"epochs": 100, "batch_size": 512, "lr": 5e-3, "patience": None},
        seed=0,
    )
    trained, s_mcc = held_out_mcc(model)

    assert untrained < 0.9  # negative control: the test can fail
    assert trained >= 0.99
    assert s_mcc == pytest.approx(1.0, abs=1e-12)  # the fixed statistics are the true ones


def learned_model(structure: str):
    r"""SiLU rather than the default softplus: with softplus, sliced score matching sat on a
    plateau (validation loss about -13.7 against -15 at the optimum, MCC of :math:`\eta`
    about 0.6) for two of four seeds within 60 epochs; with SiLU, seven of seven seeds reached
    MCCs above 0.99 for both :math:`\eta` and :math:`s` by epoch 40."""
    if structure == "mlp":
        return lambda: ExpFamEBM.default(
            (M,), 2, structure="mlp", hidden=(64, 64), activation="silu"
        )
    return lambda: ExpFamEBM.default(
        (M,), 2, structure="iid", hidden=(32, 32), embedding=16, activation="silu"
    )


def fit_learned(
    theta: Tensor, x: Tensor, structure: str, epochs: int = 40
) -> tuple[ExpFamEBM, float, float]:
    r"""40 epochs: every seed tried had reached MCCs above 0.99 by then (see
    :func:`learned_model`); the weights kept are those of the best validation loss, which for
    the MLP came before epoch 40 (the same model as after 60 epochs)."""
    model = build(learned_model(structure), seed=0).prepare(theta, x)
    untrained_eta, untrained_s = held_out_mcc(model)
    train(
        model,
        SlicedScoreMatching(),
        model.transform_x(x),
        theta,
        config={"epochs": epochs, "batch_size": 256, "lr": 3e-3, "patience": None},
        seed=0,
    )
    return model, untrained_eta, untrained_s


@pytest.mark.parametrize("structure", ["mlp", pytest.param("iid", marks=pytest.mark.slow)])
def test_learned_statistics_recover_the_family(structure):
    r"""Learned :math:`s` and :math:`\eta`, sliced score matching: both MCCs >= 0.9 held out.

    The plain MLP on the flattened sample starts neither permutation invariant nor quadratic
    (untrained MCC of :math:`s` about 0.5), so both checks can fail. The exchangeable network
    with mean pooling and softplus is close to the span of :math:`(\bar y, \overline{y^2})`
    already at initialisation (untrained MCC of :math:`s` above 0.99), so with ``"iid"`` only
    the check of :math:`\eta` discriminates.
    """
    theta, x = simulate(NUM_TRAIN, seed=3)
    model, untrained_eta, untrained_s = fit_learned(theta, x, structure)
    eta_mcc, s_mcc = held_out_mcc(model)

    assert untrained_eta < 0.9
    if structure == "mlp":
        assert untrained_s < 0.9
    assert eta_mcc >= 0.9
    assert s_mcc >= 0.9


def test_shuffled_pairs_do_not_recover_the_family():
    r"""Negative control: with :math:`\theta` shuffled against :math:`x` the data carry no
    information on :math:`\eta`, and both MCCs stay below the threshold, even after more
    epochs than the recovery tests train."""
    theta, x = simulate(NUM_TRAIN, seed=3)
    perm = torch.randperm(NUM_TRAIN, generator=torch.Generator().manual_seed(4))
    model, _, _ = fit_learned(theta[perm], x, "mlp", epochs=60)
    eta_mcc, s_mcc = held_out_mcc(model)

    assert eta_mcc < 0.9
    assert s_mcc < 0.9
