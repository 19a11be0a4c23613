"""Progress of the analysis stages (loading, isoFLOP, test-time, laws, bootstrap, plots).

On a terminal each stage is a tqdm bar; elsewhere (SLURM, nohup, a pipe) a stage prints plain lines to
stderr: when it starts, every ``INTERVAL_S`` seconds while it runs (done/total, elapsed, ETA) and when it
ends, with its duration. Off by default, so the library stays quiet in tests and notebooks; the
``python -m analysis`` entry points turn it on (``enable()``).
"""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Iterator

from tqdm import tqdm

INTERVAL_S = 10.0
_enabled = False


def enable(on: bool = True) -> None:
    global _enabled
    _enabled = on


class Stage:
    """One stage; ``update(n)`` counts finished items (resamples, figures, ...)."""

    def __init__(self, name: str, total: int | None = None, unit: str = "it", stream=None):
        self.name, self.total, self.unit = name, total, unit
        self.stream = stream or sys.stderr
        self.done = 0
        self.t0 = self.last = time.monotonic()
        self.bar = None
        if not _enabled:
            return
        if self.stream.isatty():
            self.bar = tqdm(total=total, desc=name, unit=unit, file=self.stream, leave=True,
                            mininterval=0.5, dynamic_ncols=True)
        else:
            self._line("started" + (f" ({total} {unit})" if total else ""))

    def _line(self, text: str) -> None:
        print(f"[analysis] {self.name}: {text}", file=self.stream, flush=True)

    def update(self, n: int = 1) -> None:
        self.done += n
        if not _enabled:
            return
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        if now - self.last >= INTERVAL_S:
            self.last = now
            elapsed = now - self.t0
            text = f"{self.done}" + (f"/{self.total}" if self.total else "") + f" {self.unit}, {elapsed:.0f} s"
            if self.total and self.done:
                text += f", ETA {elapsed * (self.total - self.done) / self.done:.0f} s"
            self._line(text)

    def close(self) -> None:
        if not _enabled:
            return
        if self.bar is not None:
            self.bar.close()
        else:
            self._line(f"done in {time.monotonic() - self.t0:.1f} s")


@contextmanager
def stage(name: str, total: int | None = None, unit: str = "it") -> Iterator[Stage]:
    s = Stage(name, total, unit)
    try:
        yield s
    finally:
        s.close()
