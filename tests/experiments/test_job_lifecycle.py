"""One job lifecycle (experiments.training.job): each failure of run bookkeeping reproduced on a tiny run
and shown fixed: two identical runs at once, kill -9 during a checkpoint write, a deleted store, a deleted
or corrupt status.json, overlapping sweeps analysed in full, a bad grid point, a new config field."""

import dataclasses
import json
import logging
import os
import subprocess
import sys
import threading

import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf, open_dict

from analysis.runs import load_runs
from experiments.config import schema
from experiments.config.errors import RunBusyError, RunDirError
from experiments.launch import sweep_status
from experiments.tracking import store as tracking
from experiments.training import run_dir as rd
from experiments.training.job import Job, identify, read_metrics
from experiments.training.pretrain import run
from helpers import REPO, SMALL, pretrain

TINY = [*SMALL, "model=tiny", "train.tokens=5120", "train.test_loops=[1,2]"]  # 10 steps, checkpoints at 5


def _cfg(root, *overrides):
    schema.register()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=[f"paths.root={root}", *TINY, *overrides])


def _client(root):
    return MlflowClient(tracking.default_uri(root))


def _pretrain_runs(root, config_hash=None):
    client = _client(root)
    exp = client.get_experiment_by_name("parcae").experiment_id
    query = "tags.run_kind = 'pretrain'" + (f" and tags.config_hash = '{config_hash}'" if config_hash else "")
    return client.search_runs([exp], query)


def _steps(run_dir):
    return [row["step"] for row in read_metrics(run_dir / "metrics.jsonl") if "train/loss" in row]


# --- two identical runs at once ---------------------------------------------------------------------

def test_a_second_process_for_the_same_run_exits_with_one_line(tmp_path):
    cfg = _cfg(tmp_path, "tracking.enabled=false")
    ident = identify(cfg, tmp_path)
    with rd.RunLock(ident.run_dir):  # a live process (this one) trains the run
        with pytest.raises(RunBusyError, match=f"pid {os.getpid()}"):
            rd.RunLock(ident.run_dir).acquire()
        r = pretrain(tmp_path, *TINY, "tracking.enabled=false")
    assert r.returncode == 2, r.stderr[-2000:]
    (line,) = [x for x in r.stderr.splitlines() if "error" in x]
    assert line.startswith("run busy error:") and ident.hash in line
    assert not (ident.run_dir / "status.json").exists()
    # A lock file left by a dead process (kill -9 frees the flock) is simply taken over.
    (ident.run_dir / rd.LOCK_NAME).write_text("somehost 999999\n")
    assert run(cfg) > 0 and rd.read_status(ident.run_dir)["status"] == "finished"


# --- kill -9 during a checkpoint write ----------------------------------------------------------------

KILL_ON_SECOND_SAVE = """
import os, runpy, sys
import experiments.training.checkpoint as c
calls = []
def save(path, state):
    calls.append(path)
    if len(calls) == 2:  # mid-write: the temporary file exists, the rename never happens
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_bytes(b"half a checkpoint")
        os._exit(9)
    return real(path, state)
real, c.save = c.save, save
sys.argv = ["experiments.pretrain", *sys.argv[1:]]
runpy.run_module("experiments.pretrain", run_name="__main__")
"""


def test_kill_during_a_checkpoint_write_logs_every_step_once(tmp_path):
    killed = subprocess.run([sys.executable, "-c", KILL_ON_SECOND_SAVE, f"paths.root={tmp_path}", *TINY,
                             "train.tokens=10240"], cwd=REPO, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert killed.returncode == 9, killed.stderr[-2000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert list(run_dir.glob(".checkpoint.pt.tmp*"))  # what the kill left
    # The metrics flushed are those the surviving checkpoint (step 5) covers; before, step 10's were too.
    assert max(row["step"] for row in read_metrics(run_dir / "metrics.jsonl")) <= 5

    assert run(_cfg(tmp_path, "train.tokens=10240")) > 0
    assert not list(run_dir.glob(".*.tmp*"))  # cleaned on start
    steps = _steps(run_dir)
    assert steps == sorted(set(steps)) and steps[-1] == 20
    (mlrun,) = _pretrain_runs(tmp_path)
    history = [m.step for m in _client(tmp_path).get_metric_history(mlrun.info.run_id, "train/loss")]
    assert sorted(history) == sorted(set(history)) == steps


# --- deleted store, deleted status.json, corrupt status.json -------------------------------------------

@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("finished")
    cfg = _cfg(root, "sweep_id=first")
    run(cfg)
    return root, identify(cfg, root)


def test_a_deleted_store_gets_the_run_back_with_its_metrics(finished, tmp_path):
    root, ident = finished
    for name in ("runs", ".cache"):
        os.symlink(root / name, tmp_path / name)  # the same run dirs, a fresh (empty) store
    cfg = _cfg(tmp_path, "sweep_id=second")
    run(cfg)  # skipped as finished; before: "Run with id=... not found" on every rerun
    (mlrun,) = _pretrain_runs(tmp_path, ident.hash)
    assert mlrun.info.status == "FINISHED" and mlrun.data.tags[tracking.member_tag("second")] == "true"
    assert mlrun.data.params["derived.n_params_core"] == str(ident.plan.n_params_core)
    history = _client(tmp_path).get_metric_history(mlrun.info.run_id, "train/loss")
    assert sorted(m.step for m in history) == _steps(ident.run_dir)
    assert mlrun.data.metrics["eval/loss"] == pytest.approx(rd.read_status(ident.run_dir)["final"]["eval/loss"])
    run(cfg)  # and again: still one run
    assert len(_pretrain_runs(tmp_path, ident.hash)) == 1


def test_a_deleted_status_json_finds_the_run_by_its_hash(tmp_path):
    cfg = _cfg(tmp_path)
    run(cfg)
    ident = identify(cfg, tmp_path)
    first = rd.read_status(ident.run_dir)["mlflow_run_id"]
    (ident.run_dir / "status.json").unlink()
    (ident.run_dir / "checkpoint.pt").unlink()
    run(cfg)  # trains again from step 0 (nothing says it finished, no checkpoint)
    # MLflow's history is append-only: the old run, which holds every step, is replaced by one new run that
    # holds the retrained record once (the old one is deleted, so the identity still has one run).
    runs = _pretrain_runs(tmp_path, ident.hash)
    assert len(runs) == 1 and runs[0].info.run_id != first and runs[0].info.status == "FINISHED"
    assert _client(tmp_path).get_run(first).info.lifecycle_stage == "deleted"
    assert rd.read_status(ident.run_dir)["mlflow_run_id"] == runs[0].info.run_id
    steps = _steps(ident.run_dir)
    assert steps == sorted(set(steps))  # the retrained run's metrics.jsonl starts afresh
    history = [m.step for m in _client(tmp_path).get_metric_history(runs[0].info.run_id, "train/loss")]
    assert history and sorted(history) == sorted(set(history)) == steps


def test_a_corrupt_status_json_is_named_and_status_goes_on(finished, tmp_path, capsys):
    root, ident = finished
    other = tmp_path / "runs" / "0123456789abcdef"
    other.mkdir(parents=True)
    (other / "status.json").write_text('{"status": "fini')  # a write cut short
    cfg = _cfg(tmp_path, "train.seed=7")
    ident_here = identify(cfg, tmp_path)
    ident_here.run_dir.mkdir(parents=True)
    (ident_here.run_dir / "status.json").write_text("{not json")
    with pytest.raises(RunDirError, match=str(ident_here.run_dir / "status.json")):
        run(cfg)
    jobs = [(["model.mean_recurrence=2"], "0123456789abcdef"), (["model.mean_recurrence=4"], ident_here.hash)]
    os.symlink(ident.run_dir, tmp_path / "runs" / ident.hash)
    jobs.append((["model.mean_recurrence=8"], ident.hash))
    sweep_status.write_manifest(tmp_path, "c", "config", [], jobs)
    rows = sweep_status.sweep_status(tmp_path, "c")
    assert [r["state"] for r in rows] == ["corrupt", "corrupt", "finished"]
    assert capsys.readouterr().err.count("is corrupt") == 2


# --- sweeps: overlapping, grown, bad grid points ------------------------------------------------------

def test_overlapping_sweeps_are_analysed_in_full(tmp_path):
    for mu in (1, 2):
        run(_cfg(tmp_path, "sweep_id=a", f"model.mean_recurrence={mu}"))
    run(_cfg(tmp_path, "sweep_id=b", "model.mean_recurrence=2"))  # finished under a: skipped, joins b
    run(_cfg(tmp_path, "sweep_id=b", "tracking.enabled=false", "model.mean_recurrence=1"))  # skipped untracked
    uri = tracking.default_uri(tmp_path)
    b = load_runs(uri, "parcae", "b")
    assert sorted(b["mean_recurrence"]) == [2] and set(b["sweep_id"]) == {"b"}
    run(_cfg(tmp_path, "sweep_id=b", "model.mean_recurrence=1"))  # tracked again: joins b as well
    assert sorted(load_runs(uri, "parcae", "b")["mean_recurrence"]) == [1, 2]
    assert sorted(load_runs(uri, "parcae", "a")["mean_recurrence"]) == [1, 2]
    assert len(_pretrain_runs(tmp_path)) == 2  # one MLflow run per identity


def test_a_sweep_grown_by_a_second_command_covers_both(tmp_path):
    sweep_status.write_manifest(tmp_path, "grow", "config", ["sweep=isoflop"], [(["m=1"], "h1"), (["m=2"], "h2")])
    sweep_status.write_manifest(tmp_path, "grow", "config", ["m=2,3"], [(["m=2"], "h2"), (["m=3"], "h3")])
    manifest = sweep_status.read_manifest(tmp_path, "grow")
    assert [j["config_hash"] for j in manifest["jobs"]] == ["h1", "h2", "h3"]
    assert [i["overrides"] for i in manifest["invocations"]] == [["sweep=isoflop"], ["m=2,3"]]
    commands = sweep_status.resume_commands(tmp_path, "grow", {"h1", "h3"})
    assert [c[-1] for c in commands] == ["sweep=isoflop", "m=2,3"]
    assert sweep_status.resume_commands(tmp_path, "grow", {"h3"})[0][-1] == "m=2,3"


def test_a_sweep_that_cannot_be_prepared_launches_nothing(tmp_path):
    """Hydra turns an exception in the sweep callback into a warning and launches anyway; here the
    manifest cannot be written (paths.root under a file): one line, exit 2, no job ran."""
    (tmp_path / "file").write_text("")
    r = pretrain(tmp_path / "file" / "root", "-m", *TINY, "model.mean_recurrence=1,2", "sweep_id=bad",
                 "tracking.enabled=false", f"hydra.sweep.dir={tmp_path}/multirun")
    assert r.returncode == 2, r.stderr[-2000:]
    errors = [x for x in r.stderr.splitlines() if "error" in x.lower()]
    assert len(errors) == 1 and errors[0].startswith("sweep error:") and "Nothing was launched" in errors[0]
    assert not (tmp_path / "multirun").exists()


# --- a new config field -------------------------------------------------------------------------------

def test_a_new_config_field_with_a_default_leaves_finished_runs_finished(finished, monkeypatch):
    root, ident = finished
    cfg = OmegaConf.load(ident.run_dir / "config.yaml")
    NewTrain = dataclasses.make_dataclass("TrainSchema", [("new_knob", float, dataclasses.field(default=0.5))],
                                          bases=(schema.TrainSchema,))
    NewConfig = dataclasses.make_dataclass(
        "Config", [("train", NewTrain, dataclasses.field(default_factory=NewTrain))], bases=(schema.Config,))
    monkeypatch.setattr(schema, "Config", NewConfig)  # the upgraded code's schema
    with open_dict(cfg):
        cfg.train.new_knob = 0.5  # what the upgraded code composes for an old command
    upgraded = identify(cfg, root)
    assert upgraded.hash == ident.hash and rd.read_status(upgraded.run_dir)["status"] == "finished"
    cfg.train.new_knob = 0.7  # a value that changes the computation is a new run
    assert identify(cfg, root).hash != ident.hash


# --- the failure path, secrets --------------------------------------------------------------------------

def test_a_failure_whose_status_cannot_be_written_is_reported(tmp_path, monkeypatch, caplog):
    cfg = _cfg(tmp_path, "tracking.enabled=false")
    with Job(cfg, identify(cfg, tmp_path), "pretrain") as job:
        job.started()

        def disk_full(*_, **__):
            raise OSError(28, "No space left on device")
        monkeypatch.setattr("experiments.training.job.write_status", disk_full)
        with caplog.at_level(logging.ERROR):
            job.failed(RuntimeError("boom"))
    assert "RuntimeError: boom" in caplog.text and "No space left" in caplog.text
    monkeypatch.undo()
    # The next start holds the lock, so the stale "running" status is resumed, not believed.
    assert run(cfg) > 0


def test_config_copies_pass_the_secret_filter(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_" + "a" * 30)
    cfg = _cfg(tmp_path, "tracking.enabled=false", f"data.hf_name=hf_{'a' * 30}")
    with Job(cfg, identify(cfg, tmp_path), "pretrain") as job:
        text = job.save_config().read_text()
    assert "hf_aaaa" not in text and tracking.REDACTED in text


def test_redact_survives_another_thread_changing_the_environment():
    stop = threading.Event()

    def churn():
        while not stop.is_set():
            os.environ["_H14_CHURN"] = "x"
            os.environ.pop("_H14_CHURN", None)
    t = threading.Thread(target=churn)
    t.start()
    try:
        for _ in range(2000):
            tracking.redact({"a": "b"})
    finally:
        stop.set()
        t.join()


# --- a fresh store created by several processes at once -------------------------------------------


def test_processes_creating_a_fresh_store_at_once_all_get_the_experiment(tmp_path):
    """Two sweeps started together on a fresh clone: without the creation lock, MLflow's schema migrations
    collide and every process fails ("Online migration expected to match one row")."""
    code = ("import sys; from pathlib import Path; from experiments.tracking.store import ensure_experiment; "
            "r = Path(sys.argv[1]); print(ensure_experiment(f'sqlite:///{r}/mlflow.db', 'parcae', r / 'mlartifacts'))")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err[-500:] for _, err in outs]
    assert len({out.strip() for out, _ in outs}) == 1
