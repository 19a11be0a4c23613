"""The errors a user can fix, and the one way they end a command: one line naming the key and the fix, exit 2.

A leaf module (imports nothing of ours), so every package can raise them without an import circle.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

USER_ERROR_EXIT = 2


class ConfigError(ValueError):
    """A bad config value: names the key, what is wrong and the fix."""

    def __init__(self, key: str, value: Any, problem: str, fix: str):
        self.key = key
        super().__init__(f"{key}={value!r}: {problem}. Fix: {fix}.")


class TrackingError(RuntimeError):
    """The tracking store cannot be used (e.g. no server at the URI); the message says what to do."""


def fail(kind: str, message: str) -> None:
    """Print `<kind> error: <message>` as one line on stderr and exit 2 (SystemExit: Hydra lets it through)."""
    print(f"{kind} error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    raise SystemExit(USER_ERROR_EXIT)


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """Turn a ConfigError or TrackingError raised inside into the one-line exit."""
    try:
        yield
    except ConfigError as err:
        fail("config", str(err))
    except TrackingError as err:
        fail("tracking", str(err))
