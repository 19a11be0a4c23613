"""Helpers every section of a report shares: names of runs and figures, and the warnings block."""
from __future__ import annotations

import re

from analysis.runs.labels import run_label, with_labels  # noqa: F401  (re-exported: sections name runs so)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "model"


def warnings_section(warnings: list[str]) -> str:
    if not warnings:
        return "## Warnings\n\nNone."
    return "## Warnings\n\n" + "\n".join(f"- {w}" for w in warnings)
