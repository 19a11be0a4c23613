"""optuna-dashboard for a study journal of `make tune`: python scripts/ui/tune_dashboard.py JOURNAL
[--host 127.0.0.1] [--port 8080] (what `make tune-ui` runs).

optuna-dashboard has no authentication, so under the rule every server of the project follows
(experiments.tracking.server.check_bind) it binds loopback only: any other --host is one line and exit 2,
nothing started. From another machine, tunnel: ssh -L 8080:127.0.0.1:8080 <this host>.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script: the repository's packages
from experiments.tracking.server import LaunchError, check_bind  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/ui/tune_dashboard.py", description=__doc__.split("\n\n")[0])
    p.add_argument("journal", help="<tune.dir>/<study>/journal.log")
    p.add_argument("--host", default="127.0.0.1", help="bind address: loopback only (no authentication)")
    p.add_argument("--port", type=int, default=8080)
    a = p.parse_args(argv)
    try:
        check_bind(a.host, os.environ, "optuna-dashboard", supports_auth=False)
    except LaunchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    dashboard = shutil.which("optuna-dashboard", path=os.path.dirname(sys.executable)) or "optuna-dashboard"
    print(f"Optuna dashboard for {a.journal}: http://{a.host}:{a.port}", flush=True)
    os.execv(dashboard, [dashboard, "--host", a.host, "--port", str(a.port), a.journal])


if __name__ == "__main__":
    sys.exit(main())
