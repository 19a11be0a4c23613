"""Everything about data.* that can be checked before any work starts (called by experiments.config.plan)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from experiments.config.errors import ConfigError
from experiments.data import sources
from experiments.data import tokenizer as tokenizers


def validate(data, model_vocab: int) -> None:
    sources.check(data)
    if data.tokenizer not in ("byte", "bpe"):
        raise ConfigError("data.tokenizer", data.tokenizer, "unknown tokenizer", "use byte or bpe")
    if data.source == "stdlib":  # the embedded corpus is always byte tokens
        _check_vocab(256, model_vocab)
        return
    _check_encoder(data.encoder)
    for key, low in (("shard_docs", 1), ("shard_chars", 1), ("workers", 0), ("pack_buffer", 1), ("tokenizer_train_chars", 1)):
        if data[key] < low:
            raise ConfigError(f"data.{key}", data[key], f"must be ≥ {low}", f"set data.{key} ≥ {low}")
    if data.tokenizer == "byte":
        vocab = 256
    elif data.tokenizer_path:
        if not Path(data.tokenizer_path).is_file():
            raise ConfigError("data.tokenizer_path", data.tokenizer_path, "no such file",
                              "point it at a tokenizer.json (e.g. a run dir's), or null to train one")
        vocab = tokenizers.load(data.tokenizer_path).vocab_size
    else:
        vocab = data.bpe_vocab_size
        if vocab <= 256 + len(tokenizers.SPECIALS):
            raise ConfigError("data.bpe_vocab_size", vocab, "too small for 256 bytes + specials", "e.g. 32768")
    _check_vocab(vocab, model_vocab)


def _check_vocab(vocab: int, model_vocab: int) -> None:
    if vocab > model_vocab:
        raise ConfigError("model.vocab_size", model_vocab,
                          f"smaller than the tokenizer's vocabulary ({vocab} tokens)",
                          f"set model.vocab_size={vocab} (or a larger multiple of 64)")


def _check_encoder(encoder: str) -> None:
    if encoder not in tokenizers.ENCODERS:
        raise ConfigError("data.encoder", encoder, "unknown encoder", f"use one of {', '.join(tokenizers.ENCODERS)}")
    if encoder == "tiktoken" and importlib.util.find_spec("tiktoken") is None:
        raise ConfigError("data.encoder", encoder, "tiktoken is not installed",
                          "pip install tiktoken, or use data.encoder=tokenizers")
