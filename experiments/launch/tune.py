"""Hyperparameter search with Optuna: `python -m experiments.tune [overrides] tune=lr tune.n_trials=8 tune.workers=2`.

Every override that does not start with `tune` composes the base job exactly as for
`experiments.pretrain` (same conf/ tree, same validation); `tune=<name>` picks conf/tune/<name>.yaml
(the search space, sampler, pruner, workers) and `tune.*` overrides it. Each trial is one ordinary
pretraining run: base config + the suggested values, `sweep_id` = the study name, so it has its own
config hash, run dir and MLflow run, and `experiments.pretrain` with the same overrides reproduces it.

Design (Optuna used directly, not through the Hydra Optuna sweeper, so that N workers share one study):
- the study lives in a journal file, `<paths.root>/<tune.dir>/<study>/journal.log`, shared by N
  identical workers (local processes started with `spawn`, or a submitit job array on SLURM), each
  running `study.optimize` with the sampler and the pruner rebuilt from config (neither is stored);
- the driver validates everything before any worker starts: the base config with
  `experiments.config.plan`, the search space, and every corner of it (each bound / choice on top of the
  base config), then creates the MLflow store and the study once;
- the study name defaults to `<tune.name>-<model>-<hash>` (hash of the base run's identity and the
  space), so running the same command again re-enters the same study and only tops it up to
  `tune.n_trials` finished (complete + pruned) trials; `tune.n_trials=0` just prints the summary;
- pruning: pretrain.run's `on_eval(step, val_loss)` reports to the trial and raises
  `optuna.TrialPruned`; pretrain.run then marks the run dir `failed` and the MLflow run FAILED (it
  treats any exception alike), and this module tags both as pruned (MLflow tags `optuna.state=PRUNED`,
  status.json `optuna.state`);
- a trial left RUNNING by a dead worker (kill -9, preemption) is marked FAIL and its parameters are
  enqueued again; the retry has the same config hash, so pretrain.run resumes it from its checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import multiprocessing
import os
import shlex
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import optuna
import torch
from mlflow.entities import RunTag
from mlflow.tracking import MlflowClient
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from experiments.tracking import store as tracking
from experiments.config.schema import Config, register
from experiments.config.cli_help import print_help, wants_help
from experiments.config.errors import ConfigError, one_line
from experiments.config.plan import budget_overrides, check_plain_name, check_subdir, plan
from experiments.training.job import identify
from experiments.training.pretrain import run
from experiments.training.run_dir import process_alive, read_status, write_status

log = logging.getLogger("experiments.tune")
CONF = Path(__file__).resolve().parents[2] / "conf"
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)


# ---------------------------------------------------------------------------------------------- schema

@dataclass
class SamplerSchema:
    name: str = "tpe"  # "tpe" (constant liar, for parallel workers) or "random"
    n_startup_trials: int = 4  # TPE: random trials before the model kicks in
    seed: Optional[int] = None  # worker i uses seed + i (identical seeds would suggest identical trials)


@dataclass
class PrunerSchema:
    name: str = "median"  # "median" or "none"
    n_startup_trials: int = 2  # no pruning until this many trials have completed
    n_warmup_steps: int = 0  # training steps before a trial can be pruned
    interval_steps: int = 1


@dataclass
class SlurmSchema:
    """submitit AutoExecutor parameters for tune.launcher=slurm (one array task per worker)."""

    timeout_min: int = 240
    partition: Optional[str] = None
    cpus_per_task: int = 4
    mem_gb: int = 16
    gpus_per_node: int = 0
    array_parallelism: int = 64
    max_num_timeout: int = 3
    additional: dict[str, Any] = field(default_factory=dict)  # slurm_additional_parameters
    wait: bool = True  # block until the array ends, then print the summary


@dataclass
class TuneSchema:
    name: str = "tune"
    study: Optional[str] = None  # default: <name>-<model>-<hash of base run identity + space>
    direction: str = "minimize"  # the objective is the final val loss at T = µ_rec
    n_trials: int = 8  # finished (complete + pruned) trials the study should hold in total
    workers: int = 1
    launcher: str = "local"  # "local" (spawned processes) or "slurm" (submitit job array)
    dir: str = "tune"  # studies live in <paths.root>/<dir>/<study>/
    space: dict[str, Any] = field(default_factory=dict)  # config path → {type: float|int|categorical, ...}
    sampler: SamplerSchema = field(default_factory=SamplerSchema)
    pruner: PrunerSchema = field(default_factory=PrunerSchema)
    slurm: SlurmSchema = field(default_factory=SlurmSchema)
    dry_run: bool = False  # validate and print the plan, start nothing


def register_tune() -> None:
    register()
    ConfigStore.instance().store(group="tune", name="schema", node=TuneSchema)


# --------------------------------------------------------------------------------------- search space

_NOT_SEARCHABLE = ("tracking", "paths", "sweep_id", "tune")


def search_space(tune: DictConfig) -> dict[str, dict[str, Any]]:
    """The space as {config path: spec}; a spec is any mapping with a `type` key."""
    out: dict[str, dict[str, Any]] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and "type" in node:
            out[prefix] = node
        elif isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k))
        else:
            raise ConfigError(f"tune.space.{prefix}", node, "not a search dimension",
                              "give {type: float|int|categorical, low/high or choices}")

    walk(OmegaConf.to_container(tune.space, resolve=True), "")
    return out


def _check_spec(key: str, spec: dict[str, Any], base: DictConfig) -> list[Any]:
    """Validate one dimension; returns the values to check against the base config (its corners)."""
    where = f"tune.space.{key}"
    missing = object()
    if key.split(".")[0] in _NOT_SEARCHABLE or OmegaConf.select(base, key, default=missing) is missing:
        raise ConfigError(where, spec, f"{key} is not a searchable config key",
                          "use a path of the job config, e.g. train.lr or model.mean_recurrence")
    kind = spec.get("type")
    extra = set(spec) - {"type", "low", "high", "log", "step", "choices"}
    if extra:
        raise ConfigError(where, spec, f"unknown field(s) {sorted(extra)}", "use low/high/log/step or choices")
    if kind == "categorical":
        choices = spec.get("choices")
        if not choices or not isinstance(choices, list):
            raise ConfigError(where, spec, "categorical needs a non-empty `choices` list", "e.g. choices: [1, 2, 4]")
        return list(choices)
    if kind not in ("float", "int"):
        raise ConfigError(where, kind, "unknown dimension type", "use float, int or categorical")
    low, high = spec.get("low"), spec.get("high")
    if not isinstance(low, (int, float)) or not isinstance(high, (int, float)) or not low < high:
        raise ConfigError(where, spec, "needs numeric bounds with low < high", "e.g. {low: 3e-4, high: 3e-2}")
    if kind == "int" and not (float(low).is_integer() and float(high).is_integer()):
        raise ConfigError(where, spec, "int bounds must be integers", "use whole numbers")
    if spec.get("log") and low <= 0:
        raise ConfigError(where, low, "a log-uniform dimension needs low > 0", "raise low or drop log")
    if spec.get("log") and spec.get("step") is not None:
        raise ConfigError(where, spec, "log and step cannot be combined", "drop one of them")
    return [low, high]


def suggest(trial: optuna.Trial, key: str, spec: dict[str, Any]) -> Any:
    if spec["type"] == "float":
        return trial.suggest_float(key, spec["low"], spec["high"], log=bool(spec.get("log")), step=spec.get("step"))
    if spec["type"] == "int":
        return trial.suggest_int(key, int(spec["low"]), int(spec["high"]), step=int(spec.get("step") or 1),
                                 log=bool(spec.get("log")))
    return trial.suggest_categorical(key, list(spec["choices"]))


def trial_config(base: DictConfig, values: dict[str, Any], study: str) -> DictConfig:
    cfg = base.copy()
    for key, value in values.items():
        OmegaConf.update(cfg, key, value, merge=False)
    cfg.sweep_id = study
    return cfg


def validate(base: DictConfig, tune: DictConfig) -> dict[str, dict[str, Any]]:
    """Everything a study needs, checked before anything starts; raises ConfigError naming the key."""
    plan(base)
    check_plain_name("tune.name", tune.name)
    check_subdir("tune.dir", tune.dir)
    if tune.study is not None:
        check_plain_name("tune.study", tune.study)

    if tune.direction not in ("minimize", "maximize"):
        raise ConfigError("tune.direction", tune.direction, "unknown direction", "use minimize")
    if tune.launcher not in ("local", "slurm"):
        raise ConfigError("tune.launcher", tune.launcher, "unknown launcher", "use local or slurm")
    if tune.workers < 1 or tune.n_trials < 0:
        raise ConfigError("tune.workers", tune.workers, "needs workers ≥ 1 and n_trials ≥ 0", "e.g. tune.workers=2")
    if tune.sampler.name not in ("tpe", "random"):
        raise ConfigError("tune.sampler.name", tune.sampler.name, "unknown sampler", "use tpe or random")
    if tune.pruner.name not in ("median", "none"):
        raise ConfigError("tune.pruner.name", tune.pruner.name, "unknown pruner", "use median or none")
    space = search_space(tune)
    if not space:
        raise ConfigError("tune.space", {}, "the search space is empty", "pick one with tune=lr")
    for key, spec in space.items():
        for value in _check_spec(key, spec, base):
            try:
                plan(trial_config(base, {key: value}, "check"))
            except ConfigError as err:
                wrapped = ConfigError(f"tune.space.{key}", value, "gives an invalid job", "narrow the range")
                wrapped.args = (f"tune.space.{key}={value!r} gives an invalid job: {err}",)
                raise wrapped from err
            except (OmegaConfBaseException, ValueError, TypeError) as err:
                raise ConfigError(f"tune.space.{key}", value, f"does not fit the config: {err}",
                                  "use values of the key's type") from err
    return space


# ------------------------------------------------------------------------------------- study plumbing

def journal_path(base: DictConfig, tune: DictConfig, study: str) -> Path:
    return Path(base.paths.root).resolve() / tune.dir / study / "journal.log"


def storage(path: Path) -> JournalStorage:
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def make_sampler(tune: DictConfig, worker: int = 0) -> optuna.samplers.BaseSampler:
    seed = None if tune.sampler.seed is None else tune.sampler.seed + worker
    if tune.sampler.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(n_startup_trials=tune.sampler.n_startup_trials, seed=seed,
                                      constant_liar=True)


def make_pruner(tune: DictConfig) -> optuna.pruners.BasePruner:
    p = tune.pruner
    if p.name == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps,
                                       interval_steps=p.interval_steps)


def study_name(base: DictConfig, tune: DictConfig) -> str:
    if tune.study:
        return tune.study
    p = plan(base)
    key = {"run": identify(base, p=p).hash, "direction": tune.direction,
           "space": OmegaConf.to_container(tune.space, resolve=True)}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]
    return f"{tune.name}-{p.model.name}-{digest}"


def _worker_id() -> dict[str, Any]:
    # Only an array task is unique to one worker (a local driver inside an allocation shares SLURM_JOB_ID).
    job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{job}_{os.environ.get('SLURM_ARRAY_TASK_ID')}" if job else None
    return {"host": socket.gethostname(), "pid": os.getpid(), "slurm_job": job}


def retry_stale(study: optuna.Study, store: JournalStorage, is_stale) -> int:
    """Mark RUNNING trials whose worker is gone as FAIL and enqueue their parameters again."""
    n = 0
    study_id = store.get_study_id_from_name(study.study_name)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not is_stale(t.user_attrs.get("worker") or {}):
            continue
        store.set_trial_state_values(store.get_trial_id_from_study_id_trial_number(study_id, t.number),
                                     TrialState.FAIL)
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
        log.warning("trial %d was left running by a dead worker: marked FAIL, its parameters re-enqueued", t.number)
        n += 1
    return n


# ------------------------------------------------------------------------------------------ objective

def _record(trial: optuna.Trial, cfg: DictConfig, run_dir: Path, state: str) -> None:
    """Tie the trial and the run together: user attrs on the trial, tags on the MLflow run, status.json."""
    status = read_status(run_dir)
    run_id = status.get("mlflow_run_id")
    trial.set_user_attr("config_hash", run_dir.name)
    trial.set_user_attr("run_dir", str(run_dir))
    if run_id:
        trial.set_user_attr("mlflow_run_id", run_id)
    if status:
        write_status(run_dir, optuna={"study": cfg.sweep_id, "trial": trial.number, "state": state})
    if run_id and cfg.tracking.enabled:
        uri = cfg.tracking.uri or tracking.default_uri(Path(cfg.paths.root).resolve())
        tags = {"optuna.study": cfg.sweep_id, "optuna.trial": str(trial.number), "optuna.state": state}
        if state == "PRUNED":
            tags["pruned"] = "true"
        MlflowClient(uri).log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])


def make_objective(base: DictConfig, space: dict[str, dict[str, Any]], study: str):
    root = Path(base.paths.root).resolve()

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", _worker_id())
        cfg = trial_config(base, {k: suggest(trial, k, s) for k, s in space.items()}, study)
        run_dir = identify(cfg, root).run_dir  # the run's own data hash, whatever data.source is

        def report(step: int, val_loss: float) -> None:
            trial.report(val_loss, step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step} (val/loss {val_loss:.4f})")

        try:
            value = run(cfg, on_eval=report)
        except optuna.TrialPruned:
            _record(trial, cfg, run_dir, "PRUNED")
            raise
        except BaseException:
            _record(trial, cfg, run_dir, "FAIL")
            raise
        _record(trial, cfg, run_dir, "COMPLETE" if math.isfinite(value) else "FAIL")
        return value  # NaN (diverged) → Optuna marks the trial FAIL

    return objective


def worker(base_dict: dict, tune_dict: dict, n_trials: int, index: int = 0) -> dict[str, int]:
    """One worker process (local or SLURM): join the study and run up to n_trials trials."""
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s [worker {index}] %(name)s: %(message)s")
    base = OmegaConf.merge(OmegaConf.structured(Config), base_dict)
    tune = OmegaConf.merge(OmegaConf.structured(TuneSchema), tune_dict)
    if base.train.threads > 0:
        torch.set_num_threads(base.train.threads)
    name = study_name(base, tune)
    store = storage(journal_path(base, tune, name))
    study = optuna.load_study(study_name=name, storage=store, sampler=make_sampler(tune, index),
                              pruner=make_pruner(tune))
    me = _worker_id()
    if tune.launcher == "slurm" and me["slurm_job"]:  # requeued array task: its earlier self's trial is stale
        retry_stale(study, store, lambda w: w.get("slurm_job") == me["slurm_job"])
    study.optimize(make_objective(base, search_space(tune), name), n_trials=n_trials,
                   callbacks=[optuna.study.MaxTrialsCallback(tune.n_trials, states=FINISHED_STATES)],
                   catch=(ConfigError,), gc_after_trial=True)
    return _counts(study)


# ---------------------------------------------------------------------------------------------- driver

def _counts(study: optuna.Study) -> dict[str, int]:
    counts = {s.name: 0 for s in TrialState}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] += 1
    return counts


def _split(n: int, workers: int) -> list[int]:
    workers = max(1, min(workers, n))
    return [n // workers + (i < n % workers) for i in range(workers)]


def _launch_local(base_dict: dict, tune_dict: dict, shares: list[int], threads: int) -> list[int]:
    if threads > 0:  # inherited by the spawned interpreters before they import torch
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=worker, args=(base_dict, tune_dict, k, i), name=f"tune-worker-{i}")
             for i, k in enumerate(shares)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:  # the workers got the SIGINT too: give them time to mark their runs
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
        raise
    return [p.exitcode for p in procs]


def _launch_slurm(base_dict: dict, tune_dict: dict, shares: list[int], folder: Path, name: str,
                  s: DictConfig) -> list[int] | None:
    import submitit

    executor = submitit.AutoExecutor(folder=str(folder / "submitit" / "%j"), cluster="slurm",
                                     slurm_max_num_timeout=s.max_num_timeout)
    params: dict[str, Any] = dict(name=f"tune-{name}", timeout_min=s.timeout_min, cpus_per_task=s.cpus_per_task,
                                  mem_gb=s.mem_gb, gpus_per_node=s.gpus_per_node, tasks_per_node=1, nodes=1,
                                  slurm_array_parallelism=s.array_parallelism)
    if s.partition:
        params["slurm_partition"] = s.partition
    if s.additional:
        params["slurm_additional_parameters"] = OmegaConf.to_container(s.additional, resolve=True)
    executor.update_parameters(**params)
    n = len(shares)
    jobs = executor.map_array(worker, [base_dict] * n, [tune_dict] * n, shares, list(range(n)))
    print(f"[tune {name}] submitted SLURM array {jobs[0].job_id.split('_')[0]} ({n} workers), logs in "
          f"{folder / 'submitit'}", file=sys.stderr)
    if not s.wait:
        return None
    codes = []
    for job in jobs:
        try:
            job.result()
            codes.append(0)
        except Exception as err:  # submitit re-raises the worker's failure
            print(f"[tune {name}] worker {job.job_id} failed: {err}", file=sys.stderr)
            codes.append(1)
    return codes


def summary(study: optuna.Study, path: Path, base_overrides: list[str]) -> dict[str, Any]:
    counts = _counts(study)
    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    out: dict[str, Any] = {"study": study.study_name, "storage": str(path), "counts": counts}
    lines = [f"[tune {study.study_name}] {sum(counts.values())} trials: {counts['COMPLETE']} complete, "
             f"{counts['PRUNED']} pruned, {counts['FAIL']} failed, {counts['RUNNING']} running, "
             f"{counts['WAITING']} waiting"]
    if done:
        best = study.best_trial
        values = [f"{k}={v!r}" for k, v in best.params.items()]
        out["best"] = {"number": best.number, "value": best.value, "params": best.params,
                       "mlflow_run_id": best.user_attrs.get("mlflow_run_id"),
                       "run_dir": best.user_attrs.get("run_dir")}
        lines += [f"  best trial {best.number}: val/loss {best.value:.4f}  {' '.join(values)}",
                  f"  lr: {best.params['train.lr']:.4g}" if "train.lr" in best.params else "",
                  f"  run dir: {best.user_attrs.get('run_dir')}  mlflow run: {best.user_attrs.get('mlflow_run_id')}",
                  "  reproduce (skipped as finished, same config hash): python -m experiments.pretrain "
                  + " ".join(shlex.quote(o) for o in [*base_overrides, *values])]
    else:
        lines.append("  no complete trial yet")
    lines += [f"  storage: {path}",
              f"  MLflow: runs with sweep_id = {study.study_name!r} (tags optuna.trial, optuna.state)",
              f"  dashboard: pip install optuna-dashboard && optuna-dashboard {shlex.quote(str(path))} "
              "--host 127.0.0.1 --port 8089"]
    print("\n".join(line for line in lines if line))
    (path.parent / "summary.json").write_text(json.dumps(out, indent=2, default=str))
    return out


def _compose(argv: list[str]) -> tuple[DictConfig, DictConfig, list[str]]:
    """(base job config, tune config, base overrides). `tune`/`tune.*` overrides go to the tune group,
    the rest to conf/config.yaml, both with Hydra's override grammar."""
    is_tune = lambda o: o.lstrip("+~").split("=", 1)[0].split(".", 1)[0] == "tune"  # noqa: E731
    tune_over = [o for o in argv if is_tune(o)]
    base_over = budget_overrides([o for o in argv if not is_tune(o)])  # a named budget nulls the other
    group = [o for o in tune_over if o.lstrip("+").split("=", 1)[0] == "tune"]
    rest = [o for o in tune_over if o not in group]
    choice = group[-1].split("=", 1)[1] if group else "lr"
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        base = compose(config_name="config", overrides=base_over)
        tune = compose(config_name=None, overrides=[f"+tune={choice}", *rest]).tune
    return base, tune, base_over


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if wants_help(argv):
        print_help("python -m experiments.tune [pretrain overrides] [tune=<name>] [tune.<key>=value ...]",
                   __doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[1], TuneSchema,
                   "tune.* keys (tune=<name> picks conf/tune/<name>.yaml; defaults shown)",
                   f"searches: {', '.join(sorted(p.stem for p in (CONF / 'tune').glob('*.yaml')))}\n"
                   "pretrain overrides: see python -m experiments.pretrain --help (or make show-config)")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    register_tune()
    try:
        base, tune, base_over = _compose(argv)
        space = validate(base, tune)
    except ConfigError as err:
        print(one_line("config", err), file=sys.stderr)
        return 2
    except (HydraException, OmegaConfBaseException) as err:
        print(one_line("config", f"{type(err).__name__}: {err}"), file=sys.stderr)
        return 2

    root = Path(base.paths.root).resolve()
    name = study_name(base, tune)
    path = journal_path(base, tune, name)
    if tune.dry_run:
        print(f"[tune {name}] valid: {len(space)} dimension(s) {sorted(space)}; {tune.n_trials} trials on "
              f"{tune.workers} {tune.launcher} worker(s); storage {path}")
        return 0

    if base.tracking.enabled and base.tracking.uri:
        tracking.check_uri(base.tracking.uri)  # before the study's folder is written
    store = storage(path)
    study_record = OmegaConf.to_container(OmegaConf.create({"overrides": argv, "tune": tune, "base": base}),
                                          resolve=True)
    OmegaConf.save(OmegaConf.create(tracking.redact_config(study_record)), path.parent / "study.yaml")
    if base.tracking.enabled:  # once, here: parallel first-time creation of the sqlite store races
        tracking.ensure_experiment(base.tracking.uri or tracking.default_uri(root), base.tracking.experiment,
                                   root / "mlartifacts")
    study = optuna.create_study(study_name=name, storage=store, direction=tune.direction, load_if_exists=True,
                                sampler=make_sampler(tune), pruner=make_pruner(tune))
    if tune.launcher == "local":
        host = socket.gethostname()
        retry_stale(study, store, lambda w: w.get("host") == host and not process_alive(int(w.get("pid", 0))))

    remaining = tune.n_trials - sum(_counts(study)[s.name] for s in FINISHED_STATES)
    codes: list[int] | None = []
    if remaining > 0:
        shares = _split(remaining, tune.workers)
        base_dict = OmegaConf.to_container(base, resolve=True)
        tune_dict = OmegaConf.to_container(tune, resolve=True)
        print(f"[tune {name}] {remaining} trial(s) on {len(shares)} {tune.launcher} worker(s); storage {path}",
              file=sys.stderr)
        if tune.launcher == "local":
            codes = _launch_local(base_dict, tune_dict, shares, base.train.threads)
        else:
            codes = _launch_slurm(base_dict, tune_dict, shares, path.parent, name, tune.slurm)
            if codes is None:
                print(f"[tune {name}] not waiting; run the same command with tune.n_trials=0 for the summary",
                      file=sys.stderr)
                return 0
    study = optuna.load_study(study_name=name, storage=store)
    out = summary(study, path, base_over)
    failed = [i for i, c in enumerate(codes) if c != 0]
    if failed:
        print(f"[tune {name}] worker(s) {failed} exited with an error (codes {codes}); see their logs above",
              file=sys.stderr)
        return 1
    return 0 if "best" in out else 1
