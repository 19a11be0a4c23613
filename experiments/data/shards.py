"""Tokenised shards on disk: parallel tokenisation into memory-mappable uint16/uint32 files.

Documents are cut into consecutive chunks (at most `shard_docs` documents and about `shard_chars`
characters: the chunking depends only on the documents); worker processes tokenise a chunk each (as
BOS + text + EOS) and write, per split, the concatenated tokens (`NNNNN.<split>.bin`) and the document
lengths (`NNNNN.<split>.len.npy`), then a small `NNNNN.json` marker last. A rebuild skips every shard
whose marker exists, so an interrupted build resumes; `manifest.json`, written at the end, lists the
shards and the content hash of the whole set (what a run's identity records).

The train/validation split is by document content (a hash of the text), so it does not depend on the
order, the chunking or the number of workers. Workers import nothing but numpy and the tokenizer.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from experiments.data import tokenizer as tokenizers
from experiments.training.progress import Progress

SPLITS = ("train", "val")
MANIFEST = "manifest.json"

_worker_tokenizer = None


def is_validation_text(text: str, val_percent: float) -> bool:
    bucket = int.from_bytes(hashlib.sha256(text.encode("utf-8", "replace")).digest()[:4], "big") % 10_000
    return bucket < val_percent * 100


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    write(tmp)
    tmp.replace(path)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would append .npy to the temporary name
        np.save(f, array)


def tokenize_shard(tok, out_dir: Path, index: int, texts: list[str], val_percent: float) -> dict:
    """Tokenise one chunk of documents into its shard files; returns (and writes) its marker."""
    dtype = tokenizers.token_dtype(tok.vocab_size)
    is_val = [is_validation_text(t, val_percent) for t in texts]
    ids = tok.encode_batch(texts)
    marker: dict = {"index": index, "n_docs": len(texts)}
    digest = hashlib.sha256()
    for split in SPLITS:
        keep = [i for i, v in enumerate(is_val) if v == (split == "val")]
        lengths = np.array([len(ids[i]) + 2 for i in keep], dtype=np.int64)
        bos, eos = np.array([tok.bos_id], dtype=dtype), np.array([tok.eos_id], dtype=dtype)
        parts = [a for i in keep for a in (bos, np.asarray(ids[i], dtype=dtype), eos)]
        flat = np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)
        _write_atomic(out_dir / f"{index:05d}.{split}.bin", flat.tofile)
        _write_atomic(out_dir / f"{index:05d}.{split}.len.npy", lambda p: _save_npy(p, lengths))
        digest.update(flat.tobytes() + lengths.tobytes())
        marker[f"{split}_docs"] = len(keep)
        marker[f"{split}_tokens"] = int(lengths.sum())
        marker[f"{split}_bytes"] = sum(len(texts[i].encode("utf-8", "replace")) for i in keep)
    marker["sha256"] = digest.hexdigest()
    _write_atomic(out_dir / f"{index:05d}.json", lambda p: p.write_text(json.dumps(marker)))
    return marker


def _init_worker(tok_json: str, encoder: str) -> None:
    global _worker_tokenizer
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one core per worker process; workers are the parallelism
    _worker_tokenizer = tokenizers.from_json(tok_json, encoder)


def _worker_context():
    """fork on Linux: a spawned worker re-imports the main module (torch, hydra, mlflow under pretrain:
    seconds of CPU per worker); workers run only numpy and the tokenizer, which is safe after fork
    (`tokenizers` turns its own thread pool off in a forked child). spawn elsewhere (macOS)."""
    return get_context("fork" if sys.platform == "linux" else "spawn")


def _worker_shard(out_dir: str, index: int, texts: list[str], val_percent: float) -> dict:
    return tokenize_shard(_worker_tokenizer, Path(out_dir), index, texts, val_percent)


class EmptySource(ValueError):
    """The source holds no document with text."""


@dataclass(frozen=True)
class ShardSet:
    """A finished set of shards: the directory, its manifest, and readers for each split."""

    dir: Path
    manifest: dict

    @property
    def content_hash(self) -> str:
        return self.manifest["content_hash"]

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.manifest["dtype"])

    def documents(self, split: str) -> Iterator[np.ndarray]:
        """Each document's tokens (BOS … EOS), shard by shard, memory-mapped."""
        for shard in self.manifest["shards"]:
            stem = self.dir / f"{shard['index']:05d}.{split}"
            if shard[f"{split}_tokens"] == 0:
                continue
            tokens = np.memmap(f"{stem}.bin", dtype=self.dtype, mode="r")
            lengths = np.load(f"{stem}.len.npy")
            ends = np.cumsum(lengths)
            starts = ends - lengths
            for a, b in zip(starts, ends):
                yield tokens[a:b]

    def total(self, key: str) -> int:
        return sum(s[key] for s in self.manifest["shards"])


def _chunks(docs: Iterable[str], max_docs: int, max_chars: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    chars = 0
    for d in docs:
        chunk.append(d)
        chars += len(d)
        if len(chunk) == max_docs or chars >= max_chars:
            yield chunk
            chunk, chars = [], 0
    if chunk:
        yield chunk


def load_shards(out_dir: Path) -> ShardSet | None:
    path = Path(out_dir) / MANIFEST
    return ShardSet(Path(out_dir), json.loads(path.read_text())) if path.exists() else None


def build_shards(docs: Iterable[str], tok, out_dir: Path, *, shard_docs: int, workers: int, val_percent: float,
                 description: dict, shard_chars: int = 4_000_000, progress: bool = True) -> ShardSet:
    """Tokenise `docs` into shards under out_dir (skipping finished ones) and write the manifest.

    workers=0 tokenises in this process; otherwise `workers` processes each take one chunk at a time, at
    most two chunks per worker in flight (memory stays bounded on corpora of any size)."""
    done = load_shards(out_dir)
    if done is not None:
        return done
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pool = None
    if workers > 0:
        pool = ProcessPoolExecutor(workers, mp_context=_worker_context(), initializer=_init_worker,
                                   initargs=(tok.to_json(), getattr(tok, "encoder", "tokenizers")))
        pool.submit(os.getpid).result()  # every worker starts now, before any reader or progress thread
    markers: dict[int, dict] = {}
    # A bar on a terminal, plain lines elsewhere (experiments.training.progress); the total is unknown
    # until the source is read, so bytes, rate and elapsed time, no ETA.
    bar = Progress(f"tokenising → {out_dir.name}", unit="B", scale=True, enabled=progress)

    def finished(marker: dict) -> None:
        markers[marker["index"]] = marker
        bar.advance(marker["train_bytes"] + marker["val_bytes"])

    pending: set[Future] = set()
    try:
        for index, texts in enumerate(_chunks(docs, shard_docs, shard_chars)):
            marker_path = out_dir / f"{index:05d}.json"
            if marker_path.exists():  # finished by an earlier, interrupted build
                finished(json.loads(marker_path.read_text()))
                continue
            if pool is None:
                finished(tokenize_shard(tok, out_dir, index, texts, val_percent))
                continue
            if len(pending) >= 2 * workers:
                ready, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in ready:
                    finished(f.result())
            pending.add(pool.submit(_worker_shard, str(out_dir), index, texts, val_percent))
        for f in pending:
            finished(f.result())
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        bar.close()
    if not markers:
        raise EmptySource(f"the source yielded no documents ({description})")
    shards = [markers[i] for i in sorted(markers)]
    digest = hashlib.sha256(tok.content_hash.encode())
    for s in shards:
        digest.update(s["sha256"].encode())
    manifest = {"content_hash": digest.hexdigest()[:16], "dtype": tokenizers.token_dtype(tok.vocab_size).name,
                "tokenizer": tok.content_hash, "vocab_size": tok.vocab_size, "val_percent": val_percent,
                "source": description, "shards": shards}
    _write_atomic(out_dir / MANIFEST, lambda p: p.write_text(json.dumps(manifest, indent=1)))
    return ShardSet(out_dir, manifest)
