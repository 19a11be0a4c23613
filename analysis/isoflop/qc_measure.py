"""What each QC flag that excludes a budget or a point does to the compute-optimal exponent, measured on
tables with known truth (issue 22 part 2).

    python -m analysis.isoflop.qc_measure [--reps 40] [--n-boot 100] [--seed 0]

Truth: isoFLOP grids on the Chinchilla surface (Hoffmann et al. 2022 Approach 3, arXiv 2203.15556; C = 6·N·D,
so N* ∝ C^(β/(α+β)) = C^0.4565 exactly), sizes log-spaced over ×/÷ 8 around 20 tokens per parameter, with
multiplicative noise; three grid shapes over 1e18–1e21 FLOPs (coarse: 4 budgets × 6 sizes; the same grid
off-centre, centred on 200 tokens per parameter so that the optimum sits 1–1.4 grid steps above the
centre; dense: 10 budgets × 9 sizes), each with and without one injected outlier (one run of one budget, at an interior size,
raised by max(2.5 %, 8 × noise)), at 0.3 % and 1 % noise.

Per replicate table the analysis runs as the report does (analysis.isoflop.approach2: QC, per-budget
optima, the headline estimator chosen on the grid, the power law with its 95 % run-bootstrap interval),
once with a flag excluding (the budgets or points it flags are left out) and once with it only warning
(they stay in). Printed per scenario and flag: how often the flag changes what enters the fit, and for
each policy the bias and RMSE of the N* exponent against the truth, the coverage of its 95 % interval,
and how often there is no power law (fewer than 3 clean budgets); and the warn policy's RMSE on the
tables where excluding leaves a power law (RMSEs over different tables would mix the policy with which
tables keep a law). Budget flags are switched one at a time
(the others keep excluding); for outliers the detector is switched off, or (coarse grid) allowed at 6
sizes. Results (docs/analysis.md) decide which flags exclude by default.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from analysis.isoflop import qc
from analysis.isoflop.approach2 import approach2_from_optima
from analysis.isoflop.optima import BudgetOptimum, budget_optimum
from analysis.options import Options
from analysis.synth import CHINCHILLA_TRUE, chinchilla_loss, isoflop_grid

TRUE_A = CHINCHILLA_TRUE["beta"] / (CHINCHILLA_TRUE["alpha"] + CHINCHILLA_TRUE["beta"])
# name -> (budgets, sizes, tokens per parameter at the grid's centre); at 20 the true optimum lies within
# 0.3 grid steps of the centre, at 200 about 1–1.4 steps above it (edge and off_centre fire there)
GRIDS = {"coarse 4 × 6": (4, 6, 20), "coarse 4 × 6, off-centre": (4, 6, 200), "dense 10 × 9": (10, 9, 20)}
NOISES = (0.003, 0.01)
# budget flags measured one at a time: policy name -> the codes it switches
BUDGET_FLAGS = {"edge": (qc.EDGE_LOW, qc.EDGE_HIGH), "off_centre": (qc.OFF_CENTRE,),
                "weak_curvature": (qc.WEAK_CURVATURE,), "single_point": (qc.SINGLE_POINT,),
                "parabola_akima_disagreement": (qc.DISAGREE,)}


def outlier_shift(noise: float) -> float:
    return max(0.025, 8 * noise)


def make_table(budgets: int, sizes: int, centre: float, noise: float, outlier: bool,
               rng: np.random.Generator) -> pd.DataFrame:
    N, D = isoflop_grid(budgets=np.geomspace(1e18, 1e21, budgets), n_per=sizes, span=8, tokens_per_param=centre)
    loss = chinchilla_loss(N, D, CHINCHILLA_TRUE) * np.exp(rng.normal(0, noise, N.size))
    C = np.repeat(np.geomspace(1e18, 1e21, budgets), sizes)
    if outlier:  # one run of one budget, at an interior size
        i = int(rng.integers(budgets)) * sizes + int(rng.integers(1, sizes - 1))
        loss[i] *= 1 + outlier_shift(noise)
    return pd.DataFrame({"run_id": [f"r{i}" for i in range(N.size)], "flop_budget": C, "n_params": N,
                         "loss": loss})


def budget_optima(df: pd.DataFrame, cfg: qc.QCConfig, n_boot: int, boot_seed: int,
                  cache: dict) -> list[BudgetOptimum]:
    """isoflop_optima of the table's N axis under cfg, each budget with its own bootstrap seed; a budget whose
    point flags are those of a budget computed before (under another cfg) is taken from the cache, so the
    policies of one table share their bootstrap draws and the measurement its time."""
    out = []
    for j, (budget, grp) in enumerate(df.groupby("flop_budget", sort=True)):
        N, y = grp["n_params"].to_numpy(float), grp["loss"].to_numpy(float)
        key = (j, tuple(sorted(qc.point_flags(np.log(N), y, cfg)[0])))
        if key not in cache:
            cache[key] = budget_optimum(float(budget), "params", N, y, list(grp["run_id"]), n_boot,
                                        np.random.default_rng([boot_seed, j]), cfg=cfg)
        out.append(cache[key])
    return out


def with_policy(optima: list[BudgetOptimum], codes: tuple[str, ...], exclude: bool) -> list[BudgetOptimum]:
    """The optima with the flags of ``codes`` excluding (exclude) or only warning."""
    return [replace(o, flags=[replace(f, excludes=exclude) if f.code in codes else f for f in o.flags])
            for o in optima]


@dataclass
class Outcome:
    gamma: float = float("nan")
    covered: bool = False
    kept: frozenset = frozenset()

    @property
    def has_law(self) -> bool:
        return bool(np.isfinite(self.gamma))


def outcome(optima: list[BudgetOptimum], opts: Options) -> Outcome:
    r = approach2_from_optima(optima, "", "params", opts, looped=False)
    if r.law is None:
        return Outcome(kept=frozenset(o.budget for o in optima if o.ok))
    lo, hi = r.interval
    return Outcome(r.law.gamma, bool(lo <= TRUE_A <= hi), frozenset(r.law.C.tolist()))


def summarise(outcomes: list[Outcome]) -> dict[str, float]:
    g = np.array([o.gamma for o in outcomes if o.has_law])
    err = g - TRUE_A
    return {"bias": float(err.mean()) if g.size else np.nan,
            "rmse": float(np.sqrt(np.mean(err**2))) if g.size else np.nan,
            "coverage": float(np.mean([o.covered for o in outcomes if o.has_law])) if g.size else np.nan,
            "no_law": 1 - g.size / len(outcomes)}


def measure(reps: int, n_boot: int, seed: int) -> pd.DataFrame:
    rows = []
    for grid, (budgets, sizes, centre) in GRIDS.items():
        for noise in NOISES:
            for outlier in (False, True):
                rng = np.random.default_rng([seed, budgets, sizes, centre, int(noise * 1e4), outlier])
                res: dict[tuple[str, str], list[Outcome]] = {}
                fired: dict[str, int] = {}
                for _ in range(reps):
                    df = make_table(budgets, sizes, centre, noise, outlier, rng)
                    boot_seed = int(rng.integers(2**31))
                    opts = Options(n_boot=n_boot, seed=boot_seed, holdout=0)

                    cache: dict = {}

                    def optima_for(cfg: qc.QCConfig) -> list[BudgetOptimum]:
                        return budget_optima(df, cfg, n_boot, boot_seed, cache)

                    base = optima_for(qc.QCConfig())
                    exclude_all = outcome(base, opts)
                    for name, codes in BUDGET_FLAGS.items():
                        on = outcome(with_policy(base, codes, True), opts)
                        off = outcome(with_policy(base, codes, False), opts)
                        res.setdefault((name, "exclude"), []).append(on)
                        res.setdefault((name, "warn"), []).append(off)
                        fired[name] = fired.get(name, 0) + int(on.kept != off.kept)
                    # outliers: the detector as set (needs 7 sizes) against no detector at all
                    off = outcome(optima_for(qc.QCConfig(outlier_k=1e9)), opts)
                    res.setdefault(("outlier", "exclude"), []).append(exclude_all)
                    res.setdefault(("outlier", "warn"), []).append(off)
                    fired["outlier"] = fired.get("outlier", 0) + int(any(o.points_excluded for o in base))
                    if sizes < qc.MIN_SIZES_FOR_OUTLIERS:  # would detection at 6 sizes help?
                        six = optima_for(qc.QCConfig(min_sizes_for_outliers=sizes))
                        res.setdefault((f"outlier at {sizes} sizes", "exclude"), []).append(outcome(six, opts))
                        res.setdefault((f"outlier at {sizes} sizes", "warn"), []).append(off)
                        fired[f"outlier at {sizes} sizes"] = (fired.get(f"outlier at {sizes} sizes", 0)
                                                              + int(any(o.points_excluded for o in six)))
                for name in dict.fromkeys(k[0] for k in res):
                    ex, wa = summarise(res[(name, "exclude")]), summarise(res[(name, "warn")])
                    # the same tables as the exclude column (those where excluding leaves a power law):
                    # RMSEs over different tables mix the policy with which tables keep a law
                    same = [w for e, w in zip(res[(name, "exclude")], res[(name, "warn")]) if e.has_law]
                    rows.append({"grid": grid, "noise %": 100 * noise, "outlier": outlier, "flag": name,
                                 "fires %": 100 * fired[name] / reps,
                                 **{f"exclude {k}": v for k, v in ex.items()},
                                 **{f"warn {k}": v for k, v in wa.items()},
                                 "warn rmse same": summarise(same)["rmse"] if same else np.nan})
    return pd.DataFrame(rows)


def outlier_detection(reps: int, seed: int) -> pd.DataFrame:
    """The outlier detector on single budgets (no bootstrap): how often it finds the planted outlier and how
    often it flags a clean budget, by sizes per budget and noise, with its robust cubic (as set) and with a
    parabola in its place (OUTLIER_DEGREE 2, switched here only), each allowed down to the budget's size."""
    rows = []
    for sizes in (6, 7, 9):
        for noise in NOISES:
            for degree in (qc.OUTLIER_DEGREE, 2):
                rng = np.random.default_rng([seed, sizes, int(noise * 1e4), degree])
                cfg = qc.QCConfig(min_sizes_for_outliers=sizes)
                found = clean = 0
                saved, qc.OUTLIER_DEGREE = qc.OUTLIER_DEGREE, degree
                try:
                    for _ in range(reps):
                        N, D = isoflop_grid(budgets=[10 ** rng.uniform(18, 21)], n_per=sizes, span=8)
                        y = chinchilla_loss(N, D, CHINCHILLA_TRUE) * np.exp(rng.normal(0, noise, sizes))
                        clean += bool(qc.point_flags(np.log(N), y, cfg)[0])
                        j = int(rng.integers(1, sizes - 1))
                        y[j] *= 1 + outlier_shift(noise)
                        found += j in qc.point_flags(np.log(N), y, cfg)[0]
                finally:
                    qc.OUTLIER_DEGREE = saved
                rows.append({"sizes": sizes, "noise %": 100 * noise, "robust fit": "cubic (as set)" if degree == 3
                             else "parabola", "planted outlier found": found / reps,
                             "clean budget flagged": clean / reps})
    return pd.DataFrame(rows)


def markdown(t: pd.DataFrame, fired_only: bool = True) -> str:
    """The table as markdown; fired_only: only the rows where the flag changed what entered the fit."""
    if fired_only:
        t = t[t["fires %"] > 0]
    cols = ["grid", "noise %", "outlier", "flag", "fires %", "exclude bias", "exclude rmse", "exclude coverage",
            "exclude no_law", "warn bias", "warn rmse", "warn rmse same", "warn coverage", "warn no_law"]
    names = {"warn rmse same": "warn rmse (exclude's tables)", "exclude no_law": "exclude: no law",
             "warn no_law": "warn: no law"}
    head = "| " + " | ".join(names.get(c, c).replace("coverage", "cov.") for c in cols) + " |"
    lines = [head, "|" + "---|" * len(cols)]
    for _, r in t.iterrows():
        cells = []
        for c in cols:
            v = r[c]
            if c in ("grid", "flag"):
                cells.append(str(v))
            elif c == "outlier":
                cells.append("yes" if v else "no")
            elif "coverage" in c or "no_law" in c:
                cells.append("—" if not np.isfinite(v) else f"{100 * v:.0f} %")
            elif c in ("noise %", "fires %"):
                cells.append(f"{v:.1f}" if c == "noise %" else f"{v:.0f} %")
            else:
                cells.append("—" if not np.isfinite(v) else f"{v:+.4f}" if "bias" in c else f"{v:.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.isoflop.qc_measure", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=40, help="replicate tables per scenario (default %(default)s)")
    p.add_argument("--n-boot", type=int, default=100, help="run-bootstrap resamples per table (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    t = measure(a.reps, a.n_boot, a.seed)
    print(markdown(t))
    d = outlier_detection(10 * a.reps, a.seed)
    print("\n| sizes | noise % | robust fit | planted outlier found | clean budget flagged |\n|---|---|---|---|---|")
    for _, r in d.iterrows():
        print(f"| {r['sizes']} | {r['noise %']:.1f} | {r['robust fit']} | {100 * r['planted outlier found']:.0f} % | "
              f"{100 * r['clean budget flagged']:.1f} % |")
    print(f"\n{a.reps} tables per scenario, {a.n_boot} bootstrap resamples each, truth N* ∝ C^{TRUE_A:.4f}; "
          f"{time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
