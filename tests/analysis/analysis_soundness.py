"""A scan of a written report and its summary.json for numbers that should never be printed: a value
outside the interval printed right after it, a standard error that only says "flat direction" (> 1e6),
a negative r², and an isoFLOP exponent given as a result although its interval is not identified."""
from __future__ import annotations

import math
import re

from analysis.estimation import not_identified

NUMBER = r"-?\d+(?:\.\d+)?(?:e[+-]?\d+)?"
# "0.448, 95 % interval [0.442, 0.456]" or "0.451 [0.446, 0.459]": a value and its own interval
VALUE_INTERVAL = re.compile(rf"(?<![\w.^-])({NUMBER}),?\s+(?:95 % interval\s+)?\[({NUMBER}), ({NUMBER})\]")
EXPONENT_INTERVAL = re.compile(rf"C\^({NUMBER}).{{0,40}}?\[({NUMBER}), ({NUMBER})\]")
MAX_SE = 1e6


def _inside(v: float, lo: float, hi: float) -> bool:
    slack = 1e-3 * abs(v) + 5e-4  # printed values are rounded
    return lo - slack <= v <= hi + slack


def _tables(text: str):
    """(header, rows) of every markdown table."""
    blocks = re.findall(r"((?:^\|.*\|\n?)+)", text, flags=re.M)
    for block in blocks:
        lines = [ln for ln in block.strip().splitlines() if not ln.startswith("|---")]
        cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
        if len(cells) >= 2:
            yield cells[0], cells[1:]


def soundness_problems(report: str, summary: dict) -> list[str]:
    problems = []
    lines = report.splitlines() + list(summary.get("headline", []))
    for line in lines:
        for pattern in (VALUE_INTERVAL, EXPONENT_INTERVAL):
            for m in pattern.finditer(line):
                v, lo, hi = (float(g) for g in m.groups())
                if not _inside(v, lo, hi):
                    problems.append(f"{v} outside its interval [{lo}, {hi}]: {line[:160]}")
    for header, rows in _tables(report):
        for j, name in enumerate(header):
            is_se = name.lower().startswith("se") or name.lower().startswith("se_")
            is_r2 = name in ("r2", "R²")
            if not (is_se or is_r2):
                continue
            for row in rows:
                try:
                    v = float(row[j])
                except (ValueError, IndexError):
                    continue
                if is_se and abs(v) > MAX_SE:
                    problems.append(f"standard error {v:g} printed in column {name}")
                if is_r2 and v < 0:
                    problems.append(f"negative r² {v:g} printed in column {name}")
    for axis, e in summary.get("isoflop", {}).items():
        if e.get("exponent") is None or not e.get("interval") or e["interval"][0] is None:
            continue
        why = not_identified(e["exponent"], *e["interval"])
        headline = " ".join(summary.get("headline", []))
        if why and f"C^{e['exponent']:.3f}" in headline:
            problems.append(f"{axis}: exponent printed as a result although {why}")
    return problems


def assert_sound(report: str, summary: dict) -> None:
    problems = soundness_problems(report, summary)
    assert not problems, "\n".join(problems)
    assert not any(isinstance(v, float) and math.isnan(v) for v in summary.get("headline", []))
