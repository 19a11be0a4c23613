"""Bad analysis inputs end in one line on stderr and exit status 2, with nothing written or created."""
from __future__ import annotations

import pytest

from analysis.__main__ import main
from analysis.compare import main as compare_main
from analysis.validate import main as validate_main

GOOD = "C,N,D,loss\n1e18,1e8,1.67e9,3.1\n1e18,2e8,8.3e8,3.0\n"


def _one_line_exit(capsys, rc: int, *words: str) -> str:
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    for w in words:
        assert w in err, err
    return err


@pytest.mark.parametrize("content, words", [
    (b"C,N,D,loss\n1e18,1e8,1.67e9,3.1\n1e18,2e8,\xff\xfe,3.0\n", ("line 3", "UTF-8")),
    (b"C,N,C,loss\n1e18,1e8,1.67e9,3.1\n", ("'C'", "more than once")),
])
def test_malformed_csv_is_one_line(tmp_path, capsys, content, words):
    path = tmp_path / "t.csv"
    path.write_bytes(content)
    out = tmp_path / "out"
    _one_line_exit(capsys, main(["--csv", str(path), "--out", str(out)]), *words)
    assert not out.exists()


@pytest.mark.parametrize("uri, words", [
    ("sqlite:///{tmp}/missing/mlflow.db", ("no database file",)),
    ("banana://x", ("sqlite or http(s) stores only",)),
    ("file:///{tmp}/mlruns", ("sqlite or http(s) stores only",)),
    ("sqlite:///{tmp}/notadb.db", ("is not an sqlite database",)),
])
def test_unreadable_tracking_store_is_one_line_and_creates_nothing(tmp_path, capsys, uri, words):
    (tmp_path / "notadb.db").write_text("hello")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    out = tmp_path / "out"
    rc = main(["--tracking-uri", uri.format(tmp=tmp_path), "--out", str(out), "--no-mlflow-log"])
    _one_line_exit(capsys, rc, *words)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # no folder, no empty database
    rc = compare_main(["--tracking-uri", uri.format(tmp=tmp_path), "--sweeps", "a,b", "--out", str(out)])
    _one_line_exit(capsys, rc, *words)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_removed_validate_flag_points_to_the_new_command(tmp_path, capsys):
    path = tmp_path / "t.csv"
    path.write_text(GOOD)
    rc = validate_main(["--csv", str(path), "--law", "chinchilla", "--out", str(tmp_path / "out")])
    _one_line_exit(capsys, rc, "--law", "python -m analysis --csv")
    assert not (tmp_path / "out").exists()
