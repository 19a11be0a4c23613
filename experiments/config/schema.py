"""Config schemas, registered with Hydra's ConfigStore (validation: experiments.config.plan).

A model is a preset from `parcae.presets` plus explicit overrides: every model field defaults to null,
meaning "the preset's value", so `model=cpu-m model.mean_recurrence=6` is all a sweep needs to say.
The fully resolved model (preset + overrides) is what gets hashed, logged and saved.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from parcae import ModelConfig


def _optional(tp: Any) -> Any:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        tp = next(a for a in args if a is not type(None))
    return Optional[tp]


def _model_schema() -> type:
    hints = typing.get_type_hints(ModelConfig)
    fields_ = [("name", str, field(default="tiny"))]
    fields_ += [(f.name, _optional(hints[f.name]), field(default=None))
                for f in dataclasses.fields(ModelConfig) if f.name != "name"]
    return dataclasses.make_dataclass("ModelSchema", fields_)


ModelSchema = _model_schema()


@dataclass
class DataSchema:
    name: str = "stdlib"  # a label for the corpus; `source` says where it comes from
    val_percent: float = 2.0  # share of documents held out for validation
    val_rows: int = 64  # validation rows of model.block_size tokens
    # Real data (experiments.data.run_data; docs/data.md). stdlib = the embedded corpus.
    source: str = "stdlib"  # stdlib | text | jsonl | parquet | hf (a Hugging Face `datasets` id)
    paths: list[str] = field(default_factory=list)  # text/jsonl/parquet files or globs
    text_field: str = "text"  # the column (jsonl/parquet/hf) that holds a document
    text_separator: Optional[str] = None  # text: split files on this string; null = one document per file
    hf_path: Optional[str] = None  # source=hf: the dataset id, e.g. HuggingFaceFW/fineweb-edu
    hf_name: Optional[str] = None  # source=hf: its config, e.g. sample-10BT
    hf_revision: Optional[str] = None
    split: str = "train"
    streaming: bool = True  # read through `datasets` streaming (no Arrow copy before tokenising)
    max_docs: Optional[int] = None  # read at most this many documents; null = all
    tokenizer: str = "byte"  # byte, or bpe (trained on the source unless tokenizer_path is given)
    tokenizer_path: Optional[str] = None  # an existing tokenizer.json
    # BPE encoding: tiktoken (≈ 4× faster per core, the same ids) or tokenizers; training always uses tokenizers.
    encoder: str = "tiktoken"
    bpe_vocab_size: int = 32768
    tokenizer_train_chars: int = 100_000_000  # characters the BPE is trained on (Parcae arXiv 2604.12946 App. R: 2e9)
    tokenizer_doc_chars: int = 10_000  # each training document capped at this many characters
    shard_dir: Optional[str] = None  # null = <paths.cache>/shards/<hash of source + tokenizer>
    shard_docs: int = 4096  # at most this many documents per shard (one unit of parallel, resumable work)
    shard_chars: int = 4_000_000  # and at most about this many characters: small enough to keep workers busy
    workers: int = 2  # tokenising processes; 0 = in this process
    pack_buffer: int = 1000  # documents the best-fit packer chooses from


@dataclass
class TrainSchema:
    seed: int = 0
    batch_size: int = 16  # the global batch: sequences per optimizer step, over all data-parallel processes
    # Sequences per forward/backward on one process; the rest of its share of the batch is gradient
    # accumulation. null = batch_size / world_size (no accumulation). Changes memory, not the result.
    micro_batch_size: Optional[int] = None
    # Exactly one budget: tokens, or FLOPs converted to tokens through parcae.flops_per_token.
    tokens: Optional[int] = None
    flop_budget: Optional[float] = None
    optimizer: str = "adamw"  # "adamw", or "muon" (MuonAdamW: Muon for block matrices, AdamW for the rest)
    lr: float = 3e-3  # AdamW (group) learning rate
    muon_lr: float = 8e-3  # Muon group, optimizer=muon only
    weight_decay: float = 0.1  # on block matrices (AdamW) / cautious, decaying to 0 (Muon)
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0
    warmup_fraction: float = 0.02  # WSD: linear warm-up, constant, then linear cooldown to 0
    # The warm-up in tokens instead (wins over warmup_fraction): the same for runs of any length, which is
    # what cooldown branches need (sweep.branching sets it for a sweep when null; experiments.training.branching).
    warmup_tokens: Optional[int] = None
    cooldown_fraction: float = 0.5
    eval_every: int = 50  # steps between validation losses at T = µ_rec
    checkpoint_every: int = 50  # steps between checkpoints (metrics are flushed with them)
    test_loops: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16])
    # Also evaluate at every T up to µ_rec and at 1.5, 2 and 3·µ_rec (config.plan.dense_test_loops), so the
    # test-time decay is identified when curves saturate early (Parcae arXiv 2604.12946 §5.3 evaluates to 2·µ_rec).
    test_loops_dense: bool = False
    on_nonfinite: str = "skip"  # "skip" the step, or "stop" and mark the run diverged
    threads: int = 0  # torch intra-op threads; 0 = torch's default
    device: str = "cpu"
    # Speed, not identity (like device): bf16 autocast of the forward ("bf16", for GPUs), torch.compile of
    # every block, recomputing each backpropagated loop iteration in the backward (less memory, +1 forward).
    precision: str = "fp32"
    compile: bool = False
    activation_checkpointing: bool = False
    tf32: bool = False  # TF32 matmuls on CUDA (Ampere and later): speed, not identity
    # Validation sequences per forward on one process; null = micro_batch_size (or batch_size / world_size).
    # Validation is split across ranks, so memory does not grow with the global batch.
    eval_batch_size: Optional[int] = None
    # Also checkpoint when this many minutes passed since the last one (null: by steps only). On a GPU a
    # step-count cadence either writes multi-GB checkpoints every few seconds or loses hours to a crash.
    checkpoint_every_min: Optional[float] = None


@dataclass
class TrackingSchema:
    enabled: bool = True
    uri: Optional[str] = None  # default: sqlite:///<paths.root>/mlflow.db; tracking=server: http://...
    experiment: str = "parcae"
    # The sweep's parent run. Set by the sweep driver (experiments.launch.sweep) as a task override
    # before any job starts, so it is frozen into every job's config (submitit pickles, requeue).
    parent_run_id: Optional[str] = None
    # MLflow's own system-metrics monitor (CPU, memory, disk, network, GPU), sampled every this many seconds.
    system_metrics: bool = True
    system_metrics_interval_s: float = 30.0
    # The final checkpoint (weights, config, tokenizer) is logged as the run's `model/` artifacts when it is
    # at most this large; 0 turns it off (the run dir keeps it either way).
    log_model_max_mb: float = 256.0


@dataclass
class PathsSchema:
    root: str = "."  # mlflow.db, mlartifacts/, runs/ and .cache/ live here
    runs: str = "runs"
    cache: str = ".cache"


@dataclass
class SweepSchema:
    """How a sweep grows after its first pass (experiments.launch.adaptive); not part of any run's identity."""
    adaptive: bool = False  # extend µ_rec beyond an isoFLOP optimum that sits on the grid's edge
    max_extra_points: int = 8  # cap on the points added over all passes
    ladder: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64])
    # The keys the sweep's grid varies; set by the sweep driver for every job (run names, progress labels).
    varied: list[str] = field(default_factory=list)
    # Validate every point and print its tokens, steps, micro-batch, memory and estimated cost; submit nothing.
    dry_run: bool = False
    gpu_memory_gb: float = 80.0  # the dry run's memory check per GPU (an H100 SXM; parcae.memory)
    # Cooldown branches: per (model, µ_rec, seed) one trunk trains warm-up + stable phase; each budget's run loads
    # the trunk's checkpoint at its own cooldown start and only cools down (experiments.training.branching).
    branching: bool = False
    seeds: int = 1  # every grid point runs this many seeds (train.seed, train.seed + 1, ...) as ordinary runs


@dataclass
class Config:
    model: Any = field(default_factory=ModelSchema)
    data: DataSchema = field(default_factory=DataSchema)
    train: TrainSchema = field(default_factory=TrainSchema)
    tracking: TrackingSchema = field(default_factory=TrackingSchema)
    paths: PathsSchema = field(default_factory=PathsSchema)
    sweep_id: str = "adhoc"
    sweep: SweepSchema = field(default_factory=SweepSchema)


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="schema", node=Config)
    cs.store(group="model", name="schema", node=ModelSchema)
