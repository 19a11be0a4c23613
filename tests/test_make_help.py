"""`make help` lists every target of the Makefile."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_help_lists_every_target():
    targets = set(re.findall(r"^([a-z][a-z0-9-]*):", (ROOT / "Makefile").read_text(), re.M))
    out = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    listed = set(re.findall(r"\bmake ([a-z][a-z0-9-]*)", out)) | set(re.findall(r"/ ([a-z][a-z0-9-]*)", out))
    more = re.search(r"more targets \(see the Makefile\): (.*)", out)
    if more:
        listed |= set(more.group(1).split())
    assert targets <= listed, sorted(targets - listed)
