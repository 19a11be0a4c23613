"""Tiny markdown helpers (pandas' to_markdown needs the optional 'tabulate')."""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd


def fmt(value: object, digits: int = 4) -> str:
    """Significant-figure formatting; NaN shows as an em dash so gaps are visible."""
    if value is None or value is pd.NA:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):  # ids like "880714286907" are labels, not numbers
        return value.replace("|", "\\|")
    if isinstance(value, (int,)) and not isinstance(value, bool):
        return str(value)
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(value).replace("|", "\\|")
    if math.isnan(x):
        return "—"
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}"


def interval(lo: float, hi: float, digits: int = 3) -> str:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "—"
    return f"[{fmt(lo, digits)}, {fmt(hi, digits)}]"


def table(df: pd.DataFrame, columns: Sequence[str] | None = None,
          formatters: dict[str, Callable[[object], str]] | None = None) -> str:
    columns = list(columns or df.columns)
    formatters = formatters or {}
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in df.iterrows():
        cells = [formatters.get(c, fmt)(row[c]) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figure_link(png: Path, out_dir: Path, caption: str) -> str:
    """An embedded PNG with links to it and to its PDF twin, relative to the report's folder."""
    rel = png.relative_to(out_dir).as_posix()
    return f"![{caption}]({rel})\n\n[{caption} (PNG)]({rel}) · [PDF]({Path(rel).with_suffix('.pdf').as_posix()})"
