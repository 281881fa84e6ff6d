r"""Why ``ml`` fails on two_moons: the likelihood model, the normaliser head, or the sampler?

sbibm's two_moons has a 2-D :math:`x`, so the fitted energy model's log-normaliser

.. math:: \log Z(\theta) = \log \int \exp\big(\eta(\theta)^\top s(y) + b(y)\big)\, dy

can be computed on a fine grid over the transformed data :math:`y` at every :math:`\theta` of a
grid over the prior's box. The script fits ``el.methods.get("ml")`` (or another ratio method,
``--method``) on :math:`n` prior-predictive pairs and prints, for each observation:

* the normaliser check: :math:`c(\theta) + \log Z(\theta)` should be constant in
  :math:`\theta` (``c`` the fitted head); its spread over the :math:`\theta` grid against the
  spread of :math:`\log Z` itself, and the grid's convergence (two resolutions, the mass on
  the grid's rim);
* C2ST against sbibm's reference posterior of four posteriors: the method's own MCMC draws,
  the grid posterior of the method's potential (the same target without the sampler), the grid
  posterior with :math:`c` replaced by :math:`-\log Z` (the likelihood model alone) and the grid
  posterior of the true two_moons likelihood (a check of the grid itself);
* the held-out log-likelihood per pair of the grid-normalised model against the true one.

    python scripts/check_ml_normalizer.py --budget 1000 --observations 1 2
"""

from __future__ import annotations

import argparse
import math
import time
import warnings

import torch

import ebm_lfi as el

THETA_GRID = 201  # points per axis of the theta grid over the prior box
Y_GRID = 321  # points per axis of the y grid


def true_log_likelihood(theta, x):
    r"""log p(x | theta) of two_moons (sbibm's simulator: a ~ U(-pi/2, pi/2), r ~ N(0.1,
    0.01^2), x = (r cos a + 0.25 - |theta_1 + theta_2| / sqrt 2, r sin a + (theta_2 - theta_1)
    / sqrt 2)); broadcasts ``theta`` (..., 2) against ``x`` (..., 2)."""
    z0 = (theta[..., 0] + theta[..., 1]) / math.sqrt(2.0)
    z1 = (theta[..., 1] - theta[..., 0]) / math.sqrt(2.0)
    u = x[..., 0] + z0.abs() - 0.25
    v = x[..., 1] - z1
    r = torch.sqrt(u**2 + v**2)
    log_r = -0.5 * ((r - 0.1) / 0.01) ** 2 - 0.5 * math.log(2 * math.pi * 0.01**2)
    out = log_r - math.log(math.pi) - torch.log(r)  # polar to Cartesian, a uniform on width pi
    return torch.where(u > 0, out, torch.full_like(out, -math.inf))


def theta_grid(n=THETA_GRID):
    """Cell centres of an n x n grid over (-1, 1)^2 and the cell width."""
    width = 2.0 / n
    axis = -1 + width * (torch.arange(n, dtype=torch.float64) + 0.5)
    t1, t2 = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([t1.reshape(-1), t2.reshape(-1)], 1), width


def grid_draws(log_density, grid, width, n, seed):
    """n draws from a density given on the cells of a grid (uniform within the cell)."""
    gen = torch.Generator().manual_seed(seed)
    p = torch.softmax(log_density - log_density.max(), 0)
    idx = torch.multinomial(p, n, replacement=True, generator=gen)
    jitter = (torch.rand(n, 2, generator=gen, dtype=grid.dtype) - 0.5) * width
    return (grid[idx] + jitter).clamp(-1 + 1e-9, 1 - 1e-9)


@torch.no_grad()
def log_normalizer(model, theta, lower, upper, n=Y_GRID, chunk=128):
    r"""log Z(theta) on an n x n grid over the box [lower, upper] of y, and the fraction of
    the mass in the grid's outer ring (where the integrand should be negligible)."""
    axes = [torch.linspace(lower[j], upper[j], n, dtype=torch.float64) for j in range(2)]
    g1, g2 = torch.meshgrid(*axes, indexing="ij")
    y = torch.stack([g1.reshape(-1), g2.reshape(-1)], 1)
    cell = float((axes[0][1] - axes[0][0]) * (axes[1][1] - axes[1][0]))
    s = model.statistics_y(y)
    b = model.log_unnormalized_y(y, theta[:1]) - (model.natural_parameters(theta[:1]) * s).sum(-1)
    rim = (g1 == axes[0][0]) | (g1 == axes[0][-1]) | (g2 == axes[1][0]) | (g2 == axes[1][-1])
    rim = rim.reshape(-1)
    out, rim_mass = [], []
    for start in range(0, theta.shape[0], chunk):
        eta = model.natural_parameters(theta[start : start + chunk])
        f = eta @ s.T + b  # (chunk, n^2)
        log_z = torch.logsumexp(f, 1)
        out.append(log_z + math.log(cell))
        rim_mass.append(torch.exp(torch.logsumexp(f[:, rim], 1) - log_z))
    return torch.cat(out), torch.cat(rim_mass)


def spread(values):
    """Standard deviation and range of the finite values."""
    v = values[torch.isfinite(values)]
    return float(v.std()), float(v.max() - v.min())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=int, default=1000)
    parser.add_argument("--observations", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--method", default="ml")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-samples", type=int, default=1000)
    args = parser.parse_args()
    torch.set_default_dtype(torch.float32)

    import sbibm  # a benchmark-only dependency

    task = sbibm.get_task("two_moons")
    prior = el.BoxUniform([-1.0, -1.0], [1.0, 1.0])
    simulate = task.get_simulator()

    def simulator(theta):
        return simulate(torch.as_tensor(theta).reshape(1, -1).float())[0]

    theta, x = el.simulate(el.Simulator(simulator, batched=False), prior, args.budget, seed=0)
    theta, x = theta.double(), x.double()
    start = time.perf_counter()
    method = el.methods.get(args.method, prior=prior)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        method.fit(theta, x, seed=args.seed)
    fit = method.fit_stage
    model = fit.model
    print(
        f"{args.method} on {args.budget} pairs: fit {time.perf_counter() - start:.0f} s, "
        f"{ {k: v for k, v in fit.summary().items() if k != 'chains'} }"
    )
    if "chains" in fit.diagnostics:
        print("chains:", fit.diagnostics["chains"])

    grid, width = theta_grid()
    with torch.no_grad():
        y_train = model.transform_x(x)
        lo, hi = y_train.min(0).values, y_train.max(0).values
        pad = 0.5 * (hi - lo)
        log_z, rim = log_normalizer(model, grid, (lo - pad).tolist(), (hi + pad).tolist())
        wide = 2.0 * (hi - lo)
        log_z_wide, _ = log_normalizer(
            model, grid[::97], (lo - wide).tolist(), (hi + wide).tolist(), n=2 * Y_GRID
        )
        eta_c = model.natural_and_normalizer(grid)
        c = eta_c[1]
    gap = c + log_z
    print(
        f"y grid {Y_GRID}^2 over [{(lo - pad).tolist()}, {(hi + pad).tolist()}]; "
        f"rim mass max {float(rim.max()):.2e}; log Z against a grid twice as fine and wider: "
        f"max |diff| {float((log_z[::97] - log_z_wide).abs().max()):.3f}"
    )
    sd_z, range_z = spread(log_z)
    sd_c, range_c = spread(c)
    sd_gap, range_gap = spread(gap)
    corr = float(torch.corrcoef(torch.stack([c, -log_z]))[0, 1])
    print(
        f"over the theta grid: log Z sd {sd_z:.2f} range {range_z:.2f}; c sd {sd_c:.2f} "
        f"range {range_c:.2f}; c + log Z sd {sd_gap:.2f} range {range_gap:.2f}; "
        f"corr(c, -log Z) {corr:.3f}"
    )
    # held-out log-likelihood per pair, in x (the Jacobian of y = t(x) added)
    theta_t, x_t = el.simulate(el.Simulator(simulator, batched=False), prior, 2000, seed=12345)
    theta_t, x_t = theta_t.double(), x_t.double()
    with torch.no_grad():
        y_t = model.transform_x(x_t)
        log_z_t, _ = log_normalizer(model, theta_t, (lo - pad).tolist(), (hi + pad).tolist())
        jac = model.x_transform.log_abs_det_jacobian(x_t).reshape(-1)
        model_ll = model.log_unnormalized_y(y_t, theta_t) - log_z_t + jac
        true_ll = true_log_likelihood(theta_t, x_t)
    print(
        f"held-out log-likelihood per pair (2000 pairs): model {float(model_ll.mean()):.2f}, "
        f"true {float(true_ll.mean()):.2f}"
    )

    for number in args.observations:
        x_o = task.get_observation(number)[0].double()
        reference = task.get_reference_posterior_samples(number).double()
        with torch.no_grad():
            y_o = model.transform_x(x_o[None])
            s_o = model.statistics_y(y_o)
            eta, c = model.natural_and_normalizer(grid)
            data_term = (eta * s_o).sum(-1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            post = method.posterior(x_o, args.num_samples, seed=args.seed)
        own = post.samples if post.weights is None else post.sample(args.num_samples, seed=0)
        # the true likelihood needs a finer grid (the moons are ~0.01 wide)
        fine, fine_width = theta_grid(1001)
        true_fine = true_log_likelihood(fine, x_o)
        candidates = {
            "method's MCMC": own.double(),
            "grid, eta's + c (method's potential)": grid_draws(data_term + c, grid, width, 1000, 1),
            "grid, eta's - log Z (model likelihood)": grid_draws(
                data_term - log_z, grid, width, 1000, 2
            ),
            "grid, true likelihood (1001^2)": grid_draws(true_fine, fine, fine_width, 1000, 3),
            "prior": grid_draws(torch.zeros(grid.shape[0]), grid, width, 1000, 4),
        }
        print(f"observation {number}: x_o {x_o.tolist()}")
        for name, samples in candidates.items():
            score = el.metrics.c2st(samples, reference, seed=0)
            print(f"  C2ST {score:.3f}  {name}")
        # a slice through the reference mean of theta_2, as docs/benchmarks.md reads it
        t2 = float(reference[:, 1].mean())
        line = torch.stack([torch.linspace(-0.99, 0.99, 9, dtype=torch.float64)] * 2, 1)
        line[:, 1] = t2
        with torch.no_grad():
            eta_l, c_l = model.natural_and_normalizer(line)
            lz_l, _ = log_normalizer(model, line, (lo - pad).tolist(), (hi + pad).tolist())
            d_l = (eta_l * s_o).sum(-1)
        print(f"  along theta_1 at theta_2 = {t2:.2f}: theta_1, eta's_o + c, eta's_o - log Z")
        for i in range(line.shape[0]):
            print(
                f"    {float(line[i, 0]):+.2f}  {float(d_l[i] + c_l[i]):8.2f}  "
                f"{float(d_l[i] - lz_l[i]):8.2f}"
            )


if __name__ == "__main__":
    main()
