r"""Tests of the generic training loop, with small models whose optimisation path is known."""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from ebm_lfi.training.checkpoints import CHECKPOINT_FORMAT
from ebm_lfi.training.config import DEFAULT_EPOCHS, MAX_STRETCH, TrainConfig, adam
from ebm_lfi.training.loop import TrainingError, train

DTYPE = torch.float64
FAST = {"epochs": 3, "batch_size": 8}
SHORT = {"epochs": 3, "batch_size": 16}


class Scalar(nn.Module):
    r"""``x -> w x`` with a scalar weight and a buffer counting training forwards."""

    def __init__(self, w: float = 0.0):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w, dtype=DTYPE))
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, x):
        if self.training:
            self.calls += 1
        return self.w * x


def half_squared_error(model, x, y):
    return 0.5 * ((model(x) - y) ** 2).mean()


def mismatch_problem():
    r"""Training targets ``y = x``, validation targets ``y = x / 2``.

    Full-batch gradient descent on ``mean(x^2) = 1`` with step ``lr`` from ``w = 0`` gives
    ``w_k = 1 - (1 - lr)^k``: the training loss falls monotonically while the validation loss
    ``(w - 1/2)^2 / 2`` falls until ``w`` passes 1/2 and rises afterwards.
    """
    x = torch.tensor([-1.0, 1.0], dtype=DTYPE)
    return (x, x.clone()), (x.clone(), 0.5 * x)


def sgd(**overrides):
    r"""Settings of plain SGD with a constant step, updated by ``overrides``."""
    return {
        "batch_size": 2,
        "lr": 0.1,
        "optimizer": torch.optim.SGD,
        "scheduler": None,
        **overrides,
    }


def noisy_regression(n=96, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=DTYPE)
    y = x @ torch.arange(1.0, d + 1, dtype=DTYPE) + 0.3 * torch.randn(n, generator=g, dtype=DTYPE)
    return x, y[:, None]


def stochastic_loss(model, x, y):
    r"""Regression with input noise drawn from torch's global generator."""
    noisy = x + 0.1 * torch.randn_like(x)
    return ((model(noisy) - y) ** 2).mean()


def linear_model(d=3, seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Linear(d, 1).to(DTYPE)


def without_seconds(history):
    return history.drop(columns="seconds")


# --------------------------------------------------------------------------------------------
# Optimisation itself


def test_full_batch_sgd_is_gradient_descent():
    r"""One full batch per epoch with SGD must be plain gradient descent on the loss.

    For ``L(w) = |X w - y|^2 / (2n)`` with Hessian ``H = X^T X / n`` and step ``1 / λ_max``, the
    error contracts at least by ``1 - λ_min / λ_max`` per step.
    """
    x, y = noisy_regression()
    design = torch.cat([x, torch.ones(len(x), 1, dtype=DTYPE)], 1)
    hessian = design.T @ design / len(x)
    eig = torch.linalg.eigvalsh(hessian)
    lr = float(1 / eig[-1])
    model = linear_model()
    w = torch.cat([model.weight.detach().flatten(), model.bias.detach()])
    w_star = torch.linalg.lstsq(design, y).solution.flatten()
    e0 = torch.linalg.norm(w - w_star)
    epochs = 40
    history = train(
        model,
        half_squared_error,
        x,
        y,
        config=TrainConfig(
            epochs=epochs,
            batch_size=len(x),
            lr=lr,
            optimizer=torch.optim.SGD,
            scheduler=None,
            validation_fraction=0.0,
            patience=None,
        ),
        seed=0,
    )
    expected_losses, iterates = [], [w]
    for _ in range(epochs):
        residual = design @ w - y.flatten()
        expected_losses.append(float(0.5 * (residual**2).mean()))
        w = w - lr * design.T @ residual / len(x)
        iterates.append(w)
    np.testing.assert_allclose(history["train_loss"], expected_losses, rtol=1e-10)
    # The loss falls monotonically until it stalls at rounding level; the weights returned are
    # those after the first epoch whose (pre-step) loss is the smallest.
    best = history.attrs["best_epoch"]
    assert best == int(np.argmin(history["train_loss"])) + 1
    assert best > epochs // 2
    got = torch.cat([model.weight.detach().flatten(), model.bias.detach()])
    torch.testing.assert_close(got, iterates[best], rtol=1e-10, atol=1e-12)
    rho = float(1 - eig[0] / eig[-1])
    # Past the contraction the error sits at rounding level: the fixed point of floating-point
    # gradient descent and the least-squares solution each carry errors of order
    # cond(H) * eps * |w*| (seen: 1.1e-14 against a bound of 1.0e-14 at best epoch 33, the
    # best epoch among rounding-level losses depending on memory alignment)
    rounding = 100 * float(eig[-1] / eig[0]) * torch.finfo(DTYPE).eps * float(w_star.norm())
    error = float(torch.linalg.norm(got - w_star))
    assert error <= rho**best * float(e0) * (1 + 1e-9) + rounding
    assert rounding < 1e-12  # the floor is far below the error of a step that went wrong


def test_minibatches_partition_training_set_and_split_is_disjoint():
    n, batch_size, epochs = 23, 5, 3
    ids = torch.arange(n)
    seen = {"train": [], "val": [], "modes": set()}

    def recording_loss(model, x, i):
        seen["train" if model.training else "val"].append(i.clone())
        return (model(x) ** 2).mean()

    x = torch.randn(n, 1, dtype=DTYPE, generator=torch.Generator().manual_seed(1))
    model = Scalar()
    history = train(
        model,
        recording_loss,
        x,
        ids,
        config={"epochs": epochs, "batch_size": batch_size, "validation_fraction": 0.2},
        seed=3,
    )
    n_val = round(0.2 * n)
    n_train = n - n_val
    per_epoch = math.ceil(n_train / batch_size)
    assert len(seen["train"]) == epochs * per_epoch
    train_sets = []
    for e in range(epochs):
        batches = seen["train"][e * per_epoch : (e + 1) * per_epoch]
        assert [len(b) for b in batches] == [batch_size] * (per_epoch - 1) + [
            n_train - batch_size * (per_epoch - 1)
        ]
        rows = torch.cat(batches)
        assert len(set(rows.tolist())) == n_train  # each training row exactly once per epoch
        train_sets.append(set(rows.tolist()))
    assert train_sets[0] == train_sets[1] == train_sets[2]
    # shuffled between epochs
    orders = [torch.cat(seen["train"][e * per_epoch : (e + 1) * per_epoch]) for e in range(2)]
    assert not torch.equal(orders[0], orders[1])
    val_rows = torch.cat(seen["val"])
    assert len(val_rows) == epochs * n_val
    assert set(val_rows.tolist()).isdisjoint(train_sets[0])
    assert set(val_rows.tolist()) | train_sets[0] == set(range(n))
    assert history["val_loss"].notna().all()
    assert not model.training  # returned in eval mode
    # the training forwards were counted by the buffer: per_epoch batches in each epoch
    assert int(model.calls) == history.attrs["best_epoch"] * per_epoch


def test_validation_keeps_autograd_for_input_derivatives():
    r"""Score-matching losses differentiate in the inputs, also during validation."""

    def input_gradient_loss(model, x):
        x = x.requires_grad_(True)
        (grad,) = torch.autograd.grad(model(x).sum(), x, create_graph=True)
        return (grad**2).mean() + 0.1 * (model(x) ** 2).mean()

    model = linear_model(d=2)
    x = torch.randn(40, 2, dtype=DTYPE, generator=torch.Generator().manual_seed(0))
    history = train(model, input_gradient_loss, x, config=FAST, seed=0)
    assert np.isfinite(history["val_loss"]).all()


def test_validation_builds_no_graph_toward_the_weights_and_keeps_frozen_ones_frozen():
    r"""The validation loss is computed with the trainable weights out of autograd (its value
    does not depend on it; the backward passes of the input derivatives skip the weights'
    gradients); their flags are restored after it, and frozen weights stay frozen."""
    seen = []

    def loss(model, x):
        if not model.training:
            seen.append([p.requires_grad for p in model.parameters()])
        x = x.requires_grad_(True)
        (grad,) = torch.autograd.grad(model(x).sum(), x, create_graph=True)
        return (grad**2).mean() + 0.1 * (model(x) ** 2).mean()

    model = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1)).to(DTYPE)
    model[2].bias.requires_grad_(False)
    x = torch.randn(40, 2, dtype=DTYPE, generator=torch.Generator().manual_seed(0))
    history = train(model, loss, x, config=FAST, seed=0)
    assert np.isfinite(history["val_loss"]).all() and seen
    assert all(not any(flags) for flags in seen)
    assert [p.requires_grad for p in model.parameters()] == [True, True, True, False]


def test_the_default_adam_is_the_per_parameter_loop_to_rounding():
    r"""``adam`` (torch's fused kernel, one call per group) is the arithmetic of
    ``torch.optim.Adam``'s per-parameter loop to float64 rounding after five epochs, with weight
    decay and two parameter groups; asked for the batched ``foreach`` update it gives the
    loop's weights to the last bit; a dtype without a fused kernel falls back to it."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 3, dtype=DTYPE, generator=g)
    y = torch.sin(x).sum(-1, keepdim=True)

    def fit(optimizer):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 16), nn.SiLU(), nn.Linear(16, 1)).to(DTYPE)
        config = {
            "epochs": 5,
            "batch_size": 32,
            "weight_decay": 1e-3,
            "param_groups": [(model[2], 3e-3)],
            "optimizer": optimizer,
        }
        train(model, lambda m, a, b: ((m(a) - b) ** 2).mean(), x, y, config=config, seed=0)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    assert TrainConfig().optimizer is adam
    assert adam([nn.Parameter(torch.zeros(2, dtype=DTYPE))]).defaults["fused"]
    loop = fit(functools.partial(torch.optim.Adam, foreach=False))
    fused = fit(adam)
    assert not torch.equal(fused, loop)  # a different order of the same operations
    torch.testing.assert_close(fused, loop, rtol=1e-12, atol=1e-12)
    assert torch.equal(fit(functools.partial(adam, foreach=True)), loop)
    integer = adam([torch.zeros(2, dtype=torch.int64)], lr=1e-3)  # no fused kernel
    assert integer.defaults["foreach"] and not integer.defaults["fused"]


def test_the_validation_batch_changes_the_cost_not_the_loss():
    r"""A mean of per-row terms is the same over any split of the validation rows (to rounding,
    float64), so the run, its weights and its best epoch are those of the default split; only
    the number of validation calls changes (60 rows: 4 calls of 16 or one)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 3, dtype=DTYPE, generator=g)
    y = torch.sin(x).sum(-1, keepdim=True)

    def fit(**options):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 16), nn.SiLU(), nn.Linear(16, 1)).to(DTYPE)
        calls = []

        def loss(m, a, b):
            calls.append(m.training)
            return ((m(a) - b) ** 2).mean()

        config = {"epochs": 6, "batch_size": 16, **options}
        history = train(model, loss, x, y, config=config, seed=0)
        weights = torch.cat([p.detach().flatten() for p in model.parameters()])
        return history, weights, calls.count(False)

    (small, w_small, n_small), (large, w_large, n_large) = fit(), fit(validation_batch_size=1000)
    assert TrainConfig().validation_batch_size is None
    assert (n_small, n_large) == (6 * 4, 6)
    np.testing.assert_allclose(small["val_loss"], large["val_loss"], rtol=1e-12)
    assert small.attrs["best_epoch"] == large.attrs["best_epoch"]
    torch.testing.assert_close(w_small, w_large, rtol=0, atol=0)


def test_history_columns_dtypes_and_attrs():
    x, y = noisy_regression(n=40)
    history = train(linear_model(), half_squared_error, x, y, config={**FAST, "epochs": 4}, seed=0)
    assert list(history.columns) == ["epoch", "train_loss", "val_loss", "lr", "seconds"]
    assert history["epoch"].tolist() == [1, 2, 3, 4]
    assert history["epoch"].dtype == np.int64
    assert all(history[c].dtype == np.float64 for c in history.columns[1:])
    assert (history["seconds"] >= 0).all()
    attrs = history.attrs
    assert set(attrs) >= {"best_epoch", "best_loss", "monitor", "stopped_early", "seconds"}
    assert attrs["monitor"] == "val_loss"
    assert attrs["best_loss"] == history["val_loss"].min()
    assert attrs["best_epoch"] == int(history["epoch"][history["val_loss"].idxmin()])
    assert attrs["stopped_early"] is False
    assert attrs["seconds"] >= history["seconds"].sum()


def test_without_validation_the_training_loss_is_monitored():
    x, y = noisy_regression(n=40)
    history = train(
        linear_model(),
        half_squared_error,
        x,
        y,
        config={**FAST, "validation_fraction": 0.0},
        seed=0,
    )
    assert history["val_loss"].isna().all()
    assert history.attrs["monitor"] == "train_loss"
    assert history.attrs["best_loss"] == history["train_loss"].min()


# --------------------------------------------------------------------------------------------
# Early stopping and the NaN guard


def test_early_stopping_restores_deep_copy_of_best_weights():
    (x, y), validation = mismatch_problem()
    lr, patience = 0.1, 3
    # w_k = 1 - 0.9^k; the validation loss (w_k - 1/2)^2 / 2 is smallest at k = 7.
    ks = np.arange(1, 40)
    best = int(ks[np.argmin((0.5 - 0.9**ks) ** 2)])
    assert best == 7
    snapshots = {}

    def loss(model, x, y):
        if not model.training:  # validation of the epoch just trained
            snapshots[len(snapshots) + 1] = {k: v.clone() for k, v in model.state_dict().items()}
        return half_squared_error(model, x, y)

    model = Scalar()
    history = train(
        model,
        loss,
        x,
        y,
        config=sgd(lr=lr, epochs=100, patience=patience),
        validation=validation,
        seed=0,
    )
    assert history.attrs["stopped_early"] is True
    assert history.attrs["best_epoch"] == best
    assert len(history) == best + patience
    assert np.all(np.diff(history["val_loss"][:best]) < 0)
    assert np.all(np.diff(history["val_loss"][best - 1 :]) > 0)
    # the weights and buffers are those of the best epoch, not of the last one
    state = model.state_dict()
    assert set(state) == set(snapshots[best])
    for key, value in snapshots[best].items():
        assert torch.equal(state[key], value), key
    assert not torch.equal(state["w"], snapshots[len(history)]["w"])
    assert float(model.w.detach()) == pytest.approx(1 - 0.9**best, rel=1e-12)
    assert int(model.calls) == best  # one full batch per epoch
    # its validation loss is the history's minimum
    recomputed = float(half_squared_error(model, *validation).detach())
    assert recomputed == pytest.approx(history["val_loss"].min(), rel=1e-12)


def test_patience_none_runs_all_epochs_and_still_restores_best():
    (x, y), validation = mismatch_problem()
    model = Scalar()
    history = train(
        model,
        half_squared_error,
        x,
        y,
        config=sgd(epochs=15, patience=None),
        validation=validation,
        seed=0,
    )
    assert len(history) == 15
    assert history.attrs["stopped_early"] is False
    assert float(model.w.detach()) == pytest.approx(1 - 0.9**7, rel=1e-12)


def test_min_delta_counts_small_improvements_as_none():
    (x, y), validation = mismatch_problem()
    # Validation losses (0.9^k - 0.5)^2 / 2: successive decreases shrink below 1e-2 at k = 3.
    val = 0.5 * (0.9 ** np.arange(1, 10) - 0.5) ** 2
    min_delta = 1e-2
    best = 1
    for k in range(2, 10):
        if val[k - 1] < val[best - 1] - min_delta:
            best = k
    model = Scalar()
    history = train(
        model,
        half_squared_error,
        x,
        y,
        config=sgd(epochs=50, patience=2, min_delta=min_delta),
        validation=validation,
        seed=0,
    )
    assert history.attrs["best_epoch"] == best
    assert float(model.w.detach()) == pytest.approx(1 - 0.9**best, rel=1e-12)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nonfinite_training_loss_raises_and_keeps_best_weights(bad):
    r"""Batches of one point: every SGD step maps ``w`` to ``1 - 0.9 (1 - w)``.

    After epoch k (two steps each) ``w = 1 - 0.81^k``; the loss turns non-finite in the second
    batch of epoch 3, after the first batch has already moved the weights to ``1 - 0.9^5``.
    """
    (x, y), validation = mismatch_problem()
    calls = {"train": 0}

    def loss(model, x, y):
        if model.training:
            calls["train"] += 1
            if calls["train"] == 6:
                return torch.tensor(bad, dtype=DTYPE) * model(x).sum()
        return half_squared_error(model, x, y)

    model = Scalar()
    with pytest.raises(TrainingError, match="epoch 3, batch 2") as info:
        train(model, loss, x, y, config=sgd(batch_size=1, epochs=10), validation=validation, seed=0)
    assert info.value.epoch == 3
    assert len(info.value.history) == 2
    assert "training loss" in str(info.value)
    # the validation loss still decreased at epochs 1 and 2, so epoch 2 is the best
    assert float(model.w.detach()) == pytest.approx(1 - 0.81**2, rel=1e-12)
    assert int(model.calls) == 4


def test_nonfinite_validation_loss_in_first_epoch_restores_initial_weights():
    (x, y), validation = mismatch_problem()

    def loss(model, x, y):
        value = half_squared_error(model, x, y)
        return value if model.training else value * math.nan

    model = Scalar(w=0.25)
    with pytest.raises(TrainingError, match="validation loss.*epoch 1") as info:
        train(model, loss, x, y, config=sgd(epochs=10), validation=validation, seed=0)
    assert len(info.value.history) == 0
    assert float(model.w.detach()) == 0.25
    assert int(model.calls) == 0


# --------------------------------------------------------------------------------------------
# Randomness


def test_same_seed_same_run_different_seed_different_run():
    x, y = noisy_regression()

    def run(seed):
        model = linear_model()
        history = train(model, stochastic_loss, x, y, config=SHORT, seed=seed)
        return model, without_seconds(history)

    m1, h1 = run(0)
    m2, h2 = run(0)
    m3, h3 = run(1)
    pd.testing.assert_frame_equal(h1, h2, check_exact=True)
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p1, p2)
    assert not h1["train_loss"].equals(h3["train_loss"])
    assert not torch.equal(m1.weight, m3.weight)


def test_callers_global_rng_is_untouched():
    x, y = noisy_regression()
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    train(linear_model(), stochastic_loss, x, y, config={**SHORT, "epochs": 2}, seed=5)
    assert torch.equal(torch.get_rng_state(), before)


def test_seed_none_follows_torch_manual_seed():
    x, y = noisy_regression()

    def run():
        model = linear_model()
        history = train(model, stochastic_loss, x, y, config={**SHORT, "epochs": 2})
        return model, without_seconds(history)

    torch.manual_seed(7)
    m1, h1 = run()
    torch.manual_seed(7)
    m2, h2 = run()
    pd.testing.assert_frame_equal(h1, h2, check_exact=True)
    assert torch.equal(m1.weight, m2.weight)


# --------------------------------------------------------------------------------------------
# Checkpoints


def _resume_config(scheduler, epochs):
    return TrainConfig(
        epochs=epochs,
        batch_size=16,
        lr=0.05,
        param_groups={"b": 0.02},
        scheduler=scheduler,
        gamma=0.7,
        scheduler_patience=0,
        patience=50,
        grad_clip=5.0,
        validation_fraction=0.25,
    )


class TwoPart(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 4).to(DTYPE)
        self.b = nn.Linear(4, 1).to(DTYPE)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


def two_part(seed):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TwoPart()


@pytest.mark.parametrize("scheduler", ["exponential", "plateau"])
def test_resume_continues_bit_for_bit(tmp_path, scheduler):
    x, y = noisy_regression()
    n_half = 3
    config = _resume_config(scheduler, epochs=2 * n_half)

    full = two_part(0)
    h_full = train(
        full,
        stochastic_loss,
        x,
        y,
        config=config,
        seed=11,
        checkpoint_dir=tmp_path / "full",
        checkpoint_every=n_half,
    )
    first = two_part(0)
    train(
        first,
        stochastic_loss,
        x,
        y,
        config=_resume_config(scheduler, epochs=n_half),
        seed=11,
        checkpoint_dir=tmp_path / "first",
        checkpoint_every=n_half,
    )
    resumed = two_part(99)  # different initial weights: all comes from the checkpoint
    h_resumed = train(
        resumed,
        stochastic_loss,
        x,
        y,
        config=config,
        seed=12345,  # ignored when resuming
        resume_from=tmp_path / "first" / f"epoch_{n_half:05d}.pt",
        checkpoint_dir=tmp_path / "resumed",
        checkpoint_every=n_half,
    )
    pd.testing.assert_frame_equal(without_seconds(h_full), without_seconds(h_resumed))
    assert h_full.attrs["best_epoch"] == h_resumed.attrs["best_epoch"]
    for p1, p2 in zip(full.parameters(), resumed.parameters()):
        assert torch.equal(p1, p2)
    # the live state after the last epoch agrees too (weights, Adam moments, scheduler, RNG)
    last = f"epoch_{2 * n_half:05d}.pt"
    a = torch.load(tmp_path / "full" / last, weights_only=True)
    b = torch.load(tmp_path / "resumed" / last, weights_only=True)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key])
    for i, state in a["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(value, b["optimizer"]["state"][i][key])
    assert a["scheduler"] == b["scheduler"]
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    assert torch.equal(a["rng"]["generator"], b["rng"]["generator"])
    if scheduler == "exponential":
        np.testing.assert_allclose(h_resumed["lr"], 0.05 * 0.7 ** np.arange(2 * n_half))


def test_checkpoints_are_written_every_n_epochs_and_load_weights_only(tmp_path):
    x, y = noisy_regression(n=40)
    model = linear_model()
    history = train(
        model,
        half_squared_error,
        x,
        y,
        config={**FAST, "epochs": 5, "patience": None},
        checkpoint_dir=tmp_path,
        checkpoint_every=2,
        seed=0,
    )
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["epoch_00002.pt", "epoch_00004.pt", "epoch_00005.pt"]
    assert [p.split("/")[-1] for p in history.attrs["checkpoints"]] == names
    state = torch.load(tmp_path / "epoch_00004.pt", weights_only=True)
    assert state["epoch"] == 4
    assert state["history"]["epoch"] == [1, 2, 3, 4]
    assert set(state) >= {"model", "optimizer", "scheduler", "early_stopping", "rng", "split"}
    assert set(state["model"]) == {"weight", "bias"}
    final = torch.load(tmp_path / "epoch_00005.pt", weights_only=True)
    assert final["history"]["val_loss"] == history["val_loss"].tolist()


def test_resume_from_a_finished_run_trains_the_extra_epochs(tmp_path):
    (x, y), validation = mismatch_problem()
    common = dict(validation=validation, seed=0)
    config = sgd(epochs=4, patience=None)
    train(Scalar(), half_squared_error, x, y, config=config, checkpoint_dir=tmp_path, **common)
    model = Scalar(w=-3.0)
    history = train(
        model,
        half_squared_error,
        x,
        y,
        config={**config, "epochs": 6},
        resume_from=tmp_path / "epoch_00004.pt",
        **common,
    )
    assert history["epoch"].tolist() == [1, 2, 3, 4, 5, 6]
    assert float(model.w.detach()) == pytest.approx(1 - 0.9**6, rel=1e-12)


def test_resume_keeps_the_early_stopping_state(tmp_path):
    r"""A checkpoint after the best epoch (7, see above) must remember it and its patience."""
    (x, y), validation = mismatch_problem()
    config = sgd(epochs=100, patience=3)
    common = dict(config=config, validation=validation, seed=0)
    full = train(Scalar(), half_squared_error, x, y, **common)
    assert full.attrs["best_epoch"] == 7 and len(full) == 10
    short = {**common, "config": {**config, "epochs": 8}}
    train(Scalar(), half_squared_error, x, y, **short, checkpoint_dir=tmp_path)
    model = Scalar(w=-3.0)
    resumed = train(
        model, half_squared_error, x, y, resume_from=tmp_path / "epoch_00008.pt", **common
    )
    pd.testing.assert_frame_equal(without_seconds(full), without_seconds(resumed))
    assert resumed.attrs["best_epoch"] == 7
    assert resumed.attrs["stopped_early"] is True
    assert float(model.w.detach()) == pytest.approx(1 - 0.9**7, rel=1e-12)


class NotATensor:
    pass


def test_corrupt_or_foreign_checkpoints_give_clear_errors(tmp_path):
    (x, y), validation = mismatch_problem()
    common = dict(config=sgd(epochs=2), validation=validation, seed=0)
    train(Scalar(), half_squared_error, x, y, checkpoint_dir=tmp_path / "ok", **common)
    good = tmp_path / "ok" / "epoch_00002.pt"

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint" * 10)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    pickled = tmp_path / "pickled.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "object": NotATensor()}, pickled)

    for path in (garbage, truncated, pickled):
        with pytest.raises(ValueError, match="cannot read checkpoint"):
            train(Scalar(), half_squared_error, x, y, resume_from=path, **common)
    with pytest.raises(ValueError, match="not a checkpoint"):
        train(Scalar(), half_squared_error, x, y, resume_from=foreign, **common)
    with pytest.raises(FileNotFoundError):
        train(Scalar(), half_squared_error, x, y, resume_from=tmp_path / "none.pt", **common)
    # a checkpoint of other data
    with pytest.raises(ValueError, match=r"shapes"):
        train(Scalar(), half_squared_error, x[:1], y[:1], resume_from=good, **common)
    # a checkpoint of another model
    with pytest.raises(ValueError, match="does not match the model"):
        train(linear_model(d=1), half_squared_error, x, y, resume_from=good, **common)


# --------------------------------------------------------------------------------------------
# Learning rates, parameter groups, gradient clipping


def test_exponential_schedule_decays_geometrically():
    x, y = noisy_regression(n=40)
    history = train(
        linear_model(),
        half_squared_error,
        x,
        y,
        config={**FAST, "epochs": 6, "lr": 0.1, "scheduler": "exponential", "gamma": 0.8},
        seed=0,
    )
    np.testing.assert_allclose(history["lr"], 0.1 * 0.8 ** np.arange(6), rtol=1e-12)


def test_plateau_schedule_decays_only_after_patience():
    def constant_loss(model, x):
        return 0.0 * model(x).sum() + 1.0

    x = torch.ones(8, 1, dtype=DTYPE)
    p = 2
    history = train(
        Scalar(),
        constant_loss,
        x,
        config=TrainConfig(
            epochs=12,
            batch_size=4,
            lr=0.1,
            scheduler="plateau",
            gamma=0.5,
            scheduler_patience=p,
            patience=None,
        ),
        seed=0,
    )
    # Epoch 1 sets the best loss; every run of p + 1 epochs without improvement (epochs 2-4,
    # 5-7, ...) halves the rate at its end, so epoch e trains with 0.1 / 2^((e - 2) // (p + 1)).
    epochs = history["epoch"].to_numpy()
    expected = 0.1 * 0.5 ** np.maximum(0, (epochs - 2) // (p + 1))
    np.testing.assert_allclose(history["lr"], expected, rtol=1e-12)
    assert history["lr"].iloc[-1] < 0.1


def test_no_schedule_keeps_lr_constant():
    x, y = noisy_regression(n=40)
    config = {**FAST, "scheduler": None}
    history = train(linear_model(), half_squared_error, x, y, config=config, seed=0)
    assert (history["lr"] == 1e-3).all()


class Pair(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Module()
        self.a.w = nn.Parameter(torch.zeros(3, dtype=DTYPE))
        self.b = nn.Module()
        self.b.w = nn.Parameter(torch.zeros(2, dtype=DTYPE))

    def forward(self, x):
        return x * 0


def linear_loss(model, x):
    r"""Gradient 1 in every coordinate of both parameters."""
    return model.a.w.sum() + model.b.w.sum() + model(x).sum()


@pytest.mark.parametrize("form", ["mapping", "pairs"])
def test_param_groups_get_their_own_learning_rate(form):
    model = Pair()
    groups = {"b": 0.01} if form == "mapping" else [(model.b, 0.01)]
    x = torch.zeros(4, 1, dtype=DTYPE)
    history = train(
        model,
        linear_loss,
        x,
        config=sgd(epochs=1, batch_size=4, param_groups=groups, validation_fraction=0.0),
        seed=0,
    )
    # one SGD step with unit gradients moves each parameter by minus its learning rate
    torch.testing.assert_close(model.a.w, torch.full((3,), -0.1, dtype=DTYPE))
    torch.testing.assert_close(model.b.w, torch.full((2,), -0.01, dtype=DTYPE))
    assert history["lr"].tolist() == [0.1]


def test_param_groups_errors():
    model = Pair()
    x = torch.zeros(4, 1, dtype=DTYPE)

    def config(groups):
        return {"epochs": 1, "validation_fraction": 0.0, "param_groups": groups}

    with pytest.raises(ValueError, match="'c'"):
        train(model, linear_loss, x, config=config({"c": 0.1}), seed=0)
    with pytest.raises(ValueError, match="shares parameters"):
        train(model, linear_loss, x, config=config([(model.b, 0.1), (model.b.w, 0.2)]), seed=0)
    stranger = nn.Parameter(torch.zeros(1))
    with pytest.raises(ValueError, match="not the model's"):
        train(model, linear_loss, x, config=config([(stranger, 0.1)]), seed=0)
    with pytest.raises(ValueError, match="learning rate"):
        train(model, linear_loss, x, config=config({"b": -1.0}), seed=0)


def test_gradient_clipping_bounds_the_sgd_update():
    def steep_loss(model, x):
        return 1000.0 * (model.a.w.sum() + model.b.w.sum()) + model(x).sum()

    x = torch.zeros(4, 1, dtype=DTYPE)
    common = sgd(epochs=1, batch_size=4, validation_fraction=0.0)
    clipped, free = Pair(), Pair()
    train(clipped, steep_loss, x, config={**common, "grad_clip": 1.0}, seed=0)
    train(free, steep_loss, x, config=common, seed=0)

    def update_norm(model):
        return float(torch.linalg.norm(torch.cat([model.a.w, model.b.w]).detach()))

    # the gradient (norm 1000 sqrt(5)) is rescaled to norm 1: the step has norm lr * 1
    assert update_norm(clipped) == pytest.approx(0.1, rel=1e-8)
    assert update_norm(free) == pytest.approx(0.1 * 1000 * math.sqrt(5), rel=1e-12)


def test_gradient_clipping_bounds_the_gradient_adam_sees():
    norms = []

    def record(optimizer, args, kwargs):
        grads = [p.grad for g in optimizer.param_groups for p in g["params"]]
        norms.append(float(torch.linalg.norm(torch.cat([g.flatten() for g in grads]))))

    x, y = noisy_regression(n=64)
    handle = register_optimizer_step_pre_hook(record)
    try:
        train(linear_model(), stochastic_loss, x, 100 * y, config=SHORT, seed=0)
        unclipped = max(norms)
        norms.clear()
        clipped = {**SHORT, "grad_clip": 0.5}
        train(linear_model(), stochastic_loss, x, 100 * y, config=clipped, seed=0)
    finally:
        handle.remove()
    assert unclipped > 0.5  # the bound is active in this problem
    assert len(norms) == 3 * math.ceil(round(0.8 * 64) / 16)
    assert max(norms) <= 0.5 * (1 + 1e-9)


# --------------------------------------------------------------------------------------------
# Configuration, progress, devices


def test_config_is_a_train_config_a_dict_or_none():
    config = TrainConfig(epochs=2, batch_size=8)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.epochs = 3  # type: ignore[misc]
    x, y = noisy_regression(n=40)
    by_config = train(linear_model(), half_squared_error, x, y, config=config, seed=0)
    by_dict = train(
        linear_model(), half_squared_error, x, y, config={"epochs": 2, "batch_size": 8}, seed=0
    )
    pd.testing.assert_frame_equal(without_seconds(by_config), without_seconds(by_dict))
    assert len(by_config) == 2
    x, y = x[:8], y[:8]  # one batch per epoch: the defaults' epochs (2,000, stretched) are quick
    defaults = train(linear_model(), half_squared_error, x, y, config=None, seed=0)
    explicit = train(linear_model(), half_squared_error, x, y, config=TrainConfig(), seed=0)
    pd.testing.assert_frame_equal(without_seconds(defaults), without_seconds(explicit))
    with pytest.raises(TypeError, match="bad training options.*epoch"):
        train(linear_model(), half_squared_error, x, y, config={"epoch": 2})
    with pytest.raises(TypeError, match="TrainConfig, a dict or None"):
        train(linear_model(), half_squared_error, x, y, config=2)


def test_default_epochs_are_stretched_to_the_minimum_number_of_steps():
    # given epochs are kept as they are
    given = TrainConfig(epochs=7)
    assert given.resolved(10) is given
    # 8,000 rows: 32 batches of 256, 200 epochs make 6,400 >= 6,000 steps: the settings of old
    big = TrainConfig().resolved(8_000)
    assert big == dataclasses.replace(TrainConfig(), epochs=DEFAULT_EPOCHS)
    assert big.gamma is None and big.patience == 20
    # 800 rows: 4 batches, 800 steps in 200 epochs: stretched 7.5 times, same final lr fraction
    small = TrainConfig().resolved(800)
    assert (small.epochs, small.patience, small.scheduler_patience) == (1500, 150, 38)
    assert small.epochs * math.ceil(800 / 256) >= small.min_steps
    assert small.gamma**small.epochs == pytest.approx(0.99**DEFAULT_EPOCHS, rel=1e-9)
    # the plateau schedule keeps its factor; no patience stays none
    plateau = TrainConfig(scheduler="plateau", patience=None).resolved(800)
    assert plateau.gamma is None and plateau.patience is None and plateau.epochs == 1500
    assert TrainConfig(min_steps=100).resolved(800).epochs == DEFAULT_EPOCHS
    assert TrainConfig().resolved(100).epochs == MAX_STRETCH * DEFAULT_EPOCHS  # one batch
    # the loop resolves on the training rows (after the validation split) and says so
    x, y = noisy_regression(n=40)
    config = {"batch_size": 8, "min_steps": 2_000, "patience": None, "validation_fraction": 0.2}
    history = train(linear_model(), half_squared_error, x, y, config=config, seed=0)
    assert len(history) == history.attrs["epochs"] == 500  # 32 rows: 4 batches, 2,000 steps
    assert history["lr"].iloc[-1] == pytest.approx(1e-3 * 0.99 ** (DEFAULT_EPOCHS - 0.4), rel=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"epochs": 0}, ValueError, "epochs"),
        ({"epochs": 2.5}, TypeError, "epochs"),
        ({"min_steps": 0}, ValueError, "min_steps"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"validation_batch_size": 0}, ValueError, "validation_batch_size"),
        ({"lr": 0.0}, ValueError, "lr"),
        ({"lr": math.nan}, ValueError, "lr"),
        ({"validation_fraction": 1.0}, ValueError, "validation_fraction"),
        ({"validation_fraction": -0.1}, ValueError, "validation_fraction"),
        ({"scheduler": "cosine"}, ValueError, "cosine"),
        ({"scheduler": "plateau", "gamma": 1.0}, ValueError, "gamma"),
        ({"gamma": 1.5}, ValueError, "gamma"),
        ({"patience": 0}, ValueError, "patience"),
        ({"grad_clip": -1.0}, ValueError, "grad_clip"),
        ({"weight_decay": -1.0}, ValueError, "weight_decay"),
    ],
)
def test_train_config_rejects_bad_values(kwargs, error, match):
    with pytest.raises(error, match=match):
        TrainConfig(**kwargs)
    x, y = noisy_regression(n=10)
    with pytest.raises(error, match=match):
        train(linear_model(), half_squared_error, x, y, config=kwargs)


def test_bad_data_raises_naming_sizes():
    x, y = noisy_regression(n=10)
    model = linear_model()
    with pytest.raises(ValueError, match=r"\(10, 3\), \(9, 1\)"):
        train(model, half_squared_error, x, y[:9])
    with pytest.raises(ValueError, match="empty"):
        train(model, half_squared_error, x[:0], y[:0])
    with pytest.raises(ValueError, match="no data"):
        train(model, half_squared_error)
    with pytest.raises(ValueError, match="n=2 samples gives 0 validation"):
        train(model, half_squared_error, x[:2], y[:2], config={"validation_fraction": 0.2})
    with pytest.raises(ValueError, match="validation has 1 tensors, data has 2"):
        train(model, half_squared_error, x, y, validation=(x,))
    with pytest.raises(ValueError, match=r"validation\[0\] has shape \(4, 2\)"):
        train(model, half_squared_error, x, y, validation=(x[:4, :2], y[:4]))
    with pytest.raises(ValueError, match=r"validation tensors must share.*\(4, 3\), \(3, 1\)"):
        train(model, half_squared_error, x, y, validation=(x[:4], y[:3]))
    with pytest.raises(TypeError, match="nn.Module"):
        train(lambda t: t, half_squared_error, x, y)
    with pytest.raises(TypeError, match="callable"):
        train(model, "mse", x, y)
    with pytest.raises(TypeError, match="seed"):
        train(model, half_squared_error, x, y, seed=1.5)
    with pytest.raises(ValueError, match="checkpoint_dir"):
        train(model, half_squared_error, x, y, checkpoint_every=2)
    with pytest.raises(ValueError, match=r"scalar, got shape \(10, 1\)"):
        config = {"validation_fraction": 0.0, "epochs": 1}
        train(model, lambda m, x, y: (m(x) - y) ** 2, x, y, config=config)


def test_numpy_data_and_string_device_are_accepted():
    x, y = noisy_regression(n=20)
    model = linear_model()
    config = {**FAST, "epochs": 2}
    history = train(model, half_squared_error, x.numpy(), y.numpy(), config=config, device="cpu")
    assert len(history) == 2
    assert model.weight.device.type == "cpu"


def test_progress_bar_shows_losses_only_when_asked(capsys):
    x, y = noisy_regression(n=20)
    config = {**FAST, "epochs": 2}
    train(linear_model(), half_squared_error, x, y, config=config, seed=0)
    assert capsys.readouterr().err == ""
    train(linear_model(), half_squared_error, x, y, config=config, seed=0, progress=True)
    err = capsys.readouterr().err
    assert "train=" in err and "val=" in err and "2/2" in err
