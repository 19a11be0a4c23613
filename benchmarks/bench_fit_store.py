"""A synthetic MLflow store the size of the default sweep (conf/sweep/isoflop.yaml: µ_rec ∈ {1, 2, 4, 8} ×
C ∈ {1, 2, 4}·10¹² FLOPs on the tiny preset, test-time evaluation at T ∈ {1, 2, 4, 8, 16} plus the dense grid
the sweep turns on: every T up to µ_rec and 1.5, 2, 3·µ_rec, 8 to 11 loop counts per run), following the
training side's data contract (tags sweep_id / run_kind / config_hash, params model.* / train.* / derived.*,
metrics eval/loss and eval/loss_T{T}). Used by benchmarks/bench_fit.py and tests/analysis.

The losses follow the Parcae training law L = E + A·N(µ_rec)^−α + B·D^−β (arXiv 2604.12946, App. K) with
D = C / (6·N(µ_rec)), so every budget has an interior optimum in µ_rec, plus the test-time law
L(T) = L_∞ + Z·exp(−z·T) per run (ibid., Eq. 4) and 0.05 % multiplicative noise.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

SWEEP_ID = "isoflop"
MUS = (1, 2, 4, 8)
BUDGETS = (1e12, 2e12, 4e12)
TEST_LOOPS = (1, 2, 4, 8, 16)
N_ONCE, N_REC = 52_000, 25_000  # tiny preset: embeddings + prelude + coda, recurrent core
LAW = {"E": 3.0, "A": 16.2, "alpha": 0.3, "B": 40.0, "beta": 0.3}  # µ_rec* grows with C, interior


def eval_loops(mu: int) -> list[int]:
    """The loop counts a run of the default sweep is evaluated at (experiments.config.plan.eval_loops with
    train.test_loops_dense=true, as conf/sweep/isoflop.yaml sets it)."""
    from experiments.config.plan import dense_test_loops  # imports torch: only when a store is built
    return sorted(set(TEST_LOOPS) | set(dense_test_loops(mu)))


def unrolled_params(mu: int) -> int:
    return N_ONCE + mu * N_REC


def loss_at(mu: int, budget: float) -> tuple[float, int]:
    n = unrolled_params(mu)
    tokens = int(budget / (6 * n))
    return LAW["E"] + LAW["A"] * n ** -LAW["alpha"] + LAW["B"] * tokens ** -LAW["beta"], tokens


def default_sweep_store(root: str | Path, *, sweep_id: str = SWEEP_ID, experiment: str = "parcae",
                        seed: int = 0, noise: float = 5e-4) -> str:
    """Create (or extend) an sqlite store under root with one sweep of 12 finished runs; returns its URI."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{root.resolve() / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(
        experiment, artifact_location=str(root.resolve() / "artifacts"))
    rng = np.random.default_rng(seed)
    parent = client.create_run(exp_id, run_name=sweep_id, tags={"sweep_id": sweep_id, "run_kind": "sweep"})
    for budget in BUDGETS:
        for mu in MUS:
            loss, tokens = loss_at(mu, budget)
            loss *= float(np.exp(rng.normal(0, noise)))
            name = f"tiny-mu{mu}-C{budget:.0e}".replace("+", "")
            run = client.create_run(exp_id, run_name=name, tags={
                "sweep_id": sweep_id, "run_kind": "pretrain", "config_hash": f"{mu:02d}{budget:.0e}",
                "mlflow.parentRunId": parent.info.run_id})
            fpt = 6 * unrolled_params(mu)
            params = {"model.name": "tiny", "model.kind": "parcae", "model.mean_recurrence": mu,
                      "model.mean_backprop": (mu + 1) // 2, "train.flop_budget": f"{budget:g}",
                      "derived.tokens": tokens, "derived.flops_per_token": fpt,
                      "derived.n_params": N_ONCE + N_REC, "derived.n_params_unrolled": unrolled_params(mu),
                      "derived.train_flops": tokens * fpt}
            now = int(time.time() * 1000)
            metrics = [Metric("train/loss", loss + 1.0 / (s + 1), now, s) for s in range(3)]
            metrics.append(Metric("eval/loss", loss, now, 2))
            for T in eval_loops(mu):  # saturates at T ≈ µ_rec, a little below the loss at µ_rec
                value = loss - 0.01 + 0.6 * np.exp(-0.7 * T / mu) * (1 + rng.normal(0, noise))
                metrics.append(Metric(f"eval/loss_T{T}", float(value), now, 2))
            client.log_batch(run.info.run_id, metrics=metrics,
                             params=[Param(k, str(v)) for k, v in params.items()],
                             tags=[RunTag("mlflow.runName", name)])
            client.set_terminated(run.info.run_id)
    client.set_terminated(parent.info.run_id)
    return uri
