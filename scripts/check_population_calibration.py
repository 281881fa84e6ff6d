"""How much an ABC-SMC population's weighted moments are worth, against Kish's effective size.

``tests/test_distributed.py`` checks that pyabc's last population (100 particles) has the mean
and sd of the ABC posterior at its tolerance, within 4 standard errors computed from the
population's effective size. This script runs that problem (its fitted ``ssm-abc``
statistics, the Gaussian model, the same distance) with pyabc's single-core sampler and no
failures, over seeds, and standardises each run's errors with Kish's size exactly as the
check does. Calibrated standard errors give z-scores of spread 1; a spread ``s`` above 1 means
that Kish's size overstates the information by ``s**2``.

    python scripts/check_population_calibration.py --generations 4 --runs 40

Measured (4 generations, 40 runs, 2-core CPU machine, about a minute):

    z spread: sd(a) 1.03  sd(b) 1.28  mean(a) 1.11  mean(b) 1.10;  largest |z| 3.59

so the check counts half of Kish's size (``POPULATION_DESIGN_EFFECT = 2``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    torch.set_num_threads(1)
    import pyabc
    import test_distributed as problem
    from posterior_checks import moments

    import ebm_lfi as el

    prior = el.BoxUniform(low=[-3.0, -3.0], high=[3.0, 3.0])
    x_o = el.Simulator(problem.Gaussian())(problem.THETA_O, seed=123)
    training = el.simulate(problem.Gaussian(), prior, 2000, seed=0)
    fitted = el.methods.get(  # the test's fixture, simulated in this process
        "ssm-abc",
        prior=prior,
        simulator=problem.Gaussian(),
        structure="mlp",
        num_statistics=4,
        training={"epochs": 60, "batch_size": 100, "lr": 3e-3},
        abc={"num_reference": 2000},
    ).fit(*training, seed=1)
    print(f"{'run':>4} {'eps':>6} {'kish':>5}  z: sd(a)  sd(b) mean(a) mean(b)")
    rows = []
    for run in range(args.runs):
        np.random.seed(1000 + run)  # noqa: NPY002 - pyabc draws from the global generator
        abc = problem.make_abc(fitted, prior, pyabc.sampler.SingleCoreSampler())
        with tempfile.TemporaryDirectory() as folder:
            abc.new(f"sqlite:///{os.path.join(folder, 'run.db')}", {"x": x_o.numpy()})
            history = abc.run(max_nr_populations=args.generations)
            frame, weights = history.get_distribution(m=0)
            eps = float(history.get_all_populations().epsilon.to_numpy()[-1])
        reference = problem.abc_reference(fitted, x_o, eps)
        got = moments(torch.as_tensor(frame[problem.NAMES].to_numpy()), torch.as_tensor(weights))
        inverse_n = 1.0 / got.ess + 1.0 / len(reference)
        kurtosis = torch.clamp(got.kurtosis, min=3.0).numpy()
        sd_ref, mean_ref = reference.std(0), reference.mean(0)
        z_sd = (got.sd.numpy() / sd_ref - 1) / np.sqrt((kurtosis - 1) / 4 * inverse_n)
        z_mean = (got.mean.numpy() - mean_ref) / sd_ref / np.sqrt(inverse_n)
        rows.append(np.concatenate([z_sd, z_mean]))
        z = "  ".join(f"{v:+6.2f}" for v in rows[-1])
        print(f"{run:>4} {eps:6.3f} {got.ess:5.0f}  {z}", flush=True)
    table = np.array(rows)
    spread = "  ".join(f"{v:.2f}" for v in table.std(0))
    largest = np.abs(table).max()
    print(f"z spread: sd(a) sd(b) mean(a) mean(b) = {spread};  largest |z| {largest:.2f}")


if __name__ == "__main__":
    main()
