"""Progress everywhere: plain lines off a terminal (a real pretrain with stderr to a pipe), a bar on one,
step/ETA in `experiments.status` for a sweep and for one run, and show_config's resolved model and hash."""

import io
import json
import os
import re
import socket

import pytest

from experiments import show_config
from experiments.config.errors import ConfigError
from experiments.launch import sweep_status
from experiments.training import progress
from experiments.training.run_dir import RunLock, write_status
from helpers import SMALL, pretrain

RUN = [*SMALL, "train.tokens=30720", "model.mean_recurrence=2", "tracking=none"]  # 60 steps
LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[mu2-D30720\] step (\d+)/60 \(\d+%\) loss=[\d.]+ "
                  r"tok/s=\S+ \| \S+ elapsed, ETA \S+$")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny real run, stderr to a pipe, a report every 0.2 s; (root, run dir, stderr)."""
    root = tmp_path_factory.mktemp("progress")
    os.environ["PROGRESS_EVERY_S"] = "0.2"
    try:
        r = pretrain(root, *RUN)
    finally:
        del os.environ["PROGRESS_EVERY_S"]
    assert r.returncode == 0, r.stderr[-3000:]
    (run_dir,) = (root / "runs").iterdir()
    return root, run_dir, r.stderr


def test_off_a_terminal_training_prints_plain_progress_lines(trained):
    _, run_dir, stderr = trained
    steps = [int(m.group(1)) for m in map(LINE.match, stderr.splitlines()) if m]
    assert len(steps) >= 2 and steps[0] == 1 and steps[-1] == 60, stderr[-3000:]
    assert "\r" not in stderr  # no bar
    state = progress.read_state(run_dir)
    assert state["done"] == state["total"] == 60 and state["label"] == "mu2-D30720"


def test_show_config_resolves_the_model_and_finds_the_runs_hash(trained, capsys):
    _, run_dir, _ = trained
    assert show_config.main([o for o in RUN if not o.startswith("tracking")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^  d_model: 64$", out, re.M) and re.search(r"^  mean_recurrence: 2$", out, re.M)
    assert re.search(r"^  n_layer: \d+$", out, re.M)  # not null: the preset is resolved
    assert re.search(r"^  steps: 60$", out, re.M) and re.search(r"^  train_flops: \d+$", out, re.M)
    assert f"config_hash: {run_dir.name}" in out  # the same identity as the run trained with these overrides


def test_show_config_lists_a_grids_points(capsys):
    assert show_config.main(["sweep=isoflop", "model.mean_recurrence=1,2"]) == 0
    out = capsys.readouterr().out
    assert "# a grid of 6 points over model.mean_recurrence, train.flop_budget" in out
    assert len(re.findall(r"^#   mu\d-C\de12: [\d,]+ tokens, [\d,]+ steps", out, re.M)) == 6


def test_status_of_one_finished_run_by_hash_prefix_and_by_dir(trained, capsys):
    root, run_dir, _ = trained
    for target in (run_dir.name[:6], str(run_dir)):
        assert sweep_status.main([target, f"--root={root}"]) == 0
        out = capsys.readouterr().out.splitlines()
        assert out[0].startswith(f"run mu2-D30720 ({run_dir.name}")
        cells = out[2].split()
        assert cells[:2] == ["finished", "60/60"] and re.fullmatch(r"\d\.\d{4}", cells[2]) and cells[4] == "—", out


def _running(run_dir, done: int, total: int) -> None:
    """A live run (this process) reported at `done`/`total`, 10 s in."""
    write_status(run_dir, status="running", host=socket.gethostname(), pid=os.getpid())
    p = progress.Progress("x", total, stream=io.StringIO(), state_path=run_dir / progress.STATE_NAME, interval_s=1e9)
    p.t0 -= 10.0
    p.update(done, loss=3.25)
    p.write_state()


def test_status_shows_step_loss_and_eta_of_a_running_sweep(tmp_path, capsys):
    _running(tmp_path / "runs" / "aaaa000000000000", 40, 100)
    sweep_status.write_manifest(tmp_path, "s", "config", [], [(["m=1"], "aaaa000000000000"),
                                                              (["m=2"], "bbbb000000000000")])
    assert sweep_status.main(["s", f"--root={tmp_path}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    # A point is running, so the other is queued behind it (not "missing").
    assert lines[0] == "sweep s: 2 grid points: 1 running, 1 queued"
    assert lines[1].split() == ["point", "hash", "state", "step", "eval/loss", "train", "loss", "ETA", "mlflow"]
    running, queued = lines[2].split(), lines[3].split()
    assert running[2:6] == ["running", "40/100", "—", "3.250"] and re.fullmatch(r"00:1[45]", running[6]), running
    assert queued[2:6] == ["queued", "—", "—", "—"]


def test_status_of_a_branched_sweep_shows_its_trunks_and_the_branch_at_its_trunk(tmp_path, capsys):
    """A branch whose job holds its run dir but waits for (or trains) its trunk reads `at trunk`; each trunk gets a
    row: training (a job holds it) at its step towards its furthest stop, or done (every registered stop kept)."""
    runs = tmp_path / "runs"
    live, ended = runs / "trunk-1111000000000000", runs / "trunk-2222000000000000"
    for d, registered, kept in ((live, (10, 20), (10,)), (ended, (30,), (30,))):
        (d / "stops.d").mkdir(parents=True)
        for step in registered:
            (d / "stops.d" / str(step)).touch()
        for step in kept:
            (d / f"stop-{step}.pt").write_bytes(b"")
    p = progress.Progress("trunk", 20, stream=io.StringIO(), state_path=live / progress.STATE_NAME, interval_s=1e9)
    p.update(14, loss=2.75)
    p.write_state()
    jobs = [(["m=1", "C=1"], "aaaa000000000000"), (["m=1", "C=2"], "bbbb000000000000"),
            (["m=2", "C=1"], "cccc000000000000")]
    trunks = {"aaaa000000000000": "1111000000000000", "bbbb000000000000": "1111000000000000",
              "cccc000000000000": "2222000000000000"}
    sweep_status.write_manifest(tmp_path, "b", "config", [], jobs, trunks)
    with RunLock(live), RunLock(runs / "bbbb000000000000"):
        assert sweep_status.main(["b", f"--root={tmp_path}"]) == 0
        out = capsys.readouterr().out.splitlines()
    assert out[0] == "sweep b: 3 grid points: 1 at trunk, 2 queued", out
    states = {line.split()[1]: line for line in out[2:5]}
    assert "at trunk" in states["bbbb000000000000"] and "queued" in states["aaaa000000000000"]
    head = out.index("trunks (sweep.branching=true): 2: 1 training, 1 done")
    live_row, ended_row = out[head + 2].split(), out[head + 3].split()
    assert live_row[:6] == ["runs/trunk-1111000000000000/", "training", "14/20", "1", "of", "2"], live_row
    # its branches by label (these overrides do not compose, so a label is the hash), not by overrides
    assert live_row[6] == "2.750" and live_row[-2:] == ["aaaa000000000000", "bbbb000000000000"], live_row
    assert ended_row[:6] == ["runs/trunk-2222000000000000/", "done", "30/30", "1", "of", "1"], ended_row
    # Released: the branch is queued again and the trunk idle (its stop at 20 not kept yet).
    assert sweep_status.main(["b", f"--root={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "3 grid points: 3 queued" in out and "1 idle, 1 done" in out  # queued: this process wrote the manifest


def test_status_falls_back_to_metrics_jsonl(tmp_path, capsys):
    """A run trained before progress.json: step and loss from metrics.jsonl, ETA from its token rate."""
    run_dir = tmp_path / "runs" / "cccc000000000000"
    write_status(run_dir, status="running", host=socket.gethostname(), pid=os.getpid(), steps=100)
    rows = [{"step": 50, "train/loss": 2.5, "train/tokens": 50 * 512, "train/tokens_per_s": 512.0}]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert sweep_status.main([run_dir.name, f"--root={tmp_path}"]) == 0
    cells = capsys.readouterr().out.splitlines()[2].split()
    assert cells[:4] == ["running", "50/100", "—", "2.500"] and re.fullmatch(r"00:(49|50)", cells[4]), cells


def test_status_of_neither_a_sweep_nor_a_run_is_one_line_and_exit_2(tmp_path, capsys):
    assert sweep_status.main(["nothing", f"--root={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no manifest for sweep 'nothing'" in err and "config hash" in err


def test_a_terminal_gets_a_bar_and_no_plain_lines():
    term = Terminal()
    with progress.Progress("mu4-C2e12", 10, unit="step", stream=term, interval_s=0.0) as p:
        for i in range(10):
            p.update(i + 1, loss=2.0)
    out = term.getvalue()
    assert "mu4-C2e12" in out and "10/10" in out and "\r" in out
    assert not re.search(r"^\d{4}-\d\d-\d\d ", out, re.M)


def test_progress_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(progress.ENV_EVERY_S, "5")
    assert progress.every_s() == 5.0
    monkeypatch.delenv(progress.ENV_EVERY_S)
    assert progress.every_s() == progress.DEFAULT_EVERY_S
    monkeypatch.setenv(progress.ENV_EVERY_S, "soon")
    with pytest.raises(ConfigError, match="PROGRESS_EVERY_S"):
        progress.every_s()
