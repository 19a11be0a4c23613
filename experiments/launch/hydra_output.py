"""Hydra's own output, without secrets: the `.hydra/` copies of a job's config and overrides, and a sweep's
`multirun.yaml`.

Hydra saves the composed config, its own config and the command-line overrides verbatim into
`outputs/…/.hydra/` and `multirun/…/<n>/.hydra/`, so `data.name=$HF_TOKEN` or `+x=sk-…` would land there.
The root configs set `hydra.output_subdir: null` (Hydra writes none of them) and register this callback,
which writes the same three files passed through the one secret filter (experiments.tracking.store). The
sweep's `multirun.yaml` cannot be turned off (Hydra's basic sweeper writes it after the driver's callback),
so the first job of a sweep rewrites it filtered, before its training starts. Nothing reads these files
back (status and resume read sweeps/<id>/manifest.json); they are there for a person.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from experiments.tracking.store import redact_config

SUBDIR = ".hydra"  # where Hydra would have written them


def _save(node: Any, path: Path) -> None:
    """Write atomically (two jobs of a local sweep may rewrite multirun.yaml at once)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(OmegaConf.to_yaml(OmegaConf.create(redact_config(node))))
    os.replace(tmp, path)


class RedactedHydraOutput(Callback):
    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        hydra = config.hydra
        out = Path(hydra.runtime.output_dir) / SUBDIR
        out.mkdir(parents=True, exist_ok=True)
        task = OmegaConf.to_container(config, resolve=False)
        task.pop("hydra", None)
        _save(task, out / "config.yaml")
        _save({"hydra": OmegaConf.to_container(hydra, resolve=False)}, out / "hydra.yaml")
        _save(list(hydra.overrides.task), out / "overrides.yaml")
        if hydra.mode == RunMode.MULTIRUN:
            sweep = Path(hydra.sweep.dir) / "multirun.yaml"
            if sweep.is_file():
                _save(OmegaConf.to_container(OmegaConf.load(sweep), resolve=False), sweep)
