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
