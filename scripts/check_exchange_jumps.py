r"""The exchange sampler with and without differential-evolution jumps, on one fit.

Fits ``ssm-abc`` (defaults, seed 0) on ``--budget`` prior-predictive pairs of a problem of
``scripts/bench_generic.py`` and draws the exchange posterior of that fit
(``EnergyExchange.from_fitted``) for each of its first ``--observations`` observations with
each jump rate of ``--rates`` (``ExchangeConfig.jump_rate``; 1,000 draws, seed 0). Prints per
observation and rate the C2ST and W2 to the reference, the split R̂ and ESS per parameter and
the jumps' acceptance, then the mean C2ST and W2 per rate::

    python scripts/check_exchange_jumps.py two_moons --budget 10000 --observations 5 \
        --rates 0 0.15 0.2 0.3
    python scripts/check_exchange_jumps.py ar2 --budget 1000 --observations 3 --rates 0 0.1 0.2

The problems that need sbibm (two_moons, slcp, gaussian_linear_uniform) say how to install it.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
from bench_generic import load_problem

import ebm_lfi as el
from ebm_lfi.methods.energy_methods import EnergyExchange


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("problem")
    parser.add_argument("--budget", type=int, default=10_000)
    parser.add_argument("--observations", type=int, default=2)
    parser.add_argument("--rates", type=float, nargs="+", default=[0.0, 0.2])
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    problem = load_problem(args.problem)
    theta, x = el.simulate(problem.simulator, problem.prior, args.budget, seed=0)
    start = time.perf_counter()
    fitted = el.methods.get("ssm-abc", prior=problem.prior).fit(theta, x, seed=0)
    print(f"ssm-abc on {args.budget} pairs: {time.perf_counter() - start:.0f} s", flush=True)
    observations = [problem.observation(i) for i in range(args.observations)]
    means = {}
    for rate in args.rates:
        method = EnergyExchange.from_fitted(fitted, exchange={"jump_rate": rate})
        c2sts, w2s = [], []
        for label, x_o, reference in observations:
            start = time.perf_counter()
            post = method.posterior(x_o, 1000, seed=0)
            samples, reference = post.samples.double(), reference.double()
            c2sts.append(el.metrics.c2st(samples, reference[:1000]))
            w2s.append(el.metrics.wasserstein2(samples, reference[:2000]))
            d = post.diagnostics
            print(
                f"rate {rate:g}  obs {label}: C2ST {c2sts[-1]:.3f}  W2 {w2s[-1]:.3f}  R-hat "
                f"{[round(v, 2) for v in d['rhat']]}  ESS {[round(v) for v in d['ess']]}  "
                f"jumps accepted {d.get('jump_acceptance', float('nan')):.2f}  "
                f"{time.perf_counter() - start:.1f} s",
                flush=True,
            )
        means[rate] = (sum(c2sts) / len(c2sts), sum(w2s) / len(w2s))
    print("rate   mean C2ST   mean W2")
    for rate, (c, w) in means.items():
        print(f"{rate:<6g} {c:9.3f} {w:9.3f}")


if __name__ == "__main__":
    main()
