"""Evaluate a trained run: validation loss and bits per byte, and CORE-style tasks, at any loop count.

    python -m experiments.evaluate run_dir=runs/<hash> task=val loops=[1,4,8]
    python -m experiments.evaluate run_dir=runs/<hash> task=tasks/copa.jsonl,tasks/lambada.jsonl num_fewshot=5

`task` is a comma-separated list of `val` (the run's own validation set) and CORE-style task files (see
experiments.evals.core). Results go to `<run_dir>/eval/results.json` and, unless tracking=false, into the
run's own MLflow run at its final step: eval/loss_T{T}, eval/bpb_T{T}, core/<task>/accuracy_T{T},
core/<task>/centered_T{T} and core/centered_T{T} (the mean over the task files: a CORE score). A
Transformer has no loop count, and its metric names no _T suffix.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from experiments.evals import core as core_eval
from experiments.data import run_data as real_data
from experiments.tracking import store as tracking
from experiments.config.cli_help import print_help, wants_help
from experiments.config.errors import ConfigError, one_line
from experiments.config.plan import default_loops
from experiments.data.bpb import bpb_from_tokens_per_byte
from experiments.training.run_dir import read_status
from experiments.evals.scoring import LoadedRun, Scorer, load_run
from experiments.training.trainer import evaluate as validation_loss


@dataclass
class EvalSchema:
    run_dir: str = MISSING
    task: str = "val"  # comma-separated: val and/or CORE-style task files (.jsonl)
    loops: list[int] = field(default_factory=list)  # [] = the model's µ_rec
    num_fewshot: int = 0
    max_examples: Optional[int] = None  # per task file; null = all
    batch_size: Optional[int] = None  # null = the run's train.batch_size (reproduces its own eval/loss)
    seed: int = 0
    threads: int = 0
    tracking: bool = True  # log into the run's MLflow run
    tracking_uri: Optional[str] = None  # default: the run's store (sqlite under its paths.root)


def _check_jsonl(path: str) -> None:
    """A task file is JSON Lines: its first non-empty line must be a JSON object."""
    try:
        with open(path, encoding="utf-8") as f:
            first = next((line for line in f if line.strip()), "")
        if not isinstance(json.loads(first), dict):
            raise ValueError("not an object")
    except (ValueError, UnicodeDecodeError) as err:
        raise ConfigError("task", path, f"is not a JSONL task file ({type(err).__name__})",
                          "pass a .jsonl file with one JSON object per line (see experiments.evals.core)") from None


def _check(cfg) -> list[str]:
    tasks = [t.strip() for t in str(cfg.task).split(",") if t.strip()]
    if not tasks:
        raise ConfigError("task", cfg.task, "names no task", "pass task=val or task=path/to/task.jsonl")
    for t in tasks:
        if t != "val" and not Path(t).is_file():
            raise ConfigError("task", t, "no such task file", "pass val or an existing .jsonl task file")
        if t != "val":
            _check_jsonl(t)
    if any(T < 1 for T in cfg.loops):
        raise ConfigError("loops", list(cfg.loops), "loop counts must be ≥ 1", "e.g. loops=[1,4,8]")
    return tasks


def _suffix(T: int | None) -> str:
    return "" if T is None else f"_T{T}"


def run_evaluation(cfg) -> dict[str, float]:
    """Evaluate and log; returns the metrics."""
    tasks = _check(cfg)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    run: LoadedRun = load_run(Path(cfg.run_dir))
    parcae = run.model.config.kind == "parcae"
    batch_size = cfg.batch_size or run.cfg.train.batch_size
    loop_counts = list(cfg.loops) if parcae and cfg.loops else [default_loops(run.model.config)]
    metrics: dict[str, float] = {}
    results: list[dict] = []
    if "val" in tasks:
        data = real_data.load(run.cfg, Path(run.cfg.paths.root), run.model.config.block_size)
    for T in loop_counts:
        sfx = _suffix(T)
        if "val" in tasks:
            loss = validation_loss(run.model, *data.val, T, batch_size, run.cfg.train.seed)
            metrics[f"eval/loss{sfx}"] = loss
            metrics[f"eval/bpb{sfx}"] = bpb_from_tokens_per_byte(loss, data.tokens_per_byte)
        scorer = Scorer(run.model, run.tokenizer, T, batch_size, cfg.seed)
        task_results = [core_eval.evaluate_task(scorer, Path(t), cfg.num_fewshot, cfg.seed, cfg.max_examples)
                        for t in tasks if t != "val"]
        for r in task_results:
            metrics[f"core/{r.task}/accuracy{sfx}"] = r.accuracy
            metrics[f"core/{r.task}/centered{sfx}"] = r.centered
            results.append({**r.as_dict(), "loops": T})
        if task_results:
            metrics[f"core/centered{sfx}"] = core_eval.core_score(task_results)
    out = Path(cfg.run_dir) / "eval" / "results.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"metrics": metrics, "tasks": results}, indent=1))
    if cfg.tracking:
        _log(cfg, run, metrics, out)
    return metrics


def _log(cfg, run: LoadedRun, metrics: dict[str, float], artifact: Path) -> None:
    """Into the run's own MLflow run (its status untouched), at the run's last step."""
    run_id = read_status(Path(cfg.run_dir)).get("mlflow_run_id")
    if not run_id:
        print(f"[evaluate] {cfg.run_dir} has no MLflow run (trained with tracking off): not logged", file=sys.stderr)
        return
    uri = cfg.tracking_uri or run.cfg.tracking.uri or tracking.default_uri(Path(run.cfg.paths.root))
    client = MlflowClient(uri)
    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, run.steps) for k, v in metrics.items()]
    for i in range(0, len(items), 1000):
        client.log_batch(run_id, metrics=items[i:i + 1000])
    client.log_artifact(run_id, str(artifact), artifact_path="eval")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if wants_help(argv):
        print_help("python -m experiments.evaluate run_dir=runs/<config hash> [key=value ...]", __doc__, EvalSchema)
        return 0
    try:
        cli = OmegaConf.from_cli(argv)
        cfg = OmegaConf.merge(OmegaConf.structured(EvalSchema), cli)
        if OmegaConf.is_missing(cfg, "run_dir"):
            raise ConfigError("run_dir", None, "no run to evaluate", "pass run_dir=runs/<config hash>")
        metrics = run_evaluation(cfg)
    except ConfigError as err:
        print(one_line("config", err), file=sys.stderr)
        return 2
    except OmegaConfBaseException as err:  # an unknown key or a value of the wrong type
        print(one_line("config", f"{type(err).__name__}: {err}"), file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as err:
        print(one_line("evaluate", err), file=sys.stderr)
        return 2
    for key, value in sorted(metrics.items()):
        print(f"{key}\t{value:.6f}")
    return 0
