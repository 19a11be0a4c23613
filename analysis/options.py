"""Analysis settings shared by the MLflow and the table path (the CLI flags of python -m analysis)."""
from __future__ import annotations

from dataclasses import dataclass, field

from analysis.isoflop.qc import QCConfig

# Fewest clean budgets a power law is fitted through (--min-budgets): two points always lie on a line.
MIN_BUDGETS = 3


@dataclass
class Options:
    n_boot: int = 1000
    seed: int = 0
    min_budgets: int = MIN_BUDGETS
    keep_flagged: bool = False
    qc: QCConfig = field(default_factory=QCConfig)  # every QC threshold (--qc KEY=VALUE)
    holdout: int = 1  # the K largest budgets held out of the prediction check (--holdout; 0: off)
    predict: tuple[float, ...] = ()  # target FLOP budgets to predict the optimum at (--predict)
