"""MLflow UI that opens on the training runs: python scripts/ui/serve.py --tracking-uri URI [--experiment parcae]
[--host 127.0.0.1] [--port 5000] [--print-url]

MLflow 3's UI starts in its GenAI view (traces, "Detect issues") unless told otherwise: the workflow type
comes from the page's ``workflowType`` query parameter, else from the browser's stored choice, which
defaults to GenAI. So the address printed here carries ``workflowType=machine_learning`` and points at
the experiment's runs table, and the experiment is tagged ``mlflow.experimentKind =
custom_model_development`` (the kind MLflow's UI uses for classic training experiments). Then the
server runs in the foreground (``mlflow ui``; loopback unless --host says otherwise).

The table nests a sweep's runs under its parent run, collapsed, and MLflow keeps which rows are expanded
in the browser, not in the address. It fetches and nests parents only while the table is sorted by date
with no search filter; so the address also filters on the experiment's training runs
(``tags.run_kind = 'pretrain'``, or 'finetune') and sorts them by name. They stand flat, one row each,
and a sweep's runs sit together because their names start with the sweep id (isoflop/mu4-C2e12).
Clearing the search box shows the sweeps and analyses again.

Exposure follows the tracking server's rule (experiments.tracking.server.check_bind): loopback without
authentication; any other --host (or --auth) only with MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD
set, and then with MLflow's basic authentication; otherwise one line and exit 2, nothing started.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script: the repository's packages
from experiments.tracking.server import LaunchError, basic_auth, check_bind  # noqa: E402

KIND_TAG = "mlflow.experimentKind"
KIND = "custom_model_development"
TRAINING_KINDS = ("pretrain", "finetune")  # the run_kind tags of training jobs (experiments.training.job)
BY_NAME = "tags.`mlflow.runName`"          # the runs table's own sort key for its Run Name column


def runs_url(host: str, port: int, experiment_id: str | None, kind: str | None = None) -> str:
    """The experiment's runs table; with a training kind, only those runs, flat and sorted by name."""
    base = f"http://{host}:{port}/#"
    if experiment_id is None:
        return f"{base}/experiments?workflowType=machine_learning"
    url = f"{base}/experiments/{experiment_id}/runs?workflowType=machine_learning"
    if kind is None:
        return url
    return (f"{url}&searchFilter={quote(f'tags.run_kind = {kind!r}')}"
            f"&orderByKey={quote(BY_NAME)}&orderByAsc=true")


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


def latest_sweep_runs(tracking_uri: str, experiment_id: str,
                      kind: str = "pretrain") -> tuple[str, list[str], list[str]] | None:
    """(sweep id, run ids, run names) of the training runs of the latest sweep, or None without a sweep:
    `make ui` also prints MLflow's compare page of those runs, their params and metrics side by side."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    parents = client.search_runs([experiment_id], "tags.run_kind = 'sweep'", max_results=1,
                                 order_by=["attributes.start_time DESC"])
    if not parents:
        return None
    parent = parents[0]
    children = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}' "
                                  f"and tags.run_kind = '{kind}'", max_results=200)
    if not children:
        return None
    return (parent.data.tags.get("sweep_id", parent.info.run_name), [r.info.run_id for r in children],
            [r.info.run_name for r in children])


def compare_url(host: str, port: int, experiment_id: str, run_ids: list[str]) -> str:
    return (f"http://{host}:{port}/#/compare-runs?runs={quote(json.dumps(run_ids))}"
            f"&experiments={quote(json.dumps([experiment_id]))}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/ui/serve.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tracking-uri", required=True, help="e.g. sqlite:////abs/path/mlflow.db")
    p.add_argument("--experiment", default="parcae")
    p.add_argument("--host", default="127.0.0.1",
                   help="bind address (default loopback; anything else requires basic-auth credentials)")
    p.add_argument("--auth", action="store_true", help="basic auth also on loopback")
    p.add_argument("--root", default=".", help="where the auth config and store live (default .)")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--print-url", action="store_true", help="print the runs address and exit")
    p.add_argument("--print-compare-url", action="store_true",
                   help="print the compare page of the latest sweep's runs (nothing without a sweep) and exit")
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
    kind = training_kind(a.tracking_uri, exp_id) if exp_id else None
    url = runs_url(host, a.port, exp_id, kind)
    if a.print_url:
        print(url)
        return 0
    sweep = latest_sweep_runs(a.tracking_uri, exp_id, kind) if kind else None
    if a.print_compare_url:
        if sweep:
            print(compare_url(host, a.port, exp_id, sweep[1]))
        return 0
    note = "" if exp_id else f" (experiment {a.experiment!r} not in the store yet: the list of experiments)"
    shown = f" (search box: tags.run_kind = {kind!r}; clear it for the sweeps and analyses)" if kind else ""
    print(f"MLflow UI, training runs: {url}{note}{shown}", flush=True)
    if sweep:
        print(f"the {len(sweep[1])} runs of sweep {sweep[0]!r}, side by side: "
              f"{compare_url(host, a.port, exp_id, sweep[1])}", flush=True)
    mlflow = shutil.which("mlflow", path=os.path.dirname(sys.executable)) or "mlflow"
    extra = basic_auth(Path(a.root).resolve(), env) if auth else []
    os.execve(mlflow, [mlflow, "ui", "--backend-store-uri", a.tracking_uri, "--host", a.host,
                       "--port", str(a.port), *extra], env)


if __name__ == "__main__":
    sys.exit(main())
