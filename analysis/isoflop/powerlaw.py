"""Compute-optimal power laws y*(C) = k * C^gamma fitted to isoFLOP optima.

The fit is ordinary least squares of ln y* on ln C (unweighted: with a handful
of budgets the per-budget variances are themselves too noisy to weight by).
Two uncertainties are reported and they answer different questions:

* the t-interval from the OLS residuals (scatter of the optima about the line);
* the headline interval (HEADLINE, "model"): percentiles of the line refitted on draws that redraw every
  run's noise at its grid point (analysis.isoflop.noise) and resample the budgets (Dirichlet weights, the
  Bayesian bootstrap): noise where it lives, within budgets and between them. Its coverage on synthetic
  truths is measured in docs/analysis.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from analysis.estimation import LEVEL, percentile_interval, t_critical
from analysis.isoflop.optima import BudgetOptimum
from analysis.options import MIN_BUDGETS

MIN_BOOT_DRAWS = 50
HEADLINE = "model"  # the key of the headline interval's draws


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
    estimator: str = "parabola"  # which per-budget optimum: "parabola" or "akima"
    lack_of_fit: dict | None = None  # the F test that decides whether budgets are resampled

    @property
    def k(self) -> float:
        return float(np.exp(self.log_k))

    def predict(self, C: np.ndarray) -> np.ndarray:
        return np.exp(self.log_k + self.gamma * np.log(np.asarray(C, dtype=float)))

    def boot_ci_gamma(self, method: str = HEADLINE,
                      level: float = LEVEL) -> tuple[float, float]:
        if method not in self.boot:
            return float("nan"), float("nan")
        return percentile_interval(self.boot[method][0], level)

    def band(self, C: np.ndarray, method: str = HEADLINE,
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


def weighted_lines(lnC: np.ndarray, X: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted OLS of every row of X (draws × budgets) on lnC with the row's weights W: (slopes, ln k)."""
    W = W / W.sum(axis=1, keepdims=True)
    xm = W @ lnC
    ym = np.sum(W * X, axis=1)
    xc = lnC[None, :] - xm[:, None]
    slope = np.sum(W * xc * (X - ym[:, None]), axis=1) / np.sum(W * xc**2, axis=1)
    return slope, ym - slope * xm


def budget_weights(n_draws: int, n_budgets: int, rng: np.random.Generator) -> np.ndarray:
    """Dirichlet(1, …, 1) weights over the budgets per draw (the Bayesian bootstrap)."""
    return rng.dirichlet(np.ones(n_budgets), size=n_draws)


LACK_OF_FIT_LEVEL = 0.95


def headline_draws(lnC: np.ndarray, lny: np.ndarray, draws: np.ndarray, fit: PowerLawFit,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(γ, ln k) per draw of the budgets' optima. The budgets are resampled too (Dirichlet weights) only
    when the optima scatter about the line more than their noise draws explain (an F test at
    LACK_OF_FIT_LEVEL: a budget with a systematic error of its own); otherwise resampling them counts the
    same noise twice (measured: 100 % coverage on the fine grid, docs/analysis.md)."""
    n = lnC.size
    ones = np.ones((draws.shape[0], n))
    fit.lack_of_fit = None
    if n >= 3:
        resid = lny - (fit.log_k + fit.gamma * lnC)
        observed = float(resid @ resid) / (n - 2)
        expected = float(np.mean(np.var(draws, axis=0)))
        if expected > 0:
            F = observed / expected
            crit = float(stats.f.ppf(LACK_OF_FIT_LEVEL, n - 2, 10_000))
            fit.lack_of_fit = {"F": F, "critical": crit, "budgets_resampled": F > crit}
            if F > crit:
                fit.warnings.append(f"the optima scatter about the line {F:.1f}× more than their noise "
                                    f"explains (F > {crit:.2f}): budgets are resampled in the interval")
                return weighted_lines(lnC, draws, budget_weights(draws.shape[0], n, rng))
    return weighted_lines(lnC, draws, ones)


def powerlaw_from_optima(optima: list[BudgetOptimum], estimator: str = "parabola",
                         min_budgets: int = MIN_BUDGETS, keep_flagged: bool = False,
                         rng: np.random.Generator | None = None) -> PowerLawFit:
    """Power law through the per-budget minima of ``estimator``, with its headline draws (the budgets'
    noise draws under ``estimator``, budgets resampled). Budgets with an excluding flag are left out
    unless keep_flagged. Fewer than ``min_budgets`` budgets left -> NoPowerLaw: no fallback."""
    xs = {id(o): o.minima.get(estimator, (float("nan"),))[0] for o in optima}
    finite = [o for o in optima if np.isfinite(xs[id(o)])]
    used = finite if keep_flagged else [o for o in finite if o.ok]
    in_use = {id(o) for o in used}  # identity: optima hold arrays, so == is not a truth value
    excluded = [o.budget for o in optima if id(o) not in in_use]
    if len({o.budget for o in used}) < max(min_budgets, 2):
        left_out = "; ".join(f"C={o.budget:.3g}: " + (", ".join(str(f.code) for f in o.flags if f.excludes)
                                                      or "no finite optimum")
                             for o in optima if id(o) not in in_use) or "none"
        raise NoPowerLaw(f"{len(used)} clean budget(s), need {max(min_budgets, 2)} (--min-budgets); "
                         f"left out: {left_out}")
    C = np.array([o.budget for o in used])
    fit = fit_powerlaw(C, np.exp([xs[id(o)] for o in used]))
    fit.estimator = estimator
    fit.excluded_budgets = excluded
    if keep_flagged and any(not o.ok for o in used):
        fit.warnings.append("flagged budgets kept (--keep-flagged): "
                            + ", ".join(f"{o.budget:.3g}" for o in used if not o.ok))
    if all(estimator in o.boot for o in used):
        draws = np.stack([o.boot[estimator] for o in used], axis=1)
        ok = np.all(np.isfinite(draws), axis=1)
        if ok.sum() < MIN_BOOT_DRAWS:
            fit.warnings.append(f"no interval: {draws.shape[0] - int(ok.sum())} of {draws.shape[0]} draws "
                                "undefined")
        else:
            fit.boot[HEADLINE] = headline_draws(np.log(C), np.log(fit.y), draws[ok], fit,
                                                rng or np.random.default_rng(0))
    return fit
