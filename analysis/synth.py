"""Synthetic loss surfaces with known truth, shared by tests/analysis and benchmarks/bench_fit.py.
Nothing here is fitted data.

    python -m analysis.synth FILE.csv   writes an isoFLOP table (columns C, N, D, loss) on the Chinchilla
                                        surface with 0.3 % noise, to try ``python -m analysis --csv``
"""
from __future__ import annotations

import sys

import numpy as np
import pandas as pd

from analysis.laws.forms import Design, make_design

# Chinchilla Approach 3, unrounded (Hoffmann et al. 2022 TeX source).
CHINCHILLA_TRUE = {"E": np.exp(0.5267228), "A": np.exp(6.0073404), "B": np.exp(6.0179186),
                   "alpha": 0.33917084, "beta": 0.2849083}
# Epoch AI's refit (Besiroglu et al. 2024) — used as an alternative truth.
EPOCH_TRUE = {"E": 1.8172, "A": 477.8, "B": 2143.9, "alpha": 0.3473, "beta": 0.3672}
# Open-Athena asymmetric surface (alpha/beta = 3).
ASYMMETRIC_TRUE = {"E": 1.69, "A": 400.0, "B": 400.0, "alpha": 0.465, "beta": 0.155}
# Looped iso-depth law with Schwethelm et al.'s phi.
RECURRENCE_TRUE = {"E": 1.9, "A": 420.0, "B": 900.0, "alpha": 0.33, "beta": 0.31, "phi": 0.46}


def isoflop_grid(budgets=np.geomspace(1e17, 1e22, 8), n_per: int = 16, span: float = 16.0,
                 tokens_per_param: float = 20.0) -> tuple[np.ndarray, np.ndarray]:
    """N, D on isoFLOP curves C = 6ND, N log-spaced over ×/÷ span around the 20-tokens/param point."""
    Ns, Ds = [], []
    for C in budgets:
        n0 = np.sqrt(C / 6 / tokens_per_param)
        for N in n0 * np.geomspace(1 / span, span, n_per):
            Ns.append(N)
            Ds.append(C / 6 / N)
    return np.array(Ns), np.array(Ds)


def chinchilla_loss(N, D, p) -> np.ndarray:
    return p["E"] + p["A"] * np.asarray(N) ** -p["alpha"] + p["B"] * np.asarray(D) ** -p["beta"]


def chinchilla_design(p=CHINCHILLA_TRUE, noise: float = 0.0, rng=None, **grid) -> Design:
    N, D = isoflop_grid(**grid)
    L = chinchilla_loss(N, D, p)
    if noise:
        L = L * np.exp((rng or np.random.default_rng(0)).normal(0, noise, L.size))
    return make_design(L, N=N, D=D)


def random_chinchilla_design(n: int, p=CHINCHILLA_TRUE, noise: float = 0.01,
                             rng=None) -> Design:
    """n points, log-uniform N in [1e7, 1e10] and D in [1e8, 1e11], multiplicative noise."""
    rng = rng or np.random.default_rng(0)
    N = np.exp(rng.uniform(np.log(1e7), np.log(1e10), n))
    D = np.exp(rng.uniform(np.log(1e8), np.log(1e11), n))
    L = chinchilla_loss(N, D, p) * np.exp(rng.normal(0, noise, n))
    return make_design(L, N=N, D=D)


def recurrence_arrays(budgets=np.geomspace(4.64e17, 2.15e19, 6), rs=(1, 2, 4, 8),
                      widths=(384, 512, 768, 1024, 1536, 2048)):
    """Iso-depth design: 2 prelude + 16/r layers × r loops + 2 coda; 12·w² params/layer,
    embeddings 50k·w counted in N_once; D = C / (6·(N_once + r·N_rec))."""
    rows = []
    for C in budgets:
        for r in rs:
            for w in widths:
                layer = 12 * w * w
                n_once = 4 * layer + 50_000 * w
                n_rec = (16 // r) * layer
                D = C / (6 * (n_once + r * n_rec))
                rows.append((n_once, n_rec, r, D))
    a = np.array(rows, dtype=float)
    return a[:, 0], a[:, 1], a[:, 2], a[:, 3]


def recurrence_loss(N_once, N_rec, r, D, p) -> np.ndarray:
    eff = N_once + np.asarray(r) ** p["phi"] * N_rec
    return p["E"] + p["A"] * eff ** -p["alpha"] + p["B"] * np.asarray(D) ** -p["beta"]


def recurrence_design(p=RECURRENCE_TRUE, noise: float = 0.0, rng=None) -> Design:
    N_once, N_rec, r, D = recurrence_arrays()
    L = recurrence_loss(N_once, N_rec, r, D, p)
    if noise:
        L = L * np.exp((rng or np.random.default_rng(0)).normal(0, noise, L.size))
    return make_design(L, N_once=N_once, N_rec=N_rec, r=r, D=D)


def example_table(path: str, seed: int = 0) -> pd.DataFrame:
    """5 budgets (1e18–1e21 FLOPs) × 9 sizes around the 20 tokens/parameter point, Chinchilla surface
    with 0.3 % multiplicative noise, FLOP values jittered by 1 % (as measured counts are): true
    N* ∝ C^0.457, D* ∝ C^0.543."""
    rng = np.random.default_rng(seed)
    N, D = isoflop_grid(budgets=np.geomspace(1e18, 1e21, 5), n_per=9, span=8)
    loss = chinchilla_loss(N, D, CHINCHILLA_TRUE) * np.exp(rng.normal(0, 0.003, N.size))
    C = 6 * N * D * np.exp(rng.normal(0, 0.01, N.size))
    df = pd.DataFrame({"C": C, "N": N.round(), "D": D.round(), "loss": loss.round(5)})
    df.to_csv(path, index=False)
    return df


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m analysis.synth FILE.csv")
    example_table(sys.argv[1])
    print(sys.argv[1])
