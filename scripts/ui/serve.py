"""MLflow UI that opens on the training runs: python scripts/ui/serve.py --tracking-uri URI [--experiment parcae]
[--host 127.0.0.1] [--port 5000] [--print-url]

MLflow 3's UI starts in its GenAI view (traces, "Detect issues") unless told otherwise: the workflow type
comes from the page's ``workflowType`` query parameter, else from the browser's stored choice, which
defaults to GenAI. So the address printed here carries ``workflowType=machine_learning`` and points at
the experiment's runs table, and the experiment is tagged ``mlflow.experimentKind =
custom_model_development`` (the kind MLflow's UI uses for classic training experiments). Then the
server runs in the foreground (``mlflow ui``; loopback unless --host says otherwise).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys

KIND_TAG = "mlflow.experimentKind"
KIND = "custom_model_development"


def runs_url(host: str, port: int, experiment_id: str | None) -> str:
    base = f"http://{host}:{port}/#"
    if experiment_id is None:
        return f"{base}/experiments?workflowType=machine_learning"
    return f"{base}/experiments/{experiment_id}/runs?workflowType=machine_learning"


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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/ui/serve.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tracking-uri", required=True, help="e.g. sqlite:////abs/path/mlflow.db")
    p.add_argument("--experiment", default="parcae")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default loopback)")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--print-url", action="store_true", help="print the runs address and exit")
    a = p.parse_args(argv)
    if not 0 < a.port < 65536:
        print(f"error: UI_PORT={a.port} is not a TCP port; use e.g. UI_PORT=5001", file=sys.stderr)
        return 2
    exp_id = prepare(a.tracking_uri, a.experiment)
    url = runs_url("127.0.0.1" if a.host in ("0.0.0.0", "::") else a.host, a.port, exp_id)
    if a.print_url:
        print(url)
        return 0
    note = "" if exp_id else f" (experiment {a.experiment!r} not in the store yet: the list of experiments)"
    print(f"MLflow UI, training runs: {url}{note}", flush=True)
    mlflow = shutil.which("mlflow", path=os.path.dirname(sys.executable)) or "mlflow"
    os.execv(mlflow, [mlflow, "ui", "--backend-store-uri", a.tracking_uri, "--host", a.host,
                      "--port", str(a.port)])


if __name__ == "__main__":
    sys.exit(main())
