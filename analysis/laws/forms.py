"""Parametric loss laws, each declared once: formula, parameters, prediction
and exact analytic gradient, start grid and the linear parameters used for
variable projection.

Every law is a *log-sum-exp* law (Chinchilla Approach 3 parameterisation):

    log L_hat = LSE(T_0, T_1, ..., T_K),   T_k = log(coefficient_k) + log(feature_k)

so L_hat = sum_k C_k * f_k(X; nonlinear params) with C_k = exp(theta_k) > 0.
The coefficients (E, A, B, Z) enter linearly in L_hat (not in log L_hat), which
is what variable projection exploits to build starts (see ``analysis.laws.point_fit``).

Internally, size inputs are centred (x = log N - c_N, y = log D - c_D, with
c fixed per fit from the data) so the optimiser works with O(1) numbers; the
linear-parameter logs are converted back to raw units with a_raw = a + alpha*c
(``Law.to_raw``).  Reported A, B are therefore the usual raw-unit prefactors.

Input definitions (``design_from_frame``):

* ``N``      — parameters, column ``n_params`` (Chinchilla law).
* ``N_unr``  — unrolled parameters, column ``n_params_unrolled``:
  total parameters + (mu_rec − 1) · core (recurrent-block) parameters, i.e. the
  parameter count of the fully unrolled network at the training mean recurrence
  (our reading of Parcae's N(mu_rec), App. K; the paper does not spell it out).
* ``N_rec``  — parameters of the recurrent block, derived per model name as
  (n_params_unrolled − n_params) / (mu_rec − 1) from the runs with mu_rec > 1
  (the median over those runs); ``N_once = n_params − N_rec`` (prelude, coda,
  embeddings: everything run once).  Needs at least one run with mu_rec > 1 per
  model name; ``r`` = mean_recurrence.
* ``D``      — training tokens, column ``tokens``.
* ``tau``    — T / mu_rec for the unified (test-time) law, one point per
  (run, T) from the ``loss_T{T}`` columns.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from analysis.runs import testtime_long

LOG_TINY = -40.0  # log-coefficient used for a linear coefficient of exactly 0


@dataclass(frozen=True)
class Law:
    """A log-sum-exp loss law.

    ``terms(theta, X)`` returns (T, dT): T (..., n, K) the LSE terms and dT (..., n, K, p)
    their derivatives with respect to theta (..., p); everything else is derived from it. The
    leading axes are a batch of parameter vectors (the bootstrap refits every resample at once).
    ``features(nl, X)`` returns the (n, K) linear features f_k for the
    nonlinear parameters ``nl`` (ordered as ``nonlinear``), so that
    L_hat = features @ exp(theta[linear]).
    """

    name: str
    formula: str
    params: tuple[str, ...]
    inputs: tuple[str, ...]
    linear: tuple[str, ...]           # log-coefficient parameters, in term order
    nonlinear: tuple[str, ...]        # exponents etc., searched by grid
    grid: dict[str, tuple[float, ...]]
    bounds: dict[str, tuple[float | None, float | None]]
    centring: tuple[tuple[str, str, str], ...]  # (linear param, exponent param, centre key)
    terms: Callable[[np.ndarray, dict], tuple[np.ndarray, np.ndarray]]
    features: Callable[[np.ndarray, dict], np.ndarray]
    notes: str = ""

    @property
    def n_params(self) -> int:
        return len(self.params)

    def index(self, name: str) -> int:
        return self.params.index(name)

    def log_predict(self, theta: np.ndarray, X: dict) -> np.ndarray:
        T, _ = self.terms(theta, X)
        m = T.max(axis=-1)
        return m + np.log(np.exp(T - m[..., None]).sum(axis=-1))

    def predict(self, theta: np.ndarray, X: dict) -> np.ndarray:
        return np.exp(self.log_predict(theta, X))

    def log_predict_and_grad(self, theta: np.ndarray, X: dict) -> tuple[np.ndarray, np.ndarray]:
        """log L_hat (..., n) and its exact gradient d log L_hat / d theta (..., n, p)."""
        T, dT = self.terms(theta, X)
        m = T.max(axis=-1)
        w = np.exp(T - m[..., None])
        s = w.sum(axis=-1)
        w /= s[..., None]
        return m + np.log(s), np.einsum("...nk,...nkp->...np", w, dT)

    def grad(self, theta: np.ndarray, X: dict) -> np.ndarray:
        return self.log_predict_and_grad(theta, X)[1]

    def to_raw(self, theta: np.ndarray, centres: dict[str, float]) -> dict[str, float]:
        """Internal (centred) theta -> raw-unit parameters incl. E, A, B, ... = exp(log-coef)."""
        th = dict(zip(self.params, (float(v) for v in theta)))
        for lin, expo, key in self.centring:
            th[lin] = th[lin] + th[expo] * centres[key]
        out = dict(th)
        for lin in self.linear:
            out[_COEF_NAME[lin]] = float(np.exp(th[lin]))
        return out

    def from_raw(self, raw: dict[str, float], centres: dict[str, float]) -> np.ndarray:
        th = {k: float(raw[k]) for k in self.params}
        for lin, expo, key in self.centring:
            th[lin] = th[lin] - th[expo] * centres[key]
        return np.array([th[k] for k in self.params])


_COEF_NAME = {"e": "E", "a": "A", "b": "B", "zl": "Z"}


# --- inputs ----------------------------------------------------------------------------------

@dataclass
class Design:
    """Inputs of one fit: raw arrays plus the centred ones the laws use."""

    loss: np.ndarray
    raw: dict[str, np.ndarray]
    cluster: np.ndarray  # run index per point (bootstrap resamples clusters)
    centres: dict[str, float] = field(default_factory=dict)
    ids: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return int(self.loss.size)

    @property
    def n_clusters(self) -> int:
        return int(np.unique(self.cluster).size)

    def X(self) -> dict[str, np.ndarray]:
        """Centred inputs (what ``Law.terms`` consumes)."""
        out: dict[str, np.ndarray] = {}
        r = self.raw
        if "N" in r:
            out["x"] = np.log(r["N"]) - self.centres["N"]
        if "D" in r:
            out["y"] = np.log(r["D"]) - self.centres["D"]
        if "N_once" in r:
            out["l_once"] = np.log(r["N_once"]) - self.centres["N"]
            out["l_rec"] = np.log(r["N_rec"]) - self.centres["N"]
            out["l_r"] = np.log(r["r"])
        if "tau" in r:
            out["tau"] = r["tau"]
        return out

    def subset(self, mask: np.ndarray) -> "Design":
        return Design(self.loss[mask], {k: v[mask] for k, v in self.raw.items()},
                      self.cluster[mask], dict(self.centres),
                      [i for i, m in zip(self.ids, mask) if m] if self.ids else [])


def make_design(loss, *, N=None, D=None, N_once=None, N_rec=None, r=None, tau=None,
                cluster=None, ids=None, centres=None) -> Design:
    """Build a Design from arrays. ``N`` is the size axis of the law (n_params or unrolled)."""
    loss = np.asarray(loss, dtype=float)
    raw: dict[str, np.ndarray] = {}
    for key, val in (("N", N), ("D", D), ("N_once", N_once), ("N_rec", N_rec), ("r", r),
                     ("tau", tau)):
        if val is not None:
            raw[key] = np.asarray(val, dtype=float)
    if centres is None:
        centres = {}
        if "D" in raw:
            centres["D"] = float(np.median(np.log(raw["D"])))
        if "N" in raw:
            centres["N"] = float(np.median(np.log(raw["N"])))
        elif "N_once" in raw:
            centres["N"] = float(np.median(np.log(raw["N_once"] + raw["r"] * raw["N_rec"])))
    cl = np.arange(loss.size) if cluster is None else np.asarray(cluster)
    return Design(loss, raw, cl, centres, list(ids) if ids is not None else [])


# --- the laws ---------------------------------------------------------------------------------

def _unpack(theta) -> tuple[list[np.ndarray], tuple[int, ...]]:
    """The parameters of theta (..., p), each shaped (..., 1) to broadcast against the n points, and
    the batch shape."""
    th = np.asarray(theta, dtype=float)
    return [th[..., i, None] for i in range(th.shape[-1])], th.shape[:-1]


def _power_terms(theta, size, y, extra: int = 0):
    """The Chinchilla core every law shares: terms E, A − α·size, B − β·y of the first five parameters
    (e, a, alpha, b, beta; log-coefficients) and their derivatives, in arrays with room for ``extra`` more
    terms and the law's further parameters, which the caller fills. Also returns the unpacked theta."""
    params, batch = _unpack(theta)
    e, a, al, b, be = params[:5]
    n = y.size
    T = np.empty(batch + (n, 3 + extra))
    T[..., 0] = e
    T[..., 1] = a - al * size
    T[..., 2] = b - be * y
    dT = np.zeros(batch + (n, 3 + extra, len(params)))
    dT[..., 0, 0] = 1.0
    dT[..., 1, 1] = 1.0
    dT[..., 1, 2] = -size
    dT[..., 2, 3] = 1.0
    dT[..., 2, 4] = -y
    return T, dT, params


def _chin_terms(theta, X):
    T, dT, _ = _power_terms(theta, X["x"], X["y"])
    return T, dT


def _chin_features(nl, X):
    al, be = nl
    return np.column_stack([np.ones_like(X["x"]), np.exp(-al * X["x"]), np.exp(-be * X["y"])])


def _rec_size(phi, X):
    """u = LSE(log N_once, phi log r + log N_rec) (centred) and s = weight of the rec term."""
    l1 = X["l_once"]
    l2 = phi * X["l_r"] + X["l_rec"]
    m = np.maximum(l1, l2)
    e1, e2 = np.exp(l1 - m), np.exp(l2 - m)
    return m + np.log(e1 + e2), e2 / (e1 + e2)


def _rec_terms(theta, X):
    u, s = _rec_size(np.asarray(theta, dtype=float)[..., 5, None], X)  # the size term depends on phi
    T, dT, (_, _, al, *_) = _power_terms(theta, u, X["y"])
    dT[..., 1, 5] = -al * s * X["l_r"]
    return T, dT


def _rec_features(nl, X):
    al, be, phi = nl
    u, _ = _rec_size(phi, X)
    return np.column_stack([np.ones_like(u), np.exp(-al * u), np.exp(-be * X["y"])])


def _uni_terms(theta, X):
    T, dT, (*_, zl, z) = _power_terms(theta, X["x"], X["y"], extra=1)
    T[..., 3] = zl - z * X["tau"]
    dT[..., 3, 5] = 1.0
    dT[..., 3, 6] = -X["tau"]
    return T, dT


def _uni_features(nl, X):
    al, be, z = nl
    return np.column_stack([np.ones_like(X["x"]), np.exp(-al * X["x"]),
                            np.exp(-be * X["y"]), np.exp(-z * X["tau"])])


EXPONENT_GRID = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.3)
_EXP_BOUNDS = (0.0, 5.0)

CHINCHILLA = Law(
    name="chinchilla",
    formula="L = E + A·N^−α + B·D^−β  (N = n_params, D = tokens)",
    params=("e", "a", "alpha", "b", "beta"),
    inputs=("N", "D"),
    linear=("e", "a", "b"),
    nonlinear=("alpha", "beta"),
    grid={"alpha": EXPONENT_GRID, "beta": EXPONENT_GRID},
    bounds={"alpha": _EXP_BOUNDS, "beta": _EXP_BOUNDS},
    centring=(("a", "alpha", "N"), ("b", "beta", "D")),
    terms=_chin_terms,
    features=_chin_features,
)

PARCAE = Law(
    name="parcae",
    formula="L = E + A·N(µ_rec)^−α + B·D^−β  (N(µ_rec) = n_params_unrolled = total + "
            "(µ_rec−1)·core params, D = tokens)",
    params=CHINCHILLA.params, inputs=("N", "D"), linear=CHINCHILLA.linear,
    nonlinear=CHINCHILLA.nonlinear, grid=CHINCHILLA.grid, bounds=CHINCHILLA.bounds,
    centring=CHINCHILLA.centring, terms=_chin_terms, features=_chin_features,
    notes="Parcae training law (Prairie et al. 2026, App. K, Table 11: a, b there are our α, β).",
)

RECURRENCE = Law(
    name="recurrence",
    formula="L = E + A·(N_once + r^φ·N_rec)^−α + B·D^−β  (r = µ_rec)",
    params=("e", "a", "alpha", "b", "beta", "phi"),
    inputs=("N_once", "N_rec", "r", "D"),
    linear=("e", "a", "b"),
    nonlinear=("alpha", "beta", "phi"),
    grid={"alpha": EXPONENT_GRID, "beta": EXPONENT_GRID,
          "phi": (-0.25, 0.0, 0.25, 0.5, 0.75, 1.0, 1.25)},
    bounds={"alpha": _EXP_BOUNDS, "beta": _EXP_BOUNDS, "phi": (-0.5, 1.5)},
    centring=(("a", "alpha", "N"), ("b", "beta", "D")),
    terms=_rec_terms,
    features=_rec_features,
    notes="Iso-depth recurrence-equivalence law (Schwethelm et al. 2026, φ ≈ 0.46 there).",
)

UNIFIED = Law(
    name="unified",
    formula="L(T) = E + A·N(µ_rec)^−α + B·D^−β + Z·exp(−z·T/µ_rec)",
    params=("e", "a", "alpha", "b", "beta", "zl", "z"),
    inputs=("N", "D", "tau"),
    linear=("e", "a", "b", "zl"),
    nonlinear=("alpha", "beta", "z"),
    grid={"alpha": EXPONENT_GRID, "beta": EXPONENT_GRID, "z": (0.3, 1.0, 2.0, 4.0, 8.0)},
    bounds={"alpha": _EXP_BOUNDS, "beta": _EXP_BOUNDS, "z": (0.0, 100.0)},
    centring=(("a", "alpha", "N"), ("b", "beta", "D")),
    terms=_uni_terms,
    features=_uni_features,
    notes="Parcae unified law (Eq. 4/8) over the test-time points of every run.",
)

LAWS: dict[str, Law] = {law.name: law for law in (CHINCHILLA, PARCAE, RECURRENCE, UNIFIED)}


# --- designs from the runs frame ------------------------------------------------------------

def recurrent_split(df: pd.DataFrame) -> pd.DataFrame:
    """Add N_rec / N_once columns (see module docstring); NaN where not derivable."""
    out = df.copy()
    mu = out["mean_recurrence"].astype(float)
    per_run = (out["n_params_unrolled"].astype(float) - out["n_params"].astype(float)) / (mu - 1)
    per_run[~(mu > 1)] = np.nan
    key = out["model_name"].astype(str)
    n_rec = per_run.groupby(key).transform("median")
    out["N_rec"] = n_rec
    out["N_once"] = out["n_params"].astype(float) - n_rec
    return out


def design_from_frame(df: pd.DataFrame, law: Law | str) -> Design:
    """Design for ``law`` from usable runs of load_runs (rows with missing inputs dropped)."""
    law = LAWS[law] if isinstance(law, str) else law
    ids = df["run_id"].astype(str).to_numpy()
    if law.name == "unified":
        long = testtime_long(df)
        meta = df.set_index(df["run_id"].astype(str))
        long = long[long["run_id"].astype(str).isin(meta.index)]
        rid = long["run_id"].astype(str).to_numpy()
        m = meta.loc[rid]
        N = m["n_params_unrolled"].astype(float).to_numpy()
        D = m["tokens"].astype(float).to_numpy()
        mu = m["mean_recurrence"].astype(float).to_numpy()
        tau = long["T"].to_numpy(dtype=float) / mu
        loss = long["loss"].to_numpy(dtype=float)
        ok = np.isfinite(N) & np.isfinite(D) & np.isfinite(tau) & (N > 0) & (D > 0) & (loss > 0)
        _, cl = np.unique(rid, return_inverse=True)
        return make_design(loss[ok], N=N[ok], D=D[ok], tau=tau[ok], cluster=cl[ok],
                           ids=[f"{r}@T{t}" for r, t in zip(rid[ok], long["T"].to_numpy()[ok])])
    loss = df["loss"].to_numpy(dtype=float)
    D = df["tokens"].astype(float).to_numpy()
    if law.name == "recurrence":
        rs = recurrent_split(df)
        N_once = rs["N_once"].to_numpy(dtype=float)
        N_rec = rs["N_rec"].to_numpy(dtype=float)
        r = rs["mean_recurrence"].astype(float).to_numpy()
        ok = (np.isfinite(N_once) & np.isfinite(N_rec) & (N_once > 0) & (N_rec > 0)
              & (r > 0) & np.isfinite(D) & (D > 0) & (loss > 0))
        return make_design(loss[ok], N_once=N_once[ok], N_rec=N_rec[ok], r=r[ok], D=D[ok],
                           ids=list(ids[ok]))
    col = "n_params_unrolled" if law.name in ("parcae",) else "n_params"
    N = df[col].astype(float).to_numpy()
    ok = np.isfinite(N) & (N > 0) & np.isfinite(D) & (D > 0) & np.isfinite(loss) & (loss > 0)
    return make_design(loss[ok], N=N[ok], D=D[ok], ids=list(ids[ok]))
