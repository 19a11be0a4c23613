"""Where documents come from: local text, JSONL or parquet files, or a Hugging Face dataset.

JSONL, parquet and hub datasets all go through Hugging Face `datasets` (`load_dataset("json" |
"parquet" | <hub id>)`), streaming by default so that nothing is copied before tokenisation starts;
plain text is read directly (one document per file, or split on data.text_separator). Every source
yields documents in a fixed order, which is what makes shards and the run's token order reproducible.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from experiments.config.errors import ConfigError

SOURCES = ("stdlib", "text", "jsonl", "parquet", "hf")
_LOCAL = {"text", "jsonl", "parquet"}
_BUILDER = {"jsonl": "json", "parquet": "parquet"}
_FIX = {"jsonl": "parquet or data=text if the files are not one JSON object per line",
        "parquet": "jsonl or data=text if the files are not parquet"}


def local_files(data) -> list[Path]:
    """The files data.paths names (paths or globs, relative to the working directory), sorted; a
    ConfigError naming data.paths if one matches nothing."""
    if not data.paths:
        raise ConfigError("data.paths", [], f"data.source={data.source} needs files",
                          f"pass data.paths='[corpus/*.{data.source}]' (paths or globs)")
    files: list[Path] = []
    for pattern in data.paths:
        found = sorted(Path(p) for p in glob.glob(os.path.expanduser(str(pattern)), recursive=True))
        found = [p for p in found if p.is_file()]
        if not found:
            raise ConfigError("data.paths", list(data.paths), f"{pattern!r} matches no file",
                              "point data.paths at existing files (absolute paths are safest)")
        files += found
    return [p.resolve() for p in files]


def check(data) -> None:
    """Validate a source before any work starts."""
    if data.source not in SOURCES:
        raise ConfigError("data.source", data.source, "unknown source", f"use one of {', '.join(SOURCES)}")
    if data.source in _LOCAL:
        local_files(data)
    if data.source == "hf" and not data.hf_path:
        raise ConfigError("data.hf_path", data.hf_path, "data.source=hf needs a dataset",
                          "set data.hf_path=<hub id>, e.g. HuggingFaceFW/fineweb-edu (see conf/data/fineweb_edu.yaml)")
    if data.max_docs is not None and data.max_docs < 1:
        raise ConfigError("data.max_docs", data.max_docs, "must be ≥ 1 or null", "null reads the whole source")


def fingerprint(data) -> dict:
    """What identifies the documents a source yields: files by path, size and mtime; hub datasets by
    id, config, split and revision."""
    base = {"source": data.source, "text_field": data.text_field, "max_docs": data.max_docs}
    if data.source in _LOCAL:
        base["files"] = [(str(p), p.stat().st_size, int(p.stat().st_mtime)) for p in local_files(data)]
        base["text_separator"] = data.text_separator
    else:
        base.update(hf_path=data.hf_path, hf_name=data.hf_name, split=data.split, revision=data.hf_revision)
    return base


def _text_documents(data) -> Iterator[str]:
    for path in local_files(data):
        text = path.read_text(encoding="utf-8", errors="replace")
        if data.text_separator:
            yield from (d for d in text.split(data.text_separator) if d.strip())
        elif text.strip():
            yield text


def _dataset(data, cache_dir: Path):
    from datasets import load_dataset

    if data.source in _LOCAL:
        return load_dataset(_BUILDER[data.source], data_files=[str(p) for p in local_files(data)], split="train",
                            streaming=data.streaming, cache_dir=str(cache_dir))
    return load_dataset(data.hf_path, name=data.hf_name, split=data.split, streaming=data.streaming,
                        revision=data.hf_revision, cache_dir=str(cache_dir))


def _dataset_documents(data, cache_dir: Path) -> Iterator[str]:
    from datasets.exceptions import DatasetsError

    # `datasets` logs its own multi-line error before raising; the ConfigError below is the one line.
    quiet = logging.getLogger("datasets")
    level, quiet.level = quiet.level, logging.CRITICAL
    try:
        ds = _dataset(data, cache_dir)
        if ds.column_names is not None and data.text_field not in ds.column_names:
            raise ConfigError("data.text_field", data.text_field, f"no such column (columns: {ds.column_names})",
                              "set data.text_field to the column that holds the text")
        for batch in ds.iter(batch_size=1024):
            if data.text_field not in batch:  # streaming: the columns are known only once read
                raise ConfigError("data.text_field", data.text_field, f"no such column (columns: {list(batch)})",
                                  "set data.text_field to the column that holds the text")
            yield from (t for t in batch[data.text_field] if t)
    except (ValueError, OSError, DatasetsError) as err:  # pyarrow's ArrowInvalid is a ValueError
        if isinstance(err, ConfigError) or data.source not in _LOCAL:
            raise
        cause = err.__cause__ or err
        raise ConfigError("data.paths", list(data.paths), f"cannot be read as {data.source} "
                          f"({type(cause).__name__}: {' '.join(str(cause).split())[:200]})",
                          f"fix or remove the malformed file, or use data={_FIX[data.source]}") from None
    finally:
        quiet.level = level


def documents(data, cache_dir: Path) -> Iterator[str]:
    """The source's documents in their fixed order (at most data.max_docs)."""
    it = _text_documents(data) if data.source == "text" else _dataset_documents(data, cache_dir)
    for i, doc in enumerate(it):
        if data.max_docs is not None and i >= data.max_docs:
            return
        yield doc
