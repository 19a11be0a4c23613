"""A sweep's own view in MLflow's UI, saved in the store and opened from the address `make ui` prints.

MLflow 3's experiment page keeps only its search facets in the address (searchFilter, orderByKey,
orderByAsc, startTime, lifecycleFilter, ...); the visible columns, the charts and their order and how many
runs the charts show live in the browser. What MLflow does carry is a *shared view*: the experiment tag
``mlflow.sharedViewState.<key>`` holds the facets and that UI state as JSON, and the address
``?viewStateShareKey=<key>`` loads it (the "Share" button writes the same tag). So `make ui` writes one
such view per sweep:

- the filter: the sweep's members (tag ``sweep.member.<sweep_id>``, set on every run whose identity is one
  of the sweep's grid points, experiments.training.job), flat and sorted by name (MLflow nests runs
  under their sweep, collapsed, only while sorted by date without a filter);
- the columns: ``eval/loss`` (metric, at T = µ_rec) and the sweep's axes as the short tags
  (``mu_rec``, ``budget``, ``tokens``, ``seed``; experiments.tracking.describe.search_fields), and where a
  cooldown branch left its trunk (``branch.from_tokens``, empty for independent runs; docs/branching.md);
- the charts, first: eval/loss against µ_rec (one point per run), eval/loss against T (the metric
  ``eval/loss_vs_T`` is logged with step = T; MLflow labels that axis "Step" and cannot rename it),
  eval/loss against the budget, and parallel coordinates µ_rec → budget → eval/loss; every run shown.

What MLflow cannot draw — a line per budget through the µ_rec points — is on the sweep's static page
(scripts/ui/sweep_page.py).
"""
from __future__ import annotations

import json

SHARE_TAG = "mlflow.sharedViewState."  # the experiment tag prefix MLflow's UI reads a shared view from
SECTION = "sweep-charts"               # the chart section that holds the sweep's own charts, first
COLUMNS = ("metrics.`eval/loss`", "tags.`mu_rec`", "tags.`budget`", "tags.`tokens`", "tags.`seed`",
           "tags.`branch.from_tokens`")
LOSS, LOSS_VS_T = "eval/loss", "eval/loss_vs_T"
BY_NAME = "tags.`mlflow.runName`"      # the runs table's own sort key for its Run Name column


def member_filter(sweep_id: str) -> str:
    """MLflow's search filter for the runs of one sweep (backquotes: the tag key holds dots)."""
    return f"tags.`sweep.member.{sweep_id}` = 'true'"


def share_key(sweep_id: str) -> str:
    return f"sweep-{sweep_id}"


def _metric(key: str) -> dict:
    return {"key": key, "type": "METRIC"}


def _charts() -> list[dict]:
    """The sweep's charts in MLflow's own chart-card format (the fields its UI serialises)."""
    base = {"runsCountToCompare": 100, "metricSectionId": SECTION, "deleted": False, "isGenerated": False}
    return [
        {**base, "uuid": "sweep-loss-vs-mu", "type": "SCATTER", "displayName": "eval/loss vs µ_rec",
         "xaxis": _metric("mu_rec"), "yaxis": _metric(LOSS)},
        {**base, "uuid": "sweep-loss-vs-T", "type": "LINE", "metricKey": LOSS_VS_T,
         "displayName": "eval/loss vs T (x axis: step = T)", "xAxisKey": "step", "useGlobalXaxisKey": False,
         "selectedXAxisMetricKey": "", "scaleType": "linear", "xAxisScaleType": "linear", "lineSmoothness": 0,
         "useGlobalLineSmoothing": False, "displayPoints": True},
        {**base, "uuid": "sweep-loss-vs-budget", "type": "SCATTER", "displayName": "eval/loss vs FLOP budget",
         "xaxis": _metric("flop_budget"), "yaxis": _metric(LOSS)},
        {**base, "uuid": "sweep-parallel", "type": "PARALLEL", "displayName": "µ_rec, budget → eval/loss",
         "selectedParams": [], "selectedMetrics": ["mu_rec", "flop_budget", LOSS], "showAllRuns": True},
    ]


def view_state(sweep_id: str) -> dict:
    """The shared view of one sweep: search facets plus the UI state MLflow restores from it."""
    return {
        "searchFilter": member_filter(sweep_id),
        "orderByKey": BY_NAME, "orderByAsc": True,
        "selectedColumns": list(COLUMNS),
        "runsHiddenMode": "SHOW_ALL",  # the charts' default shows the first 10 runs only
        "compareRunCharts": _charts(),
        "compareRunSections": [{"uuid": SECTION, "name": f"sweep {sweep_id}", "display": True,
                                "isReordered": True, "deleted": False, "isGenerated": False}],
        "isAccordionReordered": True, "hideEmptyCharts": True, "useGroupedValuesInCharts": False,
    }


def save_view(client, experiment_id: str, sweep_id: str) -> str:
    """Write (or refresh) the sweep's shared view on the experiment; its share key."""
    key = share_key(sweep_id)
    client.set_experiment_tag(experiment_id, SHARE_TAG + key, json.dumps(view_state(sweep_id)))
    return key


def latest_sweep(client, experiment_id: str) -> str | None:
    """The id of the sweep started last (its parent run, run_kind=sweep), None without one."""
    parents = client.search_runs([experiment_id], "tags.run_kind = 'sweep'", max_results=1,
                                 order_by=["attributes.start_time DESC"])
    return parents[0].data.tags.get("sweep_id") if parents else None


def sweep_runs(client, experiment_id: str, sweep_id: str) -> list:
    """The sweep's member runs, by name."""
    runs = client.search_runs([experiment_id], member_filter(sweep_id), max_results=1000)
    return sorted(runs, key=lambda r: r.info.run_name or "")
