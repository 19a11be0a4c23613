"""Config schemas (registered with Hydra's ConfigStore) and the validation every job passes first.

A model is a preset from `parcae.presets` plus explicit overrides: every model field defaults to null,
meaning "the preset's value", so `model=cpu-m model.mean_recurrence=6` is all a sweep needs to say.
The fully resolved model (preset + overrides) is what gets hashed, logged and saved.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from parcae import ModelConfig, PRESETS, flops_per_token, param_counts


class ConfigError(ValueError):
    """A bad config value: names the key, what is wrong and the fix."""

    def __init__(self, key: str, value: Any, problem: str, fix: str):
        self.key = key
        super().__init__(f"{key}={value!r}: {problem}. Fix: {fix}.")


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
    # Real data (experiments.real_data; README "Real data and evaluation"). stdlib = the embedded corpus.
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
    tokenizer_train_chars: int = 100_000_000  # characters the BPE is trained on (parcae.md D.3: 2e9)
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
    cooldown_fraction: float = 0.5
    eval_every: int = 50  # steps between validation losses at T = µ_rec
    checkpoint_every: int = 50  # steps between checkpoints (metrics are flushed with them)
    test_loops: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16])
    on_nonfinite: str = "skip"  # "skip" the step, or "stop" and mark the run diverged
    threads: int = 0  # torch intra-op threads; 0 = torch's default
    device: str = "cpu"
    # Speed, not identity (like device): bf16 autocast of the forward ("bf16", for GPUs), torch.compile of
    # every block, recomputing each backpropagated loop iteration in the backward (less memory, +1 forward).
    precision: str = "fp32"
    compile: bool = False
    activation_checkpointing: bool = False


@dataclass
class TrackingSchema:
    enabled: bool = True
    uri: Optional[str] = None  # default: sqlite:///<paths.root>/mlflow.db; tracking=server: http://...
    experiment: str = "parcae"
    # The sweep's parent run. Set by the sweep driver (experiments.sweep_driver) as a task override
    # before any job starts, so it is frozen into every job's config (submitit pickles, requeue).
    parent_run_id: Optional[str] = None


@dataclass
class PathsSchema:
    root: str = "."  # mlflow.db, mlartifacts/, runs/ and .cache/ live here
    runs: str = "runs"
    cache: str = ".cache"


@dataclass
class Config:
    model: Any = field(default_factory=ModelSchema)
    data: DataSchema = field(default_factory=DataSchema)
    train: TrainSchema = field(default_factory=TrainSchema)
    tracking: TrackingSchema = field(default_factory=TrackingSchema)
    paths: PathsSchema = field(default_factory=PathsSchema)
    sweep_id: str = "adhoc"


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="schema", node=Config)
    cs.store(group="model", name="schema", node=ModelSchema)


PRECISIONS = ("fp32", "bf16")  # train.precision

# Keys that say where or how a run executes, not what it computes: excluded from its identity.
_NOT_IDENTITY = {"tracking", "paths", "sweep_id", "hydra", "launcher"}
_NOT_IDENTITY_TRAIN = {"threads", "device", "checkpoint_every", "micro_batch_size", "precision", "compile",
                       "activation_checkpointing"}
_NOT_IDENTITY_DATA = {"workers", "shard_dir", "streaming", "encoder"}  # how the data is built, not what it is


@dataclass(frozen=True)
class Plan:
    """What a validated config will do: the resolved model and the budget in steps."""

    model: ModelConfig
    flops_per_token: int
    tokens: int  # tokens actually trained on: steps × batch × block_size
    steps: int
    n_params: int
    n_params_unrolled: int

    @property
    def train_flops(self) -> int:
        return self.tokens * self.flops_per_token


def resolve_model(model_cfg: Any) -> ModelConfig:
    m = OmegaConf.to_container(model_cfg, resolve=True) if isinstance(model_cfg, DictConfig) else dict(model_cfg)
    name = m.get("name")
    if name not in PRESETS:
        raise ConfigError("model.name", name, "unknown model preset",
                          f"use model=<one of {', '.join(sorted(PRESETS))}>")
    overrides = {k: v for k, v in m.items() if v is not None and k != "name"}
    model = dataclasses.replace(PRESETS[name], **overrides)
    try:
        model.validate()
    except ValueError as err:
        msg = str(err)
        key = msg.split("=", 1)[0] if msg.startswith("model.") else "model"
        raise ConfigError(key, getattr(model, key.split(".")[-1], None), msg, "see conf/model and parcae/config.py") from err
    return model


def plan(cfg: DictConfig) -> Plan:
    """Validate a job config and derive its budget; raises ConfigError naming the first bad key."""
    model = resolve_model(cfg.model)
    t = cfg.train
    if (t.tokens is None) == (t.flop_budget is None):
        raise ConfigError("train.tokens", t.tokens, "set exactly one of train.tokens and train.flop_budget",
                          "pass train.tokens=N or train.flop_budget=C, and null the other")
    for key in ("batch_size", "eval_every", "checkpoint_every"):
        if t[key] < 1:
            raise ConfigError(f"train.{key}", t[key], "must be a positive integer", f"set train.{key} ≥ 1")
    micro = t.get("micro_batch_size")
    if micro is not None and (micro < 1 or t.batch_size % micro):
        raise ConfigError("train.micro_batch_size", micro, f"must be ≥ 1 and divide train.batch_size={t.batch_size}",
                          "use a divisor of train.batch_size, or null for no gradient accumulation")
    from experiments.distributed import env_world_size

    world = env_world_size()  # what this launch announces; the trainer checks the live process group again
    if world > 1 and t.batch_size % (world * (micro or 1)):
        need = f"world_size × train.micro_batch_size = {world} × {micro}" if micro else f"world_size = {world}"
        raise ConfigError("train.batch_size", t.batch_size,
                          f"must be divisible by {need} (this launch has {world} processes, each taking "
                          "batch_size / world_size rows per step)",
                          f"use a multiple of {world * (micro or 1)}, or change train.micro_batch_size or the "
                          "number of processes")
    if t.lr <= 0 or not math.isfinite(t.lr):
        raise ConfigError("train.lr", t.lr, "must be a positive number", "set train.lr, e.g. 3e-3")
    if not 0 <= t.warmup_fraction + t.cooldown_fraction <= 1:
        raise ConfigError("train.cooldown_fraction", t.cooldown_fraction,
                          "warmup_fraction + cooldown_fraction must lie in [0, 1]", "lower one of them")
    if t.optimizer not in ("adamw", "muon"):
        raise ConfigError("train.optimizer", t.optimizer, "unknown optimizer", "use adamw or muon")
    if t.on_nonfinite not in ("skip", "stop"):
        raise ConfigError("train.on_nonfinite", t.on_nonfinite, "unknown policy", "use skip or stop")
    if t.get("precision", "fp32") not in PRECISIONS:
        raise ConfigError("train.precision", t.precision, "unknown precision", f"use one of {', '.join(PRECISIONS)}")
    if not t.test_loops or min(t.test_loops) < 1:
        raise ConfigError("train.test_loops", list(t.test_loops), "needs loop counts ≥ 1", "e.g. [1,2,4,8,16]")
    from experiments.real_data import validate as validate_data

    validate_data(cfg.data, model.vocab_size)

    fpt = flops_per_token(model)
    tokens_per_step = t.batch_size * model.block_size
    if t.flop_budget is not None:
        if t.flop_budget <= 0:
            raise ConfigError("train.flop_budget", t.flop_budget, "must be positive", "e.g. train.flop_budget=2e11")
        budget_tokens = int(t.flop_budget // fpt)
        key, value = "train.flop_budget", t.flop_budget
        minimum = f"{tokens_per_step * fpt:.3g} FLOPs"
    else:
        budget_tokens = int(t.tokens)
        key, value = "train.tokens", t.tokens
        minimum = f"{tokens_per_step} tokens"
    steps = budget_tokens // tokens_per_step
    if steps < 1:
        raise ConfigError(key, value,
                          f"buys {budget_tokens:,} tokens, fewer than one optimizer step "
                          f"(train.batch_size × model.block_size = {tokens_per_step:,} tokens at "
                          f"{fpt:,} FLOPs/token)",
                          f"raise it to at least {minimum}, or lower train.batch_size")
    counts = param_counts(model)
    return Plan(model, fpt, steps * tokens_per_step, steps, counts["total"], counts["unrolled"])


def identity(cfg: DictConfig, model: ModelConfig, corpus_hash: str) -> str:
    """Hash of what the run computes: the resolved config minus where/how it runs."""
    c = OmegaConf.to_container(cfg, resolve=True)
    c = {k: v for k, v in c.items() if k not in _NOT_IDENTITY}
    c["train"] = {k: v for k, v in c["train"].items() if k not in _NOT_IDENTITY_TRAIN}
    c["model"] = dataclasses.asdict(model)
    c["data"] = {k: v for k, v in c["data"].items() if k not in _NOT_IDENTITY_DATA}
    c["data"]["content_hash"] = corpus_hash
    return hashlib.sha256(json.dumps(c, sort_keys=True).encode()).hexdigest()[:16]
