"""make test-ui: the MLflow UI, as `make ui` opens it, shows the training runs — checked in a real headless
browser (Debian's chromium).

    python scripts/ui/check.py [--tracking-uri URI] [--experiment parcae] [--port 5055] [--out reports/ui]

Without --tracking-uri (or when its store has no such experiment) a tiny store is made in a temporary
folder with a couple of runs shaped like the training runs (run_kind=pretrain, named like a sweep's grid
points). The UI is started through scripts/ui/serve.py on loopback, chromium loads the address it prints,
the rendered runs table (--dump-dom) must show every run's name, flat (not collapsed under its sweep), and
must not be the GenAI overview; the screenshot is kept at <out>/runs.png. The compare page `make ui`
prints beside it is screenshotted too (<out>/compare.png) and must show the latest sweep's run names.
Exit 0 when the runs are visible, 1 when not, 77 (skipped) when no chromium can be found or installed.
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "ui"))
from serve import runs_url  # noqa: E402

SKIP = 77
RUN_NAMES = ("isoflop/mu2-C1e12", "isoflop/mu4-C2e12")
GENAI_MARKERS = ("Detect issues",)  # the GenAI overview's call to action ("Traces" is also a sidebar item)
RUNS_MARKER = "matching runs"      # the footer of the runs table


def find_chromium(install: bool) -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    if install and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], env=env, check=False,
                       stdout=subprocess.DEVNULL)
        return shutil.which("chromium")
    return None


def tiny_store(root: Path, experiment: str) -> str:
    """A store shaped like a sweep's: a parent run (run_kind=sweep) and two finished training runs nested
    under it (tags, params, a metric history), which the runs table would show collapsed under the parent
    unless the address `make ui` prints flattens them."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment(experiment, artifact_location=str(root / "artifacts"))
    parent = client.create_run(exp_id, run_name="sweep-isoflop", tags={"run_kind": "sweep", "sweep_id": "isoflop"})
    for name in RUN_NAMES:
        mu, budget = name.split("/")[1].split("-")
        run = client.create_run(exp_id, run_name=name, tags={"run_kind": "pretrain", "sweep_id": "isoflop",
                                                             "mlflow.parentRunId": parent.info.run_id})
        client.log_param(run.info.run_id, "model.mean_recurrence", mu[2:])
        client.log_param(run.info.run_id, "train.flop_budget", budget[1:])
        for step in range(5):
            client.log_metric(run.info.run_id, "train/loss", 5.0 - 0.3 * step, step=step)
        client.set_terminated(run.info.run_id)
    client.set_terminated(parent.info.run_id)
    return uri


def _training_runs_of(uri: str, experiment: str) -> tuple[str, str] | None:
    """(experiment id, training run kind) of the experiment in the store, or None (none, or no runs)."""
    from mlflow.tracking import MlflowClient
    from serve import training_kind

    exp = MlflowClient(tracking_uri=uri).get_experiment_by_name(experiment)
    kind = training_kind(uri, exp.experiment_id) if exp else None
    return (exp.experiment_id, kind) if kind else None


def run_names(uri: str, experiment: str) -> list[str]:
    """Up to 5 names of the experiment's training runs (what the runs table must show)."""
    from mlflow.tracking import MlflowClient

    found = _training_runs_of(uri, experiment)
    if found is None:
        return []
    runs = MlflowClient(tracking_uri=uri).search_runs([found[0]], f"tags.run_kind = '{found[1]}'", max_results=5)
    return [r.info.run_name for r in runs if r.info.run_name]


def free_port(preferred: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]


def sweep_names(uri: str, experiment: str) -> list[str]:
    """Up to 5 run names of the latest sweep (what the compare page must show)."""
    from serve import latest_sweep_runs

    found = _training_runs_of(uri, experiment)
    sweep = latest_sweep_runs(uri, *found) if found else None
    return [n for n in sweep[2] if n][:5] if sweep else []


def wait_up(port: int, timeout: float = 90.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            time.sleep(0.5)
    return False


def browse(chromium: str, url: str, png: Path, budget_ms: int = 20000) -> str:
    """The rendered DOM; the screenshot goes to png. Headless, no sandbox (root in a container)."""
    common = [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--hide-scrollbars", "--window-size=1600,1000", f"--virtual-time-budget={budget_ms}"]
    subprocess.run(common + [f"--screenshot={png}", url], check=False, capture_output=True, timeout=180)
    dom = subprocess.run(common + ["--dump-dom", url], check=False, capture_output=True, text=True, timeout=180)
    return dom.stdout


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/ui/check.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tracking-uri", default=None, help="a store to show (default: a tiny one made here)")
    p.add_argument("--experiment", default="parcae")
    p.add_argument("--port", type=int, default=5055)
    p.add_argument("--out", default=str(ROOT / "reports" / "ui"))
    p.add_argument("--no-install", action="store_true", help="skip instead of apt-get installing chromium")
    a = p.parse_args(argv)
    chromium = find_chromium(not a.no_install)
    if chromium is None:
        print("skipped: no chromium (apt-get install -y chromium, as root)", file=sys.stderr)
        return SKIP
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        uri = a.tracking_uri
        names = run_names(uri, a.experiment) if uri else []
        if not names:
            uri = tiny_store(Path(tmp), a.experiment)
            names = list(RUN_NAMES)
        port = free_port(a.port)
        serve = [sys.executable, str(ROOT / "scripts" / "ui" / "serve.py"), "--tracking-uri", uri,
                 "--experiment", a.experiment, "--port", str(port)]
        server = subprocess.Popen(serve, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            if not wait_up(port):
                print(f"error: the MLflow UI did not come up on port {port}", file=sys.stderr)
                return 1
            url = subprocess.run(serve + ["--print-url"], check=True, capture_output=True, text=True).stdout.strip()
            png = out / "runs.png"
            dom = browse(chromium, url, png)
            cmp_url = subprocess.run(serve + ["--print-compare-url"], check=True, capture_output=True,
                                     text=True).stdout.strip()
            cmp_dom, cmp_png, cmp_names = "", out / "compare.png", []
            if cmp_url:
                cmp_dom = browse(chromium, cmp_url, cmp_png)
                cmp_names = sweep_names(uri, a.experiment)
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
    (out / "runs.html").write_text(dom, encoding="utf-8")
    missing = [n for n in names if n not in dom]
    if cmp_dom:
        missing += [f"{n} (compare page)" for n in cmp_names if n not in cmp_dom]
    genai = [m for m in GENAI_MARKERS if m in dom]
    where = f"{png}" + (f", {cmp_png} (the latest sweep's runs, compared)" if cmp_dom else "")
    checked = len(names) + len(cmp_names)
    print(f"{url}\nscreenshot: {where}\nrun names visible: {checked - len(missing)}/{checked}"
          + (f"; GenAI view markers: {genai}" if genai else ""))
    if missing or genai or RUNS_MARKER not in dom or not png.exists():
        print(f"error: the runs table is not what the UI shows (missing names: {missing}, GenAI markers: "
              f"{genai}); see {png}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
