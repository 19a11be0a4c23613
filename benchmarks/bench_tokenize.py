"""Benchmark of tokenising a local text corpus into shards (experiments.data.shards) with worker processes.

    .venv/bin/python benchmarks/bench_tokenize.py [--mb 100] [--workers 2] [--repeats 3] [--vocab 32768]
        [--encoder tokenizers|tiktoken]

1. Writes a deterministic ~100 MB text corpus: the embedded corpus's documents (the standard library's
   sources), copied over and over, each copy perturbed (a header naming the copy, identifiers suffixed
   with the copy number) so that the text is not one block repeated.
2. Trains a byte-level BPE (Parcae arXiv 2604.12946 App. Q split rule) on a 5 MB sample of it.
3. Reads the corpus through the text source and builds the shards from scratch --repeats times, each in
   a fresh folder, with --workers processes; prints JSON with the median MB/s (input text bytes per
   second of the whole build: reading, tokenising, writing shards and markers).
Target: ≥ 5 MB/s for 100 MB with 2 workers.

On a shared machine the wall-clock rate says as much about the neighbours as about the code, so the
CPU time of the build (this process + its workers) is reported too: `mb_per_cpu_s` is the rate per busy
core, and `projected_mb_per_s` = workers × mb_per_cpu_s the rate with `workers` cores to ourselves.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_NUM_THREADS", "1")

from omegaconf import OmegaConf  # noqa: E402

from experiments.data import shards  # noqa: E402
from experiments.data import sources  # noqa: E402
from experiments.data import tokenizer as tokenizers  # noqa: E402
from experiments.config.schema import DataSchema  # noqa: E402
from experiments.data.corpus import stdlib_documents  # noqa: E402

SEPARATOR = "\n\x1e\n"  # ASCII record separator between documents: never in the sources
_IDENT = re.compile(r"\b(self|def|return|import)\b")


def write_corpus(path: Path, megabytes: float) -> int:
    docs = [d.decode("utf-8", "replace") for _, d in stdlib_documents()]
    target, written, copy = int(megabytes * 1e6), 0, 0
    with open(path, "w", encoding="utf-8") as f:
        while written < target:
            for i, doc in enumerate(docs):
                text = f"# copy {copy} of document {i}\n" + _IDENT.sub(lambda m: f"{m.group(1)}{copy}", doc)
                f.write(text + SEPARATOR)
                written += len(text.encode("utf-8")) + len(SEPARATOR)
                if written >= target:
                    break
            copy += 1
    return path.stat().st_size


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=float, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--vocab", type=int, default=32768)
    ap.add_argument("--shard-docs", type=int, default=4096)
    ap.add_argument("--shard-chars", type=int, default=4_000_000)
    ap.add_argument("--encoder", choices=tokenizers.ENCODERS, default="tiktoken")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-tokenize-"))
    try:
        corpus = work / "corpus.txt"
        size = write_corpus(corpus, args.mb)
        data = OmegaConf.merge(OmegaConf.structured(DataSchema),
                               {"source": "text", "paths": [str(corpus)], "text_separator": SEPARATOR})
        sample, used = [], 0
        for doc in sources.documents(data, work):
            sample.append(doc)
            used += len(doc)
            if used > 5e6:
                break
        t0 = time.perf_counter()
        tok = tokenizers.with_encoder(tokenizers.train_bpe(iter(sample), args.vocab), args.encoder)
        train_s = time.perf_counter() - t0
        times, cpu = [], []
        for r in range(args.repeats):
            out = work / f"shards-{r}"
            t0, c0 = time.perf_counter(), _cpu_seconds()
            built = shards.build_shards(sources.documents(data, work), tok, out, shard_docs=args.shard_docs,
                                        shard_chars=args.shard_chars, workers=args.workers, val_percent=1.0,
                                        description={}, progress=False)
            times.append(time.perf_counter() - t0)
            cpu.append(_cpu_seconds() - c0)  # the pool is shut down: its workers' time is counted
            tokens = built.total("train_tokens") + built.total("val_tokens")
            shutil.rmtree(out)
        median = statistics.median(times)
        print(json.dumps({
            "corpus_mb": round(size / 1e6, 1), "workers": args.workers, "vocab": args.vocab, "encoder": args.encoder,
            "bpe_train_s_on_5mb": round(train_s, 2), "runs_s": [round(t, 2) for t in times],
            "median_s": round(median, 2), "mb_per_s": round(size / 1e6 / median, 2),
            "cpu_s": [round(c, 2) for c in cpu], "mb_per_cpu_s": round(size / 1e6 / statistics.median(cpu), 2),
            "projected_mb_per_s": round(max(args.workers, 1) * size / 1e6 / statistics.median(cpu), 2),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "tokens": tokens, "bytes_per_token": round(size / tokens, 3), "cpu_count": os.cpu_count(),
            "target_mb_per_s": 5.0, "meets_target": size / 1e6 / median >= 5.0,
        }, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
