"""Analysis-speed benchmark, and the parametric-law fitter's timing and bootstrap coverage.

    .venv/bin/python benchmarks/bench_fit.py [--repeats 3] [--n-boot 1000]          # what make bench-fit runs
    .venv/bin/python benchmarks/bench_fit.py --law [--n-points 1000] [--coverage-reps 100] [--skip-coverage]

Default: ``python -m analysis`` (imports, fits, bootstrap at --n-boot resamples, figures; no MLflow
logging) on a synthetic store the size of the default sweep (benchmarks/bench_fit_store.py: 12 runs,
test-time losses at 5 loop counts), --repeats times in a fresh process each; prints one JSON line with
the median wall time, the child's CPU time (the honest number on a shared machine), the CPU model, the
core count and the load average. Target: <= 60 s on 2 quiet cores.

--law: point fit (full start grid, 8 refined starts) + n_boot bootstrap refits of the Chinchilla law on
n_points synthetic points; median wall time of --repeats runs. Then coverage: over --coverage-reps noisy
replicates, how often the nominal 90 % percentile intervals contain the true alpha, beta, E and
a = beta/(alpha+beta) (target 85–95 %).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from analysis import workers  # noqa: E402
from analysis.laws.coverage import coverage_experiment  # noqa: E402
from analysis.laws.bootstrap import bootstrap_law  # noqa: E402
from analysis.laws.point_fit import fit_law  # noqa: E402
from analysis.synth import CHINCHILLA_TRUE, random_chinchilla_design  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--n-points", type=int, default=1000)
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--workers", type=int, default=None,
                   help="the analysis's worker processes (ANALYSIS_WORKERS; default: one per core)")
    p.add_argument("--coverage-reps", type=int, default=100)
    p.add_argument("--coverage-points", type=int, default=100)
    p.add_argument("--coverage-boot", type=int, default=200)
    p.add_argument("--skip-coverage", action="store_true")
    p.add_argument("--law", action="store_true", help="the law-fitter benchmark and coverage instead")
    a = p.parse_args(argv)
    if a.workers:  # the analysis's worker pool (analysis/workers.py)
        os.environ[workers.ENV] = str(a.workers)
    if not a.law:
        return analysis_benchmark(a.repeats, a.n_boot)

    d = random_chinchilla_design(a.n_points, noise=0.01, rng=np.random.default_rng(0))
    fit_law("chinchilla", d)  # warm-up (imports, first-call overheads)
    times = []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        fit = fit_law("chinchilla", d)
        boot = bootstrap_law("chinchilla", d, n_boot=a.n_boot, seed=0)
        times.append(time.perf_counter() - t0)
    print(f"fit + bootstrap: {a.n_points} points, {a.n_boot} resamples, {workers.n_workers()} workers, "
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
                                  n_boot=a.coverage_boot, noise=0.02, level=0.9, seed=0)
        dt = time.perf_counter() - t0
        print(f"coverage: {res['n_rep']} replicates × {res['n_points']} points, noise "
              f"{res['noise']} (log), {res['n_boot']} resamples each, nominal 90 % "
              f"({dt:.0f} s)")
        for q, c in res["coverage"].items():
            print(f"  {q:6s} coverage {100 * c:5.1f} %  median width {res['median_width'][q]:.4f}")
    return 0


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def analysis_benchmark(repeats: int, n_boot: int) -> int:
    """make analyze on a default-sweep-sized store, each repeat in a fresh process: one JSON line."""
    from benchmarks.bench_fit_store import BUDGETS, MUS, TEST_LOOPS, default_sweep_store, eval_loops

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, **{k: "1" for k in workers.BLAS_THREADS}, workers.ENV: str(workers.n_workers())}
    walls, cpus = [], []
    with tempfile.TemporaryDirectory() as tmp:
        uri = default_sweep_store(tmp)
        for i in range(repeats):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "analysis", "--tracking-uri", uri, "--sweep-id", "isoflop",
                            "--out", f"{tmp}/report{i}", "--no-mlflow-log", "--n-boot", str(n_boot)],
                           cwd=root, env=env, check=True, stdout=subprocess.DEVNULL)
            walls.append(time.perf_counter() - t0)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    print(json.dumps({
        "benchmark": "analysis (python -m analysis, default-sweep-sized input)",
        "input": f"{len(MUS) * len(BUDGETS)} runs (mu_rec {list(MUS)} x C {list(BUDGETS)}), "
                 f"test-time T {list(TEST_LOOPS)} plus the dense grid "
                 f"({sum(len(eval_loops(m)) for m in MUS) * len(BUDGETS)} (run, T) points)",
        "n_boot": n_boot, "repeats": repeats,
        "wall_s_median": round(statistics.median(walls), 2), "wall_s": [round(t, 2) for t in walls],
        "cpu_s_median": round(statistics.median(cpus), 2),
        "target_s": 60, "cpu": cpu_model(), "cores": os.cpu_count(),
        "analysis_workers": workers.n_workers(),
        "load_avg_1min": round(os.getloadavg()[0], 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
