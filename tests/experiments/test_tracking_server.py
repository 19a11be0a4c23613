"""tracking=server: the server launcher and its auth rule, the param secret filter, sweeps as parent runs
with their jobs as children, and 16 concurrent writers through a real `mlflow server` losing no metric.

Servers bind a free loopback port, run in their own session and are stopped by their process group id
(the launcher execs `mlflow server`, so the pid we started is the server's) in a finally.
"""

import importlib.util
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager

import pytest
from mlflow.tracking import MlflowClient

from experiments.tracking import server as mlflow_server
from experiments.tracking import store as tracking
from helpers import REPO, SMALL, pretrain

HAS_AUTH_EXTRA = importlib.util.find_spec("flask_wtf") is not None
SECRET = "hf_" + "Zq8xV2mN4pL6rT1yW3sK5dF7gH9jB0cA"  # an HF-token-shaped fake


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def mlflow_server_running(root, *extra, env=None, workers=1, startup_s=120):
    """Start `python -m experiments.mlflow_server` on a free loopback port; yield its URL; stop it by pid."""
    port = _free_port()
    root.mkdir(parents=True, exist_ok=True)
    logf = open(root / "server.log", "w")
    cmd = [sys.executable, "-m", "experiments.mlflow_server", "--host", "127.0.0.1", "--port", str(port),
           "--workers", str(workers), "--root", str(root), *extra]
    proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
                            stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + startup_s
        while True:
            try:
                urllib.request.urlopen(url + "/health", timeout=2).close()
                break
            except (urllib.error.URLError, OSError):
                if proc.poll() is not None or time.time() > deadline:
                    logf.flush()
                    raise AssertionError(f"server did not come up:\n{(root / 'server.log').read_text()[-3000:]}")
                time.sleep(0.25)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the server's own process group: it and its workers
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        logf.close()


# --- the launcher's auth rule ---------------------------------------------------------------------

@pytest.mark.parametrize("host", ["127.0.0.1", "127.3.2.1", "::1", "[::1]", "localhost"])
def test_loopback_hosts_run_without_auth(host, tmp_path, monkeypatch):
    monkeypatch.delenv(mlflow_server.USER_ENV, raising=False)
    monkeypatch.delenv(mlflow_server.PASSWORD_ENV, raising=False)
    argv, env = mlflow_server.build(mlflow_server.parse_args(["--host", host, "--root", str(tmp_path)]))
    assert "--app-name" not in argv and "--serve-artifacts" in argv
    assert argv[argv.index("--backend-store-uri") + 1] == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert argv[argv.index("--artifacts-destination") + 1] == str(tmp_path / "mlartifacts")


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "192.168.0.7", "node01.cluster"])
@pytest.mark.parametrize("have", [(), ("MLFLOW_TRACKING_USERNAME",)])
def test_non_loopback_bind_refused_without_credentials(host, have, tmp_path, monkeypatch, capsys):
    for name in (mlflow_server.USER_ENV, mlflow_server.PASSWORD_ENV):
        monkeypatch.delenv(name, raising=False)
    for name in have:
        monkeypatch.setenv(name, "someone")

    def no_exec(*a):
        raise AssertionError("the server must not start")

    monkeypatch.setattr(os, "execve", no_exec)
    assert mlflow_server.main(["--host", host, "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "refusing to start" in err and "not loopback" in err and "MLFLOW_TRACKING_PASSWORD" in err
    assert not (tmp_path / "mlflow_auth.ini").exists()


@pytest.mark.skipif(not HAS_AUTH_EXTRA, reason="needs mlflow[auth] (Flask-WTF)")
def test_non_loopback_with_credentials_uses_basic_auth_and_keeps_them_out_of_files(tmp_path, monkeypatch):
    monkeypatch.setenv(mlflow_server.USER_ENV, "lab-admin")
    monkeypatch.setenv(mlflow_server.PASSWORD_ENV, "s3cret-Passw0rd-xyz")
    monkeypatch.delenv("MLFLOW_AUTH_CONFIG_PATH", raising=False)
    argv, env = mlflow_server.build(mlflow_server.parse_args(["--host", "0.0.0.0", "--root", str(tmp_path)]))
    assert argv[argv.index("--app-name") + 1] == "basic-auth"
    assert env["MLFLOW_AUTH_ADMIN_USERNAME"] == "lab-admin" and env["MLFLOW_AUTH_ADMIN_PASSWORD"] == "s3cret-Passw0rd-xyz"
    assert env["MLFLOW_FLASK_SERVER_SECRET_KEY"]
    ini = (tmp_path / "mlflow_auth.ini").read_text()
    assert env["MLFLOW_AUTH_CONFIG_PATH"] == str(tmp_path / "mlflow_auth.ini") and "mlflow_auth.db" in ini
    assert not any("s3cret" in a for a in argv) and "s3cret" not in ini and "lab-admin" not in ini


@pytest.mark.parametrize("script", ["serve.py", "tune_dashboard.py"])
def test_make_ui_and_tune_ui_follow_the_same_rule(script, tmp_path, monkeypatch):
    """`make ui` off loopback without credentials, and optuna-dashboard (no auth) off loopback at all: one
    line, exit 2, nothing started and no store touched."""
    for name in (mlflow_server.USER_ENV, mlflow_server.PASSWORD_ENV):
        monkeypatch.delenv(name, raising=False)
    args = {"serve.py": ["--tracking-uri", tracking.default_uri(tmp_path)], "tune_dashboard.py": ["journal.log"]}
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "ui" / script), *args[script], "--host", "0.0.0.0",
                        "--port", str(_free_port())], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "refusing to start" in r.stderr and "not loopback" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_one_rule_for_every_server():
    creds = {mlflow_server.USER_ENV: "lab", mlflow_server.PASSWORD_ENV: "pw-long-enough"}
    assert mlflow_server.check_bind("127.0.0.1", {}, "x") is False
    assert mlflow_server.check_bind("127.0.0.1", {}, "x", supports_auth=False) is False
    with pytest.raises(mlflow_server.LaunchError, match="not loopback.*not set"):
        mlflow_server.check_bind("0.0.0.0", {}, "x")
    with pytest.raises(mlflow_server.LaunchError, match="no authentication"):
        mlflow_server.check_bind("0.0.0.0", creds, "x", supports_auth=False)
    if HAS_AUTH_EXTRA:
        assert mlflow_server.check_bind("0.0.0.0", creds, "x") is True


@pytest.mark.skipif(not HAS_AUTH_EXTRA, reason="needs mlflow[auth] (Flask-WTF)")
def test_make_ui_off_loopback_with_credentials_runs_basic_auth(tmp_path, monkeypatch):
    """`make ui UI_HOST=0.0.0.0` with credentials: `mlflow ui` with the same basic-auth app as the tracking
    server (whose live 401 for anonymous readers is checked above), credentials only in its environment."""
    sys.path.insert(0, str(REPO / "scripts" / "ui"))
    import serve

    monkeypatch.setenv(mlflow_server.USER_ENV, "lab-admin")
    monkeypatch.setenv(mlflow_server.PASSWORD_ENV, "correct-horse-battery-9")
    monkeypatch.delenv("MLFLOW_AUTH_CONFIG_PATH", raising=False)
    started = {}

    def execve(path, argv, env):
        started.update(argv=argv, env=env)

    monkeypatch.setattr(os, "execve", execve)
    serve.main(["--tracking-uri", tracking.default_uri(tmp_path), "--host", "0.0.0.0", "--root", str(tmp_path)])
    argv, env = started["argv"], started["env"]
    assert argv[1] == "ui" and argv[argv.index("--app-name") + 1] == "basic-auth"
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] == "correct-horse-battery-9"
    assert env["MLFLOW_AUTH_CONFIG_PATH"] == str(tmp_path / "mlflow_auth.ini")
    assert not any("correct-horse" in a for a in argv) and "correct-horse" not in (tmp_path / "mlflow_auth.ini").read_text()


def test_no_server_is_a_clear_error():
    with pytest.raises(tracking.TrackingError, match="no MLflow server answers.*experiments.mlflow_server"):
        tracking.check_server(f"http://127.0.0.1:{_free_port()}", timeout=2)


# --- secrets never reach MLflow -------------------------------------------------------------------

def test_secret_filter_drops_credentials_and_keeps_the_config():
    env = {"HF_TOKEN": SECRET, "MLFLOW_TRACKING_PASSWORD": "hunter2-but-longer", "HOME": "/root"}
    params = {
        "train.tokens": 40960, "derived.tokens": 1, "derived.flops_per_token": 3.5e6, "model.n_head": 4,
        "data.hf_token": "whatever", "data.api_key": "k", "auth.password": "p", "x.client_secret": "s",
        "data.token": "t", "hub.access_token": "a",
        "data.note": f"prefix-{SECRET}",  # a known token format, whatever the key
        "data.path": "/data/hunter2-but-longer/x",  # the value of a secret environment variable
        "tracking.uri": "postgresql://lab:pgpass-123@db:5432/mlflow",
        "tracking.experiment": "parcae", "paths.root": "/home/lab",
    }
    out = tracking.redact(params, env)
    assert set(out) == {"train.tokens", "derived.tokens", "derived.flops_per_token", "model.n_head",
                        "tracking.uri", "tracking.experiment", "paths.root"}
    assert out["tracking.uri"] == "postgresql://lab:***@db:5432/mlflow"
    assert not any(s in v for v in out.values() for s in (SECRET, "hunter2", "pgpass"))


def test_tracker_never_logs_environment_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    uri = tracking.default_uri(tmp_path)
    exp = tracking.ensure_experiment(uri, "parcae", tmp_path / "mlartifacts")
    t = tracking.RunTracker(uri, exp, run_name="r", tags={"note": f"token {SECRET}", "sweep_id": "s"})
    t.log_params({"train.tokens": 10, "data.hf_token": SECRET, "data.hf_dataset": f"x?token={SECRET}",
                  "env.HF_TOKEN": os.environ["HF_TOKEN"]})
    t.finish("FINISHED")
    run = MlflowClient(uri).get_run(t.run_id)
    assert run.data.params == {"train.tokens": "10"}
    assert run.data.tags["sweep_id"] == "s" and "note" not in run.data.tags
    assert SECRET not in json.dumps({**run.data.params, **run.data.tags})


# --- 16 concurrent writers over HTTP ----------------------------------------------------------------

N_WRITERS, N_STEPS, FLUSH_EVERY = 16, 60, 7
METRICS = ("train/loss", "train/lr", "val/loss")


def _writer(uri, exp_id, i, barrier, out):
    try:
        t = tracking.RunTracker(uri, exp_id, run_name=f"writer-{i}", tags={"writer": str(i), "sweep_id": "conc"})
        barrier.wait(120)
        for step in range(N_STEPS):
            t.log_metrics({name: step + i / 100 + k for k, name in enumerate(METRICS)}, step)
            if (step + 1) % FLUSH_EVERY == 0:
                t.flush()
        t.finish("FINISHED")  # flushes the rest
        out.put((i, t.run_id, None))
    except BaseException as err:  # reported to the test, never swallowed
        out.put((i, None, f"{type(err).__name__}: {err}"))


def test_sixteen_concurrent_writers_lose_no_metric(tmp_path):
    t0 = time.time()
    with mlflow_server_running(tmp_path / "server", workers=2) as url:
        started = time.time()
        exp_id = tracking.ensure_experiment(url, "parcae", tmp_path / "unused")
        assert MlflowClient(url).get_experiment(exp_id).artifact_location.startswith("mlflow-artifacts:")
        ctx = multiprocessing.get_context("fork")  # mlflow already imported: cheap workers on 2 cores
        barrier, out = ctx.Barrier(N_WRITERS), ctx.Queue()
        procs = [ctx.Process(target=_writer, args=(url, exp_id, i, barrier, out)) for i in range(N_WRITERS)]
        for p in procs:
            p.start()
        results = [out.get(timeout=180) for _ in procs]
        for p in procs:
            p.join(30)
        errors = [r for r in results if r[2]]
        assert not errors, errors
        client = MlflowClient(url)
        for i, run_id, _ in results:
            run = client.get_run(run_id)
            assert run.info.status == "FINISHED" and run.data.tags["writer"] == str(i)
            for k, name in enumerate(METRICS):
                history = client.get_metric_history(run_id, name)
                assert len(history) == N_STEPS, (i, name, len(history))  # none lost, none doubled
                assert sorted(m.step for m in history) == list(range(N_STEPS))
                assert all(abs(m.value - (m.step + i / 100 + k)) < 1e-9 for m in history)
        writing = time.time() - started
    print(f"\n16 writers x {N_STEPS} steps x {len(METRICS)} metrics: server up in {started - t0:.1f}s, "
          f"writes+checks {writing:.1f}s")


# --- sweeps as parent runs -------------------------------------------------------------------------

SWEEP = ["sweep=isoflop", *SMALL, "model.mean_recurrence=1,2", "train.flop_budget=3e10", "sweep_id=x"]


def _runs(client, exp_id, kind):
    return client.search_runs([exp_id], f"tags.sweep_id = 'x' and tags.run_kind = '{kind}'")


def test_sweep_is_a_parent_run_reused_on_rerun_and_single_runs_have_none(tmp_path):
    r = pretrain(tmp_path, *SWEEP)
    assert r.returncode == 0, r.stderr[-3000:]
    client = MlflowClient(tracking.default_uri(tmp_path))
    exp_id = client.get_experiment_by_name("parcae").experiment_id
    (parent,) = _runs(client, exp_id, "sweep")
    assert parent.info.status == "FINISHED" and parent.data.tags["sweep.n_jobs"] == "2"
    assert json.loads(parent.data.tags["sweep.grid"]) == {"model.mean_recurrence": "1,2", "train.flop_budget": "3e10"}
    children = _runs(client, exp_id, "pretrain")
    assert len(children) == 2
    assert {c.data.tags.get(tracking.PARENT_TAG) for c in children} == {parent.info.run_id}

    # An interrupted job (status still "running") resumes into its own run under the same parent.
    run_dir = next((tmp_path / "runs").iterdir())
    status = json.loads((run_dir / "status.json").read_text())
    (run_dir / "status.json").write_text(json.dumps({**status, "status": "running"}))
    again = pretrain(tmp_path, *SWEEP)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("[skip]") == 1
    (parent_again,) = _runs(client, exp_id, "sweep")
    assert parent_again.info.run_id == parent.info.run_id and parent_again.info.status == "FINISHED"
    children_again = _runs(client, exp_id, "pretrain")
    assert {c.info.run_id for c in children_again} == {c.info.run_id for c in children}
    assert {c.data.tags.get(tracking.PARENT_TAG) for c in children_again} == {parent.info.run_id}
    assert json.loads((run_dir / "status.json").read_text())["mlflow_run_id"] == status["mlflow_run_id"]

    single = pretrain(tmp_path, *SMALL, "model.mean_recurrence=3", "train.flop_budget=3e10", "train.tokens=null",
                      "sweep_id=x")
    assert single.returncode == 0, single.stderr[-3000:]
    runs = _runs(client, exp_id, "pretrain")
    (new,) = [c for c in runs if c.info.run_id not in {c.info.run_id for c in children}]
    assert tracking.PARENT_TAG not in new.data.tags
    assert len(_runs(client, exp_id, "sweep")) == 1


def test_sweep_through_a_tracking_server(tmp_path):
    """tracking=server end to end: the driver opens the parent over HTTP, the job logs its child run
    (params, metrics, the config artifact through the server's artifact proxy)."""
    with mlflow_server_running(tmp_path / "server") as url:
        r = pretrain(tmp_path, "sweep=isoflop", *SMALL, "model.mean_recurrence=1", "train.flop_budget=3e10",
                     "sweep_id=x", "tracking=server", f"tracking.uri={url}")
        assert r.returncode == 0, r.stderr[-3000:]
        client = MlflowClient(url)
        exp_id = client.get_experiment_by_name("parcae").experiment_id
        (parent,) = _runs(client, exp_id, "sweep")
        (child,) = _runs(client, exp_id, "pretrain")
        assert child.data.tags[tracking.PARENT_TAG] == parent.info.run_id and child.info.status == "FINISHED"
        assert "eval/loss" in child.data.metrics and child.data.params["tracking.uri"] == url
        assert sorted(a.path for a in client.list_artifacts(child.info.run_id)) == ["config.yaml", "model",
                                                                                    "tokenizer.json"]
        assert "model/checkpoint.pt" in {a.path for a in client.list_artifacts(child.info.run_id, "model")}
    assert list((tmp_path / "server" / "mlartifacts").rglob("checkpoint.pt"))  # stored by the server
    assert not (tmp_path / "mlflow.db").exists()  # nothing written around the server


@pytest.mark.skipif(not HAS_AUTH_EXTRA, reason="needs mlflow[auth] (Flask-WTF)")
def test_basic_auth_server_rejects_anonymous_and_accepts_env_credentials(tmp_path, monkeypatch):
    creds = {"MLFLOW_TRACKING_USERNAME": "lab-admin", "MLFLOW_TRACKING_PASSWORD": "correct-horse-battery-9"}
    with mlflow_server_running(tmp_path / "server", "--auth", env=creds) as url:
        req = urllib.request.Request(url + "/api/2.0/mlflow/experiments/search", data=b'{"max_results": 1}',
                                     headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as anonymous:
            urllib.request.urlopen(req, timeout=30)
        assert anonymous.value.code == 401
        for name, value in creds.items():
            monkeypatch.setenv(name, value)  # what jobs do: MLflow's client reads them
        exp_id = tracking.ensure_experiment(url, "parcae", tmp_path / "unused")
        t = tracking.RunTracker(url, exp_id, run_name="authed")
        t.log_metrics({"train/loss": 1.0}, 0)
        t.finish("FINISHED")
        assert len(MlflowClient(url).get_metric_history(t.run_id, "train/loss")) == 1
    log = (tmp_path / "server" / "server.log").read_text()
    assert "correct-horse" not in log and "correct-horse" not in (tmp_path / "server" / "mlflow_auth.ini").read_text()
