"""One job's lifecycle, written once for pre-training, fine-tuning, tuning trials and the sweep driver.

identity (plan → data hash → config hash → runs/<hash>) → lock the run dir → clean what a killed writer
left → read status.json → join the sweep (membership) → skip if finished, else cut metrics.jsonl back to the
checkpoint (the record) → find or create the run's one MLflow run and make it mirror the record → train →
record finished / diverged / failed.

With several processes (torchrun, SLURM tasks) rank 0 alone touches the run dir and MLflow, and every step
where it decides something (skip, busy, a bad run dir, a store that cannot be used) ends in one broadcast: all
ranks act on the same decision, with the same exception and exit code, within seconds (Job.agree).

What this guarantees, whoever calls it:
- one process per run: an exclusive lock on the run dir (experiments.training.run_dir.RunLock; a lock
  left by a dead process is free again), a second process for the same identity exits with one line;
- one MLflow run per identity: the id in status.json, else the run tagged with this config_hash (status.json
  deleted), else a new run, into which metrics.jsonl is logged again (the store lost the run);
- sweep membership that does not depend on who trained the run: every sweep whose grid holds the
  identity tags the run `sweep.member.<sweep_id>` and lists itself in status.json "sweeps", also when
  the run is skipped as finished;
- a failure path that cannot fail silently: when the status cannot be written (disk full), the error is
  logged; the next start holds the lock, so a "running" status it finds is stale and simply resumed;
- every (metric, step) exactly once, in metrics.jsonl and in MLflow, whatever kills the job when
  (experiments.training.record); a run that reached "finished" in status.json is FINISHED in MLflow after the
  next start, which never evaluates it again.
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

from experiments.config.errors import ConfigError, RunBusyError, RunDirError, TrackingError
from experiments.config.identity import identity
from experiments.config.plan import Plan, plan
from experiments.data import run_data
from experiments.tracking import describe
from experiments.tracking import store as tracking
from experiments.training import checkpoint, record
from experiments.training.distributed import Context
from experiments.training.faults import fault_point
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


read_metrics = record.read_rows  # metrics.jsonl rows ({"step": n, name: value, ...}), cut or bad lines skipped

# Errors rank 0 may meet while deciding; the other ranks raise the same type (same handling, same exit code).
_SHARED_ERRORS = {c.__name__: c for c in (RunBusyError, RunDirError, TrackingError, ConfigError)}


def _rebuild(name: str, message: str) -> BaseException:
    cls = _SHARED_ERRORS.get(name)
    if cls is None:
        return RuntimeError(f"rank 0 failed: {name}: {message}")
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    return err


class Job:
    """A job's run dir and MLflow run, from lock to final status. Use as a context manager:

        with Job(cfg, ident, "pretrain") as job:
            if job.finished: ...skip...
            tracker = job.track(params, run_name, tags)
            job.record(status=RUNNING)
            ...
    """

    def __init__(self, cfg: DictConfig, ident: Identity, kind: str, ctx: Context | None = None):
        self.cfg, self.ident, self.kind = cfg, ident, kind
        self.ctx = ctx or Context()
        self.main = self.ctx.is_main
        self.run_dir = ident.run_dir
        self.root = Path(cfg.paths.root).resolve()
        self.status: dict[str, Any] = {}
        self.tracker: tracking.RunTracker | None = None
        self._system: describe.SystemMetrics | None = None
        self._lock = RunLock(self.run_dir)
        self._search_rows: list[dict] = []
        # Pre-training keeps metrics.jsonl as its record and MLflow mirrors it; fine-tuning logs straight to MLflow.
        self.mirrors_record = kind == "pretrain"
        self._ckpt_final: dict[str, float] = {}

    # --- lock, status -------------------------------------------------------------------------------

    def agree(self, fn, *args: Any, **kwargs: Any) -> Any:
        """Run fn on rank 0 and give every rank its result, or raise its error on every rank.

        The one way rank 0's decisions reach the other ranks: without it a skipped, busy or broken run returns on
        rank 0 while the others wait in their first collective until the job's time limit."""
        if not self.main:
            outcome = self.ctx.broadcast_object(None)
            if outcome[0] == "error":
                raise _rebuild(outcome[1], outcome[2])
            return outcome[1]
        try:
            result = fn(*args, **kwargs)
        except BaseException as err:  # every rank raises it: the same type, handling and exit code
            self.ctx.broadcast_object(("error", type(err).__name__, str(err)))
            raise
        self.ctx.broadcast_object(("ok", result))
        return result

    def __enter__(self) -> "Job":
        # Rank 0 locks and reads the run dir; every rank learns the status (skip when finished) from it.
        self.status = self.agree(self._open)
        return self

    def _open(self) -> dict[str, Any]:
        try:
            self._lock.acquire()
        except RunBusyError:
            # Another process trains it (another sweep over the same point): leave a note, so that the run joins
            # this sweep when that process records it, and the sweep's analysis and resume see the point.
            if self.cfg.sweep_id != "adhoc":
                note_pending_sweep(self.run_dir, self.cfg.sweep_id)
            raise
        except OSError as err:  # a read-only or vanished runs/: a finished run can still be skipped
            status = read_status(self.run_dir) if self.run_dir.exists() else {}
            if _is_finished(status, self.kind):
                log.warning("cannot lock %s (%s): skipping the finished run without recording this sweep in it",
                            self.run_dir, err.strerror or err)
                return status
            raise RunDirError(f"cannot write the run dir {self.run_dir} ({err.strerror or err}); make "
                              f"{self.run_dir.parent} writable (or set paths.root to a writable folder) and rerun"
                              ) from None
        try:
            removed = clean_temp_files(self.run_dir)
            if removed:
                log.info("removed %d temporary file(s) a killed writer left in %s", len(removed), self.run_dir)
            self.status = read_status(self.run_dir)
            if self.status.get("status") == FINISHED and not _is_finished(self.status, self.kind):
                log.warning("%s says finished but holds no final metrics: resuming to repair it", self.run_dir.name)
            self._join_sweep()
        except BaseException:
            self._lock.release()
            raise
        return self.status

    def __exit__(self, *exc: object) -> None:
        self._stop_system_metrics()
        self._lock.release()

    @property
    def finished(self) -> bool:
        return _is_finished(self.status, self.kind)

    @property
    def final_loss(self) -> float:
        return float(self.status["final"]["eval/loss"])

    def record(self, **fields: Any) -> None:
        if self.main:
            self.status = write_status(self.run_dir, **fields)

    def _join_sweep(self) -> None:
        """This sweep, and any sweep whose job found the run busy (it left a note: pending_sweeps), join it."""
        sweeps = list(self.status.get("sweeps") or [s for s in [self.status.get("sweep_id")] if s])
        wanted = list(dict.fromkeys([*sweeps, *pending_sweeps(self.run_dir), self.cfg.sweep_id]))
        if wanted != sweeps and (self.status or len(wanted) > 1):
            self.record(sweeps=wanted)
        elif not self.status:
            self.status = {"sweeps": wanted}

    def restore_record(self) -> list[dict]:
        """Cut metrics.jsonl back to what the checkpoint covers, adding the rows it carried (rank 0, before
        tracking: MLflow then mirrors the record). The checkpoint is mapped, not read."""
        if not self.main:
            return []
        state = checkpoint.load(self.run_dir / checkpoint.CHECKPOINT_NAME, mmap=True)
        step = int(state["step"]) if state else 0
        carried = list(state.get("metrics") or []) if state else []
        self._ckpt_final = dict(state.get("final") or {}) if state else {}
        rows = record.restore(self.run_dir / METRICS_NAME, step, carried)
        return rows

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
        """The identity's one MLflow run (None when tracking is off or on other ranks), member of this sweep,
        holding exactly the record (record.sync): what it lacks is logged, a run holding more than the record is
        replaced. A run the store lost (or never had) is created; a finished run is FINISHED after this.
        `search_metrics` (a sweep's axes as numbers, describe.search_fields) are logged at step 0 and `inputs`
        (MLflow dataset inputs) once, when the run is created."""
        t = self.cfg.tracking
        if not (t.enabled and self.main):
            return None
        self.root.mkdir(parents=True, exist_ok=True)
        uri = t.uri or tracking.default_uri(self.root)
        exp_id = tracking.ensure_experiment(uri, t.experiment, self.root / "mlartifacts")
        client = tracking.MlflowClient(uri)
        known = self.status.get("mlflow_run_id")
        run_id = tracking.find_run(client, exp_id, known, self.ident.hash, self.kind)
        members = {tracking.member_tag(s): "true" for s in [*(self.status.get("sweeps") or []), self.cfg.sweep_id]}
        all_tags = {**describe.source_tags(f"experiments.{self.kind}"), **tags, "config_hash": self.ident.hash,
                    "run_kind": self.kind, "run_dir": str(self.run_dir), **members}
        if run_id is None and known:
            log.warning("MLflow run %s of %s is not in the store %s: creating a new one and logging %s into it",
                        known, self.run_dir.name, tracking.redact_value(uri, {}) or tracking.REDACTED, METRICS_NAME)
        elif run_id and known is None and self.status.get("status"):
            log.warning("%s has no MLflow run id: found its run %s by config_hash", self.run_dir.name, run_id)
        self._search_rows = [{"step": 0, **search_metrics}] if search_metrics else []

        def open_run(rid: str | None) -> tracking.RunTracker:
            # A finished run that is only joined keeps its own tags (its sweep_id is the trainer's).
            joined = self.finished and rid is not None
            return tracking.RunTracker(uri, exp_id, run_id=rid, run_name=run_name,
                                       tags=members if joined else all_tags, resume=not self.finished,
                                       parent_run_id=t.get("parent_run_id") if rid is None else None)

        tracker = open_run(run_id)
        created = run_id is None
        try:
            self._sync(tracker)
        except record.StaleRun as stale:
            log.warning("MLflow run %s of %s holds %s: it is replaced by a new run that holds the run's record "
                        "exactly once (the old one is deleted)", tracker.run_id, self.run_dir.name, stale)
            client.delete_run(tracker.run_id)
            tracker, created = open_run(None), True
            self._sync(tracker)
        self.tracker = tracker
        if created or not self.finished:
            tracker.log_params(params)
            for path in artifacts:
                if path.exists():
                    tracker.log_artifact(path)
        if created:
            datasets = [d for d in inputs if d is not None]
            if datasets:
                tracker.log_inputs(datasets)
        if self.status.get("mlflow_run_id") != tracker.run_id and self.status.get("status"):
            self.record(mlflow_run_id=tracker.run_id)
        if self.finished and client.get_run(tracker.run_id).info.status != "FINISHED":
            tracker.finish("FINISHED")
        return tracker

    def _sync(self, tracker: tracking.RunTracker, final: Mapping[str, float] | None = None) -> None:
        """Make the MLflow run hold the record: metrics.jsonl, the search metrics and, once the run has ended,
        its test-time curve (step = T)."""
        if not self.mirrors_record:
            return
        final = final if final is not None else (self.status.get("final") if self.finished else None)
        curve = record.curve_rows(describe.testtime_curve(final or self._ckpt_final or {}))
        rows = [*record.read_rows(self.run_dir / METRICS_NAME), *self._search_rows,
                *(curve if final else [])]
        record.sync(tracker, rows, allowed=record.pairs(curve))

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
        """FINISHED or DIVERGED: status first (the run dir is the record), then the MLflow run: its test-time curve
        and what it lacks of the record (record.sync: nothing twice, whatever killed an earlier attempt)."""
        if self.main:
            self._join_sweep()  # sweeps that found the run busy while it trained
        self.record(status=state, final=dict(final or {}), **fields)
        self._stop_system_metrics()
        if self.tracker:
            fault_point("finish.before_mlflow")
            self.tracker.set_tags({tracking.member_tag(s): "true" for s in self.status.get("sweeps") or []})
            self._sync(self.tracker, dict(final or {}))
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


def _is_finished(status: Mapping[str, Any], kind: str) -> bool:
    """Finished, with the final evaluation recorded (a status cut to {"status": "finished"} is repaired by
    resuming: the final checkpoint holds the evaluation, nothing is evaluated twice)."""
    final = status.get("final")
    return (status.get("status") == FINISHED and isinstance(final, dict) and bool(final)
            and (kind != "pretrain" or "eval/loss" in final))


PENDING_DIR = "sweeps.d"


def note_pending_sweep(run_dir: Path, sweep_id: str) -> None:
    """A sweep whose job found the run busy leaves its id here (no lock needed: one empty file per sweep); the
    process that holds the run adds it to the run's sweeps and MLflow tags (Job._join_sweep, at start and end)."""
    d = Path(run_dir) / PENDING_DIR
    d.mkdir(parents=True, exist_ok=True)
    (d / sweep_id.replace("/", "%2F")).touch()


def pending_sweeps(run_dir: Path) -> list[str]:
    d = Path(run_dir) / PENDING_DIR
    return sorted(p.name.replace("%2F", "/") for p in d.iterdir()) if d.is_dir() else []
