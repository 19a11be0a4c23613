"""Benchmark of the parametric-law fitter and bootstrap coverage experiment.

    .venv/bin/python benchmarks/bench_fit.py [--repeats 3] [--n-points 1000] [--n-boot 1000]
        [--coverage-reps 100] [--coverage-boot 200] [--skip-coverage]

1. Timing: point fit (full start grid, 8 refined starts) + n_boot cold-start
   bootstrap refits (stride-2 grid, 2 refined starts each) of the Chinchilla law on
   n_points synthetic points, 2 worker processes; median wall time of --repeats runs.
   Target: <= 60 s for 1,000 points × 1,000 resamples on 2 cores.
2. Coverage: over --coverage-reps noisy replicates, how often the nominal 90 %
   percentile intervals contain the true alpha, beta, E and a = beta/(alpha+beta)
   (target 85–95 %).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from analysis.coverage import coverage_experiment  # noqa: E402
from analysis.fit import bootstrap_law, fit_law  # noqa: E402
from analysis.synth import CHINCHILLA_TRUE, random_chinchilla_design  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--n-points", type=int, default=1000)
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--coverage-reps", type=int, default=100)
    p.add_argument("--coverage-points", type=int, default=100)
    p.add_argument("--coverage-boot", type=int, default=200)
    p.add_argument("--skip-coverage", action="store_true")
    a = p.parse_args(argv)

    d = random_chinchilla_design(a.n_points, noise=0.01, rng=np.random.default_rng(0))
    fit_law("chinchilla", d)  # warm-up (imports, first-call overheads)
    times = []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        fit = fit_law("chinchilla", d)
        boot = bootstrap_law("chinchilla", d, n_boot=a.n_boot, seed=0, n_workers=a.workers)
        times.append(time.perf_counter() - t0)
    print(f"fit + bootstrap: {a.n_points} points, {a.n_boot} resamples, {a.workers} workers, "
          f"os.cpu_count()={os.cpu_count()}, load avg {os.getloadavg()[0]:.2f}")
    print(f"  wall times (s): {', '.join(f'{t:.2f}' for t in times)}; "
          f"median {statistics.median(times):.2f} s (target <= 60 s)")
    p_ = fit.params
    print(f"  point fit: alpha={p_['alpha']:.4f} beta={p_['beta']:.4f} E={p_['E']:.4f} "
          f"(truth {CHINCHILLA_TRUE['alpha']:.4f} {CHINCHILLA_TRUE['beta']:.4f} "
          f"{CHINCHILLA_TRUE['E']:.4f}); converged resamples {boot.success.mean():.1%}")
    for q in ("alpha", "beta", "E", "a_opt"):
        lo, hi = boot.interval(q, 0.9)
        print(f"  90 % interval {q}: [{lo:.4f}, {hi:.4f}]")

    if not a.skip_coverage:
        t0 = time.perf_counter()
        res = coverage_experiment(n_rep=a.coverage_reps, n_points=a.coverage_points,
                                  n_boot=a.coverage_boot, noise=0.02, level=0.9, seed=0,
                                  n_workers=a.workers)
        dt = time.perf_counter() - t0
        print(f"coverage: {res['n_rep']} replicates × {res['n_points']} points, noise "
              f"{res['noise']} (log), {res['n_boot']} resamples each, nominal 90 % "
              f"({dt:.0f} s)")
        for q, c in res["coverage"].items():
            print(f"  {q:6s} coverage {100 * c:5.1f} %  median width {res['median_width'][q]:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
