"""Validate the law fitter on a published data set (the project never vendors it).

    python -m analysis.validate --csv PATH [--law chinchilla] [--n-boot 1000] [--level 0.95]
        [--keep-all] [--seed 0] [--workers 2]

Primary anchor: Epoch AI's reconstruction of Chinchilla's Figure 4 (Besiroglu et al.
2024, github.com/epoch-research/analyzing-chinchilla, file data/svg_extracted_data.csv,
245 rows; fetch it yourself, e.g.
``curl -LO https://raw.githubusercontent.com/epoch-research/analyzing-chinchilla/main/data/svg_extracted_data.csv``).
Columns ``Model Size`` (N), ``Training FLOP`` (C) and ``loss``; D = C / (6N).
Protocol (Epoch): drop the 5 highest-loss rows (240 remain) unless --keep-all.
A correct fitter returns about E≈1.82, A≈478, B≈2144, α≈0.347, β≈0.367 and bootstrap
95 % intervals near E (1.77, 1.87), α (0.317, 0.373), β (0.331, 0.415).

Other CSVs: columns ``n_params``/``N``, ``tokens``/``D`` and ``loss``.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd

from analysis.fit import bootstrap_law, fit_law, identifiability_warnings
from analysis.laws import LAWS, make_design

# Epoch AI (Besiroglu et al. 2024): grid Huber fit and bootstrap 95 % intervals.
EPOCH = {"A": (477.84, (285.2, 743.6)), "B": (2143.86, (1042.4, 5810.3)),
         "E": (1.8172, (1.769, 1.871)), "alpha": (0.3473, (0.317, 0.373)),
         "beta": (0.3672, (0.331, 0.415))}


def load_points(path: str, keep_all: bool = False) -> tuple[pd.DataFrame, str]:
    df = pd.read_csv(path)
    if {"Model Size", "Training FLOP", "loss"} <= set(df.columns):
        out = pd.DataFrame({"N": df["Model Size"].astype(float), "loss": df["loss"].astype(float)})
        out["D"] = df["Training FLOP"].astype(float) / (6 * out["N"])
        note = "Epoch format: D = Training FLOP / (6·Model Size)"
        if not keep_all:
            out = out.sort_values("loss").iloc[:-5]
            note += "; 5 highest-loss rows dropped (Epoch protocol)"
        return out.reset_index(drop=True), note
    n = "n_params" if "n_params" in df.columns else "N"
    d = "tokens" if "tokens" in df.columns else "D"
    return pd.DataFrame({"N": df[n].astype(float), "D": df[d].astype(float),
                         "loss": df["loss"].astype(float)}), f"columns {n}, {d}, loss"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.validate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--csv", required=True)
    p.add_argument("--law", default="chinchilla", choices=["chinchilla", "parcae"])
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--level", type=float, default=0.95)
    p.add_argument("--keep-all", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args(argv)
    pts, note = load_points(a.csv, a.keep_all)
    law = LAWS[a.law]
    d = make_design(pts["loss"], N=pts["N"], D=pts["D"])
    fit = fit_law(law, d)
    print(f"{law.formula}\n{len(pts)} points ({note})\n{fit.settings.describe()}")
    print(f"objective Σ Huber = {fit.objective:.6g}; converged: {fit.success} ({fit.nit} it, "
          f"{fit.message}); best {len(fit.minima)} minima: "
          + ", ".join(f"{m[0]:.6g}" for m in fit.minima[:4]))
    boot = bootstrap_law(law, d, n_boot=a.n_boot, seed=a.seed, n_workers=a.workers) \
        if a.n_boot > 0 else None
    lvl = f"{100 * a.level:g} %"
    print(f"\n{'param':8s} {'estimate':>12s}   {lvl + ' bootstrap':>26s}   Epoch (est., 95 %)")
    for k in ("E", "A", "B", "alpha", "beta", "a_opt", "b_opt"):
        est = fit.params[k]
        iv = boot.interval(k, a.level) if boot else (np.nan, np.nan)
        ref = EPOCH.get(k)
        ref_s = f"{ref[0]:g} ({ref[1][0]:g}, {ref[1][1]:g})" if ref else ""
        print(f"{k:8s} {est:12.5g}   ({iv[0]:10.5g}, {iv[1]:10.5g})   {ref_s}")
    if boot:
        sd = np.nanstd(boot.samples["a_opt"])
        print(f"\nSE of a = β/(α+β): {sd:.4f} (Epoch: 0.020); {boot.n_boot} cold-start "
              f"resamples in {boot.seconds:.1f} s; converged {boot.success.mean():.1%}")
    for w in fit.flags + identifiability_warnings(fit, boot, d, a.level):
        print(f"warning: {w}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
