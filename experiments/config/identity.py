"""A run's identity: the hash of what it computes, which names its run dir (runs/<hash>)."""

from __future__ import annotations

import dataclasses
import hashlib
import json

from omegaconf import DictConfig, OmegaConf

from parcae import ModelConfig

# Keys that say where or how a run executes, not what it computes: excluded from its identity.
_NOT_IDENTITY = {"tracking", "paths", "sweep_id", "hydra", "launcher"}
_NOT_IDENTITY_TRAIN = {"threads", "device", "checkpoint_every", "micro_batch_size", "precision", "compile",
                       "activation_checkpointing"}
_NOT_IDENTITY_DATA = {"workers", "shard_dir", "streaming", "encoder"}  # how the data is built, not what it is



def identity(cfg: DictConfig, model: ModelConfig, corpus_hash: str) -> str:
    """Hash of what the run computes: the resolved config minus where/how it runs."""
    c = OmegaConf.to_container(cfg, resolve=True)
    c = {k: v for k, v in c.items() if k not in _NOT_IDENTITY}
    c["train"] = {k: v for k, v in c["train"].items() if k not in _NOT_IDENTITY_TRAIN}
    c["model"] = dataclasses.asdict(model)
    c["data"] = {k: v for k, v in c["data"].items() if k not in _NOT_IDENTITY_DATA}
    c["data"]["content_hash"] = corpus_hash
    return hashlib.sha256(json.dumps(c, sort_keys=True).encode()).hexdigest()[:16]
