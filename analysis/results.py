"""The one results object of an analysis: everything report.md, the figures, summary.json and points.csv
are drawn from. ``analysis.compute`` builds it (every fit happens there); ``analysis.report.render``
writes the report from it without fitting anything. It is saved beside the report as DIR/results.pkl, so
``python -m analysis --redraw DIR`` redraws the figures and the report from it without refitting.

results.pkl is a Python pickle: load only one the analysis wrote (unpickling runs code named in the
file). It is tied to the analysis version that wrote it (RESULTS_VERSION); after a change of these
classes rerun the analysis instead of redrawing.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis.holdout import Holdout
from analysis.isoflop.approach2 import AxisResult
from analysis.isoflop.groups import IsoflopGroup
from analysis.isoflop.powerlaw import PowerLawFit
from analysis.laws.results import LawResult
from analysis.options import Options
from analysis.runs.table import Table
from analysis.testtime.saturation import SaturationFit

RESULTS_FILE = "results.pkl"
RESULTS_VERSION = 2  # raise when a field of the classes below changes meaning


class ResultsError(ValueError):
    """DIR holds no results the analysis can redraw; the message says what to do."""


@dataclass
class Stability:
    """Stability outcome per run (analysis.stability) and the metric histories the figure draws."""

    table: pd.DataFrame
    histories: pd.DataFrame
    thresholds: object  # analysis.stability.Thresholds


@dataclass
class TestTime:
    """Test-time fits per run id, the Table-12 form comparison; reason: why there are none."""

    __test__ = False  # not a pytest class
    fits: dict[str, SaturationFit] = field(default_factory=dict)
    forms: pd.DataFrame | None = None
    reason: str | None = None


@dataclass
class Results:
    kind: str                      # "mlflow" (a sweep) or "table" (--csv)
    title: str                     # the report's first line
    source: dict                   # summary.json["source"]
    options: Options
    generated: str                 # when the results were computed (UTC)
    versions: dict[str, str]       # library versions that computed them
    runs: pd.DataFrame             # every input row in input order; rows excluded before fitting carry `reason`
    usable: pd.DataFrame
    excluded: pd.DataFrame
    table: Table | None = None     # the table's columns, budget bins and notes (kind "table")
    adaptive: list[dict] = field(default_factory=list)  # points the sweep driver added (kind "mlflow")
    stability: Stability | None = None
    isoflop: list[IsoflopGroup] = field(default_factory=list)
    conventions: dict | None = None  # summary.json["conventions"] (sweeps)
    testtime: TestTime | None = None
    laws_supported: tuple[bool, str] = (False, "not fitted")
    laws: list[LawResult] = field(default_factory=list)
    approaches: pd.DataFrame = field(default_factory=pd.DataFrame)  # Approach 2 vs 3 (analysis.laws.agreement)
    holdout: Holdout | None = None
    seeds: list = field(default_factory=list)     # analysis.isoflop.seeds.SeedSummary per group (main axis)
    branches: pd.DataFrame = field(default_factory=pd.DataFrame)  # branched runs and their trunks
    warnings: list[str] = field(default_factory=list)
    predictions: list[dict] = field(default_factory=list)  # summary.json["predictions"] (--predict)
    version: int = RESULTS_VERSION

    @property
    def axes(self) -> list[AxisResult]:
        """Every Approach 2 result, group by group."""
        return [r for g in self.isoflop for r in g.results]

    @property
    def approach2(self) -> dict[str, PowerLawFit]:
        """group -> power law of D* (compared with Approach 3)."""
        return {r.group: r.law for r in self.axes if r.axis == "tokens" and r.law is not None}

    @property
    def approach2_skipped(self) -> dict[str, str]:
        """group -> why its D* is not compared with Approach 3."""
        return {r.group: f"no D* power law ({r.reason})" for r in self.axes if r.axis == "tokens" and r.law is None}


def save(results: Results, out_dir: str | Path) -> Path:
    path = Path(out_dir) / RESULTS_FILE
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        pickle.dump(results, f, protocol=pickle.HIGHEST_PROTOCOL)
    tmp.replace(path)  # a half-written file never stands as results.pkl
    return path


def load(out_dir: str | Path) -> Results:
    """The results saved in out_dir; ResultsError (one line naming the fix) when there are none usable."""
    path = Path(out_dir) / RESULTS_FILE
    if not path.is_file():
        raise ResultsError(f"--redraw {out_dir}: no {RESULTS_FILE} there; give the --out folder of an analysis "
                           "(python -m analysis ... --out DIR writes it)")
    try:
        with open(path, "rb") as f:
            results = pickle.load(f)
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError, ValueError) as err:
        raise ResultsError(f"--redraw {out_dir}: {path} cannot be read by this analysis ({type(err).__name__}); "
                           "rerun the analysis to recompute it") from None
    if not isinstance(results, Results) or getattr(results, "version", None) != RESULTS_VERSION:
        raise ResultsError(f"--redraw {out_dir}: {path} was written by another version of the analysis; rerun "
                           "the analysis to recompute it")
    return results
