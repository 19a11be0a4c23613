"""A project folder copied or moved elsewhere keeps its artifacts with it.

MLflow stores an experiment's artifact location, and every run's artifact URI, as absolute `file://` URIs. A
project copied to a new folder (a scratch copy on a cluster, a colleague's clone of the results) would go on
writing its new artifacts into the original's `mlartifacts/`. When the store is this project's own sqlite file
(`<root>/mlflow.db`) and its locations point into another folder's `mlartifacts/`, they are rewritten to this
root's, in the experiments and runs tables, once, under the store's creation lock.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

log = logging.getLogger("experiments.tracking.relocate")


def follow_project(db: Path, artifact_root: Path) -> int:
    """Rewrite artifact locations under another folder's mlartifacts/ to `artifact_root`; returns rows changed."""
    new = artifact_root.resolve().as_uri()
    if not db.exists():
        return 0
    con = sqlite3.connect(db)
    try:
        olds = {loc for (loc,) in con.execute("SELECT artifact_location FROM experiments")
                if loc and loc.startswith("file://") and loc.rstrip("/").endswith("/mlartifacts") and loc != new}
        changed = 0
        with con:
            for old in olds:
                for table, column in (("experiments", "artifact_location"), ("runs", "artifact_uri")):
                    cur = con.execute(f"UPDATE {table} SET {column} = ? || substr({column}, ?) "  # noqa: S608
                                      f"WHERE substr({column}, 1, ?) = ?", (new, len(old) + 1, len(old), old))
                    changed += cur.rowcount
        if changed:
            log.warning("this project's store pointed its artifacts into %s (a copy of another folder?): now %s",
                        ", ".join(sorted(olds)), new)
        return changed
    finally:
        con.close()
