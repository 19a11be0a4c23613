"""Cooldown branches against independent runs, point by point (docs/branching.md, "Measurements").

    python benchmarks/branch_vs_independent.py --independent ROOT_A --branched ROOT_B [--noise 0.006]

ROOT_A and ROOT_B are the paths.root of the same sweep run twice, without and with sweep.branching=true. Every
finished run dir is matched by (µ_rec, FLOP budget, seed); the table gives both final losses (T = µ_rec) and
their difference, then each budget's optimum either way. --noise is the seed noise the differences are read
against (the SD of the final loss across seeds at one point; docs/pilot.md measured 0.005-0.007 nats on CPU).
Prints markdown.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import yaml


def finished_points(root: Path) -> dict[tuple[int, float, int], float]:
    """(µ_rec, budget, seed) -> final eval/loss of every finished run dir under root/runs (trunks left out)."""
    out = {}
    for run_dir in sorted((Path(root) / "runs").iterdir()):
        status_path, config_path = run_dir / "status.json", run_dir / "config.yaml"
        if run_dir.name.startswith("trunk-") or not status_path.exists() or not config_path.exists():
            continue
        status = json.loads(status_path.read_text())
        if status.get("status") != "finished":
            continue
        cfg = yaml.safe_load(config_path.read_text())
        key = (int(cfg["model"]["mean_recurrence"] or 0), float(cfg["train"]["flop_budget"]), int(cfg["train"]["seed"]))
        out[key] = float(status["final"]["eval/loss"])
    return out


def optima(points: dict[tuple[int, float, int], float]) -> dict[float, int]:
    """budget -> the µ_rec with the lowest mean loss over seeds."""
    by: dict[float, dict[int, list[float]]] = {}
    for (mu, c, _), loss in points.items():
        by.setdefault(c, {}).setdefault(mu, []).append(loss)
    return {c: min(mus, key=lambda m: statistics.fmean(mus[m])) for c, mus in sorted(by.items())}


def report(independent: Path, branched: Path, noise: float) -> str:
    a, b = finished_points(independent), finished_points(branched)
    common = sorted(set(a) & set(b))
    lines = ["| µ_rec | C (FLOPs) | seed | independent | branched | branched − independent |", "|---|---|---|---|---|---|"]
    diffs = []
    for key in common:
        d = b[key] - a[key]
        diffs.append(d)
        lines.append(f"| {key[0]} | {key[1]:.3g} | {key[2]} | {a[key]:.4f} | {b[key]:.4f} | {d:+.4f} |")
    if not diffs:
        return "no point is finished in both roots"
    beyond = [k for k, d in zip(common, diffs) if abs(d) > noise]
    lines += ["", f"{len(common)} points in both; difference mean {statistics.fmean(diffs):+.4f}, "
              f"mean |difference| {statistics.fmean(abs(d) for d in diffs):.4f}, largest "
              f"{max(diffs, key=abs):+.4f} nats; {len(beyond)} beyond the seed noise {noise:g}"
              + (": " + ", ".join(f"µ_rec {k[0]} at {k[1]:.3g}" for k in beyond) if beyond else "")]
    oa, ob = optima({k: a[k] for k in common}), optima({k: b[k] for k in common})
    lines += ["", "| C (FLOPs) | optimum µ_rec, independent | branched |", "|---|---|---|"]
    lines += [f"| {c:.3g} | {oa[c]} | {ob[c]} |" for c in oa]
    only = sorted(set(a) ^ set(b))
    if only:
        lines.append(f"\nin one root only (e.g. points adaptive bracketing added on one side): {only}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--independent", type=Path, required=True)
    ap.add_argument("--branched", type=Path, required=True)
    ap.add_argument("--noise", type=float, default=0.006, help="seed noise of the final loss, nats (default 0.006)")
    args = ap.parse_args()
    print(report(args.independent, args.branched, args.noise))


if __name__ == "__main__":
    main()
