"""metrics.jsonl is the record of a run's metrics; MLflow is a mirror of it, kept exactly once.

The rules, each written once here:
- metrics.jsonl only ever holds what a checkpoint covers. The trainer appends to it right after a checkpoint is
  written (MetricSink.flush); on every start the job cuts it back to the checkpoint's step and adds the lines the
  checkpoint carried in case a kill came between the checkpoint and the append (`restore`).
- MLflow gets a metric only from the record: after each append (the new lines), and on every start through
  `sync`, which compares the (key, step) pairs the store holds with the record and logs only the missing ones.
  MLflow's metric history is append-only, so a pair it holds that the record does not (a flush that outran its
  checkpoint, a store restored from a backup, a run restarted from step 0 after its checkpoint was deleted) cannot
  be taken back: `sync` reports it as StaleRun and the job replaces the MLflow run by a fresh one that mirrors the
  record (the old one is deleted, so one identity keeps one run).
- MLflow's own system metrics (`system/…`) are not in the record and are never compared.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from experiments.training.faults import fault_point

log = logging.getLogger("experiments.training.record")
SYSTEM_PREFIX = "system/"
Row = dict  # {"step": int, name: float, ...}


class StaleRun(Exception):
    """The MLflow run holds (key, step) pairs the record does not: it cannot be repaired in place."""

    def __init__(self, extra: set[tuple[str, int]]):
        self.extra = extra
        sample = ", ".join(f"{k}@{s}" for k, s in sorted(extra)[:4])
        super().__init__(f"{len(extra)} metric value(s) the run's record does not hold ({sample}…)")


def read_rows(path: Path) -> list[Row]:
    """The rows of metrics.jsonl; a line cut by a kill, or not UTF-8, or without an integer step, is skipped."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    rows = []
    for raw in data.splitlines():
        try:
            row = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append(row)
    return rows


def _write_rows(path: Path, rows: Iterable[Row]) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def append_rows(path: Path, rows: list[Row]) -> None:
    """Append a flush to the record (after the checkpoint that covers it is on disk)."""
    if not rows:
        return
    fault_point("metrics.before_jsonl")
    with open(path, "a") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
        f.flush()
        os.fsync(f.fileno())
    fault_point("metrics.after_jsonl")


def restore(path: Path, step: int, carried: Iterable[Row]) -> list[Row]:
    """Cut the record back to what the checkpoint of `step` covers (step 0: no checkpoint, nothing) and add
    the rows the checkpoint carried that are missing. Returns the record."""
    rows = read_rows(path)
    kept = [r for r in rows if r["step"] <= step]
    seen = {json.dumps(r, sort_keys=True) for r in kept}
    for r in carried:
        key = json.dumps(r, sort_keys=True)
        if key not in seen and r["step"] <= step:
            kept.append(r)
            seen.add(key)
    if kept or Path(path).exists():  # also drops cut or undecodable lines: the next append starts clean
        _write_rows(Path(path), kept)
    return kept


def pairs(rows: Iterable[Row]) -> dict[tuple[str, int], float]:
    """(key, step) -> value of every metric in the rows (a later row wins for a repeated pair)."""
    out: dict[tuple[str, int], float] = {}
    for r in rows:
        for k, v in r.items():
            if k != "step":
                out[(k, int(r["step"]))] = float(v)
    return out


def stored_pairs(client, run_id: str) -> dict[tuple[str, int], int]:
    """(key, step) -> how many times the MLflow run holds it (system metrics left out)."""
    counts: dict[tuple[str, int], int] = {}
    for key in client.get_run(run_id).data.metrics:
        if key.startswith(SYSTEM_PREFIX):
            continue
        for m in client.get_metric_history(run_id, key):
            counts[(key, int(m.step))] = counts.get((key, int(m.step)), 0) + 1
    return counts


def sync(tracker, rows: Iterable[Row], allowed: Mapping[tuple[str, int], float] | None = None) -> int:
    """Log into the tracker's run every (key, step) of `rows` it lacks; returns how many were logged.

    StaleRun when the store holds a pair twice, or a pair neither in `rows` nor in `allowed` (pairs another
    writer of this job may already have logged, e.g. the test-time curve of a run that is finishing)."""
    want = pairs(rows)
    have = stored_pairs(tracker.client, tracker.run_id)
    extra = {p for p, n in have.items() if n > 1 or (p not in want and p not in (allowed or {}))}
    if extra:
        raise StaleRun(extra)
    missing: dict[int, dict[str, float]] = {}
    for (key, step), value in want.items():
        if (key, step) not in have:
            missing.setdefault(step, {})[key] = value
    send(tracker, [{"step": step, **values} for step, values in sorted(missing.items())])
    n = sum(len(v) for v in missing.values())
    if n:
        log.info("logged %d metric value(s) of the run's record that MLflow did not have", n)
    return n


def send(tracker, rows: list[Row]) -> None:
    """Hand rows of the record to the MLflow run and flush them: the one way metrics reach MLflow."""
    for r in rows:
        tracker.log_metrics({k: v for k, v in r.items() if k != "step"}, r["step"])
    fault_point("metrics.before_mlflow")
    tracker.flush()
    fault_point("metrics.after_mlflow")


def curve_rows(curve: Mapping[int, Mapping[str, float]]) -> list[Row]:
    """The test-time curve {T: {key: value}} as rows with step = T."""
    return [{"step": int(T), **values} for T, values in curve.items()]
