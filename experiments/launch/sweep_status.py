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
import fcntl
import json
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from experiments.config.errors import RunDirError
from experiments.tracking import store as tracking
from experiments.training.run_dir import DIVERGED, FAILED, FINISHED, RUNNING, process_alive, read_status

MANIFEST = "manifest.json"
MISSING, INTERRUPTED, CORRUPT = "missing", "interrupted", "corrupt"
NOT_DONE = (MISSING, FAILED, INTERRUPTED)


def manifest_path(root: Path, sweep_id: str) -> Path:
    return Path(root) / "sweeps" / sweep_id / MANIFEST


def read_manifest(root: Path, sweep_id: str) -> dict[str, Any]:
    manifest = json.loads(manifest_path(root, sweep_id).read_text())
    if "invocations" not in manifest:  # written before sweeps could grow: one invocation
        manifest["invocations"] = [{"overrides": manifest.get("overrides", []),
                                    "config_hashes": [j["config_hash"] for j in manifest["jobs"]]}]
    return manifest


def write_manifest(root: Path, sweep_id: str, config_name: str, task_overrides: list[str],
                   jobs: list[tuple[list[str], str]]) -> Path:
    """Add one invocation of a sweep (its command's overrides and grid points) to the sweep's manifest.

    A sweep grows by running more commands with the same sweep_id (a grid, then extra points): the
    manifest is the union of their grid points (one entry per config hash, first overrides kept) and
    lists every invocation, so that status and resume cover all of them. Concurrent drivers of one sweep
    serialise on a lock file next to the manifest."""
    path = manifest_path(root, sweep_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / ".manifest.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        manifest = read_manifest(root, sweep_id) if path.exists() else {"sweep_id": sweep_id, "jobs": [],
                                                                        "invocations": []}
        known = {j["config_hash"] for j in manifest["jobs"]}
        manifest["jobs"] += [{"overrides": o, "config_hash": h} for o, h in jobs if h not in known]
        hashes = [h for _, h in jobs]
        same = [i for i in manifest["invocations"] if i["overrides"] == task_overrides]
        if same:
            same[0]["config_hashes"] = sorted({*same[0]["config_hashes"], *hashes})
        else:
            manifest["invocations"].append({"overrides": task_overrides, "config_hashes": hashes})
        manifest.update(config_name=config_name, overrides=task_overrides)  # the latest command
        tmp = path.with_name(f".{MANIFEST}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(manifest, indent=2))
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
    """One row per grid point (of every invocation of the sweep): overrides, hash, state, the MLflow
    run's status. A run dir whose status.json is corrupt is reported as such (one line on stderr naming
    it) and the other points go on."""
    path = manifest_path(root, sweep_id)
    if not path.exists():
        raise FileNotFoundError(f"no manifest for sweep {sweep_id!r} at {path}: was it launched with "
                                f"paths.root={root}? Known sweeps: {', '.join(known_sweeps(root)) or 'none'}")
    manifest = read_manifest(root, sweep_id)
    client = MlflowClient(tracking_uri) if tracking_uri else None
    rows = []
    for job in manifest["jobs"]:
        run_dir = Path(root) / "runs" / job["config_hash"]
        try:
            status, state = read_status(run_dir), job_state(run_dir)
        except RunDirError as err:
            print(f"warning: {err}", file=sys.stderr)
            status, state = {}, CORRUPT
        mlflow_status = "—"
        if client is not None and status.get("mlflow_run_id"):
            try:
                mlflow_status = client.get_run(status["mlflow_run_id"]).info.status
            except Exception:  # the run dir outlives a deleted or unreachable tracking store
                mlflow_status = "unreachable"
        rows.append({"overrides": " ".join(o for o in job["overrides"] if not o.startswith("sweep=")),
                     "config_hash": job["config_hash"], "state": state, "mlflow": mlflow_status,
                     "eval_loss": (status.get("final") or {}).get("eval/loss")})
    return rows


def known_sweeps(root: Path) -> list[str]:
    return sorted(p.parent.name for p in (Path(root) / "sweeps").glob(f"*/{MANIFEST}"))


def format_table(sweep_id: str, rows: list[dict[str, Any]]) -> str:
    counts = Counter(r["state"] for r in rows)
    order = (FINISHED, RUNNING, INTERRUPTED, FAILED, DIVERGED, MISSING, CORRUPT)
    width = max((len(r["overrides"]) for r in rows), default=10)
    lines = [f"{'grid point':<{width}}  {'hash':<16}  {'state':<11}  {'mlflow':<9}  eval/loss"]
    for r in rows:
        loss = f"{r['eval_loss']:.4f}" if r["eval_loss"] is not None else "—"
        lines.append(f"{r['overrides']:<{width}}  {r['config_hash']:<16}  {r['state']:<11}  {r['mlflow']:<9}  {loss}")
    summary = ", ".join(f"{counts[s]} {s}" for s in order if counts[s])
    return "\n".join([f"sweep {sweep_id}: {len(rows)} grid points: {summary}", *lines])


def resume_commands(root: Path, sweep_id: str, todo: set[str]) -> list[list[str]]:
    """The sweep's own commands again, one per invocation that holds a point of `todo` (config hashes):
    finished points are skipped, the rest run or resume."""
    manifest = read_manifest(root, sweep_id)
    commands = []
    for inv in manifest["invocations"]:
        if todo & set(inv["config_hashes"]):
            overrides = [o for o in inv["overrides"] if not o.startswith("paths.root=")]
            commands.append([sys.executable, "-m", "experiments.pretrain", "-m", f"paths.root={Path(root).resolve()}",
                             *overrides])
    return commands


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
        for command in resume_commands(root, args.sweep_id, {r["config_hash"] for r in todo}):
            code = subprocess.call(command, cwd=Path(__file__).resolve().parents[2])
            if code:
                return code
        return 0
    return 0
