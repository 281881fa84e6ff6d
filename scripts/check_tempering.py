"""Does the sampler of a tractable posterior find its modes? MCMC chains against tempered SMC,
both on the **true** likelihood of sbibm's SLCP, so that only the sampler is judged.

SLCP: five parameters in U(-3, 3), four draws of a 2-D Gaussian with mean (θ1, θ2), standard
deviations θ3², θ4² and correlation tanh(θ5); the signs of θ3 and θ4 do not matter, so the
posterior has (at least) four modes, and it is narrow. The MCMC row is what the ``nce`` stage
does (:func:`~ebm_lfi.samplers.mcmc.potential.sample_potential`, MALA, 20 chains started at the
parameters of best likelihood among 20,000 prior draws, 500 burn-in steps, 100 kept per chain);
the SMC row is :func:`~ebm_lfi.samplers.mcmc.tempering.sample_tempered` with 2,000 particles.
C2ST against sbibm's reference draws (lower is better, 0.5 is perfect)::

    python scripts/check_tempering.py --observations 1 2 3

With ``--learned TASK`` (``slcp``, ``two_moons``) the potential is instead that of an ``nce``
fit (defaults) on ``--budget`` prior simulations of the task, and both samplers run on that
one fit through the potential stage (``PotentialConfig(sampler=...)``)::

    python scripts/check_tempering.py --learned two_moons --observations 1 2 3 4 5

With ``--rounds`` as well, ``nce`` runs in sequential rounds (``el.infer(..., rounds="auto")``:
8 rounds at 10⁴), once with each sampler, which then also draws every round's proposal::

    python scripts/check_tempering.py --learned slcp --rounds --observations 1 2 3

Needs sbibm (``pip install --no-deps sbibm==1.1.0`` plus ``pyro-ppl``), for the observations and
reference posteriors only.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

import ebm_lfi as el
from ebm_lfi.methods import PotentialStage
from ebm_lfi.priors import prior_log_prob
from ebm_lfi.samplers.mcmc.potential import sample_potential
from ebm_lfi.samplers.mcmc.tempering import sample_tempered


def slcp_log_likelihood(theta: torch.Tensor, x_o: torch.Tensor) -> torch.Tensor:
    """log p(x_o | theta) of SLCP for parameters (n, 5), written from the task's definition."""
    x = x_o.reshape(4, 2).to(theta.dtype)
    s1, s2, rho = theta[:, 2] ** 2, theta[:, 3] ** 2, torch.tanh(theta[:, 4])
    cov = torch.zeros(theta.shape[0], 2, 2, dtype=theta.dtype)
    cov[:, 0, 0] = s1**2 + 1e-6  # sbibm adds 1e-6 to the diagonal
    cov[:, 1, 1] = s2**2 + 1e-6
    cov[:, 0, 1] = cov[:, 1, 0] = rho * s1 * s2
    gauss = torch.distributions.MultivariateNormal(theta[:, None, :2], cov[:, None])
    return gauss.log_prob(x[None]).sum(-1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--observations", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--particles", type=int, default=2000)
    parser.add_argument("--learned", choices=["slcp", "two_moons"])
    parser.add_argument("--budget", type=int, default=10_000)
    parser.add_argument("--rounds", action="store_true", help="nce in rounds (with --learned)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import sbibm

        task = sbibm.get_task(args.learned or "slcp")
    if args.learned:
        (in_rounds if args.rounds else learned)(task, args)
        return
    prior = el.BoxUniform([-3.0] * 5, [3.0] * 5)
    print("| observation | MCMC C2ST | split R-hat (max) | s | SMC C2ST | stages | s |")
    print("|---|---|---|---|---|---|---|")
    for number in args.observations:
        x_o = task.get_observation(number)[0]
        reference = task.get_reference_posterior_samples(number).double()

        def log_likelihood(theta, x_o=x_o):
            return slcp_log_likelihood(theta, x_o)

        generator = torch.Generator().manual_seed(number)
        candidates = torch.rand(20_000, 5, generator=generator, dtype=torch.float64) * 6 - 3
        starts = candidates[log_likelihood(candidates).topk(20).indices]
        start = time.perf_counter()
        chains = sample_potential(
            lambda t: prior_log_prob(prior, t) + log_likelihood(t),
            prior,
            starts,
            num_samples=100,
            burn_in=500,
            seed=0,
        )
        mcmc_seconds = time.perf_counter() - start
        mcmc = el.metrics.c2st(chains.chains.reshape(-1, 5), reference, seed=0)
        smc = sample_tempered(log_likelihood, prior, args.particles, seed=0)
        smc_c2st = el.metrics.c2st(smc.samples, reference, seed=0)
        print(
            f"| {number} | {mcmc:.3f} | {float(chains.rhat.max()):.1f} | {mcmc_seconds:.0f} "
            f"| {smc_c2st:.3f} | {len(smc.temperatures)} | {smc.seconds:.0f} |",
            flush=True,
        )


def box_prior(task) -> el.BoxUniform:
    box = task.get_prior_dist().base_dist  # Independent(Uniform(low, high), 1) in sbibm
    return el.BoxUniform(box.low.tolist(), box.high.tolist())


def in_rounds(task, args) -> None:
    """``nce`` in rounds with each sampler, one run per observation."""
    prior, simulate = box_prior(task), task.get_simulator()

    def simulator(theta):
        return simulate(torch.as_tensor(theta).reshape(1, -1).float())[0]

    print("| observation | MCMC C2ST | s | SMC C2ST | s |")
    print("|---|---|---|---|---|")
    for number in args.observations:
        x_o = task.get_observation(number)[0].double()
        reference = task.get_reference_posterior_samples(number).double()
        cells = []
        for sampler in ("mcmc", "smc"):
            method = el.methods.get("nce", prior=prior, mcmc={"sampler": sampler})
            start = time.perf_counter()
            post = el.infer(
                el.Simulator(simulator, batched=False),
                prior,
                x_o,
                method=method,
                num_simulations=args.budget,
                rounds="auto",
                seed=number,
            )
            c2st = el.metrics.c2st(post.samples.double(), reference, seed=0)
            cells.append(f"{c2st:.3f} | {time.perf_counter() - start:.0f}")
        print(f"| {number} | {' | '.join(cells)} |", flush=True)


def learned(task, args) -> None:
    """Both samplers of the potential stage on one ``nce`` fit of ``task``."""
    box = task.get_prior_dist().base_dist
    prior = box_prior(task)
    generator = torch.Generator().manual_seed(1)
    theta = box.low + (box.high - box.low) * torch.rand(
        args.budget, len(box.low), generator=generator
    )
    torch.manual_seed(0)  # sbibm's simulators draw from the global generator
    x = task.get_simulator()(theta).double()
    start = time.perf_counter()
    method = el.methods.get("nce", prior=prior).fit(theta.double(), x, seed=0)
    print(f"{task.name}: nce fit on {args.budget} simulations, {time.perf_counter() - start:.0f} s")
    smc = PotentialStage({"sampler": "smc", "particles": args.particles})
    smc.prepare(method.fit_stage, *method.fit_stage.training_data)
    print("| observation | MCMC C2ST | s | SMC C2ST | stages | s |")
    print("|---|---|---|---|---|---|")
    for number in args.observations:
        x_o = task.get_observation(number)[0].double()
        reference = task.get_reference_posterior_samples(number).double()
        post = method.posterior(x_o, 1000, seed=0)
        draws = smc.sample(x_o.to(method.fit_stage.dtype), 1000, seed=0)
        print(
            f"| {number} | {el.metrics.c2st(post.samples.double(), reference, seed=0):.3f} "
            f"| {post.diagnostics['seconds']:.0f} "
            f"| {el.metrics.c2st(draws.samples.double(), reference, seed=0):.3f} "
            f"| {draws.diagnostics['stages']} | {draws.diagnostics['seconds']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
