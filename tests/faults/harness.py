"""The fault-injection harness (issue 21): run a tiny pre-training job in a subprocess with PARCAE_FAULT naming a
phase boundary (experiments.training.faults), let it die there, rerun the same command without the fault, and list
every way the result breaks the lifecycle's promise — recorded exactly once, whatever happened to the job.

The job (JOB) is the smallest that crosses every phase: 42 steps (a FLOP budget, as a sweep point has), checkpoints
every 7 steps plus the final one at 42, train/* metrics at steps 1, 10, 20, 30, 40, 42 (steps 10, 20, 30 and 40 wait
in the buffer for the checkpoint after them), validation at 10, 20, 30, 40, the final evaluation at T = 1, 2, 4
(µ_rec = 4) and the model artifacts. One launch costs ~10 s of CPU, nearly all of it imports and MLflow set-up.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parents[2]
EXPERIMENT = "parcae"
SWEEP = "faults"
JOB = ["model=tiny", "train.tokens=null", "train.flop_budget=4e10", "model.block_size=64", "train.batch_size=8",
       "data.val_rows=16", "train.eval_every=10", "train.checkpoint_every=7", "train.test_loops=[1,2,4]",
       "train.threads=1", "tracking.system_metrics=false", f"sweep_id={SWEEP}"]
SIGNALS = ("SIGKILL", "SIGINT", "SIGTERM", "SIGUSR2")
# Losses a resumed 1-process run reproduces bit for bit (up to float printing); speeds and times differ by nature.
COMPARED_PREFIXES = ("train/loss", "val/", "eval/")
RTOL_ONE_RANK = 1e-6
# A 2-process run reproduces the 1-process curve up to float rounding (tests/experiments/test_ddp.py).
RTOL_TWO_RANKS = 1e-4


@dataclass
class Outcome:
    """What one launch did: its exit code (negative: killed by that signal), output and wall time."""

    cmd: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def tail(self, n: int = 2500) -> str:
        return f"$ {' '.join(self.cmd[-6:])}\nexit {self.returncode} after {self.seconds:.1f}s\n" \
               f"{(self.stdout + self.stderr)[-n:]}"

    @property
    def killed_by(self) -> str | None:
        return signal.Signals(-self.returncode).name if self.returncode < 0 else None


def command(root: Path, *overrides: str, ranks: int = 1, cache: Path | None = None,
            wrap: tuple[str, ...] = ()) -> list[str]:
    head = [*wrap, sys.executable, "-m", "experiments.pretrain"]
    if ranks > 1:
        head = [*wrap, sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
                "-m", "experiments.pretrain"]
    extra = [f"paths.cache={cache}"] if cache else []
    return [*head, f"paths.root={root}", *extra, *JOB, *overrides]


def start(root: Path, *overrides: str, fault: str | None = None, ranks: int = 1, cache: Path | None = None,
          env: dict[str, str] | None = None, wrap: tuple[str, ...] = ()) -> tuple[subprocess.Popen, list[str], float]:
    """Start the job (PARCAE_FAULT=fault when given; under `wrap`, a command prefix) in its own process group;
    `wait` collects it."""
    cmd = command(root, *overrides, ranks=ranks, cache=cache, wrap=wrap)
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                "HYDRA_FULL_ERROR": "1", **(env or {})}
    full_env.pop("PARCAE_FAULT", None)
    if fault:
        full_env["PARCAE_FAULT"] = fault
    # A shell's background job starts with SIGINT ignored, and Python then never raises KeyboardInterrupt:
    # give the child the default disposition, so that an injected SIGINT is a real Ctrl-C.
    proc = subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), start_new_session=True)
    return proc, cmd, time.monotonic()


def wait(started: tuple[subprocess.Popen, list[str], float], timeout: float = 240) -> Outcome:
    """Wait for a started job to end, however it ends (a hung one is killed, with all its processes)."""
    proc, cmd, t0 = started
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the job's own process group (torchrun's workers too)
        out, err = proc.communicate()
        err += f"\n[harness] killed after {timeout}s: the job hung"
    return Outcome(cmd, proc.returncode, out, err, time.monotonic() - t0)


def launch(root: Path, *overrides: str, fault: str | None = None, ranks: int = 1, cache: Path | None = None,
           timeout: float = 240, env: dict[str, str] | None = None, wrap: tuple[str, ...] = ()) -> Outcome:
    """Run the job once and wait for it to end."""
    return wait(start(root, *overrides, fault=fault, ranks=ranks, cache=cache, env=env, wrap=wrap), timeout)


def new_root(tmp: Path, template: Path) -> Path:
    """A project root holding an empty, already migrated MLflow store (migrating one costs seconds)."""
    tmp.mkdir(parents=True, exist_ok=True)
    shutil.copy(template, tmp / "mlflow.db")
    return tmp


def empty_store(path: Path) -> Path:
    """An MLflow sqlite store with its schema created and nothing in it."""
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


# --- what a root holds -------------------------------------------------------------------------------------------

def client(root: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{Path(root).resolve() / 'mlflow.db'}")


def pretrain_runs(root: Path, extra_filter: str = ""):
    """The root's live (not deleted) pre-training runs in MLflow."""
    c = client(root)
    exp = c.get_experiment_by_name(EXPERIMENT)
    if exp is None:
        return []
    query = "tags.run_kind = 'pretrain'" + (f" and {extra_filter}" if extra_filter else "")
    return c.search_runs([exp.experiment_id], query, max_results=1000)


def run_dirs(root: Path) -> list[Path]:
    runs = Path(root) / "runs"
    return sorted(p for p in runs.iterdir() if p.is_dir()) if runs.exists() else []


def jsonl_pairs(run_dir: Path) -> Counter:
    """(metric, step) → how many times metrics.jsonl holds it; a line cut by a kill counts as ('<cut line>', -1)."""
    pairs: Counter = Counter()
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return pairs
    for line in path.read_bytes().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            pairs[("<cut line>", -1)] += 1
            continue
        step = row.pop("step", None)
        pairs.update((k, step) for k in row)
    return pairs


def jsonl_values(run_dir: Path) -> dict[tuple[str, int], float]:
    values = {}
    path = run_dir / "metrics.jsonl"
    for line in path.read_bytes().splitlines() if path.exists() else []:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        step = row.pop("step", None)
        values.update({(k, step): v for k, v in row.items()})
    return values


def mlflow_pairs(root: Path, run_id: str) -> Counter:
    """(metric, step) → how many times the MLflow run's history holds it (system/* metrics left out)."""
    c = client(root)
    pairs: Counter = Counter()
    for key in c.get_run(run_id).data.metrics:
        if key.startswith("system/"):
            continue
        pairs.update((key, m.step) for m in c.get_metric_history(run_id, key))
    return pairs


@dataclass
class Snapshot:
    """What a finished root records of its one run, to compare a faulted-and-rerun root with the reference."""

    hash: str
    final: dict[str, float]
    jsonl: Counter
    values: dict[tuple[str, int], float]
    mlflow: Counter


def snapshot(root: Path) -> Snapshot:
    (run_dir,) = run_dirs(root)
    status = json.loads((run_dir / "status.json").read_text())
    (run,) = pretrain_runs(root)
    return Snapshot(run_dir.name, status["final"], jsonl_pairs(run_dir), jsonl_values(run_dir),
                    mlflow_pairs(root, run.info.run_id))


# --- the invariants ----------------------------------------------------------------------------------------------

def _listed(pairs) -> str:
    shown = sorted(f"{k}@{s}" for k, s in pairs)
    return ", ".join(shown[:12]) + (f" … ({len(shown)} in all)" if len(shown) > 12 else "")


def once(where: str, pairs: Counter, expected: Counter) -> list[str]:
    """Every (metric, step) of the uninterrupted run exactly once in `where`, and nothing else."""
    bad = []
    if twice := [f"{k}@{s} ×{n}" for (k, s), n in sorted(pairs.items(), key=str) if n > 1]:
        bad.append(f"{where} holds twice: {', '.join(twice)}")
    if missing := set(expected) - set(pairs):
        bad.append(f"{where} lacks: {_listed(missing)}")
    if extra := set(pairs) - set(expected):
        bad.append(f"{where} holds what the uninterrupted run does not: {_listed(extra)}")
    return bad


def close(what: str, value: float | None, expected: float, rtol: float) -> list[str]:
    if value is not None and math.isclose(value, expected, rel_tol=rtol):
        return []
    return [f"{what} {value} vs the uninterrupted run's {expected} (rtol {rtol:g})"]


def sweep_count(root: Path, sweep_id: str = SWEEP) -> int:
    """How many points the sweep's analysis counts: the usable runs of analysis' own loader when it imports
    (analysis/ is being regrouped; where the loader lives may move), else the FINISHED runs tagged as members."""
    uri = f"sqlite:///{Path(root).resolve() / 'mlflow.db'}"
    try:
        from analysis.runs import load_runs, split_usable
    except ImportError:
        return len(pretrain_runs(root, f"tags.`sweep.member.{sweep_id}` = 'true' and attributes.status = 'FINISHED'"))
    df = load_runs(uri, EXPERIMENT, sweep_id)
    return len(split_usable(df)[0]) if len(df) else 0


def violations(root: Path, reference: Snapshot, rtol: float = RTOL_ONE_RANK, sweep_id: str | None = SWEEP) -> list[str]:
    """Every broken invariant of a root that should hold the reference's one run, exactly once; [] when all hold."""
    bad: list[str] = []
    dirs = run_dirs(root)
    if [d.name for d in dirs] != [reference.hash]:
        bad.append(f"run dirs {[d.name for d in dirs]}, expected [{reference.hash}]")
    else:
        bad += _run_dir_violations(dirs[0], reference, rtol)
    runs = pretrain_runs(root)
    by_hash = Counter(r.data.tags.get("config_hash") for r in runs)
    if by_hash != Counter({reference.hash: 1}):
        bad.append(f"MLflow runs per config_hash {dict(by_hash)} (statuses {[r.info.status for r in runs]}), "
                   f"expected exactly one")
    for run in runs:
        if run.data.tags.get("config_hash") == reference.hash:
            if run.info.status != "FINISHED":
                bad.append(f"MLflow run {run.info.run_id} is {run.info.status}, expected FINISHED")
            bad += once("MLflow", mlflow_pairs(root, run.info.run_id), reference.mlflow)
            bad += close("MLflow eval/loss", run.data.metrics.get("eval/loss"), reference.final["eval/loss"], rtol)
    if sweep_id is not None and (n := sweep_count(root, sweep_id)) != 1:
        bad.append(f"the analysis of sweep {sweep_id!r} counts {n} runs, expected 1")
    return bad


def _run_dir_violations(run_dir: Path, reference: Snapshot, rtol: float) -> list[str]:
    bad: list[str] = []
    try:
        status = json.loads((run_dir / "status.json").read_text())
    except (OSError, ValueError) as err:
        status = {}
        bad.append(f"status.json unreadable: {err}")
    if status.get("status") != "finished":
        bad.append(f"status.json says {status.get('status')!r}, expected 'finished'")
    bad += close("final eval/loss in status.json", (status.get("final") or {}).get("eval/loss"),
                 reference.final["eval/loss"], rtol)
    bad += once("metrics.jsonl", jsonl_pairs(run_dir), reference.jsonl)
    values = jsonl_values(run_dir)
    off = [f"{k}@{s} {values[k, s]:.7g} vs {v:.7g}" for (k, s), v in sorted(reference.values.items(), key=str)
           if k.startswith(COMPARED_PREFIXES) and (k, s) in values
           and not math.isclose(values[k, s], v, rel_tol=rtol, abs_tol=0)]
    if off:
        bad.append(f"metrics.jsonl values differ from the uninterrupted run's (rtol {rtol:g}): {'; '.join(off[:6])}")
    return bad


def fault_then_rerun(root: Path, fault: str, *overrides: str, ranks: int = 1, cache: Path | None = None,
                     timeout: float = 240) -> tuple[Outcome, Outcome]:
    """The harness's one move: the job with the fault, then the same command without it."""
    faulted = launch(root, *overrides, fault=fault, ranks=ranks, cache=cache, timeout=timeout)
    rerun = launch(root, *overrides, ranks=ranks, cache=cache, timeout=timeout)
    return faulted, rerun


def report(faulted: Outcome, rerun: Outcome, bad: list[str]) -> str:
    """The failure message: each broken invariant on one line, then how the two launches ended."""
    return "\n".join(["broken invariants:", *(f"  - {b}" for b in bad), "--- faulted launch:", faulted.tail(1500),
                      "--- rerun:", rerun.tail(1500)])
