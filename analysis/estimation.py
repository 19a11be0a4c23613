"""The statistical conventions every fit of the analysis shares, each written once: the interval level,
Student's t critical value at it, percentile intervals, the Huber loss on log residuals, and the
bootstrap's resample multiplicities (runs drawn with replacement)."""
from __future__ import annotations

import numpy as np
from scipy import stats

# Every interval the analysis reports is at this level (two-sided).
LEVEL = 0.95
# Huber's delta on log-loss residuals: quadratic within 0.1 % of the loss, linear beyond (Hoffmann et
# al. 2022's 1e-3, kept by the Epoch refit; Parcae arXiv 2604.12946 App. Q uses it for the test-time law).
HUBER_DELTA = 1e-3


# An exponent is a headline only when measured: its interval excludes 0 and is at most this wide (a
# compute-optimal exponent lives in (0, 1); an interval of width 0.5 says little more than that).
MAX_EXPONENT_WIDTH = 0.5


def not_identified(value: float, lo: float, hi: float, max_width: float = MAX_EXPONENT_WIDTH) -> str | None:
    """Why an exponent with interval [lo, hi] is not identified, or None when it is (or has no interval)."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "no interval" if np.isfinite(value) else "no estimate"
    if lo <= 0 <= hi:
        return f"its {100 * LEVEL:g} % interval [{lo:.3g}, {hi:.3g}] includes 0"
    if hi - lo > max_width:
        return f"its {100 * LEVEL:g} % interval [{lo:.3g}, {hi:.3g}] spans {hi - lo:.2f} > {max_width:g}"
    if not lo <= value <= hi:
        return f"the estimate {value:.3g} lies outside its own {100 * LEVEL:g} % interval [{lo:.3g}, {hi:.3g}]"
    return None


def t_critical(dof: int, level: float = LEVEL) -> float:
    """Two-sided critical value of Student's t with ``dof`` degrees of freedom at ``level``."""
    return float(stats.t.ppf(0.5 + level / 2, dof))


def percentile_interval(samples: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """Bootstrap percentile interval of the finite samples (NaN, NaN without any)."""
    x = np.asarray(samples, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan"), float("nan")
    q = 100 * (1 - level) / 2
    lo, hi = np.percentile(x, [q, 100 - q])
    return float(lo), float(hi)


def huber(r: np.ndarray, delta: float = HUBER_DELTA) -> tuple[np.ndarray, np.ndarray]:
    """Huber loss of residuals ``r`` and its derivative."""
    a = np.abs(r)
    quad = a <= delta
    # A trial step far outside the data's range overflows here; the optimizer rejects its inf objective,
    # so the warning would only be noise on the console.
    with np.errstate(over="ignore", invalid="ignore"):
        h = np.where(quad, 0.5 * r * r, delta * (a - 0.5 * delta))
    return h, np.clip(r, -delta, delta)


def huber_mean(r: np.ndarray, delta: float = HUBER_DELTA) -> float:
    """Mean Huber loss of residuals (the score of the test-time forms, Parcae Table 12)."""
    return float(np.mean(huber(np.asarray(r, dtype=float), delta)[0]))


def resample_weights(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Multiplicity of each of ``n`` runs in each of ``n_boot`` resamples (n draws with replacement)."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)


def cluster_weights(cluster: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Run (cluster) bootstrap of points: each point's multiplicity is the draws of its run."""
    clusters, inv = np.unique(cluster, return_inverse=True)
    return resample_weights(clusters.size, n_boot, rng)[:, inv]
