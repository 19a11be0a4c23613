"""A researcher's own table as analysis input: one row per training run, columns for FLOPs, parameters,
tokens, loss and optionally the mean recurrence (docs/analysis.md has the contract).

``load_table`` validates everything before anything is written: every problem is a TableError whose
message is one line naming the column or row and the fix. FLOP values are binned to nominal budgets
(runs within a relative tolerance of each other share a budget), because published tables rarely hold
bit-identical FLOP counts for one isoFLOP curve.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

DEFAULT_COLUMNS = {"flops": "C", "params": "N", "tokens": "D", "loss": "loss", "loops": None, "seed": None,
                   "group": None}
# Other names a role's column is found under when its default is absent (published tables' spellings).
ALIASES = {"flops": ("budget", "flops", "compute"), "params": ("params", "n_params", "parameters"),
           "tokens": ("tokens", "n_tokens")}
FLAG_OF = {"flops": "--flops", "params": "--params", "tokens": "--tokens", "loss": "--loss",
           "loops": "--loops", "seed": "--train-seed", "group": "--group"}
DEFAULT_TOLERANCE = 0.1
FLOPS_PER_PARAM_TOKEN = 6.0  # C = 6·N·D (Kaplan et al. 2020, Hoffmann et al. 2022), only to derive a missing N or D


class TableError(ValueError):
    """A malformed table; the message is one line naming the column or row and the fix."""


@dataclass
class Table:
    frame: pd.DataFrame            # runs frame with the columns of analysis.runs.load_runs
    path: str
    columns: dict[str, str | None]  # role -> column name used
    tolerance: float
    bins: pd.DataFrame             # nominal budget, runs, min, max, largest relative deviation
    notes: list[str] = field(default_factory=list)


def _read(path: str) -> pd.DataFrame:
    p = Path(path)
    if not p.is_file():
        raise TableError(f"--csv {path}: no such file; give the path of a CSV table")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        line = p.read_bytes()[:err.start].count(b"\n") + 1
        raise TableError(f"{path} line {line} is not UTF-8 text (byte 0x{err.object[err.start]:02x}); "
                         "save the table as UTF-8 CSV") from None
    if not text.strip():
        raise TableError(f"{path} is empty; it needs a header line (e.g. C,N,D,loss) and one row per run")
    header = [c.strip() for c in next(csv.reader(io.StringIO(text.lstrip("\n"))))]
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:
        raise TableError(f"{path}: the header names column(s) {', '.join(map(repr, repeated))} more than once; "
                         "rename or delete the duplicates")
    try:
        df = pd.read_csv(p, dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.ParserError as err:
        raise TableError(f"{path} is not a readable CSV ({str(err).splitlines()[0]}); "
                         "fix the line it names") from None
    if df.empty:
        raise TableError(f"{path} has a header but no rows; add one row per run")
    df.columns = [str(c).strip() for c in df.columns]
    return df


def _numbers(df: pd.DataFrame, column: str, flag: str, path: str, minimum: float = 0.0) -> np.ndarray:
    """The column as floats, every value finite and > minimum, or a TableError naming the first bad row."""
    text = df[column].astype(str).str.strip()
    values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=float)
    for i, (raw, v) in enumerate(zip(text, values)):
        where = f"{path} row {i + 1} (line {i + 2}), column {column!r} ({flag})"
        if raw == "" or raw.lower() in ("nan", "na", "none", "null"):
            raise TableError(f"{where} is empty/NaN; fill it in or delete the row")
        if not np.isfinite(v):
            raise TableError(f"{where}: {raw!r} is not a finite number; fix the value or delete the row")
        if not v > minimum:
            raise TableError(f"{where}: {raw} must be > {minimum:g}; fix the value or delete the row")
    return values


def _integers(df: pd.DataFrame, column: str, flag: str, path: str) -> np.ndarray:
    """The column as integers (a seed may be 0 or negative), or a TableError naming the first bad row."""
    text = df[column].astype(str).str.strip()
    values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=float)
    for i, (raw, v) in enumerate(zip(text, values)):
        if not (np.isfinite(v) and v == round(v)):
            raise TableError(f"{path} row {i + 1} (line {i + 2}), column {column!r} ({flag}): {raw!r} is not an "
                             "integer seed; fix the value or delete the row")
    return values.astype(np.int64)


def bin_budgets(C: np.ndarray, tolerance: float) -> tuple[np.ndarray, pd.DataFrame]:
    """Nominal budget per run: sorted FLOP values chained while neighbours differ by at most
    ``tolerance`` (relative); each bin's nominal value is its geometric mean, rounded to 3 significant
    digits. Returns (nominal per run, one row per bin)."""
    order = np.argsort(C)
    label = np.zeros(C.size, int)
    current = 0
    for prev, cur in zip(order[:-1], order[1:]):
        if C[cur] > C[prev] * (1 + tolerance):
            current += 1
        label[cur] = current
    nominal = np.empty(C.size)
    rows = []
    for b in range(current + 1):
        members = label == b
        centre = float(np.exp(np.mean(np.log(C[members]))))
        value = float(f"{centre:.3g}")
        nominal[members] = value
        rows.append({"budget": value, "runs": int(members.sum()), "min": float(C[members].min()),
                     "max": float(C[members].max()),
                     "max_rel_dev": float(np.max(np.abs(C[members] / value - 1)))})
    return nominal, pd.DataFrame(rows)


def load_table(path: str, columns: dict[str, str | None] | None = None,
               tolerance: float = DEFAULT_TOLERANCE) -> Table:
    """Validate and convert a table (see module docstring); raises TableError."""
    if not 0 <= tolerance < 1:
        raise TableError(f"--budget-tolerance {tolerance:g} must be in [0, 1), e.g. 0.1 for 10 %")
    cols = dict(DEFAULT_COLUMNS)
    explicit = {k for k, v in (columns or {}).items() if v is not None}
    cols.update({k: v for k, v in (columns or {}).items() if v is not None})
    df = _read(path)
    present = ", ".join(df.columns)
    for role, names in ALIASES.items():
        if role not in explicit and cols[role] not in df.columns:
            cols[role] = next((n for n in names if n in df.columns), cols[role])
    for role in ("flops", "loss", *sorted(explicit - {"flops", "loss"})):
        if cols[role] not in df.columns:
            raise TableError(f"{path}: no column {cols[role]!r} for {role} (columns: {present}); "
                             f"name it with {FLAG_OF[role]} COLUMN")
    for role in ("params", "tokens"):
        if cols[role] not in df.columns:
            cols[role] = None
    if cols["params"] is None and cols["tokens"] is None and cols["loops"] is None:
        raise TableError(f"{path}: no column for parameters ({DEFAULT_COLUMNS['params']!r}), tokens "
                         f"({DEFAULT_COLUMNS['tokens']!r}) or loops (columns: {present}); name one with "
                         "--params, --tokens or --loops")
    C = _numbers(df, cols["flops"], "--flops", path)
    loss = _numbers(df, cols["loss"], "--loss", path)
    notes: list[str] = []
    N = _numbers(df, cols["params"], "--params", path) if cols["params"] else None
    D = _numbers(df, cols["tokens"], "--tokens", path) if cols["tokens"] else None
    if N is not None and D is None:
        D = C / (FLOPS_PER_PARAM_TOKEN * N)
        notes.append("no tokens column: D = C / (6·N)")
    elif D is not None and N is None:
        N = C / (FLOPS_PER_PARAM_TOKEN * D)
        notes.append("no parameters column: N = C / (6·D)")
    loops = _numbers(df, cols["loops"], "--loops", path) if cols["loops"] else None
    # training seeds: rows at one grid point differing only in it are replicates (any integer, 0 included)
    seed = _integers(df, cols["seed"], "--train-seed", path) if cols["seed"] else None
    groups = df[cols["group"]].astype(str).str.strip().to_numpy() if cols["group"] else None
    if groups is not None and (groups == "").any():
        row = int(np.flatnonzero(groups == "")[0]) + 2
        raise TableError(f"{path} line {row}: empty {cols['group']!r} (--group); give every row a group")
    nominal, bins = bin_budgets(C, tolerance)
    nan = np.full(C.size, np.nan)
    labels = [f"row {i + 1}" for i in range(C.size)]
    frame = pd.DataFrame({
        "run_id": labels, "run_name": labels, "config_hash": "",
        "status": "FINISHED", "diverged": False,
        "model_name": Path(path).stem, "model_kind": "table",
        "mean_recurrence": loops if loops is not None else nan,
        "flop_budget": nominal, "train_flops": C,
        "tokens": D if D is not None else nan, "n_params": N if N is not None else nan,
        "n_params_unrolled": nan, "loss": loss,
        "seed": pd.array(seed if seed is not None else [pd.NA] * C.size, dtype="Int64"),
        # each run's own compute, to choose between duplicates (analysis.isoflop.qc): 6·N·D when the
        # table gives both, else its C
        "implied_flops": (FLOPS_PER_PARAM_TOKEN * N * D if cols["params"] and cols["tokens"] else C),
    })
    if groups is not None:
        frame["group"] = groups
    spread = float(bins["max_rel_dev"].max())
    notes.append(f"{C.size} rows binned into {len(bins)} FLOP budget(s) within a relative tolerance of "
                 f"{tolerance:g}; largest deviation of a run's C from its budget: {100 * spread:.2g} %")
    if (bins["max"] / bins["min"] > (1 + tolerance) ** 2).any():
        notes.append("some budgets chain values wider than the tolerance (single linkage): check the "
                     "budget table, or lower --budget-tolerance")
    return Table(frame, path, cols, tolerance, bins, notes)
