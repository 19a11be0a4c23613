"""Compute-optimal power laws y*(C) = k * C^gamma fitted to isoFLOP optima.

The fit is ordinary least squares of ln y* on ln C (unweighted: with a handful
of budgets the per-budget variances are themselves too noisy to weight by).
Two uncertainties are reported and they answer different questions:

* the t-interval from the OLS residuals (scatter of the optima about the line);
* bootstrap percentile intervals (noise in the optima): "runs" resamples the
  runs within each budget, recomputes every optimum and the line (the cluster
  bootstrap; wide when a budget has few runs because a resample can lose the
  grid ends; the headline's interval); for the parabola also "residuals", which
  keeps each budget's grid fixed and resamples its parabola residuals (needs >= 4
  sizes per budget); with seeds as replicates also "seeds", which keeps the grid
  and resamples each grid point's seeds (seed noise alone).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from analysis.estimation import LEVEL, percentile_interval, t_critical
from analysis.isoflop.optima import BudgetOptimum
from analysis.options import MIN_BUDGETS

MIN_BOOT_DRAWS = 50


@dataclass
class PowerLawFit:
    C: np.ndarray
    y: np.ndarray
    gamma: float
    log_k: float  # ln k in y = k C^gamma
    se_gamma: float
    ci_gamma: tuple[float, float]  # 95 % t-interval, NaN when dof == 0
    dof: int
    r2: float
    warnings: list[str] = field(default_factory=list)
    # method -> (gamma draws, ln k draws)
    boot: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    excluded_budgets: list[float] = field(default_factory=list)
    estimator: str = "akima"  # which per-budget optimum: "akima" (the estimate) or "parabola"

    @property
    def k(self) -> float:
        return float(np.exp(self.log_k))

    def predict(self, C: np.ndarray) -> np.ndarray:
        return np.exp(self.log_k + self.gamma * np.log(np.asarray(C, dtype=float)))

    def boot_ci_gamma(self, method: str = "runs",
                      level: float = LEVEL) -> tuple[float, float]:
        if method not in self.boot:
            return float("nan"), float("nan")
        return percentile_interval(self.boot[method][0], level)

    def band(self, C: np.ndarray, method: str = "runs",
             level: float = LEVEL) -> tuple[np.ndarray, np.ndarray] | None:
        """Pointwise bootstrap percentile band of the fitted line."""
        if method not in self.boot:
            return None
        gamma, log_k = self.boot[method]
        lnC = np.log(np.asarray(C, dtype=float))
        pred = log_k[:, None] + gamma[:, None] * lnC[None, :]
        q = 100 * (1 - level) / 2
        lo, hi = np.percentile(pred, [q, 100 - q], axis=0)
        return np.exp(lo), np.exp(hi)


def _ols_loglog(lnC: np.ndarray, lny: np.ndarray) -> tuple[float, float, float, int, float]:
    """(gamma, ln k, se(gamma), dof, r2) of ln y = ln k + gamma ln C."""
    n = lnC.size
    xm, ym = lnC.mean(), lny.mean()
    sxx = float(np.sum((lnC - xm) ** 2))
    gamma = float(np.sum((lnC - xm) * (lny - ym)) / sxx)
    log_k = float(ym - gamma * xm)
    resid = lny - (log_k + gamma * lnC)
    dof = n - 2
    ss_tot = float(np.sum((lny - ym) ** 2))
    r2 = 1 - float(resid @ resid) / ss_tot if ss_tot > 0 else float("nan")
    se = float(np.sqrt(resid @ resid / dof / sxx)) if dof > 0 else float("nan")
    return gamma, log_k, se, dof, r2


def fit_powerlaw(C: np.ndarray, y: np.ndarray) -> PowerLawFit:
    """OLS fit of ln y = ln k + gamma ln C with a 95 % t-interval for gamma."""
    C = np.asarray(C, dtype=float)
    y = np.asarray(y, dtype=float)
    if C.size < 2 or np.unique(C).size < 2:
        raise ValueError("a power law needs at least 2 distinct budgets")
    gamma, log_k, se, dof, r2 = _ols_loglog(np.log(C), np.log(y))
    warnings: list[str] = []
    if dof == 0:
        ci = (float("nan"), float("nan"))
        warnings.append("only 2 budgets: the line passes exactly through both optima, "
                        "no residual degrees of freedom, no standard error; the bootstrap "
                        "interval reflects within-budget noise only")
    else:
        t = t_critical(dof)
        ci = (gamma - t * se, gamma + t * se)
        if dof == 1:
            warnings.append(f"only 3 budgets: 1 residual dof (t = {t:.1f}), so the "
                            "interval on gamma is wide")
    decades = float(np.log10(C.max() / C.min()))
    if decades < 1:
        warnings.append(f"budgets span only {decades:.2f} decades of compute; "
                        "extrapolation is unreliable")
    return PowerLawFit(C, y, gamma, log_k, se, ci, dof, r2, warnings)


def _boot_loglog(lnC: np.ndarray, lny: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised OLS over bootstrap draws: lny has shape (n_draws, n_budgets)."""
    xc = lnC - lnC.mean()
    gamma = (lny - lny.mean(axis=1, keepdims=True)) @ xc / float(xc @ xc)
    log_k = lny.mean(axis=1) - gamma * lnC.mean()
    return gamma, log_k


class NoPowerLaw(ValueError):
    """Too few clean budgets for a power law; the message says which were left out and why."""


def powerlaw_from_optima(optima: list[BudgetOptimum], estimator: str = "akima",
                         min_budgets: int = MIN_BUDGETS, keep_flagged: bool = False) -> PowerLawFit:
    """Power law through the per-budget optima, with the run-bootstrap of those optima.

    estimator "akima" (the shape-free estimate, bootstrap "runs" = its run bootstrap) or "parabola"
    (the vertex rule, bootstraps "runs" and "residuals"). Budgets with a QC flag are left out unless
    keep_flagged. Fewer than ``min_budgets`` budgets left -> NoPowerLaw: no fallback to flagged optima.
    """
    finite = [o for o in optima if np.isfinite(o.x_opt if estimator == "akima" else o.fit.x_opt)]
    used = finite if keep_flagged else [o for o in finite if o.ok]
    in_use = {id(o) for o in used}  # identity: optima hold arrays, so == is not a truth value
    excluded = [o.budget for o in optima if id(o) not in in_use]
    if len({o.budget for o in used}) < max(min_budgets, 2):
        left_out = "; ".join(f"C={o.budget:.3g}: " + ", ".join(f.code for f in o.flags)
                             for o in optima if id(o) not in in_use) or "none"
        raise NoPowerLaw(f"{len(used)} clean budget(s), need {max(min_budgets, 2)} (--min-budgets); "
                         f"left out: {left_out}")
    C = np.array([o.budget for o in used])
    lny = np.array([o.x_opt if estimator == "akima" else o.fit.x_opt for o in used])
    fit = fit_powerlaw(C, np.exp(lny))
    fit.estimator = estimator
    fit.excluded_budgets = excluded
    if keep_flagged and any(not o.ok for o in used):
        fit.warnings.append("flagged budgets kept (--keep-flagged): "
                            + ", ".join(f"{o.budget:.3g}" for o in used if not o.ok))
    # "seeds": each grid point's seeds resampled, the grid kept (only where every budget has replicates)
    sources = ({"runs": "akima", "seeds": "akima_seeds"} if estimator == "akima"
               else {"runs": "runs", "residuals": "residuals", "seeds": "parabola_seeds"})
    for method, key in sources.items():
        if not all(key in o.boot for o in used):
            continue
        draws = np.stack([o.boot[key] for o in used], axis=1)
        ok = np.all(np.isfinite(draws), axis=1)
        dropped = draws.shape[0] - int(ok.sum())
        if ok.sum() < MIN_BOOT_DRAWS:
            fit.warnings.append(f"{method} bootstrap unavailable ({dropped} of "
                                f"{draws.shape[0]} draws undefined)")
            continue
        if dropped:
            fit.warnings.append(f"{method} bootstrap: {dropped} of {draws.shape[0]} draws "
                                "dropped (a resampled budget had < 3 distinct points)")
        fit.boot[method] = _boot_loglog(np.log(C), draws[ok])
    return fit
