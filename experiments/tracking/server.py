"""Start the MLflow tracking server that `tracking=server` jobs log to.

    python -m experiments.mlflow_server [--host 127.0.0.1] [--port 5000] [--workers 2]
        [--backend-store-uri sqlite:///<root>/mlflow.db | postgresql://user@host/db]
        [--artifacts-destination <root>/mlartifacts] [--root .] [--auth] [--allowed-hosts ...]

The server owns the store and serves the artifacts (`--serve-artifacts`), so jobs on other nodes need
nothing but its URL. The process becomes `mlflow server` (exec), so its pid is the server's: stop it
with `kill <pid>`.

Security, one rule for every server the project starts (this one, `make ui`, `make tune-ui`: `check_bind`):
on loopback (127.0.0.0/8, ::1, localhost) the server runs without authentication. Any other bind
address turns on MLflow's basic authentication (`--app-name basic-auth`; optuna-dashboard has none, so
it stays on loopback),
which is also available on loopback with `--auth`. Its admin account is taken from the environment,
MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, the same variables MLflow's client reads in the
jobs; without them the server refuses to start. Credentials never go into a file, a command line or a
log: the generated auth config (<root>/mlflow_auth.ini) holds no secret, and the admin account reaches
MLflow through MLFLOW_AUTH_ADMIN_USERNAME / MLFLOW_AUTH_ADMIN_PASSWORD in the server's environment.
MLflow creates that admin only on the first start against an empty auth store (<root>/mlflow_auth.db);
afterwards changing the variables does not change the stored password. For postgres, keep the password
out of the URI (and so out of `ps`): use PGPASSWORD or ~/.pgpass.
"""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import os
import re
import secrets
import sys
from pathlib import Path
from typing import Mapping

USER_ENV, PASSWORD_ENV = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"
AUTH_INI = """\
# Written by experiments.mlflow_server. No credentials here: the admin account comes from the
# server's environment (MLFLOW_AUTH_ADMIN_USERNAME / MLFLOW_AUTH_ADMIN_PASSWORD).
[mlflow]
default_permission = {default_permission}
database_uri = {database_uri}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
"""


class LaunchError(Exception):
    """The server must not start as asked; the message says why and what to do."""


def is_loopback(host: str) -> bool:
    if host.strip("[]").lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name other than localhost may resolve to anything
        return False


def check_bind(host: str, environ: Mapping[str, str], what: str, *, supports_auth: bool = True,
               asked: bool = False) -> bool:
    """The one rule for every server the project starts (the tracking server, `make ui`, `make tune-ui`):
    loopback only, unless credentials are configured. Returns whether authentication is on: on any
    non-loopback address (or when asked), with MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD set.
    Raises LaunchError otherwise, and always for a server that has no authentication off loopback."""
    if not (asked or not is_loopback(host)):
        return False
    why = "--auth was given" if is_loopback(host) else f"--host {host} is not loopback"
    if not supports_auth:
        raise LaunchError(f"refusing to start {what}: {why}, and it has no authentication. Bind 127.0.0.1 and "
                          f"reach it through an SSH tunnel (ssh -L <port>:127.0.0.1:<port> <this host>). "
                          "Nothing was started.")
    missing = [name for name in (USER_ENV, PASSWORD_ENV) if not environ.get(name)]
    if missing:
        raise LaunchError(
            f"refusing to start {what}: {why}, which requires MLflow basic authentication, "
            f"and {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set. Export "
            f"{USER_ENV} and {PASSWORD_ENV} (the server's admin account; jobs use the same variables) "
            f"and run again, or bind 127.0.0.1. Nothing was started.")
    if importlib.util.find_spec("flask_wtf") is None:
        raise LaunchError("MLflow basic authentication needs the `auth` extra (Flask-WTF): "
                          "pip install 'mlflow[auth]==3.17.2'. Nothing was started.")
    return True


def basic_auth(root: Path, env: dict[str, str], default_permission: str = "READ",
               auth_database_uri: str | None = None) -> list[str]:
    """MLflow's basic-auth app for `mlflow server` / `mlflow ui`: its extra arguments; sets up `env` (the
    secret-free auth config, the admin account from the credentials, a static Flask secret)."""
    if not env.get("MLFLOW_AUTH_CONFIG_PATH"):
        ini = root / "mlflow_auth.ini"
        ini.parent.mkdir(parents=True, exist_ok=True)
        ini.write_text(AUTH_INI.format(default_permission=default_permission,
                                       database_uri=auth_database_uri or f"sqlite:///{root / 'mlflow_auth.db'}"))
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(ini)
    env["MLFLOW_AUTH_ADMIN_USERNAME"] = env[USER_ENV]
    env["MLFLOW_AUTH_ADMIN_PASSWORD"] = env[PASSWORD_ENV]
    # Static for the server's lifetime, shared by its workers (CSRF in the auth UI).
    env.setdefault("MLFLOW_FLASK_SERVER_SECRET_KEY", secrets.token_urlsafe(32))
    return ["--app-name", "basic-auth"]


def _mask(uri: str) -> str:
    return re.sub(r"(://[^:/@\s]*):[^@/\s]*@", r"\1:***@", uri)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m experiments.mlflow_server", description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1",
                   help="bind address (default 127.0.0.1); anything but loopback requires basic auth")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--workers", type=int, default=2, help="server worker processes (default 2)")
    p.add_argument("--root", default=".", help="where the default store, artifacts and auth files live")
    p.add_argument("--backend-store-uri", default=None,
                   help="sqlite:///<root>/mlflow.db (default) or postgresql://user@host/db")
    p.add_argument("--artifacts-destination", default=None, help="default <root>/mlartifacts")
    p.add_argument("--auth", action="store_true", help="basic auth also on loopback")
    p.add_argument("--auth-database-uri", default=None, help="auth store, default sqlite:///<root>/mlflow_auth.db")
    p.add_argument("--default-permission", default="READ", choices=["READ", "EDIT", "MANAGE", "NO_PERMISSIONS"],
                   help="what users other than a resource's creator may do (basic auth)")
    p.add_argument("--allowed-hosts", default=None,
                   help="Host headers the server accepts (MLflow's default: localhost and private IPs); "
                        "e.g. 'headnode,headnode:5000' when jobs use http://headnode:5000")
    p.add_argument("--print-command", action="store_true", help="print the mlflow command and exit")
    return p.parse_args(argv)


def build(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """(argv, environment) of the `mlflow server` process. Raises LaunchError when a non-loopback
    bind lacks credentials. Writes the (secret-free) auth config when auth is on."""
    env = dict(os.environ if environ is None else environ)
    root = Path(args.root).resolve()
    backend = args.backend_store_uri or f"sqlite:///{root / 'mlflow.db'}"
    artifacts = args.artifacts_destination or str(root / "mlartifacts")
    auth = check_bind(args.host, env, "the MLflow server", asked=args.auth)
    if backend.startswith("sqlite:///"):
        Path(backend[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    if "://" not in artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)

    argv = [sys.executable, "-m", "mlflow", "server", "--host", args.host, "--port", str(args.port),
            "--workers", str(args.workers), "--backend-store-uri", backend,
            "--serve-artifacts", "--artifacts-destination", artifacts]
    if args.allowed_hosts:
        argv += ["--allowed-hosts", args.allowed_hosts]
    if auth:
        argv += basic_auth(root, env, args.default_permission, args.auth_database_uri)
    return argv, env


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cmd, env = build(args)
    except LaunchError as err:
        print(f"mlflow_server: {err}", file=sys.stderr)
        return 2
    shown = [_mask(c) for c in cmd]
    if args.print_command:
        print(" ".join(shown))
        return 0
    auth = "basic auth" if "--app-name" in cmd else "no auth (loopback)"
    print(f"mlflow_server: pid {os.getpid()} serving http://{args.host}:{args.port} ({auth}); "
          f"backend {_mask(cmd[cmd.index('--backend-store-uri') + 1])}, "
          f"artifacts {cmd[cmd.index('--artifacts-destination') + 1]}", file=sys.stderr, flush=True)
    os.execve(cmd[0], cmd, env)
    return 0  # not reached
