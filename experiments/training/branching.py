"""Cooldown branches: one trunk per (model, µ_rec, seed, ...), one short cooldown per budget (sweep.branching=true).

Under a WSD schedule (trainer.wsd_multiplier) with the warm-up given in tokens (train.warmup_tokens), a run of
any length follows the same learning rate up to its cooldown start (config.plan.cooldown_start), and its batches
(PackedStream.batch(step)), depth draws and h_0 seeds (the generator in the checkpoint) depend only on the step.
So the isoFLOP points of one (model, µ_rec, seed) share their whole warm-up and stable phase: one trunk trains
it, and each budget's run is a *branch* that starts from the trunk's checkpoint at its own cooldown start and
only cools down. A branch computes what the independent run of the same schedule computes (up to float
reassociation on resume); it costs its cooldown instead of its whole length.

Layout: `runs/trunk-<hash>/` (hash: config.identity.trunk_identity, everything a trunk depends on) holds the
trunk's checkpoint.pt and metrics.jsonl, one `stop-<step>.pt` per branch point reached (a hard link to, or a
copy of, the checkpoint written at that step), and `stops.d/<step>` (the stops the sweep's branches asked for;
the driver registers them before any job starts, so whichever job trains the trunk keeps every one it passes).

A branch is an ordinary run (runs/<hash>, its hash adds the trunk's; config.identity.identity): it locks its
own run dir, and before its first step
1. finds the trunk's stop at its cooldown start, or takes the trunk's lock and trains the trunk up to it (from
   the trunk's checkpoint, or, when the trunk has moved past the stop without keeping it, from the nearest
   earlier stop), or waits while another job holds the trunk;
2. writes its own checkpoint.pt from that stop, carrying the trunk's metrics up to the stop, so that its
   record and MLflow run hold the whole curve, as an independent run's would (record.restore adds them);
then resumes from that checkpoint like any interrupted run. A kill anywhere leaves either no branch
checkpoint (step 1 again: the trunk resumes from its own checkpoint) or one (the branch resumes).

Several jobs of one trunk (a parallel launcher, a SLURM array) take turns on the trunk's lock: one extends the
trunk while the others wait, polling every BRANCH_POLL_S for their stop. A waiting job holds its allocation;
on SLURM give the branches of one trunk a small array_parallelism, or run the grid in budget order.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from experiments.config.errors import RunBusyError
from experiments.config.identity import trunk_identity
from experiments.config.plan import Plan, branching_on, cooldown_start
from experiments.training import checkpoint, record
from experiments.training.run_dir import RunLock, clean_temp_files
from experiments.training.job import METRICS_NAME
from experiments.training.trainer import MetricSink, train

log = logging.getLogger("experiments.training.branching")
TRUNK_PREFIX = "trunk-"
STOPS_DIR = "stops.d"
BRANCH_POLL_S = float(os.environ.get("PARCAE_BRANCH_POLL_S", "5"))


@dataclass(frozen=True)
class Branch:
    """Where a branch leaves its trunk."""

    trunk_hash: str
    trunk_dir: Path
    from_step: int  # the branch's cooldown start: its first step of its own
    from_tokens: int

    @property
    def stop(self) -> Path:
        return stop_path(self.trunk_dir, self.from_step)


def branch_of(cfg: DictConfig, p: Plan, root: Path, content_hash: str) -> Branch | None:
    """The branch a run is under sweep.branching=true (None otherwise)."""
    if not branching_on(cfg):
        return None
    h = trunk_identity(cfg, p.model, content_hash)
    start = cooldown_start(p.steps, cfg.train.cooldown_fraction)
    return Branch(h, trunk_dir(Path(root) / cfg.paths.runs, h), start,
                  start * cfg.train.batch_size * p.model.block_size)


def trunk_dir(runs: Path, trunk_hash: str) -> Path:
    """A trunk's directory under the runs folder: runs/trunk-<hash>/."""
    return Path(runs) / f"{TRUNK_PREFIX}{trunk_hash}"


def sweep_cost(points: list[tuple[str, int, int, float]]) -> tuple[float, float, int]:
    """(cost with branching, cost without, number of trunks) of a sweep's points, each given as (trunk key, steps,
    cooldown start, cost of one step): a trunk trains once up to its furthest stop, each branch only its cooldown.
    Each branch still counts as its whole budget (trunk prefix + cooldown) in its own run; this is what the sweep
    spends."""
    furthest: dict[str, float] = {}
    without = with_branching = 0.0
    for key, steps, start, step_cost in points:
        without += steps * step_cost
        with_branching += (steps - start) * step_cost
        furthest[key] = max(furthest.get(key, 0.0), start * step_cost)
    return with_branching + sum(furthest.values()), without, len(furthest)


def stop_path(trunk_dir: Path, step: int) -> Path:
    return Path(trunk_dir) / f"stop-{step}.pt"


def register_stop(branch: Branch) -> None:
    """Ask the trunk to keep its checkpoint at this branch's cooldown start (one empty file per stop)."""
    d = branch.trunk_dir / STOPS_DIR
    d.mkdir(parents=True, exist_ok=True)
    (d / str(branch.from_step)).touch()


def registered_stops(trunk_dir: Path) -> frozenset[int]:
    d = Path(trunk_dir) / STOPS_DIR
    return frozenset(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else frozenset()


def kept_stops(trunk_dir: Path) -> list[int]:
    return sorted(int(p.stem.split("-", 1)[1]) for p in Path(trunk_dir).glob("stop-*.pt")
                  if p.stem.split("-", 1)[1].isdigit())


def keep_stop(trunk_dir: Path, step: int) -> None:
    """Keep the trunk's checkpoint (just written at `step`) as stop-<step>.pt: a hard link (the checkpoint is
    replaced by rename, never rewritten in place, so the link keeps this step's file), or a copy where the
    filesystem has no hard links. Atomic: a temporary name, then a rename."""
    keep_copy(Path(trunk_dir) / checkpoint.CHECKPOINT_NAME, stop_path(trunk_dir, step))


def trunk_train_cfg(train_cfg: DictConfig) -> DictConfig:
    """The trunk's schedule: the branches' warm-up, then constant (it never cools down itself)."""
    t = OmegaConf.create(OmegaConf.to_container(train_cfg, resolve=True))
    with open_dict(t):
        t.cooldown_fraction = 0.0
    return t


class _Trunk:
    """Rank 0's side of one trunk: its lock, and how to start it towards a stop."""

    def __init__(self, branch: Branch):
        self.branch = branch
        self.lock = RunLock(branch.trunk_dir)
        self.held = False

    def claim(self) -> str:
        """'ready' (the stop exists), 'wait' (another job holds the trunk) or 'train' (lock held; the trunk's
        checkpoint is at or before the stop and its record cut back to it)."""
        b = self.branch
        if b.stop.exists():
            return "ready"
        b.trunk_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.lock.acquire()
        except RunBusyError:
            return "wait"
        self.held = True
        if b.stop.exists():  # kept by the job that held the lock until now
            self.release()
            return "ready"
        clean_temp_files(b.trunk_dir)
        ckpt = b.trunk_dir / checkpoint.CHECKPOINT_NAME
        state = checkpoint.load(ckpt, mmap=True)
        step = int(state["step"]) if state else 0
        if step > b.from_step:
            # The trunk went past this stop without keeping it (registered late): go back to the nearest kept stop
            # before it, or to the start. The trunk is deterministic, so it retraces the same steps.
            earlier = [s for s in kept_stops(b.trunk_dir) if s <= b.from_step]
            log.info("trunk %s is at step %d, past the stop %d it did not keep: retraining from step %d",
                     b.trunk_hash, step, b.from_step, earlier[-1] if earlier else 0)
            if earlier:
                keep_copy(stop_path(b.trunk_dir, earlier[-1]), ckpt)
            else:
                ckpt.unlink()
            state = checkpoint.load(ckpt, mmap=True) if earlier else None
            step = int(state["step"]) if state else 0
        record.restore(b.trunk_dir / METRICS_NAME, step, list(state.get("metrics") or []) if state else [])
        return "train"

    def release(self) -> None:
        if self.held:
            self.lock.release()
            self.held = False


def keep_copy(src: Path, dst: Path) -> None:
    """dst becomes the file src is now (hard link, else copy), atomically."""
    tmp = dst.with_name(f".{dst.name}.tmp{os.getpid()}")
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def ensure_stop(job, branch: Branch, p: Plan, data, label: str) -> None:
    """Make the trunk's stop at the branch's cooldown start exist (see the module docstring); every rank calls
    it, rank 0 decides (job.agree) and all ranks train the trunk together when it is this job's turn."""
    trunk = _Trunk(branch) if job.main else None
    waited_since = None
    while True:
        decision = job.agree(trunk.claim if trunk else (lambda: None))
        if decision == "ready":
            if waited_since is not None and job.main:
                log.info("trunk %s reached step %d after %.0f s", branch.trunk_hash, branch.from_step,
                         time.monotonic() - waited_since)
            return
        if decision == "wait":
            if waited_since is None:
                waited_since = time.monotonic()
                if job.main:
                    log.info("waiting for trunk %s (another job trains it) to reach step %d", branch.trunk_hash,
                             branch.from_step)
            time.sleep(BRANCH_POLL_S)
            continue
        try:
            stops = job.agree(lambda: registered_stops(branch.trunk_dir) | {branch.from_step})
            sink = MetricSink(branch.trunk_dir / METRICS_NAME)
            result = train(p.model, trunk_train_cfg(job.cfg.train), branch.from_step, data.train, data.val,
                           branch.trunk_dir, sink, tokens_per_byte=data.tokens_per_byte, label=f"trunk {label}",
                           final_eval=False, keep_at=frozenset(s for s in stops if s <= branch.from_step),
                           keep=lambda s: keep_stop(branch.trunk_dir, s))
            if result.status != "paused":
                raise RuntimeError(f"the trunk {branch.trunk_hash} {result.status} at step {result.steps}: its "
                                   "branches cannot start (see runs/trunk-<hash>/metrics.jsonl)")
        finally:
            if trunk:
                trunk.release()


def seed_branch(branch: Branch, run_dir: Path) -> bool:
    """Rank 0: the branch's own checkpoint.pt from the trunk's stop, carrying the trunk's metrics up to it (the
    branch's record then starts with the trunk's curve). False when the branch already has a checkpoint."""
    ckpt = Path(run_dir) / checkpoint.CHECKPOINT_NAME
    if ckpt.exists():
        return False
    state = checkpoint.load(branch.stop)
    upto = int(state["step"])
    # The trunk's record up to the stop, and the rows the stop carried in case a kill came before their flush:
    # the branch's record.restore adds each row once.
    rows = [r for r in record.read_rows(branch.trunk_dir / METRICS_NAME) if r["step"] <= upto]
    state["metrics"] = sorted([*rows, *(state.get("metrics") or [])], key=lambda r: r["step"])
    state["final"] = {}
    state["branch"] = {"trunk": branch.trunk_hash, "from_step": upto}
    checkpoint.save(ckpt, state)
    return True


def prepare(job, branch: Branch, p: Plan, data, label: str) -> None:
    """Before the branch's record is restored: its checkpoint exists, from the trunk's stop."""
    if job.agree(lambda: (job.run_dir / checkpoint.CHECKPOINT_NAME).exists()):
        return  # resumed: the branch is past its start
    if job.main:
        register_stop(branch)
    ensure_stop(job, branch, p, data, label)
    job.agree(seed_branch, branch, job.run_dir)
