"""Where the noise of an isoFLOP power law lives, and draws of it (the intervals of Approach 2).

A run's loss = its profile's smooth curve + noise. The per-run noise SD is measured from the used runs:
the residuals of a smooth curve through each budget's per-size means (a polynomial in ln size of degree
min(3, sizes − 3): flexible enough for an asymmetric profile, leaving residual dof) and, where a size
has replicates (seeds), their spread about their mean; pooled over the budgets with their dof.

A draw (``draw_optima``) redraws every used run's loss at its own grid point from the smooth curve plus
noise of that SD, the SD itself drawn from its scaled inverse-χ² (its dof are few on a coarse grid, and a
fixed SD would make the interval too narrow), and recomputes each budget's optimum with the estimator.
The power law of a draw (``analysis.isoflop.powerlaw``) then weights the budgets with Dirichlet(1, …, 1)
weights (Rubin's Bayesian bootstrap, 1981): budgets are resampled too, so scatter of the optima about
the line that the within-budget noise does not explain (a budget with its own systematic error)
widens the interval. The coverage of the result on synthetic truths is measured in docs/analysis.md
(benchmarks/isoflop_coverage.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.isoflop.estimator_choice import ESTIMATORS, MINIMA


@dataclass
class Profile:
    """One used budget on one axis: distinct sizes (ln), mean loss and replicate count at each, and the
    replicates' squared deviations from their size's mean (summed) with their dof."""

    budget: float
    ux: np.ndarray
    uy: np.ndarray
    counts: np.ndarray
    within_ss: float = 0.0
    within_dof: int = 0

    @classmethod
    def of(cls, budget: float, x: np.ndarray, y: np.ndarray) -> "Profile":
        ux, inv = np.unique(np.asarray(x, dtype=float), return_inverse=True)
        counts = np.bincount(inv)
        uy = np.bincount(inv, weights=y) / counts
        ss = float(np.sum((y - uy[inv]) ** 2))
        return cls(float(budget), ux, uy, counts.astype(float), ss, int(y.size - ux.size))

    @property
    def degree(self) -> int:
        return int(min(3, self.ux.size - 3))

    def smooth(self) -> tuple[np.ndarray, float, int]:
        """(fitted means, residual SS in per-run units, dof) of the smooth curve through the means."""
        d = self.degree
        if d < 2:
            return self.uy.copy(), 0.0, 0
        w = np.sqrt(self.counts)
        coef = np.polyfit(self.ux, self.uy, d, w=w)
        fitted = np.polyval(coef, self.ux)
        return fitted, float(np.sum(self.counts * (self.uy - fitted) ** 2)), int(self.ux.size - d - 1)


@dataclass
class NoiseModel:
    sd: float   # per-run loss SD
    dof: int

    def sds(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n draws of the SD from its scaled inverse-χ² given the measured SD and dof."""
        if self.dof <= 0:
            return np.full(n, self.sd)
        return self.sd * np.sqrt(self.dof / rng.chisquare(self.dof, n))


def noise_model(profiles: list[Profile], floor: float = 0.0) -> NoiseModel:
    """The pooled per-run SD of the used runs (at least ``floor``)."""
    ss, dof = 0.0, 0
    for p in profiles:
        _, rss, d = p.smooth()
        ss += rss + p.within_ss
        dof += d + p.within_dof
    sd = float(np.sqrt(ss / dof)) if dof > 0 else float("nan")
    return NoiseModel(max(sd, floor) if np.isfinite(sd) else floor, dof)


def draw_optima(profiles: list[Profile], model: NoiseModel, n_boot: int,
                rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per estimator: (n_boot, budgets) ln optima of redrawn profiles, and under "<estimator>_loss" the
    loss at each optimum (the estimator's curve at its minimum)."""
    sds = model.sds(n_boot, rng)
    out = {e: np.empty((n_boot, len(profiles))) for e in ESTIMATORS}
    out.update({f"{e}_loss": np.empty((n_boot, len(profiles))) for e in ESTIMATORS})
    for j, p in enumerate(profiles):
        fitted, _, _ = p.smooth()
        Y = fitted[None, :] + rng.normal(0, 1, (n_boot, p.ux.size)) * sds[:, None] / np.sqrt(p.counts)
        for e in ESTIMATORS:
            out[e][:, j], out[f"{e}_loss"][:, j] = MINIMA[e](p.ux, Y)
    return out
