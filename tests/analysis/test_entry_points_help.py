"""Every analysis entry point answers --help (exit 0, usage on stdout) without touching a store."""
from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize("module", ["analysis.__main__", "analysis.compare", "analysis.flow_report"])
def test_help(module, capsys):
    main = importlib.import_module(module).main
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_a_dead_tracking_server_is_one_line_in_seconds(capsys):
    """MLflow's client retries a dead server for minutes; the analysis says so at once and exits 2."""
    import socket
    import time

    from analysis.__main__ import main

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    assert main(["--tracking-uri", f"http://127.0.0.1:{port}", "--sweep-id", "x", "--out", "/nonexistent"]) == 2
    assert time.monotonic() - t0 < 30
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no MLflow server answers" in err
