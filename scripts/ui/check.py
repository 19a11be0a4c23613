"""make test-ui: the MLflow view `make ui` opens on a sweep, checked in a real headless browser (Debian's
chromium) on a real sweep store.

    python scripts/ui/check.py [--tracking-uri URI] [--experiment parcae] [--sweep ID] [--port 5055] [--out reports/ui]

Without --tracking-uri a store is trained here, in a temporary folder: two sweeps of two grid points each
(the tiny model at 3e10 and 2e10 FLOPs, about a minute on 2 cores), so that the view of the latest sweep can
be seen to hold its own runs and no other sweep's. The UI is started through scripts/ui/serve.py on
loopback and chromium loads the three things `make ui` prints:

- the runs table: every run of the sweep is a row whose cells show its eval/loss, µ_rec and budget (the
  values in the store), no run of another sweep is on the page, and it is not the GenAI overview;
- the chart view: the sweep's own section of charts (loss against µ_rec, loss against T, ...) comes first;
- the static page reports/<sweep>/ui.html: one table row per run and its two figures.

Screenshots: <out>/runs.png, <out>/charts.png, <out>/page.png. Exit 0 when all hold, 1 when not, 77
(skipped) when no chromium can be found or installed.
"""
from __future__ import annotations

import argparse
import html.parser
import math
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
from sweep_view import LOSS, latest_sweep, sweep_runs, view_state  # noqa: E402

SKIP = 77
# Two sweeps at different budgets: a grid point both held would be one run, a member of each (its identity
# is its config; experiments.training.job), and the view of the latest (uib) must hold none of uia's runs.
SWEEPS = {"uia": "3e10", "uib": "2e10"}
# The tiny model of the experiments tests (tests/experiments/helpers.py SMALL) at a budget of seconds.
TINY = ["model.block_size=64", "train.batch_size=8", "data.val_rows=16", "train.eval_every=10",
        "train.checkpoint_every=5", "train.test_loops=[1,2,4,8]", "train.threads=1", "model.mean_recurrence=1,2",
        "sweep.adaptive=false"]
GENAI_MARKERS = ("Detect issues",)  # the GenAI overview's call to action ("Traces" is also a sidebar item)
NAME_COLUMN = "attributes.`Run Name`"  # the runs table's column ids (ag-grid col-id)
# The chart view's sections, as --dump-dom renders them (the chart cards draw only in the screenshot): the
# sweep's own section, with its charts (sweep_view: loss vs µ_rec, loss vs T, ...), must come first.
SECTION_HTML = '>{name}</div><div class="css-wpr0tw" style="visibility: visible; display: inherit;">({n})</div>'
OTHER_SECTION = ">Model metrics</div>"


def sweep_store(root: Path) -> str:
    """Train SWEEPS in turn under root (real runs through experiments.pretrain -m); the store's URI."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for sweep_id, budget in SWEEPS.items():
        cmd = [sys.executable, "-m", "experiments.pretrain", "-m", "sweep=isoflop", f"paths.root={root}",
               f"sweep_id={sweep_id}", f"train.flop_budget={budget}", *TINY]
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise RuntimeError(f"training sweep {sweep_id} failed: {r.stderr[-2000:]}")
    return f"sqlite:///{root / 'mlflow.db'}"


def expected(uri: str, experiment: str, sweep: str | None) -> tuple[str, dict[str, dict], list[str]]:
    """(sweep id, {run name: the values its row must show}, names of other sweeps' training runs)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp_id = client.get_experiment_by_name(experiment).experiment_id
    sweep = sweep or latest_sweep(client, exp_id)
    runs = {r.info.run_name: {"loss": r.data.metrics.get(LOSS), "mu_rec": r.data.tags.get("mu_rec"),
                              "budget": r.data.tags.get("budget")}
            for r in sweep_runs(client, exp_id, sweep)}
    others = [r.info.run_name for r in client.search_runs([exp_id], "tags.run_kind = 'pretrain'", max_results=500)
              if r.info.run_name not in runs]
    return sweep, runs, others


class Grid(html.parser.HTMLParser):
    """The cells of MLflow's runs table (ag-grid) from the rendered DOM: {row index: {col-id: text}}.
    The pinned name column and the scrolled columns are separate row elements sharing the row index."""

    def __init__(self):
        super().__init__()
        self.rows: dict[str, dict[str, str]] = {}
        self._row, self._cell, self._depth, self._cell_depth = None, None, 0, 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self._depth += tag not in ("img", "br", "input", "hr", "meta", "link")
        if a.get("role") == "row" and a.get("row-index") is not None:
            self._row = a["row-index"]
        elif self._row is not None and a.get("col-id") and self._cell is None:
            self._cell, self._cell_depth = a["col-id"], self._depth
            self.rows.setdefault(self._row, {})[self._cell] = ""

    def handle_endtag(self, tag):
        if self._cell is not None and self._depth == self._cell_depth:
            self._cell = None
        self._depth -= tag not in ("img", "br", "input", "hr", "meta", "link")

    def handle_data(self, data):
        if self._cell is not None:
            self.rows[self._row][self._cell] += data


def row_problems(dom: str, runs: dict[str, dict], others: list[str]) -> list[str]:
    """What the runs table gets wrong: a run without its row or with a value unlike the store's; another
    sweep's run on the page."""
    grid = Grid()
    grid.feed(dom)
    by_name = {}
    for cells in grid.rows.values():  # the name cell also holds the run's colour ("#137dae")
        name = next((n for n in runs if cells.get(NAME_COLUMN, "").strip().endswith(n)), None)
        if name:
            by_name[name] = cells
    problems = [f"{n}: no row" for n in runs if n not in by_name]
    for name, cells in by_name.items():
        want = runs[name]
        got = {k: cells.get(f"tags.`{k}`", "").strip() for k in ("mu_rec", "budget")}
        problems += [f"{name}: {k} shows {got[k]!r}, the store has {want[k]!r}" for k in got if got[k] != want[k]]
        loss = cells.get(f"metrics.`{LOSS}`", "").strip()
        try:
            ok = want["loss"] is not None and math.isclose(float(loss), want["loss"], rel_tol=1e-3)
        except ValueError:
            ok = False
        if not ok:
            problems.append(f"{name}: eval/loss shows {loss!r}, the store has {want['loss']}")
    return problems + [f"{n}: another sweep's run is on the page" for n in others if n in dom]


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


def free_port(preferred: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]


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
    p.add_argument("--tracking-uri", default=None, help="a store to show (default: two tiny sweeps trained here)")
    p.add_argument("--experiment", default="parcae")
    p.add_argument("--sweep", default=None, help="the sweep to check (default: the latest)")
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
        uri = a.tracking_uri or sweep_store(Path(tmp))
        sweep, runs, others = expected(uri, a.experiment, a.sweep)
        port = free_port(a.port)
        serve = [sys.executable, str(ROOT / "scripts" / "ui" / "serve.py"), "--tracking-uri", uri,
                 "--experiment", a.experiment, "--port", str(port), "--root", tmp, "--sweep", sweep]
        server = subprocess.Popen(serve, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            if not wait_up(port):
                print(f"error: the MLflow UI did not come up on port {port}", file=sys.stderr)
                return 1
            url = subprocess.run(serve + ["--print-url"], check=True, capture_output=True, text=True).stdout.strip()
            charts_url = subprocess.run(serve + ["--print-compare-url"], check=True, capture_output=True,
                                        text=True).stdout.strip()
            dom = browse(chromium, url, out / "runs.png")
            charts = browse(chromium, charts_url, out / "charts.png")
            page = Path(tmp) / "reports" / sweep / "ui.html"
            page_dom = browse(chromium, page.as_uri(), out / "page.png", 3000) if page.exists() else ""
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
    (out / "runs.html").write_text(dom, encoding="utf-8")
    (out / "charts.html").write_text(charts, encoding="utf-8")
    problems = row_problems(dom, runs, others)
    problems += [f"GenAI view ({m!r} on the page)" for m in GENAI_MARKERS if m in dom]
    ours = charts.find(SECTION_HTML.format(name=f"sweep {sweep}", n=len(view_state(sweep)["compareRunCharts"])))
    if ours < 0 or not 0 <= ours < charts.find(OTHER_SECTION):
        problems.append(f"chart view: the section 'sweep {sweep}' with its charts is not the first")
    problems += [f"static page: no row for {n}" for n in runs if f"<td>{n}</td>" not in page_dom]
    print(f"sweep {sweep!r}: {url}\ncharts: {charts_url}\nscreenshots: {out}/runs.png, charts.png, page.png\n"
          f"runs checked: {len(runs)} (eval/loss, mu_rec, budget in their rows); other sweeps' runs absent: "
          f"{len(others)}")
    if problems or not runs:
        print("error: the sweep's view is not what the UI shows:\n  " + "\n  ".join(problems or ["no runs"]),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
