"""What a training run tells MLflow about itself beyond its params, so the UI can find, filter and chart it.

- **Search fields**: the axes of a scaling sweep (µ_rec, FLOP budget, tokens, parameters) as *metrics*
  at step 0, because MLflow's search compares metrics as numbers (`metrics.flop_budget >= 2e12`) and
  params only as strings; the same values as short tags (`mu_rec = '4'`, `budget = '2e12'`) for the
  table's columns.
- **The test-time curve**: the final evaluation at every T as one metric with step = T
  (`eval/loss_vs_T`), so the UI's chart of that metric *is* loss against loops (Parcae arXiv 2604.12946,
  §5.3). The per-T scalars `eval/loss_T{T}` stay, for the analysis and for search.
- **Provenance**: the git commit as MLflow's standard source tags, the corpus as a dataset input
  (name, content hash, where it came from), system metrics from MLflow's own monitor.
"""

from __future__ import annotations

import logging
import re
import sys
import sysconfig
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import DatasetInput, InputTag
from mlflow.utils import mlflow_tags

from experiments.config.naming import compact
from experiments.tracking.store import git_output

log = logging.getLogger("experiments.tracking.describe")

CURVE_METRICS = {"eval/loss": "eval/loss_vs_T", "eval/bpb": "eval/bpb_vs_T"}
_PER_T = re.compile(r"^(eval/(?:loss|bpb))_T(\d+)$")


def search_fields(mean_recurrence: int | None, flop_budget: float | None, tokens: int,
                  n_params: int) -> tuple[dict[str, float], dict[str, str]]:
    """(metrics, tags) naming a run's place on the sweep's axes; budget only for budgeted runs."""
    metrics = {"train_tokens": float(tokens), "n_params": float(n_params)}
    tags = {"tokens": compact(tokens), "n_params": compact(n_params)}
    if mean_recurrence is not None:
        metrics["mu_rec"] = float(mean_recurrence)
        tags["mu_rec"] = str(mean_recurrence)
    if flop_budget is not None:
        metrics["flop_budget"] = float(flop_budget)
        tags["budget"] = compact(flop_budget)
    return metrics, tags


def testtime_curve(final: Mapping[str, float]) -> dict[int, dict[str, float]]:
    """{T: {"eval/loss_vs_T": ..., "eval/bpb_vs_T": ...}} from the final `eval/loss_T{T}` metrics."""
    curve: dict[int, dict[str, float]] = {}
    for key, value in final.items():
        m = _PER_T.match(key)
        if m:
            curve.setdefault(int(m.group(2)), {})[CURVE_METRICS[m.group(1)]] = float(value)
    return dict(sorted(curve.items()))


def source_tags(entry_point: str | None = None) -> dict[str, str]:
    """MLflow's standard source tags: the UI shows the commit (and links it when the remote is known)."""
    tags = {mlflow_tags.MLFLOW_SOURCE_TYPE: "JOB",
            mlflow_tags.MLFLOW_SOURCE_NAME: entry_point or Path(sys.argv[0]).name or "python"}
    commit = git_output("rev-parse", "HEAD")
    if commit:
        tags[mlflow_tags.MLFLOW_GIT_COMMIT] = commit
        branch = git_output("rev-parse", "--abbrev-ref", "HEAD")
        if branch and branch != "HEAD":
            tags[mlflow_tags.MLFLOW_GIT_BRANCH] = branch
        remote = git_output("config", "--get", "remote.origin.url")
        if remote and "@" not in remote:  # never a URL with credentials in it
            tags[mlflow_tags.MLFLOW_GIT_REPO_URL] = remote
    return tags


def dataset_input(data: Mapping[str, Any], content_hash: str, cache: Path) -> DatasetInput | None:
    """The training corpus as an MLflow dataset input (context "training"); None if MLflow cannot say it."""
    from mlflow.data.meta_dataset import MetaDataset

    try:
        if data.get("source") == "hf":
            from mlflow.data.huggingface_dataset_source import HuggingFaceDatasetSource
            source = HuggingFaceDatasetSource(path=data["hf_path"], config_name=data.get("hf_name"),
                                              split=data.get("split"))
        else:
            from mlflow.data.dataset_source_registry import resolve_dataset_source
            paths = list(data.get("paths") or [])
            if data.get("source") == "stdlib":  # the embedded corpus: this interpreter's standard library
                where = sysconfig.get_paths()["stdlib"]
            else:
                where = paths[0] if len(paths) == 1 else str(Path(cache).resolve())
            with warnings.catch_warnings():  # a local path matches two registered names of one source class
                warnings.simplefilter("ignore", UserWarning)
                source = resolve_dataset_source(str(where))
        ds = MetaDataset(source, name=str(data.get("name") or data.get("source")), digest=content_hash[:36])
    except Exception as err:  # noqa: BLE001 — provenance is extra; a run never fails over it
        log.warning("the corpus could not be described as an MLflow dataset (%s); not logged", err)
        return None
    return DatasetInput(ds._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", "training")])


class SystemMetrics:
    """MLflow's system-metrics monitor (CPU, memory, disk, network, GPU when present) for one run.

    Started after the run is RUNNING and stopped before it is terminated; a failure to start is logged,
    never raised. The monitor's thread reads the run's status, so a killed job's monitor ends with it."""

    def __init__(self, uri: str, run_id: str, interval_s: float, resume: bool):
        self._monitor = None
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
            self._monitor = SystemMetricsMonitor(run_id, sampling_interval=interval_s, resume_logging=resume,
                                                 tracking_uri=uri)
            self._monitor.start()
        except Exception as err:  # noqa: BLE001
            log.warning("system metrics are off for this run (%s)", err)
            self._monitor = None

    def stop(self) -> None:
        if self._monitor is not None:
            try:
                self._monitor.finish()
            except Exception as err:  # noqa: BLE001
                log.warning("system metrics monitor did not stop cleanly (%s)", err)
            self._monitor = None
