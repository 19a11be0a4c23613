"""The run bootstrap of a parametric law fit (analysis.laws.point_fit): every resample reweights the
runs of the same design and is refitted warm from the full-data optimum (method below)."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace

import numpy as np

from analysis import workers
from analysis.estimation import LEVEL, cluster_weights, huber, percentile_interval
from analysis.laws.forms import LAWS, Design, Law
from analysis.laws.point_fit import (BOOT_GRID_STRIDE, N_STARTS_BOOT, FitSettings, LawFit, _accept, _at_bounds,
                                     _bound_arrays, _projected, _bounds, _grid_points, _refine, derived_quantities,
                                     fit_law)
from analysis.progress import Stage

# --- bootstrap ------------------------------------------------------------------------------
#
# A resample reweights the runs of the same design, so its optimum lies next to the full-data optimum:
# each refit starts *warm* there and is solved by a damped Gauss–Newton (Levenberg–Marquardt) iteration
# on the same Huber-on-log objective, with IRLS weights min(1, δ/|r|) for the Huber points and the
# same bounds (active set), to the same projected-gradient tolerance as L-BFGS-B
# (``GTOL_REL``·scale·δ²): the resample's optimum is the same point, reached in ~10 linear solves
# instead of ~100 L-BFGS iterations. Two checks keep the multi-start's protection against other basins:
# the full fit's own multi-start found no distinct minimum (else every resample is refitted cold), and
# per resample the exact Huber score of every point of the stride-2 variable-projection grid under the
# resample's weights is not below the warm optimum (a grid point below it proves a better basin: that
# resample is refitted cold, as before). A warm solve that does not converge is finished by L-BFGS-B.
#
# Cost: all resamples share the design's points and differ only in their weights, so the LM iterations
# of a whole chunk of resamples run as array operations over a leading batch axis (``lm_refine_batch``;
# every resample keeps its own damping, active set and stopping rule). A resample then costs about
# 0.5 ms instead of ~20 ms of Python-level iterations; what is left is the L-BFGS-B finish of the
# resamples LM leaves unconverged (on the default sweep, whose laws are not identified, 10-25 % of them
# once a vanished term is held at its floor, against 50-85 % before: ``LawBootstrap.n_finished``)
# and the chunks run on the analysis's worker pool (``analysis.workers``).

BOOTSTRAP_METHOD = ("each refitted from the full-data optimum by a bounded Levenberg–Marquardt solve of the same "
                    "objective to the same tolerance (finished by L-BFGS-B where it stalls); a resample whose "
                    "stride-2 start grid holds a lower point than that optimum, or every resample when the full "
                    "fit has distinct minima, is refitted cold from the grid with 2 refined starts")
LM_MAXITER = 200
BOOT_FALLBACK_MAXITER = 1000
LM_LAMBDA0 = 1e-3
IRLS_FLOOR = 1e-2


def _lm_eval(law: Law, th: np.ndarray, X: dict, lnL: np.ndarray, W: np.ndarray, delta: float,
             scale: np.ndarray):
    """Per resample (rows of th (B, p) and W (B, n)): scaled objective (B,), gradient (B, p), log
    residuals (B, n) and Jacobian (B, n, p). Points of weight 0 are left out of the sums."""
    lp, J = law.log_predict_and_grad(th, X)
    r = lp - lnL
    h, psi = huber(r, delta)
    f = scale * np.where(W > 0, W * h, 0.0).sum(axis=1)
    return f, scale[:, None] * np.einsum("bnp,bn->bp", J, W * psi), r, J


def lm_refine_batch(law: Law, th0: np.ndarray, X: dict, lnL: np.ndarray, W: np.ndarray, lo: np.ndarray,
                    hi: np.ndarray, delta: float, scale: np.ndarray,
                    gtol: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bounded Levenberg–Marquardt on scale·Σ w Huber(log L_hat − log L) from th0, for every resample
    (row of W; lo, hi (B, p), scale and gtol (B,)) at once.

    Each resample follows its own iteration (its damping λ, its active bounds, its stopping rule);
    they share only the array operations: a resample costs about what one Python-level LM step costs
    for all of them. Returns (theta, scaled objective, converged, iterations), converged meaning the
    projected gradient reached gtol (the L-BFGS-B criterion of ``_refine``) or, where no descent is
    left, ``_accept``'s rule."""
    B, p = W.shape[0], th0.shape[-1]
    th = np.clip(np.broadcast_to(th0, (B, p)), lo, hi)
    f, g, r, J = _lm_eval(law, th, X, lnL, W, delta, scale)
    lam = np.full(B, LM_LAMBDA0)
    it = np.zeros(B, dtype=int)
    done = np.zeros(B, dtype=bool)
    conv = np.zeros(B, dtype=bool)
    eye = np.eye(p)

    def stop(idx: np.ndarray) -> None:  # no descent left: converged by fit_law's acceptance rule
        done[idx] = True
        conv[idx] = _accept(th[idx], g[idx], lo[idx], hi[idx], f[idx], scale[idx] * delta**2)

    while not done.all():
        A = np.nonzero(~done)[0]
        pg = _projected(th[A], g[A], lo[A], hi[A])
        reached = np.max(np.abs(pg), axis=1) <= gtol[A]
        capped = ~reached & (it[A] >= LM_MAXITER)
        done[A[reached | capped]] = True
        conv[A[reached]] = True
        A, pg = A[~(reached | capped)], pg[~(reached | capped)]
        # A parameter at a bound whose gradient is below the tolerance is held there. Typically a
        # log-coefficient at its floor (a term that vanished, E -> 0): its curvature is ~exp(-40), so
        # a free step along it is so long that every step was rejected until the damping gave up, and
        # the resample fell to L-BFGS-B (most of them on the default sweep).
        at_lo, at_hi = _at_bounds(th[A], lo[A], hi[A])
        free = (pg != 0) & ~((at_lo | at_hi) & (np.abs(pg) <= gtol[A, None]))
        if A.size == 0:
            break
        rA = np.abs(r[A])
        irls = W[A] * np.where(rA <= delta, 1.0, IRLS_FLOOR * delta / np.maximum(rA, 1e-300))
        H = scale[A, None, None] * np.einsum("bnp,bn,bnq->bpq", J[A], irls, J[A])
        d = np.diagonal(H, axis1=1, axis2=2).copy()
        d_max = np.max(np.where(free, d, -np.inf), axis=1)
        d = np.where(d <= 0, 1e-12 * np.maximum(d_max, 1.0)[:, None], d)
        # parameters held at a bound get the identity row and a zero right-hand side: step 0
        M = (np.where(free[:, :, None] & free[:, None, :], H, 0.0)
             + (np.where(free, lam[A, None] * d, 1.0))[:, :, None] * eye)
        rhs = np.where(free, -g[A], 0.0)
        step, solved = _solve_each(M, rhs)
        cand = np.clip(th[A] + step, lo[A], hi[A])
        fc, gc, rc, Jc = _lm_eval(law, cand, X, lnL, W[A], delta, scale[A])
        acc = solved & np.isfinite(fc) & (fc <= f[A])
        Ac = A[acc]
        stalled = Ac[np.all(cand[acc] == th[Ac], axis=1)]
        th[Ac], f[Ac], g[Ac], r[Ac], J[Ac] = cand[acc], fc[acc], gc[acc], rc[acc], Jc[acc]
        lam[Ac] = np.maximum(lam[Ac] / 3.0, 1e-12)
        it[Ac] += 1
        stop(stalled)
        Ar = A[~acc]
        lam[Ar] *= 4.0
        stop(Ar[lam[Ar] > 1e12])  # no descent left at machine precision
    return th, f, conv, it


def _solve_each(M: np.ndarray, rhs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Solve every system M[b] x = rhs[b]; a singular one gets a zero step and solved False."""
    try:
        x = np.linalg.solve(M, rhs[..., None])[..., 0]
    except np.linalg.LinAlgError:  # one singular system fails the whole batch: solve them one by one
        x = np.zeros_like(rhs)
        for b in range(M.shape[0]):
            with contextlib.suppress(np.linalg.LinAlgError):
                x[b] = np.linalg.solve(M[b], rhs[b])
    ok = np.all(np.isfinite(x), axis=1)
    return np.where(ok[:, None], x, 0.0), ok


def lm_refine(law: Law, th0: np.ndarray, X: dict, lnL: np.ndarray, w: np.ndarray, lo: np.ndarray,
              hi: np.ndarray, delta: float, scale: float, gtol: float) -> tuple[np.ndarray, float, bool, int]:
    """``lm_refine_batch`` for one resample: (theta, scaled objective, converged, iterations)."""
    th, f, conv, it = lm_refine_batch(law, th0, X, lnL, w[None], lo[None], hi[None], delta,
                                      np.array([scale]), np.array([gtol]))
    return th[0], float(f[0]), bool(conv[0]), int(it[0])


def _grid_scores(law: Law, X: dict, L: np.ndarray, W: np.ndarray, stride: int,
                 delta: float) -> np.ndarray:
    """Per resample (row of W), the lowest exact Σ w·Huber over the variable-projection grid
    (linear coefficients by weighted least squares; grid points with a negative coefficient skipped)."""
    grid = _grid_points(law, stride)
    F = np.stack([law.features(nl, X) for nl in grid])            # (G, n, K)
    lnL = np.log(L)
    K = F.shape[2]
    out = np.full(W.shape[0], np.inf)
    FL = F / L[None, :, None]
    outer = np.einsum("gnk,gnj->gnkj", FL, FL)                      # (G, n, K, K)
    for start in range(0, W.shape[0], 64):
        Wc = W[start:start + 64]
        gram = np.einsum("bn,gnkj->bgkj", Wc, outer)
        rhs = np.einsum("bn,gnk->bgk", Wc, FL)
        gram += 1e-12 * np.trace(gram, axis1=2, axis2=3)[..., None, None] * np.eye(K)
        with np.errstate(all="ignore"):
            coef = np.linalg.solve(gram, rhs[..., None])[..., 0]  # (b, G, K)
            pred = np.einsum("gnk,bgk->bgn", F, coef)
            r = np.log(np.where(pred > 0, pred, np.nan)) - lnL
        h, _ = huber(r, delta)
        score = np.einsum("bgn,bn->bg", np.where(Wc[:, None, :] > 0, h, 0.0), Wc)
        bad = ~np.all(coef >= 0, axis=2) | ~np.isfinite(score)
        score[bad] = np.inf
        out[start:start + 64] = score.min(axis=1)
    return out


def _warm_chunk(law_name: str, design: Design, W: np.ndarray, theta0: np.ndarray,
                s: FitSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Warm refits of the resamples W (rows) from theta0, all at once by ``lm_refine_batch``, the ones
    it leaves unconverged finished one by one by L-BFGS-B: (thetas, objectives, ok, finished by L-BFGS-B)."""
    law = LAWS[law_name]
    X_all, L_all = design.X(), design.loss
    lnL_all = np.log(L_all)
    B = W.shape[0]
    lo, hi = np.empty((B, law.n_params)), np.empty((B, law.n_params))
    for i, w in enumerate(W):  # E's upper bound is the lowest loss the resample contains
        lo[i], hi[i] = _bound_arrays(_bounds(law, lnL_all[w > 0]))
    scale = np.array([s.effective_scale(float(w.sum())) for w in W])
    thetas, f, ok, _ = lm_refine_batch(law, theta0, X_all, lnL_all, W, lo, hi, s.delta, scale,
                                       s.gtol_rel * scale * s.delta**2)
    finished = ~ok
    for i in np.nonzero(finished)[0]:
        # finish with the reference optimiser from where LM stopped (a long valley, typically E → 0
        # where the gradient fades exponentially: capped, and counted as not converged when the cap
        # is reached — the report warns about such refits)
        keep = W[i] > 0
        X = {k: v[keep] for k, v in X_all.items()}
        lnL, wk = lnL_all[keep], W[i][keep]
        bounds = _bounds(law, lnL)
        res = _refine(law, thetas[i], X, lnL, wk, replace(s, maxiter=BOOT_FALLBACK_MAXITER), bounds, scale[i])
        if res.fun <= f[i]:
            thetas[i], f[i] = res.x, float(res.fun)
        ok[i] = bool(res.success) or bool(_accept(thetas[i], res.jac, lo[i], hi[i], f[i],
                                                  scale[i] * s.delta**2))
    return thetas, f / scale, ok, finished


def _in_chunks(fn, law_name: str, design: Design, W: np.ndarray, extra: tuple, inline: bool,
               tick) -> tuple[np.ndarray, ...]:
    """fn(law_name, design, W[chunk], *extra) over chunks of resamples, on the shared worker pool
    unless ``inline``; ``tick(n)`` as each chunk finishes. Same result whatever the pool's size."""
    # a few chunks per worker: balance, a progress tick now and then, and batches big enough for
    # lm_refine_batch's array operations to pay
    size = max(10, -(-W.shape[0] // (4 * workers.n_workers())))
    parts = list(workers.chunks(W.shape[0], size))
    jobs = [(law_name, design, W[sl], *extra) for sl in parts]
    done = workers.run_all(fn, jobs, on_done=lambda i, _: tick(parts[i].stop - parts[i].start),
                           inline=inline)
    return tuple(np.concatenate([d[k] for d in done]) for k in range(len(done[0])))


def _warm_refits(law: Law, design: Design, W: np.ndarray, full: LawFit, s: FitSettings,
                 on_step, inline: bool) -> tuple[np.ndarray, ...]:
    """Warm Levenberg–Marquardt refits of every resample; returns (thetas, objectives, ok, needs_cold,
    finished by L-BFGS-B)."""
    thetas, objs, ok, finished = _in_chunks(_warm_chunk, law.name, design, W, (full.theta, s), inline, on_step)
    grid_best = _grid_scores(law, design.X(), design.loss, W, s.grid_stride, s.delta)
    # A grid point strictly below the warm optimum (beyond rounding) means another, lower basin.
    needs_cold = grid_best < objs * (1 - 1e-9) - 1e-300
    return thetas, objs, ok, needs_cold, finished


def _boot_chunk(law_name: str, design: Design, weights: np.ndarray,
                settings: FitSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cold multi-start refits (the reference method, used where the warm refit is not trusted)."""
    law = LAWS[law_name]
    thetas = np.full((weights.shape[0], law.n_params), np.nan)
    objs = np.full(weights.shape[0], np.nan)
    ok = np.zeros(weights.shape[0], dtype=bool)
    for i, w in enumerate(weights):
        try:
            f = fit_law(law, design, weights=w, settings=settings)
        except Exception:  # noqa: BLE001 - a failed resample is recorded, not fatal
            continue
        thetas[i], objs[i], ok[i] = f.theta, f.objective, f.success
    return thetas, objs, ok


@dataclass
class LawBootstrap:
    law: Law
    centres: dict[str, float]
    samples: dict[str, np.ndarray]   # raw-unit parameter draws + derived quantities
    theta: np.ndarray                # internal draws (n_boot, p)
    success: np.ndarray
    predictions: np.ndarray | None = None  # (n_boot, n_targets)
    n_clusters: int = 0
    settings: FitSettings = field(default_factory=FitSettings)
    seconds: float = float("nan")
    n_cold: int = 0                  # resamples refitted cold (multi-start) instead of warm
    n_finished: int = 0              # warm refits Levenberg–Marquardt left to L-BFGS-B (the slow path)

    @property
    def n_boot(self) -> int:
        return int(self.theta.shape[0])

    def interval(self, name: str, level: float = LEVEL) -> tuple[float, float]:
        v = self.samples[name]
        if np.isfinite(v).sum() < 10:
            return float("nan"), float("nan")
        return percentile_interval(v, level)

    def prediction_interval(self, level: float = LEVEL) -> np.ndarray:
        q = 100 * (1 - level) / 2
        return np.nanpercentile(self.predictions, [q, 100 - q], axis=0)

    def corr(self, x: str, y: str) -> float:
        a, b = self.samples[x], self.samples[y]
        ok = np.isfinite(a) & np.isfinite(b)
        if ok.sum() < 10 or np.std(a[ok]) == 0 or np.std(b[ok]) == 0:
            return float("nan")
        with np.errstate(invalid="ignore", divide="ignore"):  # near-constant samples: nan, which callers skip
            return float(np.corrcoef(a[ok], b[ok])[0, 1])


def bootstrap_weights(design: Design, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Cluster (run) bootstrap: multiplicity of each point = draws of its run."""
    return cluster_weights(design.cluster, n_boot, rng)


def bootstrap_law(law: Law | str, design: Design, n_boot: int = 1000, seed: int = 0,
                  inline: bool = False, settings: FitSettings | None = None,
                  predict_at: Design | None = None, fit: LawFit | None = None,
                  warm: bool = True, progress=None) -> LawBootstrap:
    """Nonparametric bootstrap over runs (clusters).

    warm (default): every resample refitted from the full-data optimum ``fit`` (fitted here when None)
    by ``lm_refine``, with the basin checks described above; resamples that fail them, or all of them
    when the full fit has distinct minima, are refitted *cold* from the stride-2 variable-projection
    grid with ``N_STARTS_BOOT`` refined starts. The refits run in chunks on the shared worker pool
    (``analysis.workers``; the draws do not depend on it), or in this process when ``inline``.
    warm=False: every resample cold (the reference method). progress: a callable(n) told of each
    finished resample (default: a bar of its own, ``analysis.progress``)."""
    import time

    law = LAWS[law] if isinstance(law, str) else law
    s = settings or FitSettings(n_starts=N_STARTS_BOOT, grid_stride=BOOT_GRID_STRIDE)
    rng = np.random.default_rng(seed)
    W = bootstrap_weights(design, n_boot, rng)
    t0 = time.perf_counter()
    bar = Stage(f"bootstrap {law.name}", n_boot, "resamples") if progress is None else None
    tick = progress or bar.update
    thetas = np.full((n_boot, law.n_params), np.nan)
    objs = np.full(n_boot, np.inf)
    ok = np.zeros(n_boot, dtype=bool)
    cold = np.ones(n_boot, dtype=bool)
    finished = np.zeros(n_boot, dtype=bool)
    multimodal = False
    if warm:
        full = fit or fit_law(law, design, settings=FitSettings(delta=s.delta, scale=s.scale))
        multimodal = any(f.startswith("distinct minima") for f in full.flags)
        if not multimodal:
            thetas, objs, ok, cold, finished = _warm_refits(law, design, W, full, s, tick, inline)
    if cold.any():
        idx = np.nonzero(cold)[0]
        # the warm pass already counted these resamples on the bar
        tick_cold = (lambda n: None) if warm and not multimodal else tick
        th_c, obj_c, ok_c = _in_chunks(_boot_chunk, law.name, design, W[idx], (s,), inline, tick_cold)
        better = ~(objs[idx] <= obj_c)  # the cold refit wins unless the warm one is at least as low
        thetas[idx[better]], ok[idx[better]] = th_c[better], ok_c[better]
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - t0
    samples = _raw_samples(law, thetas, design.centres)
    preds = None
    if predict_at is not None:
        d = Design(predict_at.loss, predict_at.raw, predict_at.cluster, dict(design.centres))
        Xp = d.X()
        preds = np.full((n_boot, d.n), np.nan)
        for i, th in enumerate(thetas):
            if np.all(np.isfinite(th)):
                preds[i] = law.predict(th, Xp)
    return LawBootstrap(law, dict(design.centres), samples, thetas, ok, preds,
                        design.n_clusters, s, seconds, int(cold.sum()), int(finished.sum()))


def _raw_samples(law: Law, thetas: np.ndarray, centres: dict[str, float]) -> dict[str, np.ndarray]:
    rows = []
    for th in thetas:
        if np.all(np.isfinite(th)):
            p = law.to_raw(th, centres)
            p.update(derived_quantities(p))
            rows.append(p)
        else:
            rows.append(None)
    keys = sorted({k for p in rows if p for k in p})
    return {k: np.array([p.get(k, np.nan) if p else np.nan for p in rows], dtype=float)
            for k in keys}
