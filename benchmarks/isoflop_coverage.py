"""Coverage of Approach 2's 95 % intervals on synthetic truth (docs/analysis.md, "Intervals that cover").

    .venv/bin/python -m benchmarks.isoflop_coverage [--tables 100] [--n-boot 400] [--out FILE.json]

Cells: a coarse grid (4 budgets × 6 sizes) and a fine one (12 budgets × 10 sizes), each on a Chinchilla-form
surface with α = β and with α ≠ β (Hoffmann et al. 2022's fit), without and with one planted outlier (a
run 4 % above or below the surface, sign and place at random). Each table goes through the same path as
``python -m analysis --csv`` (the QC stage, the estimator choice, the noise draws) on the N* axis; a cell
reports how often the 95 % interval holds the true exponent β/(α+β) and the true ln N* at the central
budget, over the tables where a law was identified, and how often that was.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd

from analysis.isoflop.groups import isoflop_group
from analysis.options import Options

SURFACES = {"α = β": {"E": 1.8, "A": 450.0, "B": 450.0, "alpha": 0.34, "beta": 0.34},
            "α ≠ β": {"E": float(np.exp(0.5267228)), "A": float(np.exp(6.0073404)),
                      "B": float(np.exp(6.0179186)), "alpha": 0.33917084, "beta": 0.2849083}}
GRIDS = {"coarse 4×6": (4, 6), "fine 12×10": (12, 10)}
NOISE = 0.005   # multiplicative per-run noise
SPAN = 4.0      # sizes ×/÷ SPAN around each budget's grid centre
OUTLIER = 0.04


def true_optimum(p: dict, C: np.ndarray) -> np.ndarray:
    """N*(C) of L = E + A/N^α + B/D^β on C = 6ND (Hoffmann et al. 2022, eq. 4)."""
    a, b = p["alpha"], p["beta"]
    G = (a * p["A"] / (b * p["B"])) ** (1 / (a + b))
    return G * (C / 6) ** (b / (a + b))


def table(p: dict, n_budgets: int, n_sizes: int, outlier: bool, rng: np.random.Generator) -> pd.DataFrame:
    budgets = np.geomspace(1e18, 1e21, n_budgets)
    rows = []
    for C in budgets:
        # the grid centre is off the true optimum by up to ×/÷ 1.5, as a lab's guess would be
        centre = true_optimum(p, np.array([C]))[0] * np.exp(rng.uniform(-0.4, 0.4))
        for N in centre * np.geomspace(1 / SPAN, SPAN, n_sizes):
            D = C / (6 * N)
            L = (p["E"] + p["A"] * N ** -p["alpha"] + p["B"] * D ** -p["beta"]) * np.exp(rng.normal(0, NOISE))
            rows.append({"flop_budget": C, "train_flops": C, "n_params": N, "tokens": D, "loss": L})
    df = pd.DataFrame(rows)
    if outlier:
        i = int(rng.integers(len(df)))
        df.loc[i, "loss"] *= 1 + OUTLIER * rng.choice([-1, 1])
    n = len(df)
    return df.assign(run_id=[f"r{i}" for i in range(n)], mean_recurrence=np.nan, model_name="synth",
                     model_kind="table", seed=pd.array([pd.NA] * n, dtype="Int64"))


def cell(p: dict, grid: tuple[int, int], outlier: bool, tables: int, n_boot: int, seed: int) -> dict:
    truth = p["beta"] / (p["alpha"] + p["beta"])
    rng = np.random.default_rng(seed)
    hit_g, hit_k, found, width = [], [], 0, []
    for t in range(tables):
        df = table(p, *grid, outlier, rng)
        g = isoflop_group("synth", df, Options(n_boot=n_boot, seed=t, holdout=0), ("params",),
                          np.random.default_rng(t))
        r = g.results[0] if g.results else None
        if r is None or r.law is None or "model" not in r.law.boot:
            continue
        found += 1
        lo, hi = r.interval
        hit_g.append(lo <= truth <= hi)
        width.append(hi - lo)
        lnC = np.log(r.law.C)
        mid = float(np.exp(lnC.mean()))
        gam, lnk = r.law.boot["model"]
        pred = lnk + gam * np.log(mid)
        klo, khi = np.percentile(pred, [2.5, 97.5])
        hit_k.append(klo <= np.log(true_optimum(p, np.array([mid]))[0]) <= khi)
    return {"identified": found / tables, "coverage_exponent": float(np.mean(hit_g)) if hit_g else None,
            "coverage_intercept": float(np.mean(hit_k)) if hit_k else None,
            "median_width": float(np.median(width)) if width else None, "tables": tables}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tables", type=int, default=100)
    ap.add_argument("--n-boot", type=int, default=400)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    out = []
    t0 = time.time()
    cells = [(g, s, o) for g in GRIDS for s in SURFACES for o in (False, True)]
    for k, (gname, sname, outlier) in enumerate(cells):
        if True:
            p, grid = SURFACES[sname], GRIDS[gname]
            res = cell(p, grid, outlier, args.tables, args.n_boot, seed=1000 + k)
            if True:
                res.update(grid=gname, surface=sname, outlier=outlier)
                out.append(res)
                print(json.dumps(res, ensure_ascii=False), flush=True)
    print(f"{time.time() - t0:.0f} s")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main()
