"""Tokenizers for real corpora: bytes, or a byte-level BPE trained with Hugging Face `tokenizers`.

The BPE follows Parcae (arXiv 2604.12946 App. R): byte-level, no normaliser, a GPT-4-style split rule with digits grouped
one or two at a time, specials <|bos|>, <|eos|>, <|pad|> (text that spells a special is encoded as plain
text, never as the special). It encodes with `tokenizers`, or, with encoder="tiktoken" (optional package),
with tiktoken built from the same vocabulary: about 4× faster per core, the same ids on the embedded
corpus (tests/data check it when tiktoken is installed). Both tokenizers expose the same small surface
(encode_batch, decode, vocab_size, bos_id, eos_id, token_bytes) so shards, packing, bits per byte and
evaluation never ask which one they hold. Nothing here imports torch: shard workers start fast.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

# GPT-4's pre-tokenisation split with digits in groups of 1–2 (not 1–3), as Parcae App. R (arXiv 2604.12946) says.
SPLIT_PATTERN = (r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*"
                 r"|\s*[\r\n]|\s+(?!\S)|\s+")
SPECIALS = ("<|bos|>", "<|eos|>", "<|pad|>")
BYTE_SEPARATOR = 0  # the byte tokenizer's document boundary, as in the embedded corpus
ENCODERS = ("tokenizers", "tiktoken")


def _byte_level_alphabet() -> dict[str, int]:
    """The byte-level alphabet (GPT-2's printable stand-in for every byte) back to the bytes."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {**{chr(b): b for b in printable}, **{chr(256 + k): b for k, b in enumerate(others)}}


def _tiktoken_encoding(tok):
    import tiktoken

    alphabet = _byte_level_alphabet()
    ranks = {bytes(alphabet[c] for c in token): i for token, i in tok.get_vocab().items() if token not in SPECIALS}
    return tiktoken.Encoding("parcae-bpe", pat_str=SPLIT_PATTERN, mergeable_ranks=ranks, special_tokens={})


class ByteLevel:
    """Bytes are tokens (vocab 256). NUL marks a document's start and end, so it is removed from text."""

    kind = "byte"
    vocab_size = 256
    bos_id = eos_id = BYTE_SEPARATOR

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [list(t.encode("utf-8").replace(b"\0", b"")) for t in texts]

    def encode(self, text: str) -> list[int]:
        return self.encode_batch([text])[0]

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    def token_bytes(self) -> np.ndarray:
        out = np.ones(256, dtype=np.int64)
        out[BYTE_SEPARATOR] = 0
        return out

    def to_json(self) -> str:
        return json.dumps({"kind": "byte"})

    @property
    def content_hash(self) -> str:
        return "byte"


class BPE:
    """A trained byte-level BPE (a `tokenizers.Tokenizer`) with our specials."""

    kind = "bpe"

    def __init__(self, tok, encoder: str = "tokenizers"):
        if encoder not in ENCODERS:
            raise ValueError(f"unknown encoder {encoder!r}: use one of {ENCODERS}")
        tok.encode_special_tokens = True  # "<|bos|>" inside a document is text, as tiktoken's ordinary encoding
        self.tok = tok
        self.encoder = encoder
        self._tiktoken = _tiktoken_encoding(tok) if encoder == "tiktoken" else None
        self.vocab_size = tok.get_vocab_size()
        self.bos_id = tok.token_to_id(SPECIALS[0])
        self.eos_id = tok.token_to_id(SPECIALS[1])
        self.pad_id = tok.token_to_id(SPECIALS[2])
        if None in (self.bos_id, self.eos_id, self.pad_id):
            raise ValueError(f"tokenizer lacks the special tokens {SPECIALS}: train it with experiments.data.tokenizer")

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        if self._tiktoken is not None:
            return self._tiktoken.encode_ordinary_batch(texts, num_threads=1)  # worker processes are the parallelism
        # The fast path skips offsets and alignments, which shards never use (≈ 2× faster).
        return [e.ids for e in self.tok.encode_batch_fast(texts, add_special_tokens=False)]

    def encode(self, text: str) -> list[int]:
        return self.encode_batch([text])[0]

    def decode(self, ids: Iterable[int]) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def token_bytes(self) -> np.ndarray:
        """UTF-8 bytes each token stands for: in the byte-level alphabet one character is one byte;
        specials stand for none."""
        out = np.zeros(self.vocab_size, dtype=np.int64)
        for token, i in self.tok.get_vocab().items():
            out[i] = 0 if token in SPECIALS else len(token)
        return out

    def to_json(self) -> str:
        return self.tok.to_str()

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]


def _new_bpe():
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.BPE(byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    return tok


def train_bpe(texts: Iterator[str], vocab_size: int, doc_cap_chars: int = 10_000) -> BPE:
    """Train a byte-level BPE of exactly `vocab_size` tokens (256 bytes + specials + merges) on `texts`,
    each capped at doc_cap_chars characters (Parcae arXiv 2604.12946 App. R caps at 10,000)."""
    from tokenizers import pre_tokenizers, trainers

    minimum = 256 + len(SPECIALS)
    if vocab_size <= minimum:
        raise ValueError(f"a BPE vocab must exceed {minimum} (bytes + specials), got {vocab_size}")
    tok = _new_bpe()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIALS), min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator((t[:doc_cap_chars] for t in texts), trainer=trainer)
    return BPE(tok)


def load(path_or_kind: str | os.PathLike, encoder: str = "tokenizers") -> ByteLevel | BPE:
    """'byte', or a tokenizer.json written by save()."""
    if str(path_or_kind) == "byte":
        return ByteLevel()
    return from_json(Path(path_or_kind).read_text(), encoder)


def from_json(text: str, encoder: str = "tokenizers") -> ByteLevel | BPE:
    if json.loads(text).get("kind") == "byte":
        return ByteLevel()
    from tokenizers import Tokenizer

    return BPE(Tokenizer.from_str(text), encoder)


def with_encoder(tokenizer: ByteLevel | BPE, encoder: str) -> ByteLevel | BPE:
    return tokenizer if tokenizer.kind == "byte" else BPE(tokenizer.tok, encoder)


def save(tokenizer: ByteLevel | BPE, path: Path) -> Path:
    """Write atomically (temp file + rename): a parallel reader never sees half a tokenizer."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_text(tokenizer.to_json())
    tmp.replace(path)
    return path


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 while every id fits, else uint32: half the disk and memory for vocabularies ≤ 65,536."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)
