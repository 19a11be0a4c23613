"""The README's fast commands run as written and exit 0: each line of its ```bash blocks whose command is
listed in FAST (the others train, serve or submit). Run in a copy-free way: in the repository, with the
results kept out of it (paths.root is not touched by these commands; status reads an empty root)."""

import os
import re
import shlex
import shutil
import subprocess

import pytest

from helpers import REPO

# Commands cheap enough for the default suite (about 30 s in all on 2 cores); matched as line prefixes.
FAST = ("make help", "make show-config", "make status", "make sweep ARGS='sweep.dry_run=true'",
        ".venv/bin/python -m experiments.pretrain --help")


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.startswith(FAST)]


def test_the_readme_shows_every_fast_command():
    assert {c.split(" ARGS")[0] for c in readme_commands()} >= {"make help", "make show-config", "make status",
                                                                "make sweep"}
    assert len((REPO / "README.md").read_text().splitlines()) < 200


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
@pytest.mark.parametrize("command", readme_commands())
def test_a_readme_command_runs_as_written(command, tmp_path):
    argv = shlex.split(command)
    if argv[0] == "make":
        # -o: never (re)install from a test; ROOT-less targets read and write nothing but stdout here,
        # except status, which is pointed at an empty root (a fresh clone has no sweep).
        argv = ["make", "-s", "-o", ".venv/.installed", *argv[1:]]
        if argv[-1] == "status":
            argv = [os.path.join(REPO, ".venv/bin/python"), "-m", "experiments.status", f"--root={tmp_path}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    r = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, (command, r.stdout[-1500:], r.stderr[-1500:])
    if "show-config" in command or "dry_run" in command:
        assert "estimated wall time" in r.stdout, r.stdout[-1500:]
