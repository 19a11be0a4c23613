"""A run's data, whatever the source: tokenizer → shards → packed rows → train stream and validation set.

`data.source=stdlib` (the default) is the embedded corpus exactly as before (byte tokens, PackedStream).
Every other source goes source documents → tokenizer (bytes, a given tokenizer.json, or a BPE trained on
the source and cached) → shards (parallel, resumable) → best-fit packed rows → RowStream. All of it is
cached under paths.cache, keyed by what it is made from, so a sweep's jobs share one build.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf

from experiments.data import bpb
from experiments.data import shards
from experiments.data import sources
from experiments.data import tokenizer as tokenizers
from experiments.config.errors import ConfigError
from experiments.config.launch_env import env_rank
from experiments.data.corpus import PackedStream, build_corpus
from experiments.data.packing import RowStream, pack_best_fit, write_rows

log = logging.getLogger("experiments.data.run_data")
WAIT_POLL_S = 5.0  # how often the other ranks of a data-parallel launch look for rank 0's finished data


@dataclass
class RunData:
    train: PackedStream
    val: tuple[torch.Tensor, torch.Tensor]
    content_hash: str
    tokenizer: tokenizers.ByteLevel | tokenizers.BPE
    tokens_per_byte: float  # of the validation labels, for bits per byte


def _key(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _sample(docs, budget_chars: int, doc_chars: int):
    """The first documents, up to budget_chars characters counted after capping each at doc_chars."""
    used = 0
    for d in docs:
        if used >= budget_chars:
            return
        used += min(len(d), doc_chars)
        yield d


def _tokenizer(data, cache: Path):
    return tokenizers.with_encoder(_base_tokenizer(data, cache), data.encoder)


def _base_tokenizer(data, cache: Path):
    if data.tokenizer == "byte":
        return tokenizers.ByteLevel()
    if data.tokenizer_path:
        return tokenizers.load(data.tokenizer_path)
    spec = {"source": sources.fingerprint(data), "vocab": data.bpe_vocab_size,
            "chars": data.tokenizer_train_chars, "doc_chars": data.tokenizer_doc_chars}
    path = cache / "tokenizers" / _key(spec) / "tokenizer.json"
    if path.exists():
        return tokenizers.load(path)
    log.info("training a %d-token BPE on ≤ %d characters of %s", data.bpe_vocab_size, data.tokenizer_train_chars,
             data.source)
    docs = _sample(sources.documents(data, cache / "hf"), data.tokenizer_train_chars, data.tokenizer_doc_chars)
    tok = tokenizers.train_bpe(docs, data.bpe_vocab_size, data.tokenizer_doc_chars)
    tokenizers.save(tok, path)
    (path.parent / "spec.json").write_text(json.dumps(spec, indent=1, default=str))
    return tok


def build_shard_set(data, cache: Path, progress: bool = True) -> tuple[shards.ShardSet, object]:
    """The source tokenised into shards (built, resumed, or found in the cache) and its tokenizer."""
    tok = _tokenizer(data, cache)
    spec = {"source": sources.fingerprint(data), "tokenizer": tok.content_hash, "shard_docs": data.shard_docs,
            "shard_chars": data.shard_chars, "val_percent": data.val_percent,
            "encoder": data.encoder if data.tokenizer == "bpe" else None}
    out = Path(data.shard_dir) if data.shard_dir else cache / "shards" / _key(spec)
    found = shards.load_shards(out)
    if found is not None and found.manifest["tokenizer"] != tok.content_hash:
        raise ConfigError("data.shard_dir", str(out), "holds shards of another tokenizer",
                          "point data.shard_dir at an empty folder, or null for the cache")
    try:
        built = found or _build(data, cache, tok, out, spec, progress)
    except shards.EmptySource:
        key = "data.hf_path" if data.source == "hf" else "data.paths"
        raise ConfigError(key, data.hf_path if data.source == "hf" else list(data.paths),
                          "the source holds no document with text (empty, whitespace only, or all filtered)",
                          "point it at files with text (check data.text_field for jsonl/parquet)") from None
    return built, tok


def _build(data, cache: Path, tok, out: Path, spec: dict, progress: bool) -> shards.ShardSet:
    return shards.build_shards(sources.documents(data, cache / "hf"), tok, out, shard_docs=data.shard_docs,
                               shard_chars=data.shard_chars, workers=data.workers,
                               val_percent=data.val_percent, description=spec, progress=progress)


def _packed(shard_set: shards.ShardSet, split: str, row_len: int, buffer_docs: int, bos_id: int):
    path = shard_set.dir / f"rows-{split}-{row_len}-{buffer_docs}.bin"
    rows = pack_best_fit(shard_set.documents(split), row_len, buffer_docs, bos_id)
    return write_rows(rows, path, shard_set.dtype, row_len)


def _rows_hash(shard_set: shards.ShardSet, row_len: int, buffer_docs: int) -> str:
    return _key({"shards": shard_set.content_hash, "row_len": row_len, "buffer": buffer_docs})


def load(cfg, root: Path, block_size: int) -> RunData:
    """The train stream, the fixed validation set, the content hash and the tokenizer of a run."""
    cache = root / cfg.paths.cache
    data, seed = cfg.data, cfg.train.seed
    if data.source == "stdlib":
        corpus = build_corpus(cache, data.val_percent)
        val = PackedStream(corpus.val, block_size, seed).head(data.val_rows)
        tok = tokenizers.ByteLevel()
        return RunData(PackedStream(corpus.train, block_size, seed), val, corpus.content_hash, tok,
                       bpb.tokens_per_byte(val[1], tok.token_bytes()))
    ready = cache / "ready" / _key({"data": OmegaConf.to_container(data, resolve=True), "block_size": block_size})
    if env_rank() > 0:
        _wait_for(ready)
    shard_set, tok = build_shard_set(data, cache)
    content = _rows_hash(shard_set, block_size + 1, data.pack_buffer)
    streams = {}
    for split in shards.SPLITS:
        rows = _packed(shard_set, split, block_size + 1, data.pack_buffer, tok.bos_id)
        if len(rows) == 0:
            raise ConfigError("data.val_percent" if split == "val" else "data.paths", data.val_percent,
                              f"the {split} split holds fewer tokens than one row of {block_size + 1}",
                              "use more documents, a larger data.val_percent, or a smaller model.block_size")
        streams[split] = RowStream(rows, seed, content)
    val = streams["val"].head(data.val_rows)
    ready.parent.mkdir(parents=True, exist_ok=True)
    ready.write_text(content)
    return RunData(streams["train"], val, content, tok, bpb.tokens_per_byte(val[1], tok.token_bytes()))


def _wait_for(ready: Path) -> None:
    """Other ranks of a data-parallel launch let rank 0 build the data (before any process group exists),
    then find it all in the cache. Prepare it beforehand (python -m experiments.prepare_data) to skip this."""
    if not ready.exists():
        log.info("rank %d waits for rank 0 to build the data (%s)", env_rank(), ready.name)
    while not ready.exists():
        time.sleep(WAIT_POLL_S)


def content_hash(cfg, root: Path, block_size: int) -> str:
    """A run's data hash (what its identity records), building missing shards on the way: a sweep's
    driver calls this once before its jobs start, so they find the shards built."""
    if cfg.data.source == "stdlib":
        return build_corpus(root / cfg.paths.cache, cfg.data.val_percent).content_hash
    shard_set, _ = build_shard_set(cfg.data, root / cfg.paths.cache)
    return _rows_hash(shard_set, block_size + 1, cfg.data.pack_buffer)
