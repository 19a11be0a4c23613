"""MLflow UI that opens on a sweep's own runs: python scripts/ui/serve.py --tracking-uri URI
[--experiment parcae] [--sweep ID] [--host 127.0.0.1] [--port 5000] [--root .] [--print-url]

MLflow 3's UI starts in its GenAI view (traces, "Detect issues") unless told otherwise: the workflow type
comes from the page's ``workflowType`` query parameter, else from the browser's stored choice, which
defaults to GenAI. So every address printed here carries ``workflowType=machine_learning``, and the
experiment is tagged ``mlflow.experimentKind = custom_model_development`` (the kind MLflow's UI uses for
classic training experiments).

The sweep is --sweep (`make ui SWEEP=<id>`) or the latest one. Its view is saved in the store as an MLflow
shared view (scripts/ui/sweep_view.py: the sweep's runs only, flat, by name; columns eval/loss, µ_rec,
budget, tokens; its charts first) and printed twice: the runs table and the chart view
(``compareRunsMode=CHART``). What MLflow cannot draw goes to the static page reports/<sweep>/ui.html
(scripts/ui/sweep_page.py), written and printed here too. An experiment without a sweep opens on its
training runs (``tags.run_kind = 'pretrain'``, or 'finetune'), flat and sorted by name. Then the server
runs in the foreground (``mlflow ui``).

Exposure follows the tracking server's rule (experiments.tracking.server.check_bind): loopback without
authentication; any other --host (or --auth) only with MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD
set, and then with MLflow's basic authentication; otherwise one line and exit 2, nothing started.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script: the repository's packages
sys.path.insert(0, str(Path(__file__).resolve().parent))  # its sibling modules
from experiments.config.errors import ConfigError, one_line  # noqa: E402
from experiments.tracking.server import LaunchError, basic_auth, check_bind  # noqa: E402
from sweep_page import write_page  # noqa: E402
from sweep_view import BY_NAME, latest_sweep, save_view, sweep_runs  # noqa: E402

KIND_TAG = "mlflow.experimentKind"
KIND = "custom_model_development"
TRAINING_KINDS = ("pretrain", "finetune")  # the run_kind tags of training jobs (experiments.training.job)


def runs_url(host: str, port: int, experiment_id: str | None, kind: str | None = None,
             share_key: str | None = None, charts: bool = False) -> str:
    """The experiment's runs table: a sweep's saved view (share_key), else only the training runs of one
    kind, flat and sorted by name; with charts, MLflow's chart view of the same runs."""
    base = f"http://{host}:{port}/#"
    if experiment_id is None:
        return f"{base}/experiments?workflowType=machine_learning"
    url = f"{base}/experiments/{experiment_id}/runs?workflowType=machine_learning"
    if share_key is not None:
        url += f"&viewStateShareKey={quote(share_key)}"
    elif kind is not None:
        url += (f"&searchFilter={quote(f'tags.run_kind = {kind!r}')}"
                f"&orderByKey={quote(BY_NAME)}&orderByAsc=true")
    return url + ("&compareRunsMode=CHART" if charts else "")


def training_kind(tracking_uri: str, experiment_id: str) -> str | None:
    """The first of TRAINING_KINDS the experiment has runs of (None for an empty experiment)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    for kind in TRAINING_KINDS:
        if client.search_runs([experiment_id], f"tags.run_kind = '{kind}'", max_results=1):
            return kind
    return None


def prepare(tracking_uri: str, experiment: str) -> str | None:
    """Tag the experiment as a training (custom model) experiment; its id, or None when it does not exist yet."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    if exp.tags.get(KIND_TAG) != KIND:
        client.set_experiment_tag(exp.experiment_id, KIND_TAG, KIND)
    return exp.experiment_id


def open_sweep(tracking_uri: str, experiment_id: str, sweep: str | None) -> tuple[str, str] | None:
    """(sweep id, share key) of --sweep or the latest sweep with its view saved; None without a sweep.
    An unknown --sweep raises ConfigError naming the sweeps there are."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    sweep_id = sweep or latest_sweep(client, experiment_id)
    if sweep_id is None:
        return None
    if not sweep_runs(client, experiment_id, sweep_id):
        known = sorted({r.data.tags.get("sweep_id") for r in client.search_runs(
            [experiment_id], "tags.run_kind = 'sweep'", max_results=200)} - {None})
        raise ConfigError("SWEEP", sweep_id, "no runs of that sweep in the store",
                          f"use one of {', '.join(known) or '(none yet: run make sweep)'}")
    return sweep_id, save_view(client, experiment_id, sweep_id)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/ui/serve.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tracking-uri", required=True, help="e.g. sqlite:////abs/path/mlflow.db")
    p.add_argument("--experiment", default="parcae")
    p.add_argument("--sweep", default=None, help="the sweep to open (default: the latest)")
    p.add_argument("--host", default="127.0.0.1",
                   help="bind address (default loopback; anything else requires basic-auth credentials)")
    p.add_argument("--auth", action="store_true", help="basic auth also on loopback")
    p.add_argument("--root", default=".", help="where the auth config, store and reports/ live (default .)")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--print-url", action="store_true", help="print the runs table's address and exit")
    p.add_argument("--print-compare-url", action="store_true",
                   help="print the sweep's chart view (nothing without a sweep) and exit")
    a = p.parse_args(argv)
    if not 0 < a.port < 65536:
        print(f"error: UI_PORT={a.port} is not a TCP port; use e.g. UI_PORT=5001", file=sys.stderr)
        return 2
    env = dict(os.environ)
    try:
        auth = check_bind(a.host, env, "the MLflow UI", asked=a.auth)
    except LaunchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    exp_id = prepare(a.tracking_uri, a.experiment)
    host = "127.0.0.1" if a.host in ("0.0.0.0", "::") else a.host
    try:
        sweep = open_sweep(a.tracking_uri, exp_id, a.sweep) if exp_id else None
    except ConfigError as err:
        print(one_line("config", err), file=sys.stderr)
        return 2
    kind = training_kind(a.tracking_uri, exp_id) if exp_id and not sweep else None
    key = sweep[1] if sweep else None
    url, charts = runs_url(host, a.port, exp_id, kind, key), runs_url(host, a.port, exp_id, kind, key, charts=True)
    if a.print_url or a.print_compare_url:
        print(url if a.print_url else charts if sweep else "")
        return 0
    if sweep:
        from mlflow.tracking import MlflowClient
        page = write_page(MlflowClient(tracking_uri=a.tracking_uri), exp_id, sweep[0],
                          Path(a.root).resolve() / "reports", url)
        print(f"MLflow UI, the runs of sweep {sweep[0]!r}: {url}\n"
              f"  its charts (loss vs µ_rec, loss vs T first): {charts}\n"
              f"  loss vs µ_rec per budget, the table and the report's figures: {page}\n"
              f"  (another sweep: make ui SWEEP=<id>; all runs: clear the search box)", flush=True)
    else:
        note = "" if exp_id else f" (experiment {a.experiment!r} not in the store yet: the list of experiments)"
        shown = f" (search box: tags.run_kind = {kind!r}; clear it for the analyses)" if kind else ""
        print(f"MLflow UI, training runs: {url}{note}{shown}", flush=True)
    mlflow = shutil.which("mlflow", path=os.path.dirname(sys.executable)) or "mlflow"
    extra = basic_auth(Path(a.root).resolve(), env) if auth else []
    os.execve(mlflow, [mlflow, "ui", "--backend-store-uri", a.tracking_uri, "--host", a.host,
                       "--port", str(a.port), *extra], env)


if __name__ == "__main__":
    sys.exit(main())
