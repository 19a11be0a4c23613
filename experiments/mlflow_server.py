"""An MLflow tracking server for sweeps on several hosts: `python -m experiments.mlflow_server --port 5000`
(experiments.tracking.server)."""

import sys

from experiments.config.errors import one_line_errors
from experiments.tracking.server import main

if __name__ == "__main__":
    with one_line_errors():
        sys.exit(main())
