"""The embedded corpus and the packed token stream.

With no network, the default corpus is what every Python install ships: the standard library's
sources, whose docstrings and `pydoc_data.topics` (the language reference) are its documentation.
The corpus is built deterministically (sorted paths), split train/validation by document (a hash of
the path, so adding a file never moves another), cached as raw bytes, and identified by a content
hash that every run records.
"""

from __future__ import annotations

import hashlib
import json
import os
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

# A document ends with this byte. NUL never occurs in the stdlib's text sources.
DOC_SEPARATOR = 0
VOCAB_SIZE = 256  # byte-level tokenizer

_EXCLUDED_TOP = {"site-packages", "test", "__pycache__"}


class ByteTokenizer:
    """Bytes are tokens: vocab 256, lossless, no training, the same on every machine."""

    vocab_size = VOCAB_SIZE

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


def stdlib_documents(root: Path | None = None) -> list[tuple[str, bytes]]:
    """(relative path, bytes) of every stdlib source file, in a fixed order, test suites excluded."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    docs = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] in _EXCLUDED_TOP or "tests" in rel.parts or "test" in rel.parts:
            continue
        data = path.read_bytes().replace(bytes([DOC_SEPARATOR]), b"")
        docs.append((rel.as_posix(), data))
    if not docs:
        raise FileNotFoundError(f"no Python sources found under {root}: is the standard library installed?")
    return docs


def is_validation(name: str, val_percent: float) -> bool:
    bucket = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big") % 10_000
    return bucket < val_percent * 100


@dataclass(frozen=True)
class Corpus:
    """Token arrays of one split each, and the content hash of the whole corpus."""

    train: np.ndarray
    val: np.ndarray
    content_hash: str
    n_train_docs: int
    n_val_docs: int


def _join(docs: list[bytes]) -> np.ndarray:
    sep = bytes([DOC_SEPARATOR])
    return np.frombuffer(sep.join(docs) + sep, dtype=np.uint8)


def build_corpus(cache_dir: Path, val_percent: float = 2.0, root: Path | None = None) -> Corpus:
    """Build (or load from cache) the embedded corpus."""
    docs = stdlib_documents(root)
    digest = hashlib.sha256()
    for name, data in docs:
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    digest.update(f"val_percent={val_percent}".encode())
    content_hash = digest.hexdigest()[:16]

    entry = Path(cache_dir) / f"stdlib-{content_hash}"
    meta_path = entry / "meta.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        return Corpus(
            train=np.fromfile(entry / "train.bin", dtype=np.uint8),
            val=np.fromfile(entry / "val.bin", dtype=np.uint8),
            content_hash=content_hash,
            n_train_docs=meta["n_train_docs"],
            n_val_docs=meta["n_val_docs"],
        )

    train_docs = [d for n, d in docs if not is_validation(n, val_percent)]
    val_docs = [d for n, d in docs if is_validation(n, val_percent)]
    corpus = Corpus(_join(train_docs), _join(val_docs), content_hash, len(train_docs), len(val_docs))
    # Written to a temporary folder and renamed, so parallel first builds never see half a cache.
    tmp = entry.with_name(f"{entry.name}.tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    corpus.train.tofile(tmp / "train.bin")
    corpus.val.tofile(tmp / "val.bin")
    (tmp / "meta.json").write_text(json.dumps({"n_train_docs": len(train_docs), "n_val_docs": len(val_docs)}))
    try:
        tmp.rename(entry)
    except OSError:  # another process won the race; its cache is identical
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
    return corpus


class PackedStream:
    """Fixed-length rows cut from one split, visited in a seeded order that is a function of the step.

    The batch of step s is fully determined by (seed, s), so the data position of a checkpoint is just
    its step and a resumed run sees exactly the batches the uninterrupted run would have seen.
    """

    def __init__(self, tokens: np.ndarray, seq_len: int, seed: int):
        self.tokens = torch.from_numpy(tokens.astype(np.int64))
        self.seq_len = seq_len
        self.seed = seed
        self.n_rows = (len(tokens) - 1) // seq_len
        if self.n_rows < 1:
            raise ValueError(f"split has {len(tokens)} tokens, fewer than one row of {seq_len + 1}")
        self._perm_epoch = -1
        self._perm: np.ndarray | None = None

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n_rows)
            self._perm_epoch = epoch
        return self._perm

    def rows(self, row_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.tensor(row_ids) * self.seq_len
        idx = starts[:, None] + torch.arange(self.seq_len + 1)[None, :]
        window = self.tokens[idx]
        return window[:, :-1], window[:, 1:]

    def batch(self, step: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        first = step * batch_size
        ids = []
        for k in range(first, first + batch_size):
            epoch, pos = divmod(k, self.n_rows)
            ids.append(int(self._permutation(epoch)[pos]))
        return self.rows(ids)

    def head(self, n_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first n_rows rows in file order: a fixed validation set."""
        return self.rows(list(range(min(n_rows, self.n_rows))))
