"""The analysis's worker pool (analysis/workers.py) changes how fast, never what: the same bootstrap draws
and the same test-time fits with 2 worker processes as inline."""
import numpy as np
import pytest

from analysis import workers
from analysis.laws.bootstrap import bootstrap_law
from analysis.laws.forms import CHINCHILLA
from analysis.synth import chinchilla_design
from analysis.testtime.saturation import fit_testtime


@pytest.fixture
def two_workers(monkeypatch):
    monkeypatch.setenv(workers.ENV, "2")
    yield
    workers.shutdown()


def test_pooled_bootstrap_and_fits_equal_inline(two_workers):
    d = chinchilla_design(noise=0.01, rng=np.random.default_rng(3))
    pooled = bootstrap_law(CHINCHILLA, d, n_boot=40, seed=2, progress=lambda n: None)
    assert workers._pool is not None and workers._pool_size == 2  # it did go through the processes
    inline = bootstrap_law(CHINCHILLA, d, n_boot=40, seed=2, inline=True, progress=lambda n: None)
    np.testing.assert_array_equal(pooled.theta, inline.theta)
    np.testing.assert_array_equal(pooled.success, inline.success)

    T = np.arange(1.0, 9.0)
    jobs = [(T, 3.0 + z * np.exp(-0.7 * T)) for z in (0.2, 0.5, 1.0)]
    done = []
    fits = workers.run_all(fit_testtime, jobs, on_done=lambda i, _: done.append(i))
    assert sorted(done) == [0, 1, 2]
    for (t, loss), fit in zip(jobs, fits):
        ref = fit_testtime(t, loss)
        assert (fit.L_inf, fit.Z, fit.z) == (ref.L_inf, ref.Z, ref.z)
        assert fit.z == pytest.approx(0.7, rel=1e-6)


def test_worker_count_from_the_environment(monkeypatch):
    monkeypatch.setenv(workers.ENV, "1")
    assert workers.n_workers() == 1 and workers.pool() is None
    monkeypatch.setenv(workers.ENV, "two")
    with pytest.raises(SystemExit, match="ANALYSIS_WORKERS"):
        workers.n_workers()
    monkeypatch.delenv(workers.ENV)
    assert workers.n_workers() >= 1
