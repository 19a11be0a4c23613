"""One pre-training job (entry point: `python -m experiments.pretrain`).

One job = validate → resolve the run's identity → skip if finished → resume or start its MLflow run →
train → final evaluation at T = µ_rec and at the test-time loop counts → mark finished.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from experiments.training import distributed
from experiments.training import preemption
from experiments.data import run_data as real_data
from experiments.tracking import store as tracking
from experiments.data import tokenizer as tokenizers
from experiments.config.errors import ConfigError
from experiments.config.plan import Plan, plan
from experiments.config.identity import identity
from experiments.training.run_dir import DIVERGED, FAILED, FINISHED, RUNNING, read_status, write_status
from experiments.training.trainer import MetricSink, TrainResult, train

log = logging.getLogger("experiments.pretrain")


def _run_params(cfg: DictConfig, p: Plan, corpus_hash: str) -> dict:
    c = OmegaConf.to_container(cfg, resolve=True)
    c["model"] = dataclasses.asdict(p.model)
    c["data"]["content_hash"] = corpus_hash
    c["derived"] = {
        "tokens": p.tokens, "steps": p.steps, "flops_per_token": p.flops_per_token,
        "train_flops": p.train_flops, "n_params": p.n_params, "n_params_unrolled": p.n_params_unrolled,
        "mean_backprop": p.model.backprop_depth(),
    }
    c["model"]["mean_backprop"] = p.model.backprop_depth()
    return tracking.flatten(c)


def run(cfg: DictConfig, on_eval: Callable[[int, float], None] | None = None) -> float:
    """Run (or skip, or resume) one job; returns its final validation loss at T = µ_rec.

    on_eval(step, val_loss) is passed to the trainer (Optuna's pruning hook)."""
    p = plan(cfg)
    main = distributed.is_main()  # rank 0 of a data-parallel launch (or the only process) owns side effects

    def record(**fields) -> None:
        if main:
            write_status(run_dir, **fields)
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    root = Path(cfg.paths.root).resolve()
    data = real_data.load(cfg, root, p.model.block_size)
    run_hash = identity(cfg, p.model, data.content_hash)
    run_dir = root / cfg.paths.runs / run_hash
    status = read_status(run_dir)
    if status.get("status") == FINISHED:
        log.info("[skip] %s already finished (eval/loss=%.4f)", run_hash, status["final"]["eval/loss"])
        return status["final"]["eval/loss"]

    tracker = None
    if cfg.tracking.enabled and main:
        uri = cfg.tracking.uri or tracking.default_uri(root)
        exp_id = tracking.ensure_experiment(uri, cfg.tracking.experiment, root / "mlartifacts")
        tags = {"sweep_id": cfg.sweep_id, "config_hash": run_hash, "run_kind": "pretrain",
                "code_version": tracking.code_version(),
                "model_kind": p.model.kind, "run_dir": str(run_dir)}
        name = f"{p.model.name}-mu{p.model.mean_recurrence}-{p.tokens // 1000}k-{run_hash[:6]}"
        tracker = tracking.RunTracker(uri, exp_id, run_id=status.get("mlflow_run_id"), run_name=name, tags=tags,
                                      parent_run_id=cfg.tracking.get("parent_run_id"))
    # host and pid let `experiments.status` tell a live job from one whose process is gone.
    record(status=RUNNING, config_hash=run_hash, sweep_id=cfg.sweep_id,
           mlflow_run_id=tracker.run_id if tracker else None, host=socket.gethostname(), pid=os.getpid())
    if main:
        OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
        tokenizers.save(data.tokenizer, run_dir / "tokenizer.json")  # evaluation reads the run's own tokenizer
    if tracker:
        tracker.log_params({**_run_params(cfg, p, data.content_hash), "data.tokenizer_hash": data.tokenizer.content_hash,
                            "data.tokenizer_vocab": data.tokenizer.vocab_size})
        tracker.log_artifact(run_dir / "config.yaml")
        tracker.log_artifact(run_dir / "tokenizer.json")

    sink = MetricSink(run_dir / "metrics.jsonl", tracker.log_metrics if tracker else None,
                      tracker.flush if tracker else None)
    preemption.install()
    try:
        result: TrainResult = train(p.model, cfg.train, p.steps, data.train, data.val, run_dir, sink, on_eval,
                                  tokens_per_byte=data.tokens_per_byte)
    except SystemExit:
        # Preempted: the checkpoint is written and the job requeued; the run stays RUNNING so that
        # the requeued job resumes into it. Metrics up to the checkpoint are already flushed.
        raise
    except BaseException as err:
        record(status=FAILED, error=f"{type(err).__name__}: {err}")
        if tracker:
            tracker.finish("KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
        raise
    if result.status == DIVERGED:
        record(status=DIVERGED, final=result.final, steps=result.steps)
        if tracker:
            tracker.set_tags({"diverged": "true"})
            tracker.finish("FAILED")
        log.warning("[diverged] %s at step %d", run_hash, result.steps)
        return float("nan")
    record(status=FINISHED, final=result.final, skipped_steps=result.skipped_steps)
    if tracker:
        tracker.finish("FINISHED")
    log.info("[done] %s eval/loss=%.4f run_dir=%s", run_hash, result.final["eval/loss"], run_dir)
    return result.final["eval/loss"]
