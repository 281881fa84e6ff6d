r"""Tests of ebm_lfi.posterior.plotting.pair_plot: the grid, the saved file, the legend,
weighting of the scatter points, agreement with Posterior.plot, and validation. Structure, not
pixels."""

import sys
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("matplotlib")

from matplotlib.figure import Figure  # noqa: E402

from ebm_lfi.posterior.plotting import pair_plot
from ebm_lfi.posterior.posterior import Posterior


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _scatter_points(fig: Figure, p: int, row: int, col: int) -> np.ndarray:
    r"""Offsets of all scatter collections in axes ``(row, col)`` of a ``p x p`` grid."""
    ax = fig.axes[row * p + col]
    return np.concatenate([c.get_offsets() for c in ax.collections])


def test_grid_labels_and_png(tmp_path):
    pyplot_loaded = "matplotlib.pyplot" in sys.modules
    samples = torch.randn(200, 3, generator=_gen(0), dtype=torch.float64)
    path = tmp_path / "pair.png"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = pair_plot(samples, parameter_names=["a", "b", "c"], path=path, bins=15)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 9
    visible = [[fig.axes[3 * i + j].axison for j in range(3)] for i in range(3)]
    assert visible == [[j <= i for j in range(3)] for i in range(3)]
    assert [fig.axes[6 + j].get_xlabel() for j in range(3)] == ["a", "b", "c"]
    assert [fig.axes[3 * i].get_ylabel() for i in (1, 2)] == ["b", "c"]
    assert fig.legends == []  # nothing to tell apart
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert ("matplotlib.pyplot" in sys.modules) == pyplot_loaded
    # all draws are scattered when there are fewer than max_points and no weights
    np.testing.assert_array_equal(_scatter_points(fig, 3, 2, 0), samples[:, [0, 2]].numpy())
    # default names, a single parameter given as a 1-d numpy array
    one = pair_plot(np.arange(10.0))
    assert len(one.axes) == 1 and one.axes[0].get_xlabel() == "theta_1"


def test_reference_and_truth_get_a_legend():
    samples = torch.randn(300, 2, generator=_gen(1))
    reference = torch.randn(100, 2, generator=_gen(2)) + 1.0
    fig = pair_plot(samples, reference=reference, truth=[0.0, 1.0], label="ours")
    legend_texts = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert legend_texts == ["ours", "reference"]
    # one scatter collection per sample set below the diagonal
    assert len(fig.axes[2].collections) == 2
    truth_only = pair_plot(samples, truth=torch.zeros(2))
    assert [t.get_text() for t in truth_only.legends[0].get_texts()] == ["samples"]


def test_weights_drive_the_scatter_points():
    # two well separated clusters; all weight on the right one
    left = torch.randn(150, 2, generator=_gen(3), dtype=torch.float64) - 10.0
    right = torch.randn(150, 2, generator=_gen(4), dtype=torch.float64) + 10.0
    samples = torch.cat([left, right])
    weights = torch.cat([torch.zeros(150), torch.rand(150, generator=_gen(5)) + 0.1])
    fig = pair_plot(samples, weights=weights, max_points=80, seed=0)
    points = _scatter_points(fig, 2, 1, 0)
    assert points.shape == (80, 2)  # resampled by weight, max_points of them
    assert (points > 0).all()  # zero-weight draws never appear
    # reproducible from seed, different with another seed
    again = _scatter_points(pair_plot(samples, weights=weights, max_points=80, seed=0), 2, 1, 0)
    other = _scatter_points(pair_plot(samples, weights=weights, max_points=80, seed=1), 2, 1, 0)
    np.testing.assert_array_equal(points, again)
    assert not np.array_equal(points, other)


def test_posterior_plot_is_pair_plot_with_the_posteriors_fields():
    samples = torch.randn(120, 2, generator=_gen(6), dtype=torch.float64)
    weights = torch.rand(120, generator=_gen(7), dtype=torch.float64)
    ref, ref_w = samples + 0.5, weights.flip(0)
    post = Posterior(samples, weights=weights, parameter_names=["u", "v"], method="m")
    a = post.plot(reference=Posterior(ref, weights=ref_w), max_points=50)
    b = pair_plot(
        samples, weights, ["u", "v"], reference=ref, reference_weights=ref_w, label="m",
        max_points=50,
    )  # fmt: skip
    for ax_a, ax_b in zip(a.axes, b.axes):
        assert ax_a.get_xlim() == ax_b.get_xlim() and ax_a.get_ylim() == ax_b.get_ylim()
    np.testing.assert_array_equal(_scatter_points(a, 2, 1, 0), _scatter_points(b, 2, 1, 0))


def test_invalid_inputs_name_the_shapes():
    x = torch.randn(20, 3, generator=_gen(8))
    with pytest.raises(ValueError, match=r"2 labels for 3 parameters"):
        pair_plot(x, parameter_names=["a", "b"])
    with pytest.raises(ValueError, match=r"weights must have shape \(20,\)"):
        pair_plot(x, weights=torch.ones(19))
    with pytest.raises(ValueError, match="non-negative"):
        pair_plot(x, weights=-torch.ones(20))
    with pytest.raises(ValueError, match="not all zero"):
        pair_plot(x, weights=torch.zeros(20))
    with pytest.raises(ValueError, match=r"reference must have shape \(m, 3\), got \(5, 2\)"):
        pair_plot(x, reference=torch.zeros(5, 2))
    with pytest.raises(ValueError, match=r"reference_weights must have shape \(5,\)"):
        pair_plot(x, reference=torch.zeros(5, 3), reference_weights=torch.ones(4))
    with pytest.raises(ValueError, match="without a reference"):
        pair_plot(x, reference_weights=torch.ones(20))
    with pytest.raises(ValueError, match=r"truth must have shape \(3,\)"):
        pair_plot(x, truth=[0.0, 0.0])
    with pytest.raises(ValueError, match=r"samples must have shape \(n, p\)"):
        pair_plot(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="finite"):
        pair_plot(torch.tensor([[0.0], [float("nan")]]))
    with pytest.raises(TypeError, match="real-valued"):
        pair_plot(torch.ones(4, 2, dtype=torch.bool))
