"""Document packing (best fit, as Parcae arXiv 2604.12946 App. Q trains) into fixed rows, and the stream of rows a run trains on.

Every document arrives as BOS + text + EOS. A row of `row_len` tokens is filled from a buffer of
`buffer_docs` documents: the largest document that still fits goes in next; when none fits, the
shortest one is cropped to fill the row. Unlike a plain crop, the cropped tail goes back into the
buffer behind a fresh BOS, so no token of the corpus is lost (only the last, partial row is dropped)
and every row starts with BOS. Rows are written once to a memory-mapped file next to the shards.

`RowStream` visits those rows like `experiments.data.corpus.PackedStream` visits the embedded corpus: the batch
of step s is a pure function of (seed, s), a fresh permutation per epoch, so the data position of a
checkpoint is its step. The position and the shard set's hash are stored in checkpoints anyway, and a
resume against different shards is refused.
"""

from __future__ import annotations

import bisect
import itertools
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from experiments.data.corpus import PackedStream


def pack_best_fit(docs: Iterable[np.ndarray], row_len: int, buffer_docs: int, bos_id: int) -> Iterator[np.ndarray]:
    """Rows of exactly row_len tokens from documents that each start with BOS."""
    source = iter(docs)
    keys: list[tuple[int, int]] = []  # (length, arrival): sorted, so ties break by arrival order
    pieces: dict[int, np.ndarray] = {}
    arrival = itertools.count()

    def add(piece: np.ndarray) -> None:
        key = (len(piece), next(arrival))
        bisect.insort(keys, key)
        pieces[key[1]] = piece

    def take(pos: int) -> np.ndarray:
        return pieces.pop(keys.pop(pos)[1])

    while True:
        for doc in itertools.islice(source, max(buffer_docs - len(keys), 0)):
            add(np.asarray(doc))
        if not keys:
            return
        row, space = [], row_len
        while space > 0 and keys:
            fit = bisect.bisect_right(keys, (space, float("inf"))) - 1
            if fit >= 0:
                piece = take(fit)
                row.append(piece)
                space -= len(piece)
            else:
                piece = take(0)  # the shortest; longer than the space left
                row.append(piece[:space])
                add(np.concatenate([np.asarray([bos_id], dtype=piece.dtype), piece[space:]]))
                space = 0
        if space > 0:
            return  # the corpus ran out inside the last row
        yield np.concatenate(row)


def write_rows(rows: Iterable[np.ndarray], path: Path, dtype: np.dtype, row_len: int) -> np.ndarray:
    """Write rows to `path` (atomically) and return them memory-mapped as (n_rows, row_len)."""
    if not path.exists():
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        with open(tmp, "wb") as f:
            for row in rows:
                f.write(row.astype(dtype, copy=False).tobytes())
        tmp.replace(path)
    if path.stat().st_size == 0:  # no row at all (the caller says which split is too small)
        return np.zeros((0, row_len), dtype=dtype)
    flat = np.memmap(path, dtype=dtype, mode="r")
    return flat.reshape(-1, row_len)


class RowStream(PackedStream):
    """Packed rows (n_rows, seq_len + 1) visited in a seeded per-epoch order; inputs/labels are a row
    shifted by one. Batches, epochs and heads are PackedStream's; only the row store differs."""

    def __init__(self, rows: np.ndarray, seed: int, content_hash: str):
        if len(rows) < 1:
            raise ValueError("no packed rows: the split has fewer tokens than one row")
        self.packed = rows
        self.seq_len = rows.shape[1] - 1
        self.seed = seed
        self.n_rows = len(rows)
        self.content_hash = content_hash
        self._perm_epoch = -1
        self._perm = None

    def rows(self, row_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        window = torch.from_numpy(self.packed[np.asarray(row_ids)].astype(np.int64))
        return window[:, :-1], window[:, 1:]


def data_position(stream, step: int, batch_size: int) -> dict:
    """Where a run stands in its data after `step` optimizer steps (stored in each checkpoint)."""
    epoch, row = divmod(step * batch_size, stream.n_rows)
    return {"step": step, "epoch": epoch, "row": row, "n_rows": stream.n_rows,
            "content_hash": getattr(stream, "content_hash", None)}


def check_data_position(stream, saved: dict | None) -> None:
    """Refuse to resume a checkpoint against a different data set: the batches would not be the same."""
    if not saved:
        return
    now = {"content_hash": getattr(stream, "content_hash", None), "n_rows": stream.n_rows}
    for key, value in now.items():
        if saved.get(key) != value:
            raise RuntimeError(
                f"the checkpoint was written against other data ({key}: checkpoint {saved.get(key)!r}, now "
                f"{value!r}); resuming would not see the same tokens. Rebuild the original shards "
                f"(data.shard_dir) or start a fresh run (delete the run dir)")
