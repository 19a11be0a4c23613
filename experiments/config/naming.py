"""Short, human names for a run: what the MLflow run name, the progress bar and `make status` show.

A run is named by the values that tell it apart from its neighbours in a sweep, e.g. `isoflop/mu4-C2e12`:
the mean recurrence and the budget (or token count) always, then every other key the sweep's grid varies
(`sweep.varied`, which the sweep driver sets for each job), each under a short alias. The config hash stays the run's identity (and its run
dir); the name is only for reading, so two sweeps may name one run differently and nothing depends on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

# Aliases for the keys sweeps vary most; any other key is shown under its last dotted part.
ALIASES = {
    "model.mean_recurrence": "mu",
    "train.flop_budget": "C",
    "train.tokens": "D",
    "model.preset": "",
    "model.d_model": "d",
    "model.n_layer": "L",
    "model.n_core": "R",
    "train.lr": "lr",
    "train.seed": "seed",
    "seed": "seed",
}
# Always part of the name (when set), in this order.
AXES = ("model.mean_recurrence", "train.flop_budget", "train.tokens")


def compact(value: Any) -> str:
    """2e12, 1.2e13, 5M, 0.01, 4: the shortest reading of a value that keeps its digits."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, (int, float)):
        v = float(value)
        if v.is_integer() and abs(v) < 1e5:
            return str(int(v))
        if abs(v) >= 1e5:
            mantissa, exp = f"{v:.3e}".split("e")
            mantissa = mantissa.rstrip("0").rstrip(".")
            return f"{mantissa}e{int(exp)}"
        return f"{v:.3g}"
    return str(value).replace("/", "-")


def _select(cfg: Mapping[str, Any], key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def point_label(cfg: Mapping[str, Any], varied: Iterable[str] | None = None) -> str:
    """`mu4-C2e12` (plus `-lr0.01` etc. for other varied keys; default: the config's `sweep.varied`)."""
    if varied is None:
        varied = _select(cfg, "sweep.varied") or ()
    keys = [k for k in AXES if _select(cfg, k) is not None]
    keys += [k for k in varied if k not in keys and not k.startswith("hydra.")]
    parts = []
    for key in keys:
        value = _select(cfg, key)
        if value is None:
            continue
        alias = ALIASES.get(key, key.rsplit(".", 1)[-1])
        parts.append(f"{alias}{compact(value)}" if alias else compact(value))
    return "-".join(parts)


def run_name(cfg: Mapping[str, Any]) -> str:
    """`<sweep_id>/<point label>`, e.g. `isoflop/mu4-C2e12`, with the keys the sweep varies (`sweep.varied`)."""
    return f"{_select(cfg, 'sweep_id') or 'run'}/{point_label(cfg)}"
