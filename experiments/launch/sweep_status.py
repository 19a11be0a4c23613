"""Sweep bookkeeping: what each grid point of a sweep is doing, from our own records, never from sacct.

The driver writes a manifest before any job starts (`sweeps/<sweep_id>/manifest.json`: the command's
overrides and, per grid point, its overrides and run identity). Status then reads each grid point's
run dir (`runs/<hash>/status.json`) and its MLflow run:

    python -m experiments.status <sweep_id> [--root .]            # table + counts
    python -m experiments.status <sweep_id> --resume              # run only what is not finished

A job recorded as running whose process is gone (same host, dead pid) is reported `interrupted`;
SLURM jobs on other hosts stay `running` until their run dir says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from experiments.tracking import store as tracking
from experiments.training.run_dir import DIVERGED, FAILED, FINISHED, RUNNING, process_alive, read_status

MANIFEST = "manifest.json"
MISSING, INTERRUPTED = "missing", "interrupted"
NOT_DONE = (MISSING, FAILED, INTERRUPTED)


def manifest_path(root: Path, sweep_id: str) -> Path:
    return Path(root) / "sweeps" / sweep_id / MANIFEST


def write_manifest(root: Path, sweep_id: str, config_name: str, task_overrides: list[str],
                   jobs: list[tuple[list[str], str]]) -> Path:
    path = manifest_path(root, sweep_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"sweep_id": sweep_id, "config_name": config_name, "overrides": task_overrides,
            "jobs": [{"overrides": o, "config_hash": h} for o, h in jobs]}
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(body, indent=2))
    os.replace(tmp, path)
    return path


def job_state(run_dir: Path) -> str:
    status = read_status(run_dir)
    state = status.get("status")
    if state is None:
        return MISSING
    if state == RUNNING and status.get("host") == socket.gethostname() and status.get("pid") \
            and not process_alive(int(status["pid"])):
        return INTERRUPTED
    return state


def sweep_status(root: Path, sweep_id: str, tracking_uri: str | None = None) -> list[dict[str, Any]]:
    """One row per grid point: overrides, hash, state, and the MLflow run's status."""
    path = manifest_path(root, sweep_id)
    if not path.exists():
        raise FileNotFoundError(f"no manifest for sweep {sweep_id!r} at {path}: was it launched with "
                                f"paths.root={root}? Known sweeps: {', '.join(known_sweeps(root)) or 'none'}")
    manifest = json.loads(path.read_text())
    client = MlflowClient(tracking_uri) if tracking_uri else None
    rows = []
    for job in manifest["jobs"]:
        run_dir = Path(root) / "runs" / job["config_hash"]
        status = read_status(run_dir)
        mlflow_status = "—"
        if client is not None and status.get("mlflow_run_id"):
            try:
                mlflow_status = client.get_run(status["mlflow_run_id"]).info.status
            except Exception:  # the run dir outlives a deleted or unreachable tracking store
                mlflow_status = "unreachable"
        rows.append({"overrides": " ".join(o for o in job["overrides"] if not o.startswith("sweep=")),
                     "config_hash": job["config_hash"], "state": job_state(run_dir), "mlflow": mlflow_status,
                     "eval_loss": status.get("final", {}).get("eval/loss")})
    return rows


def known_sweeps(root: Path) -> list[str]:
    return sorted(p.parent.name for p in (Path(root) / "sweeps").glob(f"*/{MANIFEST}"))


def format_table(sweep_id: str, rows: list[dict[str, Any]]) -> str:
    counts = Counter(r["state"] for r in rows)
    order = (FINISHED, RUNNING, INTERRUPTED, FAILED, DIVERGED, MISSING)
    width = max((len(r["overrides"]) for r in rows), default=10)
    lines = [f"{'grid point':<{width}}  {'hash':<16}  {'state':<11}  {'mlflow':<9}  eval/loss"]
    for r in rows:
        loss = f"{r['eval_loss']:.4f}" if r["eval_loss"] is not None else "—"
        lines.append(f"{r['overrides']:<{width}}  {r['config_hash']:<16}  {r['state']:<11}  {r['mlflow']:<9}  {loss}")
    summary = ", ".join(f"{counts[s]} {s}" for s in order if counts[s])
    return "\n".join([f"sweep {sweep_id}: {len(rows)} grid points: {summary}", *lines])


def resume_command(root: Path, sweep_id: str) -> list[str]:
    """The sweep's own command again: finished points are skipped, the rest run or resume."""
    manifest = json.loads(manifest_path(root, sweep_id).read_text())
    overrides = [o for o in manifest["overrides"] if not o.startswith("paths.root=")]
    return [sys.executable, "-m", "experiments.pretrain", "-m", f"paths.root={Path(root).resolve()}", *overrides]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.status", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_id", nargs="?", help="default: list the known sweeps")
    parser.add_argument("--root", default=".", help="paths.root of the sweep (default: .)")
    parser.add_argument("--tracking-uri", default=None, help="default: sqlite:///<root>/mlflow.db")
    parser.add_argument("--resume", action="store_true", help="run the grid points that are not finished")
    args = parser.parse_args(argv)
    root = Path(args.root).resolve()
    if not args.sweep_id:
        print("\n".join(known_sweeps(root)) or f"no sweeps under {root}/sweeps")
        return 0
    uri = args.tracking_uri or tracking.default_uri(root)
    try:
        rows = sweep_status(root, args.sweep_id, uri if (root / "mlflow.db").exists() or args.tracking_uri else None)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_table(args.sweep_id, rows))
    if args.resume:
        todo = [r for r in rows if r["state"] in NOT_DONE]
        if not todo:
            print("nothing to resume")
            return 0
        print(f"resuming {len(todo)} grid point(s); finished ones are skipped", flush=True)
        return subprocess.call(resume_command(root, args.sweep_id), cwd=Path(__file__).resolve().parents[2])
    return 0
