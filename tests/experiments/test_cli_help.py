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


def test_pretrain_help_shows_resolved_defaults_and_only_its_own_groups(capsys):
    from experiments.config.cli_help import app_groups, app_help

    app_help("config", "python -m experiments.pretrain", "Pre-train.", ["--help", "model=cpu-m",
                                                                       "train.flop_budget=1e12"])
    out = capsys.readouterr().out
    groups = out.split("groups (")[1].split("\n\n")[0]
    assert "  model: " in groups and "  sweep: " in groups and "isoflop" in groups
    assert "schema" not in groups and "finetune" not in groups and "tune:" not in groups
    keys = out.split("keys (")[1]
    assert "name: cpu-m" in keys and "d_model: 128" in keys and "mean_recurrence: 4" in keys  # not null
    assert "tokens: null" in keys and "flop_budget: 1000000000000.0" in keys  # a named budget nulls the other
    assert list(app_groups("finetune")) == ["tracking", "launcher", "finetune/sweep"]
