"""Coverage of the bootstrap intervals on synthetic noisy replicates with known truth.

Each replicate: ``n_points`` random (N, D) points on the Chinchilla surface with
multiplicative log-normal noise; point fit + ``n_boot`` bootstrap refits (the
report's method: warm, with its basin checks); does the nominal ``level`` percentile
interval contain the truth? Replicates are the jobs of the analysis's worker pool
(analysis/workers.py), each bootstrap inline in its worker.
"""
from __future__ import annotations

import numpy as np

from analysis import workers
from analysis.laws.bootstrap import bootstrap_law
from analysis.synth import CHINCHILLA_TRUE, random_chinchilla_design

QUANTITIES = ("alpha", "beta", "E", "a_opt")


def _truth(p: dict[str, float]) -> dict[str, float]:
    t = dict(p)
    t["a_opt"] = p["beta"] / (p["alpha"] + p["beta"])
    return t


def _replicate(rep_seed: int, n_points: int, n_boot: int, noise: float,
               level: float) -> dict[str, tuple[float, float]]:
    rng = np.random.default_rng(rep_seed)
    d = random_chinchilla_design(n_points, CHINCHILLA_TRUE, noise=noise, rng=rng)
    boot = bootstrap_law("chinchilla", d, n_boot=n_boot, seed=rep_seed + 1, inline=True)
    return {q: boot.interval(q, level) for q in QUANTITIES}


def coverage_experiment(n_rep: int = 100, n_points: int = 100, n_boot: int = 200,
                        noise: float = 0.02, level: float = 0.9, seed: int = 0) -> dict:
    truth = _truth(CHINCHILLA_TRUE)
    seeds = np.random.default_rng(seed).integers(0, 2**31, n_rep)
    results = workers.run_all(_replicate, [(int(s), n_points, n_boot, noise, level) for s in seeds])
    cov, width = {}, {}
    for q in QUANTITIES:
        iv = np.array([r[q] for r in results])
        ok = np.all(np.isfinite(iv), axis=1)
        cov[q] = float(np.mean((iv[ok, 0] <= truth[q]) & (truth[q] <= iv[ok, 1])))
        width[q] = float(np.median(iv[ok, 1] - iv[ok, 0]))
    return {"coverage": cov, "median_width": width, "n_rep": n_rep, "n_points": n_points,
            "n_boot": n_boot, "noise": noise, "level": level}
