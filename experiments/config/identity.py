"""A run's identity: the hash of what it computes, which names its run dir (runs/<hash>).

Identity must survive upgrades of the code: adding a config field with a default must leave every
finished run finished (a retrained sweep costs hours of GPU time). So the keys that existed when this
rule was written (IDENTITY_V1) are hashed whatever their value, exactly as before (the runs made
before keep their hashes), and a key added later is hashed only when its value differs from its
schema default. A new field that changes what runs compute must therefore default to the old behaviour.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from omegaconf import DictConfig, OmegaConf

from experiments.config import schema
from experiments.config.plan import branching_on
from parcae import ModelConfig

# Keys that say where or how a run executes, not what it computes: excluded from its identity.
_NOT_IDENTITY = {"tracking", "paths", "sweep_id", "sweep", "hydra", "launcher"}
_NOT_IDENTITY_TRAIN = {"threads", "device", "checkpoint_every", "checkpoint_every_min", "eval_batch_size", "tf32",
                       "micro_batch_size", "precision", "compile", "activation_checkpointing"}
_NOT_IDENTITY_DATA = {"workers", "shard_dir", "streaming", "encoder"}  # how the data is built, not what it is

# Every identity key of the schema of December 2026 (config groups model, data, train).
IDENTITY_V1 = {
    "model": {"block_size", "d_model", "depth_curriculum", "depth_curriculum_steps", "depth_granularity",
              "depth_sampling", "injection", "kind", "mean_backprop", "mean_recurrence", "mlp_ratio", "n_coda",
              "n_core", "n_head", "n_layer", "n_prelude", "name", "prelude_norm", "rope_theta", "state_init",
              "value_embeddings", "vocab_size"},
    "data": {"bpe_vocab_size", "content_hash", "hf_name", "hf_path", "hf_revision", "max_docs", "name",
             "pack_buffer", "paths", "shard_chars", "shard_docs", "source", "split", "text_field",
             "text_separator", "tokenizer", "tokenizer_doc_chars", "tokenizer_path", "tokenizer_train_chars",
             "val_percent", "val_rows"},
    "train": {"batch_size", "beta1", "beta2", "cooldown_fraction", "eps", "eval_every", "flop_budget",
              "grad_clip", "lr", "muon_lr", "on_nonfinite", "optimizer", "seed", "test_loops", "tokens",
              "warmup_fraction", "weight_decay"},
}
_ABSENT = object()


def _defaults() -> dict[str, dict[str, Any]]:
    """Schema defaults per group: the dataclass defaults of the config schema and of ModelConfig."""
    c = OmegaConf.to_container(OmegaConf.structured(schema.Config), resolve=True)
    model = {}
    for f in dataclasses.fields(ModelConfig):
        if f.default is not dataclasses.MISSING:
            model[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            model[f.name] = f.default_factory()  # type: ignore[misc]
    return {"model": model, "data": c["data"], "train": c["train"]}


def _group(values: dict[str, Any], group: str, defaults: dict[str, Any]) -> dict[str, Any]:
    v1 = IDENTITY_V1.get(group, set())
    return {k: v for k, v in values.items()
            if k in v1 or json.dumps(v, sort_keys=True, default=str) != json.dumps(
                defaults.get(k, _ABSENT), sort_keys=True, default=str)}


def _computed(cfg: DictConfig, model: ModelConfig, corpus_hash: str) -> dict[str, Any]:
    """The resolved config minus where/how it runs, minus any key added after IDENTITY_V1 whose value is its
    default: what identity hashes."""
    c = OmegaConf.to_container(cfg, resolve=True)
    c = {k: v for k, v in c.items() if k not in _NOT_IDENTITY}
    defaults = _defaults()
    c["train"] = _group({k: v for k, v in c["train"].items() if k not in _NOT_IDENTITY_TRAIN}, "train",
                        defaults["train"])
    c["model"] = _group(dataclasses.asdict(model), "model", defaults["model"])
    data = {k: v for k, v in c["data"].items() if k not in _NOT_IDENTITY_DATA}
    c["data"] = _group({**data, "content_hash": corpus_hash}, "data", defaults["data"])
    return c


def _hash(c: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(c, sort_keys=True).encode()).hexdigest()[:16]


def identity(cfg: DictConfig, model: ModelConfig, corpus_hash: str) -> str:
    """Hash of what the run computes (see _computed). A cooldown branch (sweep.branching=true) computes
    something else than the independent run of the same config: its hash adds its trunk's."""
    c = _computed(cfg, model, corpus_hash)
    if branching_on(cfg):
        c["branch_of"] = trunk_identity(cfg, model, corpus_hash)
    return _hash(c)


# What a trunk does not depend on: its length is set by whichever branch needs it, it never cools down, and
# the final evaluation is its branches'.
_NOT_TRUNK_TRAIN = {"tokens", "flop_budget", "cooldown_fraction", "test_loops", "test_loops_dense"}


def trunk_identity(cfg: DictConfig, model: ModelConfig, corpus_hash: str) -> str:
    """Hash of a trunk (experiments.training.branching): every branch of one (model, µ_rec, seed, lr, warm-up,
    data, ...) shares it, whatever its budget."""
    c = _computed(cfg, model, corpus_hash)
    c["train"] = {k: v for k, v in c["train"].items() if k not in _NOT_TRUNK_TRAIN}
    return _hash({**c, "trunk": True})


def replicate_identity(cfg: DictConfig, model: ModelConfig, corpus_hash: str) -> str:
    """Hash of a grid point without its seed: the replicates of sweep.seeds=K share it (tag replicate_of)."""
    c = _computed(cfg, model, corpus_hash)
    c["train"].pop("seed", None)
    return _hash({**c, "branch": branching_on(cfg)})
