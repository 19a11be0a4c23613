"""Adaptive bracketing of isoFLOP optima: after a pass, extend µ_rec beyond an optimum on the grid's edge.

An isoFLOP optimum (Parcae arXiv 2604.12946 §5.2: per budget, the loss minimum over µ_rec) is only
measured when points on both sides of it were trained. With `sweep.adaptive=true` the driver
(`python -m experiments.sweep ...`, what `make sweep` runs) repeats, after the grid's pass:

1. per FLOP budget whose points are all finished, the lowest final loss decides: at the largest µ_rec of
   that budget → the next value of `sweep.ladder` above it is added; at the smallest µ_rec > 1 → the next
   value below; at µ_rec = 1 (the lower bound) nothing is added: looping does not pay at that budget;
2. the added points run as ordinary grid points of the same sweep (same `sweep_id`: one more invocation
   in the manifest, children of the same parent run), one multirun per budget, on whatever launcher the
   command names (local or SLURM: the multirun returns when its jobs have ended);

until no budget asks for more or `sweep.max_extra_points` points were added. The decisions are kept in
`sweeps/<id>/adaptive.json` (budget, µ_rec, reason) and as the parent run's tag `sweep.adaptive`, which the
analysis report lists. A rerun recomputes the same decisions from the same results: finished points are
skipped, an interrupted added point resumes, nothing is added twice.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from mlflow.tracking import MlflowClient

from experiments.config.naming import compact
from experiments.config.schema import register
from experiments.launch.sweep_status import sweep_status
from experiments.tracking.store import default_uri, find_sweep_parent

MU_KEY, BUDGET_KEY = "model.mean_recurrence", "train.flop_budget"
RECORD = "adaptive.json"
FINISHED = "finished"


@dataclass(frozen=True)
class Extension:
    flop_budget: float
    mean_recurrence: int
    reason: str


def grid_points(rows: list[dict]) -> list[tuple[float, int, str, float | None]]:
    """(budget, µ_rec, state, final loss) of every grid point that names both keys."""
    points = []
    for r in rows:
        o = dict(kv.split("=", 1) for kv in r["overrides"].split() if "=" in kv)
        if MU_KEY in o and BUDGET_KEY in o:
            points.append((float(o[BUDGET_KEY]), int(o[MU_KEY]), r["state"], r["eval_loss"]))
    return points


def extensions(points: list[tuple[float, int, str, float | None]], ladder: list[int]) -> list[Extension]:
    """The next points beyond each finished budget's edge optimum (see the module docstring)."""
    out = []
    for C in sorted({p[0] for p in points}):
        pts = [p for p in points if p[0] == C]
        if any(state != FINISHED or loss is None for _, _, state, loss in pts):
            continue  # decided once every point of the budget has its loss (a rerun resumes the rest)
        mus = sorted({mu for _, mu, _, _ in pts})
        # Replicates (sweep.seeds=K) of one µ_rec decide by their mean loss.
        mean = {mu: sum(p[3] for p in pts if p[1] == mu) / sum(1 for p in pts if p[1] == mu) for mu in mus}
        best = min(mus, key=mean.__getitem__)
        if best == mus[-1] and len(mus) > 1:
            above = [m for m in ladder if m > best]
            if above:
                out.append(Extension(C, above[0], f"optimum at the upper edge µ_rec = {best} of the grid"))
        elif best == mus[0] and best > 1 and len(mus) > 1:
            below = [m for m in ladder if m < best]
            if below:
                out.append(Extension(C, below[-1], f"optimum at the lower edge µ_rec = {best} of the grid"))
    return out


def _read_record(path: Path) -> list[Extension]:
    return [Extension(**e) for e in json.loads(path.read_text())] if path.exists() else []


def _write_record(path: Path, record: list[Extension]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps([asdict(e) for e in record], indent=2))
    os.replace(tmp, path)


def _pretrain(overrides: list[str], cwd: Path) -> int:
    return subprocess.call([sys.executable, "-m", "experiments.pretrain", *overrides], cwd=cwd)


def _compose(overrides: list[str]):
    """The sweep's settings (sweep.*, sweep_id, paths, tracking) from its command, swept keys left out."""
    overrides = [o for o in overrides if not o.startswith("hydra.")]
    parsed = OverridesParser.create().parse_overrides(overrides)
    overrides = [o for o, p in zip(overrides, parsed) if not p.is_sweep_override()]
    register()
    conf = Path(__file__).resolve().parents[2] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def _tag_parent(cfg, root: Path, record: list[Extension]) -> None:
    if not cfg.tracking.enabled:
        return
    client = MlflowClient(cfg.tracking.uri or default_uri(root))
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    if exp is None:
        return
    parent = find_sweep_parent(client, exp.experiment_id, cfg.sweep_id)
    if parent:
        client.set_tag(parent.info.run_id, "sweep.adaptive", json.dumps([asdict(e) for e in record]))


def run(overrides: list[str]) -> int:
    """The grid's pass, then extension passes while a budget's optimum sits on an edge (module docstring)."""
    cwd = Path(__file__).resolve().parents[2]
    rc = _pretrain(overrides, cwd)
    if rc != 0:
        return rc
    cfg = _compose(overrides)
    if not cfg.sweep.adaptive or cfg.sweep.dry_run:  # a dry run trained nothing to extend
        return 0
    root = Path(cfg.paths.root).resolve()
    record_path = root / "sweeps" / cfg.sweep_id / RECORD
    record = _read_record(record_path)
    base = [o for o in overrides if not o.startswith((MU_KEY + "=", BUDGET_KEY + "="))]
    while True:
        for e in record:  # every added point, again: finished ones are skipped, interrupted ones resume
            rc = _pretrain([*base, f"{MU_KEY}={e.mean_recurrence}", f"{BUDGET_KEY}={e.flop_budget}"], cwd)
            if rc != 0:
                return rc
        done = {(e.flop_budget, e.mean_recurrence) for e in record}
        new = [e for e in extensions(grid_points(sweep_status(root, cfg.sweep_id)), list(cfg.sweep.ladder))
               if (e.flop_budget, e.mean_recurrence) not in done]
        room = cfg.sweep.max_extra_points - len(record)
        if not new or room <= 0:
            if new:
                print(f"[adaptive {cfg.sweep_id}] cap sweep.max_extra_points={cfg.sweep.max_extra_points} reached; "
                      f"not added: " + ", ".join(f"µ_rec {e.mean_recurrence} at C = {compact(e.flop_budget)}"
                                                 for e in new), file=sys.stderr)
            break
        for e in new[:room]:
            print(f"[adaptive {cfg.sweep_id}] adding µ_rec = {e.mean_recurrence} at C = {compact(e.flop_budget)} FLOPs: "
                  f"{e.reason}", file=sys.stderr)
        record += new[:room]
        _write_record(record_path, record)  # before launching: an interrupted pass resumes the same points
    _tag_parent(cfg, root, record)
    return 0
