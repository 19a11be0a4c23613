"""Sweep bookkeeping: what each grid point of a sweep is doing, from our own records, never from sacct.

The driver writes a manifest before any job starts (`sweeps/<sweep_id>/manifest.json`: the command's
overrides and, per grid point, its overrides and run identity). Status then reads each grid point's
run dir (`runs/<hash>/status.json`) and its MLflow run:

    python -m experiments.status <sweep_id> [--root .]            # table + counts
    python -m experiments.status <sweep_id> --resume              # run only what is not finished
    python -m experiments.status <run dir or config hash>         # one run

Rows are named as runs are everywhere else (`mu4-C2e12`, experiments.config.naming). Step, last training
loss and ETA come from the run dir: progress.json, which the trainer rewrites every PROGRESS_EVERY_S seconds
(experiments.training.progress), else the last row of metrics.jsonl (runs trained before progress.json
existed); a finished run shows its final step. `eval/loss` is the final evaluation at T = µ_rec, and before
it the latest validation loss (val/loss) of metrics.jsonl.

A job recorded as running whose process is gone (same host, dead pid) is reported `interrupted`. A grid
point without a run dir yet is `queued` while its sweep is going (its driver is alive on this host, or a
point is running) and `not started` otherwise (`make resume` runs it); SLURM jobs on other hosts stay
`running` until their run dir says otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from experiments.config.errors import RunDirError, one_line
from experiments.config.naming import point_label
from experiments.config.plan import resolve_model
from experiments.tracking import store as tracking
from experiments.training.branching import kept_stops, registered_stops, trunk_dir
from experiments.training.job import CONFIG_NAME, METRICS_NAME, read_metrics
from experiments.training.progress import fmt_seconds, read_state
from experiments.training.run_dir import (DIVERGED, FAILED, FINISHED, RUNNING, RunLock, process_alive,
                                          read_status, waiting_lock)

MANIFEST = "manifest.json"
QUEUED, NOT_STARTED, INTERRUPTED, CORRUPT = "queued", "not started", "interrupted", "corrupt"
# A job holds the run's lock but has not written status.json yet: a cooldown branch waiting for, or training, its
# trunk's stop (AT_TRUNK), or any run in its first seconds (STARTING).
AT_TRUNK, STARTING = "at trunk", "starting"
MISSING = NOT_STARTED  # no status.json: not started, or queued while its sweep goes on (sweep_status)
NOT_DONE = (QUEUED, NOT_STARTED, FAILED, INTERRUPTED)


def manifest_path(root: Path, sweep_id: str) -> Path:
    return Path(root) / "sweeps" / sweep_id / MANIFEST


def read_manifest(root: Path, sweep_id: str) -> dict[str, Any]:
    manifest = json.loads(manifest_path(root, sweep_id).read_text())
    if "invocations" not in manifest:  # written before sweeps could grow: one invocation
        manifest["invocations"] = [{"overrides": manifest.get("overrides", []),
                                    "config_hashes": [j["config_hash"] for j in manifest["jobs"]]}]
    return manifest


def write_manifest(root: Path, sweep_id: str, config_name: str, task_overrides: list[str],
                   jobs: list[tuple[list[str], str]], trunks: dict[str, str] | None = None) -> Path:
    """Add one invocation of a sweep (its command's overrides and grid points) to the sweep's manifest.

    A sweep grows by running more commands with the same sweep_id (a grid, then extra points): the
    manifest is the union of their grid points (one entry per config hash, first overrides kept) and
    lists every invocation, so that status and resume cover all of them. Concurrent drivers of one sweep
    serialise on a lock file next to the manifest. trunks: the trunk hash of each cooldown branch (run identity ->
    trunk, sweep.branching=true), kept on its entry so that status can show the trunks."""
    path = manifest_path(root, sweep_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A secret given as an override is not stored (resume then asks for the original command): store.scrub.
    task_overrides = [tracking.scrub(o) for o in task_overrides]
    jobs = [([tracking.scrub(o) for o in overrides], h) for overrides, h in jobs]
    with waiting_lock(path.parent / ".manifest.lock"):
        manifest = read_manifest(root, sweep_id) if path.exists() else {"sweep_id": sweep_id, "jobs": [],
                                                                        "invocations": []}
        known = {j["config_hash"] for j in manifest["jobs"]}
        manifest["jobs"] += [{"overrides": o, "config_hash": h, **({"trunk": trunks[h]} if h in (trunks or {}) else {})}
                             for o, h in jobs if h not in known]
        hashes = [h for _, h in jobs]
        same = [i for i in manifest["invocations"] if i["overrides"] == task_overrides]
        if same:
            same[0]["config_hashes"] = sorted({*same[0]["config_hashes"], *hashes})
        else:
            manifest["invocations"].append({"overrides": task_overrides, "config_hashes": hashes})
        manifest.update(config_name=config_name, overrides=task_overrides)  # the latest command
        # The latest driver: while it lives, points without a run dir are queued rather than not started.
        manifest["driver"] = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
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


def run_progress(run_dir: Path, status: dict[str, Any], state: str) -> dict[str, Any]:
    """step, steps, loss (the last training loss logged), val_loss (the last validation loss) and eta_s
    (running runs only) of one run dir."""
    out: dict[str, Any] = {"step": None, "steps": status.get("steps"), "loss": None, "eta_s": None}
    metrics = read_metrics(Path(run_dir) / METRICS_NAME)
    out["val_loss"] = next((r["val/loss"] for r in reversed(metrics) if "val/loss" in r), None)
    report = read_state(run_dir)
    if report is not None:
        out.update(step=report.get("done"), steps=report.get("total") or out["steps"],
                   loss=(report.get("fields") or {}).get("loss"))
        if state == RUNNING and report.get("eta_s") is not None:
            # The ETA as of the report, less the time since: a report is at most PROGRESS_EVERY_S old.
            out["eta_s"] = max(0.0, report["eta_s"] - (time.time() - report.get("updated_at", time.time())))
    else:
        rows = [r for r in metrics if "train/loss" in r]
        if rows:
            last = rows[-1]
            out.update(step=last["step"], loss=last["train/loss"])
            rate, tokens = last.get("train/tokens_per_s"), last.get("train/tokens")
            if state == RUNNING and out["steps"] and rate and tokens and last["step"]:
                since = time.time() - (Path(run_dir) / METRICS_NAME).stat().st_mtime
                remaining = (out["steps"] - last["step"]) * (tokens / last["step"]) / rate
                out["eta_s"] = max(0.0, remaining - since)
    if state == FINISHED and out["steps"]:
        out["step"] = out["steps"]
    return out


def run_row(run_dir: Path, client: MlflowClient | None = None) -> dict[str, Any]:
    """One run dir's state, progress, MLflow status and final loss. A corrupt status.json is reported as
    such (one line on stderr naming it), so that a table of many runs goes on."""
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
    return {"config_hash": Path(run_dir).name, "state": state, "mlflow": mlflow_status,
            "eval_loss": (status.get("final") or {}).get("eval/loss"), **run_progress(run_dir, status, state)}


def sweep_status(root: Path, sweep_id: str, tracking_uri: str | None = None) -> list[dict[str, Any]]:
    """One row per grid point (of every invocation of the sweep): its label (the run name's point part),
    overrides, hash, state, step/steps, last training loss, ETA, the MLflow run's status, eval/loss
    (run_row)."""
    path = manifest_path(root, sweep_id)
    if not path.exists():
        raise FileNotFoundError(f"no manifest for sweep {sweep_id!r} at {path}: was it launched with "
                                f"paths.root={root}? Known sweeps: {', '.join(known_sweeps(root)) or 'none'}")
    manifest = read_manifest(root, sweep_id)
    client = MlflowClient(tracking_uri) if tracking_uri else None
    rows = [{"overrides": " ".join(o for o in job["overrides"] if not o.startswith("sweep=")),
             **run_row(Path(root) / "runs" / job["config_hash"], client)} for job in manifest["jobs"]]
    for r, job in zip(rows, manifest["jobs"]):
        r["trunk"] = job.get("trunk")
        if r["state"] == MISSING and RunLock(Path(root) / "runs" / job["config_hash"]).held():
            r["state"] = AT_TRUNK if r["trunk"] else STARTING
    going = any(r["state"] in (RUNNING, AT_TRUNK, STARTING) for r in rows) or driver_alive(manifest)
    labels = point_labels(root, manifest["jobs"])
    for r, label in zip(rows, labels):
        r["label"] = label
        if r["state"] == MISSING and going:
            r["state"] = QUEUED
    return rows


def trunk_status(root: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per trunk of a branched sweep's grid points (rows from sweep_status): its state (`training`: a job
    holds it; `done`: every stop its branches registered is kept; else `idle`), step (the trunk's progress.json or
    metrics.jsonl), its furthest stop, the stops kept of those registered, and its branches' labels."""
    branches: dict[str, list[str]] = {}
    for r in rows:
        if r.get("trunk"):
            branches.setdefault(r["trunk"], []).append(r["label"])
    out = []
    for trunk, labels in branches.items():
        d = trunk_dir(Path(root) / "runs", trunk)
        registered, kept = registered_stops(d), set(kept_stops(d))
        held = RunLock(d).held()
        state = "training" if held else "done" if registered and registered <= kept else "idle"
        progress = run_progress(d, {}, RUNNING if held else state)
        if state == "done" and progress["step"] is None:  # its record gone (e.g. cleaned): at least its stops
            progress["step"] = max(registered)
        out.append({"trunk": trunk, "dir": d, "state": state, "step": progress["step"],
                    "steps": max(registered, default=None), "loss": progress["loss"],
                    "eta_s": progress["eta_s"] if held else None, "kept": len(registered & kept),
                    "registered": len(registered), "branches": labels})
    return out


def driver_alive(manifest: dict[str, Any]) -> bool:
    """Whether the process that launched the sweep's latest invocation still runs (on this host: a driver
    elsewhere, e.g. another login node, cannot be checked and counts as gone)."""
    driver = manifest.get("driver") or {}
    return driver.get("host") == socket.gethostname() and bool(driver.get("pid")) and process_alive(int(driver["pid"]))


def point_labels(root: Path, jobs: list[dict[str, Any]]) -> list[str]:
    """Each grid point's label as its run is named (experiments.config.naming): from the run dir's
    config.yaml once the job started, else from its overrides composed as the job will compose them."""
    labels: list[str | None] = [run_label(Path(root) / "runs" / j["config_hash"], fallback=None) for j in jobs]
    todo = [i for i, label in enumerate(labels) if label is None]
    if todo:
        values: dict[str, set[str]] = {}
        for job in jobs:
            for key, eq, value in (o.partition("=") for o in job["overrides"]):
                if eq:
                    values.setdefault(key.lstrip("+~"), set()).add(value)
        varied = sorted(key for key, v in values.items() if len(v) > 1)  # what the grid varies
        for i, label in zip(todo, composed_labels([jobs[i]["overrides"] for i in todo], varied)):
            labels[i] = label or jobs[i]["config_hash"]
    return [str(label) for label in labels]


def composed_labels(points: list[list[str]], varied: list[str]) -> list[str | None]:
    """point_label of each point's config as its job will compose it (None where it does not compose,
    e.g. a sweep file since removed). Composed once per choice of config groups (`sweep=`, `model=`): the
    key=value overrides are then set on a copy, for a status that stays quick on large grids."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from experiments.config.schema import register

    register()
    parser = OverridesParser.create()
    conf = Path(__file__).resolve().parents[2] / "conf"
    bases: dict[tuple[str, ...], Any] = {}
    out: list[str | None] = []
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        for overrides in points:
            try:
                parsed = parser.parse_overrides(overrides)
                groups = tuple(o for o, p in zip(overrides, parsed) if "." not in p.key_or_group)
                if groups not in bases:
                    bases[groups] = compose(config_name="config", overrides=list(groups))
                cfg = bases[groups].copy()
                for p in parsed:
                    if "." in p.key_or_group:
                        OmegaConf.update(cfg, p.key_or_group, p.value(), force_add=True)
                cfg = OmegaConf.to_container(cfg, resolve=True)
                cfg["model"] = dataclasses.asdict(resolve_model(cfg["model"]))
                out.append(point_label(cfg, varied) or None)
            except Exception:  # noqa: BLE001 — a label is for reading: such a row shows its hash
                out.append(None)
    return out


def find_run_dir(root: Path, target: str) -> Path | None:
    """A run dir named by its path, its config hash under <root>/runs, or a unique prefix of that hash."""
    path = Path(target)
    if path.is_dir() and ((path / "status.json").exists() or (path / CONFIG_NAME).exists()):
        return path.resolve()
    runs = Path(root) / "runs"
    if "/" not in target and (runs / target).is_dir():
        return runs / target
    matches = sorted(runs.glob(f"{target}*")) if len(target) >= 4 and "/" not in target else []
    return matches[0] if len(matches) == 1 else None


_HASH = object()


def run_label(run_dir: Path, fallback: Any = _HASH) -> Any:
    """The run's point label (e.g. mu4-C2e12, experiments.config.naming) from its config.yaml, else
    `fallback` (default: the run's hash)."""
    try:
        cfg = OmegaConf.to_container(OmegaConf.load(Path(run_dir) / CONFIG_NAME), resolve=True)
        cfg["model"] = dataclasses.asdict(resolve_model(cfg["model"]))  # config.yaml keeps the preset's nulls
        return point_label(cfg) or Path(run_dir).name
    except Exception:  # noqa: BLE001 — a name is for reading: a missing or odd config.yaml shows the hash
        return Path(run_dir).name if fallback is _HASH else fallback


def known_sweeps(root: Path) -> list[str]:
    return sorted(p.parent.name for p in (Path(root) / "sweeps").glob(f"*/{MANIFEST}"))


def _cells(r: dict[str, Any]) -> list[str]:
    """state, step/steps, eval/loss, train loss, ETA, mlflow of a row (state may hold one space)."""
    step = "—" if r.get("step") is None else f"{r['step']}/{r['steps'] or '?'}"
    loss = "—" if r.get("loss") is None else f"{r['loss']:.3f}"
    # The final evaluation; before it, the latest validation loss (a `~`: not yet the final number).
    if r.get("eval_loss") is not None:
        eval_loss = f"{r['eval_loss']:.4f}"
    else:
        eval_loss = f"~{r['val_loss']:.4f}" if r.get("val_loss") is not None else "—"
    return [f"{r['state']:<11}", f"{step:<13}", f"{eval_loss:<9}", f"{loss:<10}", f"{fmt_seconds(r.get('eta_s')):<8}",
            r["mlflow"]]


HEADER = ["state      ", "step         ", "eval/loss", "train loss", "ETA     ", "mlflow"]
NOTE = ("eval/loss: the final evaluation at T = µ_rec; ~: the latest validation loss of a run not finished; "
        "queued: waits for its sweep's running jobs; not started: make resume SWEEP=<id> runs it")


def format_table(sweep_id: str, rows: list[dict[str, Any]], trunks: list[dict[str, Any]] | None = None) -> str:
    counts = Counter(r["state"] for r in rows)
    order = (FINISHED, RUNNING, AT_TRUNK, STARTING, QUEUED, INTERRUPTED, FAILED, DIVERGED, NOT_STARTED, CORRUPT)
    width = max((len(r.get("label") or r["overrides"]) for r in rows), default=10)
    lines = ["  ".join([f"{'point':<{width}}", f"{'hash':<16}", *HEADER])]
    lines += ["  ".join([f"{r.get('label') or r['overrides']:<{width}}", f"{r['config_hash']:<16}", *_cells(r)])
              for r in rows]
    summary = ", ".join(f"{counts[s]} {s}" for s in order if counts[s])
    return "\n".join([f"sweep {sweep_id}: {len(rows)} grid points: {summary}", *lines, NOTE,
                      *format_trunks(trunks or [])])


def format_trunks(trunks: list[dict[str, Any]]) -> list[str]:
    """The trunks section under a branched sweep's table (none: no lines)."""
    if not trunks:
        return []
    counts = Counter(t["state"] for t in trunks)
    width = max(len(f"runs/{t['dir'].name}/") for t in trunks)
    lines = ["", f"trunks (sweep.branching=true): {len(trunks)}: "
             + ", ".join(f"{counts[s]} {s}" for s in ("training", "idle", "done") if counts[s]),
             "  ".join([f"{'trunk dir':<{width}}", f"{'state':<9}", f"{'step':<13}", f"{'stops kept':<11}",
                        f"{'train loss':<10}", f"{'ETA':<8}", "branches"])]
    for t in trunks:
        step = "—" if t["step"] is None else f"{t['step']}"
        step += f"/{t['steps']}" if t["steps"] is not None else ""
        loss = "—" if t["loss"] is None else f"{t['loss']:.3f}"
        lines.append("  ".join([f"runs/{t['dir'].name}/".ljust(width),
                                f"{t['state']:<9}", f"{step:<13}", f"{t['kept']} of {t['registered']:<6}",
                                f"{loss:<10}", f"{fmt_seconds(t['eta_s']):<8}", " ".join(t["branches"])]))
    lines.append("a trunk trains once, up to its furthest stop; each branch starts from the stop at its own "
                 "cooldown start. at trunk: the branch's job waits for its stop, or trains the trunk to it")
    return lines


def format_run(run_dir: Path, row: dict[str, Any]) -> str:
    """One run: its label, hash and dir, then the same columns as a sweep's table."""
    return "\n".join([f"run {run_label(run_dir)} ({row['config_hash']}, {run_dir})",
                      "  ".join(HEADER), "  ".join(_cells(row))])


def resume_commands(root: Path, sweep_id: str, todo: set[str]) -> list[list[str]]:
    """The sweep's own commands again, one per invocation that holds a point of `todo` (config hashes):
    finished points are skipped, the rest run or resume."""
    manifest = read_manifest(root, sweep_id)
    commands = []
    for inv in manifest["invocations"]:
        if todo & set(inv["config_hashes"]):
            overrides = [o for o in inv["overrides"] if not o.startswith("paths.root=")]
            if any(tracking.REDACTED in o for o in overrides):
                raise RunDirError(f"sweep {sweep_id}'s command held a secret, which its manifest does not store "
                                  f"({' '.join(overrides)}); rerun that command itself, with the secret from the "
                                  f"environment: finished points are skipped")
            commands.append([sys.executable, "-m", "experiments.pretrain", "-m", f"paths.root={Path(root).resolve()}",
                             *overrides])
    return commands


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.status", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_id", nargs="?", metavar="sweep_id | run",
                        help="a sweep id, or one run: its run dir or config hash (default: the latest sweep)")
    parser.add_argument("--root", default=".", help="paths.root of the sweep (default: .)")
    parser.add_argument("--tracking-uri", default=None, help="default: sqlite:///<root>/mlflow.db")
    parser.add_argument("--resume", action="store_true", help="run the grid points that are not finished")
    args = parser.parse_args(argv)
    root = Path(args.root).resolve()
    if not args.sweep_id:  # the latest sweep (the others named), or a line saying there is none yet
        sweeps = sorted(known_sweeps(root), key=lambda s: manifest_path(root, s).stat().st_mtime)
        if not sweeps:
            print(f"no sweeps under {root / 'sweeps'} yet: make sweep starts one")
            return 0
        args.sweep_id = sweeps[-1]
        if len(sweeps) > 1:
            print(f"the latest sweep; others: {', '.join(sweeps[:-1])} (make status SWEEP=<id>)")
    uri = args.tracking_uri or tracking.default_uri(root)
    uri = uri if (root / "mlflow.db").exists() or args.tracking_uri else None
    try:
        rows = sweep_status(root, args.sweep_id, uri)
    except FileNotFoundError as err:
        run_dir = find_run_dir(root, args.sweep_id)
        if run_dir is None:
            print(f"error: {err}; nor is it a run dir or config hash under {root / 'runs'}", file=sys.stderr)
            return 2
        if args.resume:
            print(f"error: --resume takes a sweep id; to resume run {run_dir.name}, rerun its command "
                  f"(its config: {run_dir / CONFIG_NAME})", file=sys.stderr)
            return 2
        print(format_run(run_dir, run_row(run_dir, MlflowClient(uri) if uri else None)))
        return 0
    print(format_table(args.sweep_id, rows, trunk_status(root, rows)))
    if args.resume:
        todo = [r for r in rows if r["state"] in NOT_DONE]
        if not todo:
            print("nothing to resume")
            return 0
        try:
            commands = resume_commands(root, args.sweep_id, {r["config_hash"] for r in todo})
        except RunDirError as err:
            print(one_line("sweep", err), file=sys.stderr)
            return 2
        print(f"resuming {len(todo)} grid point(s); finished ones are skipped", flush=True)
        for command in commands:
            code = subprocess.call(command, cwd=Path(__file__).resolve().parents[2])
            if code:
                return code
        return 0
    return 0
