"""Every experiments entry point answers --help: exit 0 and a usage on stdout, nothing written.

One subprocess runs them all (runpy, as `python -m` does): one interpreter start instead of nine."""

import json
import os
import subprocess
import sys
import textwrap

from helpers import REPO

ENTRY_POINTS = ["pretrain", "finetune", "evaluate", "tune", "status", "mlflow_server", "prepare_data", "sweep",
                "show_config"]
SCRIPT = textwrap.dedent("""
    import contextlib, io, json, runpy, sys
    out = {}
    for m in sys.argv[1:]:
        buf, code = io.StringIO(), 0
        sys.argv = [m, "--help"]
        with contextlib.redirect_stdout(buf):
            try:
                runpy.run_module(f"experiments.{m}", run_name="__main__", alter_sys=True)
            except SystemExit as e:
                code = e.code or 0
        out[m] = [code, buf.getvalue()]
    print(json.dumps(out))
""")


def test_every_entry_point_answers_help(tmp_path):
    r = subprocess.run([sys.executable, "-c", SCRIPT, *ENTRY_POINTS], cwd=tmp_path, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads(r.stdout.splitlines()[-1])
    for module, (code, out) in results.items():
        assert code == 0, (module, out, r.stderr[-2000:])
        assert "usage:" in out or "powered by Hydra" in out, (module, out[:500])
    assert list(tmp_path.iterdir()) == []  # --help writes nothing (no Hydra outputs/, no store)
