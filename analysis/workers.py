"""One pool of worker processes for the analysis's independent fits.

The expensive parts of an analysis are many small, independent least-squares problems: the test-time
law and its competing forms per run, and a thousand bootstrap refits per parametric law. Each is
single-threaded Python around tiny arrays, so one process uses one core; the pool spreads them over
the cores the process may use (``os.sched_getaffinity``: a SLURM allocation, a ``taskset``).

* **One pool, started once** (on first use, or early so that the workers' imports overlap the loading
  of runs) and shared by every stage: spawning costs about a second per worker.
* **spawn, single-threaded BLAS**: workers are spawned, not forked (the parent holds MLflow's threads),
  with OMP/OpenBLAS/MKL pinned to one thread at spawn, because n processes each running an n-thread
  BLAS on n cores spin against one another (a 100-resample bootstrap went from ~4 s to over 200 s).
* **Same answer with any worker count**: the callers split deterministic work (the resample weights
  are drawn before anything is sent), so results do not depend on the pool (tested).
* ``ANALYSIS_WORKERS`` sets the count (1: everything inline, no processes; the test suite uses this
  beside its own parallel workers).
"""
from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Callable, Iterable, Sequence

ENV = "ANALYSIS_WORKERS"
BLAS_THREADS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
_pool: ProcessPoolExecutor | None = None
_pool_size = 0


def n_workers() -> int:
    """Worker processes to use: ``ANALYSIS_WORKERS`` if set, else the cores this process may run on."""
    env = os.environ.get(ENV, "").strip()
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise SystemExit(f"{ENV}={env!r} is not an integer: set it to the number of worker "
                             "processes (1 runs the fits inline)") from None
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def single_threaded_blas():
    """Pin the BLAS thread variables while workers spawn (they read them at import)."""
    saved = {k: os.environ.get(k) for k in BLAS_THREADS}
    os.environ.update({k: "1" for k in BLAS_THREADS})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _ready() -> bool:
    return True


def pool() -> ProcessPoolExecutor | None:
    """The shared pool, started on first call (None when one worker is asked for: run inline).

    Starting returns at once: the processes spawn in the background, so calling this early (as
    ``analysis.report`` does before loading runs) overlaps their imports with the caller's work."""
    global _pool, _pool_size
    n = n_workers()
    if n <= 1:
        return None
    if _pool is None or _pool_size != n:
        shutdown()
        with single_threaded_blas():  # the processes start (and copy the environment) at these submits
            _pool = ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("spawn"))
            for _ in range(n):
                _pool.submit(_ready)
        _pool_size = n
    return _pool


def shutdown() -> None:
    global _pool, _pool_size
    if _pool is not None:
        _pool.shutdown(wait=True, cancel_futures=True)
    _pool, _pool_size = None, 0


atexit.register(shutdown)


def run_all(fn: Callable, jobs: Sequence[tuple], on_done: Callable[[int, object], None] | None = None,
            inline: bool = False) -> list:
    """``[fn(*job) for job in jobs]``, over the pool unless ``inline``, there is no pool or one job.

    ``fn`` must be a module-level function (it is pickled by name). ``on_done(i, result)`` is called
    in the parent as each job finishes (in completion order), e.g. to advance a progress bar."""
    ex = None if inline or len(jobs) < 2 else pool()
    out: list = [None] * len(jobs)
    if ex is None:
        for i, job in enumerate(jobs):
            out[i] = fn(*job)
            if on_done is not None:
                on_done(i, out[i])
        return out
    futures = {ex.submit(fn, *job): i for i, job in enumerate(jobs)}
    for f in as_completed(futures):
        i = futures[f]
        out[i] = f.result()
        if on_done is not None:
            on_done(i, out[i])
    return out


def chunks(n: int, size: int) -> Iterable[slice]:
    """Slices of range(n) of at most ``size`` items."""
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))
