"""Build a corpus's tokenizer, shards and packed rows ahead of training, with the run's own config:

    python -m experiments.prepare_data data=parquet data.paths='[/data/fineweb-edu/*.parquet]' \
        model.vocab_size=32768 model.block_size=2048

Everything lands in the cache the runs read (paths.cache), so jobs start training at once. Sweeps do
this in their driver; do it by hand before a multi-process (torchrun/srun) launch of one run, whose
other ranks otherwise wait for rank 0 to build it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from experiments.data import run_data as real_data
from experiments.config.errors import one_line_errors
from experiments.config.cli_help import app_help, wants_help
from experiments.launch.preflight import preflight
from experiments.config.plan import plan
from experiments.config.schema import register

register()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    with one_line_errors():
        p = plan(cfg)
        data = real_data.load(cfg, Path(cfg.paths.root).resolve(), p.model.block_size)
    print(json.dumps({
        "source": cfg.data.source, "content_hash": data.content_hash, "train_rows": data.train.n_rows,
        "row_tokens": p.model.block_size + 1, "tokenizer": data.tokenizer.kind,
        "tokenizer_hash": data.tokenizer.content_hash, "vocab_size": data.tokenizer.vocab_size,
        "val_bytes_per_token": round(1 / data.tokens_per_byte, 3),
    }, indent=1))


if __name__ == "__main__":
    if wants_help(sys.argv[1:]):  # resolved defaults and the groups to choose (Hydra's help shows neither)
        app_help("config", "python -m experiments.prepare_data [group=option] [key=value ...]", __doc__, sys.argv[1:])
        sys.exit(0)
    sys.argv[1:] = preflight("config", sys.argv[1:])
    main()
