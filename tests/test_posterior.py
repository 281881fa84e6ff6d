r"""Tests of ebm_lfi.posterior.posterior.Posterior: summaries against explicit float64 computations,
conversions, resampling within standard errors, storage round trips, plots and validation."""

import math
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from ebm_lfi.posterior.posterior import Posterior


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _weighted(n=200, p=3, seed=0):
    g = _gen(seed)
    samples = torch.randn(n, p, generator=g, dtype=torch.float64)
    weights = torch.rand(n, generator=g, dtype=torch.float64)
    return samples, weights


# ------------------------------------------------------------------ construction


def test_defaults_shapes_and_dtypes():
    x = torch.randn(10, 2, generator=_gen(0))
    post = Posterior(x)
    assert post.samples is x or torch.equal(post.samples, x)
    assert post.samples.dtype == torch.float32
    assert post.parameter_names == ["theta_1", "theta_2"]
    assert post.num_parameters == 2 and post.num_samples == 10 and len(post) == 10
    assert post.weights is None and post.chains is None
    assert post.diagnostics == {} and post.method is None
    assert Posterior(np.zeros((3, 1))).samples.dtype == torch.float64
    assert Posterior([[1, 2], [3, 4]]).samples.dtype == torch.get_default_dtype()


def test_chains_are_flattened_chain_by_chain():
    chains = torch.arange(24, dtype=torch.float64).reshape(3, 4, 2)
    post = Posterior(chains=chains, parameter_names=["a", "b"])
    assert post.chains.shape == (3, 4, 2)
    assert torch.equal(post.samples[5], chains[1, 1])
    assert post.num_samples == 12
    # consistent samples may be passed along; inconsistent ones are refused
    Posterior(chains.reshape(12, 2), chains=chains)
    with pytest.raises(ValueError, match="flattened"):
        Posterior(chains.reshape(12, 2).flip(0), chains=chains)


def test_weights_are_normalised_and_may_follow_chains():
    samples, weights = _weighted()
    post = Posterior(samples, weights=5.0 * weights)
    torch.testing.assert_close(post.weights, weights / weights.sum(), rtol=0, atol=1e-15)
    chains = samples[:120].reshape(4, 30, 3)
    post = Posterior(chains=chains, weights=weights[:120].reshape(4, 30))
    assert post.weights.shape == (120,)
    torch.testing.assert_close(post.weights.sum(), torch.tensor(1.0, dtype=torch.float64))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(), ValueError, "samples"),
        (dict(samples=np.zeros(5)), ValueError, r"\(n, p\)"),
        (dict(samples=np.zeros((0, 2))), ValueError, r"\(n, p\)"),
        (dict(chains=np.zeros((5, 2))), ValueError, r"\(c, d, p\)"),
        (dict(samples=np.array([[0.0, np.nan]])), ValueError, "NaN"),
        (dict(samples=np.zeros((4, 2)), parameter_names=["a"]), ValueError, "1 parameter names"),
        (dict(samples=np.zeros((4, 2)), parameter_names=["a", "a"]), ValueError, "unique"),
        (dict(samples=np.zeros((4, 2)), parameter_names="ab"), TypeError, "sequence"),
        (dict(samples=np.zeros((4, 2)), weights=np.ones(3)), ValueError, r"\(4,\)"),
        (dict(samples=np.zeros((4, 2)), weights=[1.0, -1.0, 1.0, 1.0]), ValueError, "negative"),
        (dict(samples=np.zeros((4, 2)), weights=np.zeros(4)), ValueError, "all zero"),
        (dict(samples=np.zeros((4, 2)), weights=[1.0, np.nan, 1.0, 1.0]), ValueError, "NaN"),
        (dict(samples=np.zeros((4, 2)), diagnostics=[1]), TypeError, "dict"),
        (dict(samples=np.zeros((4, 2), dtype=bool)), TypeError, "real"),
        (dict(samples=[["a"]]), TypeError, "numeric"),
    ],
)
def test_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        Posterior(**kwargs)


# ---------------------------------------------------------------------- summaries


def test_weighted_mean_cov_std_match_numpy():
    samples, weights = _weighted()
    post = Posterior(samples, weights=weights)
    x, w = samples.numpy(), weights.numpy()
    np.testing.assert_allclose(post.mean().numpy(), np.average(x, axis=0, weights=w), atol=1e-13)
    expected_cov = np.cov(x.T, aweights=w)
    np.testing.assert_allclose(post.cov().numpy(), expected_cov, atol=1e-13)
    np.testing.assert_allclose(post.std().numpy(), np.sqrt(np.diag(expected_cov)), atol=1e-13)


def test_unweighted_summaries_match_numpy():
    samples, _ = _weighted(seed=1)
    post = Posterior(samples)
    x = samples.numpy()
    np.testing.assert_allclose(post.mean().numpy(), x.mean(0), atol=1e-13)
    np.testing.assert_allclose(post.cov().numpy(), np.cov(x.T), atol=1e-13)
    np.testing.assert_allclose(post.std().numpy(), x.std(0, ddof=1), atol=1e-13)
    assert post.mean().dtype == torch.float64
    assert Posterior(samples.float()).mean().dtype == torch.float32


def test_weighted_quantiles_equal_quantiles_of_repeated_draws():
    g = _gen(2)
    samples = torch.randn(25, 2, generator=g, dtype=torch.float64)
    counts = torch.randint(1, 5, (25,), generator=g)
    post = Posterior(samples, weights=counts.double())
    repeated = np.repeat(samples.numpy(), counts.numpy(), axis=0)
    total = int(counts.sum())
    # include probabilities on the steps of the CDF (k / total), where rounding matters
    qs = [0.0, 0.025, 0.1, 3 / total, 0.5, 17 / total, 0.9, 0.975, 1.0]
    expected = np.quantile(repeated, qs, axis=0, method="inverted_cdf")
    np.testing.assert_array_equal(post.quantile(qs).numpy(), expected)
    assert post.quantile(0.5).shape == (2,)
    assert post.quantile(torch.tensor([0.2, 0.8])).shape == (2, 2)


def test_unweighted_quantiles_and_zero_weights():
    samples = torch.randn(40, 3, generator=_gen(3), dtype=torch.float64)
    qs = [0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0]
    expected = np.quantile(samples.numpy(), qs, axis=0, method="inverted_cdf")
    np.testing.assert_array_equal(Posterior(samples).quantile(qs).numpy(), expected)
    # draws with zero weight never become a quantile
    weights = torch.ones(40, dtype=torch.float64)
    weights[samples[:, 0].argmin()] = 0.0
    got = Posterior(samples, weights=weights).quantile(0.0)[0]
    assert got == samples[weights > 0, 0].min()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Posterior(samples).quantile(1.5)


def test_kish_effective_sample_size():
    post = Posterior(torch.zeros(3, 1), weights=[1.0, 1.0, 2.0])
    # normalised weights (1/4, 1/4, 1/2): 1 / (1/16 + 1/16 + 1/4) = 8/3
    assert post.effective_sample_size == pytest.approx(8 / 3, rel=1e-6)
    assert Posterior(torch.zeros(7, 1)).effective_sample_size == 7.0


def test_sample_reproduces_the_weighted_mean():
    samples, weights = _weighted(n=300, p=2, seed=4)
    weights[::3] = 0.0
    post = Posterior(samples, weights=weights)
    n = 20_000
    draws = post.sample(n, seed=0)
    assert draws.shape == (n, 2)
    # Draws are iid from the weighted empirical measure: SE of their mean = std / sqrt(n).
    w = weights / weights.sum()
    mean = w @ samples
    var = w @ (samples - mean) ** 2
    assert bool((torch.abs(draws.mean(0) - mean) <= 4 * torch.sqrt(var / n)).all())
    # only rows with positive weight are drawn
    assert set(draws[:, 0].tolist()) <= set(samples[weights > 0, 0].tolist())
    assert torch.equal(draws, post.sample(n, seed=0))
    assert not torch.equal(draws, post.sample(n, seed=1))
    assert torch.equal(draws, post.sample(n, generator=_gen(0)))


def test_sample_unweighted_draws_rows():
    samples = torch.randn(50, 2, generator=_gen(5), dtype=torch.float64)
    draws = Posterior(samples).sample(500, seed=3)
    rows = {tuple(r) for r in samples.tolist()}
    assert all(tuple(r) in rows for r in draws.tolist())
    # every row is equally likely: each of 50 rows appears ~ Binomial(500, 1/50) times
    counts = np.unique(draws[:, 0].numpy(), return_counts=True)[1]
    assert counts.max() <= 10 + 4 * math.sqrt(500 * (1 / 50) * (49 / 50))


# -------------------------------------------------------------------- conversions


def test_to_pandas_keeps_names_weights_and_chains():
    chains = torch.randn(2, 5, 2, generator=_gen(6), dtype=torch.float64)
    weights = torch.rand(2, 5, generator=_gen(7), dtype=torch.float64)
    post = Posterior(chains=chains, weights=weights, parameter_names=["mu", "sigma"])
    df = post.to_pandas()
    assert list(df.columns) == ["chain", "draw", "mu", "sigma", "weight"]
    np.testing.assert_array_equal(df[["mu", "sigma"]].to_numpy(), chains.reshape(10, 2).numpy())
    np.testing.assert_array_equal(df["chain"], [0] * 5 + [1] * 5)
    np.testing.assert_array_equal(df["draw"], list(range(5)) * 2)
    np.testing.assert_allclose(df["weight"], (weights / weights.sum()).reshape(-1), atol=1e-15)
    assert list(Posterior(torch.zeros(3, 1)).to_pandas().columns) == ["theta_1"]
    with pytest.raises(ValueError, match="clash"):
        Posterior(torch.zeros(3, 1), parameter_names=["weight"]).to_pandas()


def test_to_arviz_keeps_chains_names_and_weights():
    chains = torch.randn(3, 7, 2, generator=_gen(8), dtype=torch.float64)
    post = Posterior(chains=chains, parameter_names=["a", "b"], method="m", diagnostics={"k": 4})
    idata = post.to_arviz()
    assert set(idata.posterior.data_vars) == {"a", "b"}
    np.testing.assert_array_equal(idata.posterior["b"].to_numpy(), chains[..., 1].numpy())
    assert idata.posterior.attrs["method"] == "m" and idata.attrs["k"] == 4

    samples, weights = _weighted(n=40, p=2, seed=9)
    post = Posterior(samples, weights=weights, parameter_names=["a", "b"])
    kept = post.to_arviz(resample=False)
    assert kept.posterior["a"].shape == (1, 40)
    np.testing.assert_array_equal(kept.posterior["a"].to_numpy()[0], samples[:, 0].numpy())
    np.testing.assert_allclose(
        kept.sample_stats["weight"].to_numpy()[0], post.weights.numpy(), atol=0
    )
    assert kept.posterior.attrs["weighted"] == 1

    resampled = post.to_arviz(seed=3)
    assert resampled.posterior.attrs["resampled_from_weighted"] == 1
    assert resampled.posterior.attrs["resample_seed"] == 3
    assert "sample_stats" not in resampled.groups()
    draws = resampled.posterior["a"].to_numpy()[0]
    np.testing.assert_array_equal(draws, post.sample(40, seed=3)[:, 0].numpy())


# ------------------------------------------------------------------------ storage


def test_save_load_round_trip_is_exact(tmp_path):
    chains = torch.randn(2, 6, 3, generator=_gen(10))  # float32 stays float32
    weights = torch.rand(2, 6, generator=_gen(11))
    diagnostics = {
        "num_simulations": 1000,
        "acceptance": 0.25,
        "name": "abc",
        "flag": True,
        "nothing": None,
        "nested": {"eps": [0.5, 0.25]},
        "nan": float("nan"),
        "ess": torch.tensor([1.5, 2.5], dtype=torch.float64),
        "per_chain": np.array([3, 4]),
        "history": pd.DataFrame({"epoch": [0, 1], "loss": [1.25, 0.5]}),
        "np_scalar": np.float64(0.125),
    }
    post = Posterior(
        chains=chains,
        weights=weights,
        parameter_names=["a", "b", "c"],
        diagnostics=diagnostics,
        method="sm-exchange",
    )
    path = tmp_path / "post.npz"
    post.save(path)
    with np.load(path, allow_pickle=False) as data:  # readable without pickle
        assert "samples" in data.files
    back = Posterior.load(path)
    assert back.samples.dtype == torch.float32
    assert torch.equal(back.samples, post.samples)
    assert torch.equal(back.chains, post.chains)
    assert torch.equal(back.weights, post.weights)
    assert back.parameter_names == ["a", "b", "c"] and back.method == "sm-exchange"
    d = back.diagnostics
    assert list(d) == list(diagnostics)
    for key in ("num_simulations", "acceptance", "name", "flag", "nothing", "nested", "np_scalar"):
        assert d[key] == diagnostics[key]
    assert math.isnan(d["nan"])
    assert torch.equal(d["ess"], diagnostics["ess"])
    np.testing.assert_array_equal(d["per_chain"], diagnostics["per_chain"])
    pd.testing.assert_frame_equal(d["history"], diagnostics["history"])


def test_save_skips_unsupported_diagnostics_and_load_rejects_other_files(tmp_path):
    post = Posterior(torch.zeros(2, 1), diagnostics={"fn": print, "ok": 1})
    with pytest.warns(UserWarning, match="'fn'"):
        post.save(tmp_path / "p.npz")
    assert Posterior.load(tmp_path / "p.npz").diagnostics == {"ok": 1}
    np.savez(tmp_path / "other.npz", samples=np.zeros((2, 1)))
    with pytest.raises(ValueError, match="not a saved"):
        Posterior.load(tmp_path / "other.npz")


# --------------------------------------------------------------- plot and repr


def test_plot_returns_a_figure_and_writes_a_png(tmp_path):
    from matplotlib.figure import Figure

    pyplot_loaded = "matplotlib.pyplot" in sys.modules
    samples, weights = _weighted(n=300, p=3, seed=12)
    post = Posterior(samples, weights=weights, parameter_names=["a", "b", "c"], method="m")
    reference = torch.randn(200, 3, generator=_gen(13), dtype=torch.float64) + 0.5
    path = tmp_path / "pair.png"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = post.plot(reference=reference, path=path, truth=[0.0, 0.0, 0.0], bins=20)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 9
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    legend_texts = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert legend_texts == ["m", "reference"]
    assert ("matplotlib.pyplot" in sys.modules) == pyplot_loaded
    # a single parameter, a Posterior as reference, no path
    one = Posterior(samples[:, :1])
    assert isinstance(one.plot(reference=Posterior(reference[:, :1])), Figure)
    with pytest.raises(ValueError, match=r"\(m, 3\)"):
        post.plot(reference=reference[:, :2])


def test_repr_summarises():
    post = Posterior(
        torch.tensor([[0.0, 10.0], [2.0, 10.0]]),
        weights=[1.0, 1.0],
        parameter_names=["alpha", "beta"],
        method="nce",
    )
    text = repr(post)
    assert "method='nce'" in text and "num_samples=2" in text and "ess=2.0" in text
    assert "alpha: 1 ± 1.41" in text and "beta: 10 ± 0" in text
