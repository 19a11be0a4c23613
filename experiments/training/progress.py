"""Progress that reads the same in a terminal and in a log file: a tqdm bar on a terminal; elsewhere (SLURM,
nohup, a pipe), where a bar's carriage returns make one unreadable line, a plain line at a fixed interval.

    with Progress("mu4-C2e12", total=600, unit="step") as p:
        for step in ...:
            p.update(step + 1, loss=3.41, **{"tok/s": 1.2e4})

A line reads `2026-12-01 10:23:05 [mu4-C2e12] step 120/600 (20%) loss=3.412 tok/s=12.3k | 1:02 elapsed, ETA 4:08`.
The interval is `PROGRESS_EVERY_S` seconds (environment; default 30). An environment variable, not a config
field: how often a job reports says nothing about what it computes, so it must not touch run identity.
`state_path`, when given, gets the same numbers as JSON at the same interval (written atomically), which is
how `make status` shows a running job's step and ETA without waiting for its next checkpoint.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from experiments.config.errors import ConfigError

ENV_EVERY_S = "PROGRESS_EVERY_S"
DEFAULT_EVERY_S = 30.0
STATE_NAME = "progress.json"  # in a run dir: the trainer's last report (experiments.launch.sweep_status reads it)


def every_s() -> float:
    """The interval between plain lines: $PROGRESS_EVERY_S, else 30 s; one line naming the variable if bad."""
    raw = os.environ.get(ENV_EVERY_S)
    if raw is None or raw == "":
        return DEFAULT_EVERY_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(ENV_EVERY_S, raw, "must be a positive number of seconds (environment variable)",
                          f"export {ENV_EVERY_S}=30, or unset it")
    return value


def fmt_value(value: Any) -> str:
    """Numbers short (3.412, 12.3k); anything else as it is."""
    if isinstance(value, float):
        return tqdm.format_sizeof(value) if abs(value) >= 1000 else f"{value:.4g}"
    return str(value)


def fmt_seconds(seconds: float | None) -> str:
    """1:02, 1:02:03 (tqdm's reading); — when unknown."""
    return "—" if seconds is None else tqdm.format_interval(max(0.0, seconds))


class Progress:
    """One job's progress towards `total` (steps, bytes, ...). `update(done, **fields)` takes the absolute
    count (a resumed job starts at `initial`) and fields shown beside it; the rate and ETA count only what
    this process did, so a resume does not read as instant progress. `enabled=False` (other ranks of a
    data-parallel launch) shows and writes nothing."""

    def __init__(self, label: str, total: int | None = None, *, initial: int = 0, unit: str = "it",
                 scale: bool = False, stream: TextIO | None = None, state_path: Path | None = None,
                 enabled: bool = True, interval_s: float | None = None):
        self.label, self.total, self.unit, self.scale = label, total, unit, scale
        self.stream = stream or sys.stderr
        self.state_path = Path(state_path) if state_path is not None else None
        self.enabled = enabled
        self.interval_s = every_s() if interval_s is None else interval_s
        self.initial = self.done = initial
        self.fields: dict[str, Any] = {}
        self.t0 = time.monotonic()
        self.last = -float("inf")  # the first update reports at once: a log shows the job has started
        self.started_at = time.time()
        self.bar = None
        if enabled and self.stream.isatty():
            self.bar = tqdm(total=total, initial=initial, desc=label, unit=unit, unit_scale=scale, file=self.stream,
                            mininterval=2.0, dynamic_ncols=True)

    # --- numbers ------------------------------------------------------------------------------------------

    def rate(self) -> float | None:
        """Units per second done by this process so far."""
        elapsed = time.monotonic() - self.t0
        return (self.done - self.initial) / elapsed if elapsed > 0 and self.done > self.initial else None

    def eta_s(self) -> float | None:
        rate = self.rate()
        if self.total is None or not rate:
            return None
        return max(0, self.total - self.done) / rate

    def _count(self, n: float) -> str:
        return tqdm.format_sizeof(n, self.unit) if self.scale else f"{int(n)}"

    def line(self) -> str:
        """The plain line of the current state (what a log shows)."""
        head = f"{self.unit} {self._count(self.done)}" if not self.scale else self._count(self.done)
        if self.total:
            head += f"/{self._count(self.total)} ({100 * self.done / self.total:.0f}%)"
        fields = " ".join(f"{k}={fmt_value(v)}" for k, v in self.fields.items())
        rate = self.rate()
        speed = f"{tqdm.format_sizeof(rate, self.unit + '/s')}" if self.scale and rate else ""
        tail = f"{fmt_seconds(time.monotonic() - self.t0)} elapsed"
        if self.total:
            tail += f", ETA {fmt_seconds(self.eta_s())}"
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        return " ".join(p for p in (stamp, f"[{self.label}]", head, fields, speed, "|", tail) if p)

    # --- reporting ----------------------------------------------------------------------------------------

    def update(self, done: int, **fields: Any) -> None:
        """Progress to `done` (absolute); fields (loss=..., ...) replace the shown ones when given."""
        if not self.enabled:
            return
        if fields:
            self.fields.update(fields)
        if self.bar is not None:
            self.bar.update(done - self.done)
            if fields:
                self.bar.set_postfix({k: fmt_value(v) for k, v in self.fields.items()}, refresh=False)
        self.done = done
        now = time.monotonic()
        if now - self.last >= self.interval_s:
            self.last = now
            self.report()

    def advance(self, n: int, **fields: Any) -> None:
        """Progress by `n` more (update takes the absolute count)."""
        self.update(self.done + n, **fields)

    def report(self) -> None:
        """A plain line now (off a terminal) and the state file."""
        if not self.enabled:
            return
        if self.bar is None:
            print(self.line(), file=self.stream, flush=True)
        self.write_state()

    def write_state(self) -> None:
        if self.state_path is None:
            return
        eta = self.eta_s()
        state = {"label": self.label, "done": self.done, "total": self.total, "unit": self.unit,
                 "fields": self.fields, "rate": self.rate(), "eta_s": eta, "elapsed_s": time.monotonic() - self.t0,
                 "started_at": self.started_at, "updated_at": time.time()}
        tmp = self.state_path.with_name(f".{self.state_path.name}.tmp{os.getpid()}")
        try:
            tmp.write_text(json.dumps(state, default=str))
            os.replace(tmp, self.state_path)
        except OSError:  # progress is advisory: a full disk must not stop the job that reports it
            tmp.unlink(missing_ok=True)

    def close(self) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        elif self.done > self.initial:
            print(self.line(), file=self.stream, flush=True)  # the last line: where it ended, in what time
        self.write_state()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_state(run_dir: Path) -> dict[str, Any] | None:
    """A run dir's last progress report, or None (none yet, or a file cut by a kill)."""
    try:
        state = json.loads((Path(run_dir) / STATE_NAME).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None
