"""A run's own folder: the record that outlives the tracking server.

runs/<config hash>/ holds config.yaml (the resolved config), status.json (status marker, MLflow run
id, final metrics), metrics.jsonl and checkpoint.pt. Identity is the folder name, so "is this grid
point done?" is one file read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

STATUS_NAME = "status.json"
FINISHED, RUNNING, FAILED, DIVERGED = "finished", "running", "failed", "diverged"


def read_status(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / STATUS_NAME
    return json.loads(path.read_text()) if path.exists() else {}


def write_status(run_dir: Path, **fields: Any) -> dict[str, Any]:
    """Merge fields into status.json atomically."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    status = {**read_status(run_dir), **fields}
    tmp = run_dir / f".{STATUS_NAME}.tmp{os.getpid()}"
    tmp.write_text(json.dumps(status, indent=2, sort_keys=True))
    os.replace(tmp, run_dir / STATUS_NAME)
    return status


def process_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (signal 0 checks without sending)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
