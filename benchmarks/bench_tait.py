"""Tait fit on synthetic V(P): is the reported κ_T uncertainty honest?

V(P) from known Tait parameters of a typical IL box (V0 = 10000 Å³, B = 1100 bar,
C = 0.0894, so κ_T = 8.13e-10 Pa⁻¹) on the paper's ramp (1 bar, then 18 × 1 kbar), plus
Gaussian noise of the size NPT block errors have (σ_V = 5 Å³, and 20 Å³). Over many noise
draws, |κ_fit − κ_true| should be within 1 reported standard error ~68 % of the time and
within 2 ~95 % of the time.

Usage: .venv/bin/python benchmarks/bench_tait.py [--draws 2000]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

from ionmix.properties.eos import EOSError, fit_tait, tait_volume


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--draws", type=int, default=2000)
    args = parser.parse_args()
    p = np.concatenate([[1.0], 1.0 + 1000.0 * np.arange(1, 19)])
    v0, b, c = 10000.0, 1100.0, 0.0894
    true_kappa = c / b / 1e5
    results = {}
    for sigma in (5.0, 20.0):
        rng = np.random.default_rng(0)
        z = []
        errs = []
        refused = 0
        for _ in range(args.draws):
            try:
                fit = fit_tait(p, tait_volume(p, v0, b, c, 1.0) + rng.normal(0, sigma, p.size))
            except EOSError:  # noise made V(P) rise somewhere: refused, by design
                refused += 1
                continue
            z.append((fit.kappa_T_per_Pa - true_kappa) / fit.kappa_T_per_Pa_err)
            errs.append(fit.kappa_T_per_Pa_err / true_kappa)
        z = np.abs(np.array(z))
        results[f"sigma_V_{sigma:g}_A3"] = {
            "within_1_sigma": float(np.mean(z < 1)), "within_2_sigma": float(np.mean(z < 2)),
            "median_relative_error_bar": float(np.median(errs)),
            "refused_non_monotonic": refused / args.draws}
    results.update(draws=args.draws, true_kappa_T_per_Pa=true_kappa,
                   machine=platform.machine(), date=time.strftime("%Y-%m-%d"))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
