"""One pre-training job (entry point: `python -m experiments.pretrain`).

One job = validate → resolve the run's identity → skip if finished → resume or start its MLflow run →
train → final evaluation at T = µ_rec and at the test-time loop counts → mark finished.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
from omegaconf import DictConfig

from experiments.training import distributed
from experiments.training import preemption
from experiments.data import run_data as real_data
from experiments.config import naming
from experiments.tracking import describe
from experiments.tracking import store as tracking
from experiments.data import tokenizer as tokenizers
from experiments.config.plan import Plan, plan
from experiments.training.checkpoint import CHECKPOINT_NAME
from experiments.training.job import METRICS_NAME, Job, identify
from experiments.training.run_dir import DIVERGED, FINISHED
from experiments.training.faults import fault_point
from experiments.training.trainer import MetricSink, TrainResult, train
from experiments.training import branching
from experiments.config.identity import replicate_identity
from tracking_contract import (BRANCH_FROM_STEP_TAG, BRANCH_FROM_TOKENS_TAG, BRANCH_TRUNK_TAG,
                               REPLICATE_TAG)
from parcae import executed_flops_per_token, param_counts

log = logging.getLogger("experiments.pretrain")
PRETRAIN_KIND = "pretrain"


def _run_params(cfg: DictConfig, p: Plan, corpus_hash: str) -> dict:
    c = p.resolved_config(cfg)
    c["data"]["content_hash"] = corpus_hash
    c["derived"] = {
        "tokens": p.tokens, "steps": p.steps, "flops_per_token": p.flops_per_token,
        "train_flops": p.train_flops, "n_params": p.n_params, "n_params_unrolled": p.n_params_unrolled,
        "n_params_core": p.n_params_core, "mean_backprop": p.model.backprop_depth(),
        # What a step executes (MFU), beside the reference accounting that set the budget; the tied embedding.
        "executed_flops_per_token": executed_flops_per_token(p.model),
        "n_params_embedding": param_counts(p.model)["embedding"],
    }
    c["model"]["mean_backprop"] = p.model.backprop_depth()
    return tracking.flatten(c)


def run(cfg: DictConfig, on_eval: Callable[[int, float], None] | None = None) -> float:
    """Run (or skip, or resume) one job; returns its final validation loss at T = µ_rec.

    on_eval(step, val_loss) is passed to the trainer (Optuna's pruning hook). Under torchrun or SLURM every rank
    calls this; rank 0 alone touches the run dir and MLflow, and the Job hands its decisions to all ranks."""
    p = plan(cfg)
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    # The process group first: every decision below reaches all ranks through it (Job.agree).
    ctx = distributed.setup(cfg.train.device)
    main = ctx.is_main
    root = Path(cfg.paths.root).resolve()
    data = real_data.load(cfg, root, p.model.block_size)
    ident = identify(cfg, root, data.content_hash, p)
    run_dir, run_hash = ident.run_dir, ident.hash
    params = {**_run_params(cfg, p, data.content_hash), "data.tokenizer_hash": data.tokenizer.content_hash,
              "data.tokenizer_vocab": data.tokenizer.vocab_size}
    search_metrics, search_tags = describe.search_fields(
        p.model.mean_recurrence if p.model.kind == "parcae" else None, cfg.train.flop_budget, p.tokens, p.n_params)
    tags = {"sweep_id": cfg.sweep_id, "code_version": tracking.code_version(), "model_kind": p.model.kind,
            "model": p.model.name, **search_tags}
    resolved = p.resolved_config(cfg)
    name = naming.run_name(resolved)  # e.g. isoflop/mu4-C2e12
    corpus = describe.dataset_input(resolved["data"], data.content_hash, root / cfg.paths.cache)
    branch = branching.branch_of(cfg, p, root, data.content_hash)
    tags.update({REPLICATE_TAG: replicate_identity(cfg, p.model, data.content_hash), "seed": str(cfg.train.seed)})
    if branch:
        tags.update({BRANCH_TRUNK_TAG: branch.trunk_hash, BRANCH_FROM_STEP_TAG: str(branch.from_step),
                     BRANCH_FROM_TOKENS_TAG: str(branch.from_tokens)})
    with Job(cfg, ident, PRETRAIN_KIND, ctx) as job:
        if job.finished:
            # Joins this sweep; a run the store lost, or one killed before MLflow heard it finished, is repaired.
            job.agree(job.track, params, name, tags, search_metrics=search_metrics, inputs=(corpus,))
            log.info("[skip] %s already finished (eval/loss=%.4f)", run_hash, job.final_loss)
            return job.final_loss
        try:
            if branch:  # its checkpoint from the trunk's stop at its cooldown start, training the trunk there if needed
                branching.prepare(job, branch, p, data, naming.point_label(resolved))

            def prepare():
                job.save_config()
                tokenizers.save(data.tokenizer, run_dir / "tokenizer.json")  # evaluation reads the run's own
                job.restore_record()  # metrics.jsonl cut back to the checkpoint: MLflow mirrors it
                tracker = job.track(params, name, tags, (run_dir / "config.yaml", run_dir / "tokenizer.json"),
                                    search_metrics=search_metrics, inputs=(corpus,))
                job.started()
                return tracker

            job.agree(prepare)
            sink = MetricSink(run_dir / METRICS_NAME, job.tracker)
            preemption.install()
            result: TrainResult = train(p.model, cfg.train, p.steps, data.train, data.val, run_dir, sink, on_eval,
                                        tokens_per_byte=data.tokens_per_byte, label=naming.point_label(resolved))
        except SystemExit:
            # Preempted: the checkpoint is written and the job requeued; the run stays RUNNING so that
            # the requeued job resumes into it. Metrics up to the checkpoint are already flushed.
            raise
        except BaseException as err:
            job.failed(err)
            raise
        if result.status == DIVERGED:
            job.finish(DIVERGED, result.final, steps=result.steps)
            log.warning("[diverged] %s at step %d", run_hash, result.steps)
            return float("nan")
        if main:
            job.log_model((run_dir / CHECKPOINT_NAME, run_dir / "config.yaml", run_dir / "tokenizer.json"))
        fault_point("artifacts.after_log")
        job.finish(FINISHED, result.final, steps=p.steps, skipped_steps=result.skipped_steps)
    log.info("[done] %s eval/loss=%.4f run_dir=%s", run_hash, result.final["eval/loss"], run_dir)
    return result.final["eval/loss"]
