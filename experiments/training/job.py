"""One job's lifecycle, written once for pre-training, fine-tuning, tuning trials and the sweep driver.

identity (plan → data hash → config hash → runs/<hash>) → lock the run dir → clean what a killed writer
left → read status.json → join the sweep (membership) → skip if finished, else find or create the run's
one MLflow run → train → record finished / diverged / failed.

What this guarantees, whoever calls it:
- one process per run: an exclusive lock on the run dir (experiments.training.run_dir.RunLock; a lock
  left by a dead process is free again), a second process for the same identity exits with one line;
- one MLflow run per identity: the id in status.json, else the run tagged with this config_hash (status.json
  deleted), else a new run, into which metrics.jsonl is logged again (the store lost the run);
- sweep membership that does not depend on who trained the run: every sweep whose grid holds the
  identity tags the run `sweep.member.<sweep_id>` and lists itself in status.json "sweeps", also when
  the run is skipped as finished;
- a failure path that cannot fail silently: when the status cannot be written (disk full), the error is
  logged; the next start holds the lock, so a "running" status it finds is stale and simply resumed.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

from experiments.config.identity import identity
from experiments.config.plan import Plan, plan
from experiments.data import run_data
from experiments.tracking import describe
from experiments.tracking import store as tracking
from experiments.training.run_dir import (DIVERGED, FAILED, FINISHED, RUNNING, RunLock, clean_temp_files,
                                          read_status, write_status)

log = logging.getLogger("experiments.training.job")
METRICS_NAME = "metrics.jsonl"
CONFIG_NAME = "config.yaml"


@dataclass(frozen=True)
class Identity:
    """Who a job is: its config hash and run dir (and, for pre-training, its plan and data hash)."""

    hash: str
    run_dir: Path
    content_hash: str | None = None
    plan: Plan | None = None


def identify(cfg: DictConfig, root: Path | None = None, content_hash: str | None = None,
             p: Plan | None = None) -> Identity:
    """A pre-training job's identity. The data hash is the run's own data (any data.source), built into
    the cache on the way unless given (the sweep driver and tune call this before any job starts)."""
    p = p or plan(cfg)
    root = Path(root or cfg.paths.root).resolve()
    content_hash = content_hash or run_data.content_hash(cfg, root, p.model.block_size)
    run_hash = identity(cfg, p.model, content_hash)
    return Identity(run_hash, root / cfg.paths.runs / run_hash, content_hash, p)


def read_metrics(path: Path) -> list[dict[str, float]]:
    """metrics.jsonl rows ({"step": n, name: value, ...}); a line cut by a kill is skipped."""
    rows = []
    if Path(path).exists():
        for line in Path(path).read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    return rows


class Job:
    """A job's run dir and MLflow run, from lock to final status. Use as a context manager:

        with Job(cfg, ident, "pretrain") as job:
            if job.finished: ...skip...
            tracker = job.track(params, run_name, tags)
            job.record(status=RUNNING)
            ...
    """

    def __init__(self, cfg: DictConfig, ident: Identity, kind: str, main: bool = True):
        self.cfg, self.ident, self.kind, self.main = cfg, ident, kind, main
        self.run_dir = ident.run_dir
        self.root = Path(cfg.paths.root).resolve()
        self.status: dict[str, Any] = {}
        self.tracker: tracking.RunTracker | None = None
        self._system: describe.SystemMetrics | None = None
        self._lock = RunLock(self.run_dir)

    # --- lock, status -------------------------------------------------------------------------------

    def __enter__(self) -> "Job":
        if not self.main:  # other ranks of a data-parallel launch: rank 0 owns the run dir
            return self
        self._lock.acquire()
        try:
            removed = clean_temp_files(self.run_dir)
            if removed:
                log.info("removed %d temporary file(s) a killed writer left in %s", len(removed), self.run_dir)
            self.status = read_status(self.run_dir)
            if self.status:
                self._join_sweep()
        except BaseException:
            self._lock.release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop_system_metrics()
        self._lock.release()

    @property
    def finished(self) -> bool:
        return self.status.get("status") == FINISHED

    def record(self, **fields: Any) -> None:
        if self.main:
            self.status = write_status(self.run_dir, **fields)

    def _join_sweep(self) -> None:
        sweeps = list(self.status.get("sweeps") or [s for s in [self.status.get("sweep_id")] if s])
        if self.cfg.sweep_id not in sweeps:
            self.record(sweeps=[*sweeps, self.cfg.sweep_id])

    def save_config(self) -> Path:
        """config.yaml of the run dir (and artifact): the resolved config through the same secret filter
        as params; written atomically (a temporary file the next start cleans if killed)."""
        path = self.run_dir / CONFIG_NAME
        if self.main:
            clean = tracking.redact_config(OmegaConf.to_container(self.cfg, resolve=True))
            tmp = self.run_dir / f".{CONFIG_NAME}.tmp{os.getpid()}"
            OmegaConf.save(OmegaConf.create(clean), tmp)
            os.replace(tmp, path)
        return path

    # --- MLflow ---------------------------------------------------------------------------------------

    def track(self, params: Mapping[str, Any], run_name: str, tags: Mapping[str, str],
              artifacts: tuple[Path, ...] = (), search_metrics: Mapping[str, float] | None = None,
              inputs: tuple[Any, ...] = ()) -> tracking.RunTracker | None:
        """The identity's one MLflow run (None when tracking is off or on other ranks), member of this sweep.

        A run the store lost (or never had) is created; metrics.jsonl is logged into it again, and a
        finished run gets its final metrics and FINISHED status back. `search_metrics` (a sweep's axes as
        numbers, describe.search_fields) are logged at step 0 and `inputs` (MLflow dataset inputs) once,
        when the run is created."""
        t = self.cfg.tracking
        if not (t.enabled and self.main):
            return None
        self.root.mkdir(parents=True, exist_ok=True)
        uri = t.uri or tracking.default_uri(self.root)
        exp_id = tracking.ensure_experiment(uri, t.experiment, self.root / "mlartifacts")
        client = tracking.MlflowClient(uri)
        known = self.status.get("mlflow_run_id")
        run_id = tracking.find_run(client, exp_id, known, self.ident.hash, self.kind)
        all_tags = {**describe.source_tags(f"experiments.{self.kind}"), **tags, "config_hash": self.ident.hash,
                    "run_kind": self.kind, "run_dir": str(self.run_dir),
                    tracking.member_tag(self.cfg.sweep_id): "true"}
        if self.finished and run_id is not None:
            # Skipped: the run joins this sweep, and is otherwise left as it is (its sweep_id is the trainer's).
            tracker = tracking.RunTracker(uri, exp_id, run_id=run_id, resume=False)
            tracker.set_tags({tracking.member_tag(self.cfg.sweep_id): "true"})
            return tracker
        created = run_id is None
        if created and known:
            log.warning("MLflow run %s of %s is not in the store %s: creating a new one and logging %s into it",
                        known, self.run_dir.name, tracking.redact_value(uri, {}) or tracking.REDACTED, METRICS_NAME)
        elif run_id and run_id != known and known is None and self.status:
            log.warning("%s has no MLflow run id: found its run %s by config_hash", self.run_dir.name, run_id)
        tracker = tracking.RunTracker(uri, exp_id, run_id=run_id, run_name=run_name, tags=all_tags,
                                      parent_run_id=t.get("parent_run_id") if created else None)
        self.tracker = tracker
        tracker.log_params(params)
        for path in artifacts:
            if path.exists():
                tracker.log_artifact(path)
        if self.status.get("mlflow_run_id") != tracker.run_id and self.status:
            self.record(mlflow_run_id=tracker.run_id)
        if created:
            if search_metrics:
                tracker.log_metrics(search_metrics, 0)
            datasets = [d for d in inputs if d is not None]
            if datasets:
                tracker.log_inputs(datasets)
            for row in read_metrics(self.run_dir / METRICS_NAME):
                step = int(row.pop("step", 0))
                tracker.log_metrics(row, step)
            tracker.flush()
        if self.finished:
            final = self.status.get("final") or {}
            tracker.log_metrics(final, int(self.status.get("steps") or 0))
            self._log_curve(final)
            tracker.finish("FINISHED")
        return tracker

    def _log_curve(self, final: Mapping[str, float]) -> None:
        """The test-time evaluation as one metric per quantity with step = T (describe.testtime_curve)."""
        for T, values in describe.testtime_curve(final).items():
            self.tracker.log_metrics(values, T)

    def log_model(self, paths: tuple[Path, ...]) -> None:
        """The final checkpoint (with its config and tokenizer) as the run's `model/` artifacts, when their
        size is within tracking.log_model_max_mb; the run dir keeps them whatever the size."""
        cap_mb = float(self.cfg.tracking.get("log_model_max_mb", 0) or 0)
        present = [p for p in paths if p.exists()]
        if not (self.tracker and present and cap_mb > 0):
            return
        size_mb = sum(p.stat().st_size for p in present) / 2**20
        if size_mb > cap_mb:
            log.info("model artifacts of %s not logged to MLflow: %.0f MB > tracking.log_model_max_mb=%g",
                     self.run_dir.name, size_mb, cap_mb)
            return
        for path in present:
            self.tracker.log_artifact(path, "model")

    def _stop_system_metrics(self) -> None:
        if self._system is not None:
            self._system.stop()
            self._system = None

    # --- the end ------------------------------------------------------------------------------------

    def started(self, **fields: Any) -> None:
        """Mark the run RUNNING; host and pid let `experiments.status` tell a live job from a dead one."""
        self.record(status=RUNNING, config_hash=self.ident.hash, sweep_id=self.cfg.sweep_id,
                    sweeps=sorted({*(self.status.get("sweeps") or []), self.cfg.sweep_id}),
                    mlflow_run_id=self.tracker.run_id if self.tracker else None,
                    host=socket.gethostname(), pid=os.getpid(), **fields)
        t = self.cfg.tracking
        if self.tracker and t.get("system_metrics", False):
            uri = t.uri or tracking.default_uri(self.root)
            # resume: a restarted job's samples continue after its last step instead of overwriting step 0
            self._system = describe.SystemMetrics(uri, self.tracker.run_id, float(t.system_metrics_interval_s),
                                                  resume=True)

    def finish(self, state: str, final: Mapping[str, float] | None = None, **fields: Any) -> None:
        """FINISHED or DIVERGED: status first (the run dir is the record), then the MLflow run."""
        self.record(status=state, final=dict(final or {}), **fields)
        self._stop_system_metrics()
        if self.tracker:
            self._log_curve(final or {})
            if state == DIVERGED:
                self.tracker.set_tags({"diverged": "true"})
            self.tracker.finish("FINISHED" if state == FINISHED else "FAILED")

    def failed(self, err: BaseException) -> None:
        """Record a failure in the run dir and MLflow; neither may hide the other, nor the error itself."""
        message = f"{type(err).__name__}: {err}"
        try:
            self.record(status=FAILED, error=message)
        except Exception as write_err:  # e.g. a full disk: say so; the next start repairs the status
            log.error("run %s failed (%s), and its status could not be written (%s); the next start of the "
                      "same command resumes it", self.run_dir.name, message, write_err)
        self._stop_system_metrics()
        if self.tracker:
            try:
                self.tracker.finish("KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
            except Exception as track_err:
                log.error("run %s failed (%s), and its MLflow run %s could not be marked failed (%s)",
                          self.run_dir.name, message, self.tracker.run_id, track_err)
