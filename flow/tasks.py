"""Fine-tuning tasks as (prompt, response) pairs, and their encoding with the prompt masked.

- `arithmetic`: a deterministic embedded task (no download): "a+b=" → "c", drawn with a fixed seed. Small
  enough for a tiny byte-level model to learn in a few hundred steps, which is what the laptop path needs.
- `load_jsonl`: instruction data from a JSONL file (keys configurable).
- `load_metamathqa` / `load_gsm8k`: Hugging Face datasets for real use (MetaMathQA to train, GSM8K to
  evaluate), loaded only when asked for; `datasets` fetches them (or reads its cache).
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

# The Alpaca-style template the reference code formats MetaMathQA with (FLOW arXiv 2502.02797), in our words.
ALPACA_PROMPT = ("Below is an instruction that describes a task. Write a response that appropriately "
                 "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n")


@dataclass(frozen=True)
class Example:
    prompt: str
    response: str
    answer: str  # the final answer that exact match compares against


class Tokenizer(Protocol):
    eos_id: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


def arithmetic(n: int, seed: int, max_operand: int = 99, min_operand: int = 0) -> list[Example]:
    """n distinct additions 'a+b=' → 'a+b' with operands in [min_operand, max_operand], in a seeded order."""
    span = max_operand - min_operand + 1
    if n > span * span:
        raise ValueError(f"only {span * span} distinct additions exist with operands in "
                         f"[{min_operand}, {max_operand}]; asked for {n}")
    rng = random.Random(seed)
    pairs = rng.sample(range(span * span), n)
    out = []
    for k in pairs:
        a, b = divmod(k, span)
        a, b = a + min_operand, b + min_operand
        out.append(Example(f"{a}+{b}=", str(a + b), str(a + b)))
    return out


def arithmetic_split(n_train: int, n_test: int, seed: int, max_operand: int = 99) -> tuple[list[Example], list[Example]]:
    """Disjoint train and test additions from one seeded draw."""
    both = arithmetic(n_train + n_test, seed, max_operand)
    return both[:n_train], both[n_train:]


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def final_answer(text: str) -> str:
    """The final answer of a response: after '####' (GSM8K) or 'The answer is:' (MetaMathQA), else the
    last number in the text; commas and a trailing '.0' are dropped so that '1,000.0' matches '1000'."""
    for marker in ("####", "The answer is:", "The answer is"):
        if marker in text:
            text = text.rsplit(marker, 1)[1]
            found = _NUMBER.search(text)
            return _normalise(found.group(0)) if found else text.strip()
    numbers = _NUMBER.findall(text)
    return _normalise(numbers[-1]) if numbers else text.strip()


def _normalise(number: str) -> str:
    number = number.replace(",", "")
    return number[:-2] if number.endswith(".0") else number


def load_jsonl(path: str | Path, prompt_key: str = "prompt", response_key: str = "response",
               answer_key: str | None = None, template: str = "{instruction}", limit: int | None = None
               ) -> list[Example]:
    """Examples from a JSONL file, one object per line; the prompt is `template` filled with the prompt field."""
    out = []
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            for key in (prompt_key, response_key):
                if key not in row:
                    raise KeyError(f"{path}:{line_no} has no field {key!r} (fields: {', '.join(row)})")
            response = str(row[response_key])
            answer = str(row[answer_key]) if answer_key else final_answer(response)
            out.append(Example(template.format(instruction=row[prompt_key]), response, answer))
            if limit is not None and len(out) >= limit:
                break
    return out


def load_metamathqa(limit: int | None = None, split: str = "train") -> list[Example]:
    """MetaMathQA (query → response) in the Alpaca template; needs `datasets` and the data (or its cache)."""
    from datasets import load_dataset

    ds = load_dataset("meta-math/MetaMathQA", split=split)
    rows = ds if limit is None else ds.select(range(min(limit, len(ds))))
    return [Example(ALPACA_PROMPT.format(instruction=r["query"]), r["response"], final_answer(r["response"]))
            for r in rows]


def load_gsm8k(limit: int | None = None, split: str = "test") -> list[Example]:
    """GSM8K (question → answer, final answer after '####') in the same template, for evaluation."""
    from datasets import load_dataset

    ds = load_dataset("openai/gsm8k", "main", split=split)
    rows = ds if limit is None else ds.select(range(min(limit, len(ds))))
    return [Example(ALPACA_PROMPT.format(instruction=r["question"]), r["answer"], final_answer(r["answer"]))
            for r in rows]


@dataclass(frozen=True)
class Encoded:
    """One example as token ids and a supervision mask over the same positions (1 = response or EOS)."""

    ids: list[int]
    mask: list[int]


def encode(example: Example, tokenizer: Tokenizer, max_len: int, bos_id: int | None = None) -> Encoded:
    """prompt + response + EOS, truncated to max_len tokens; only the response and EOS are supervised."""
    prompt = ([bos_id] if bos_id is not None else []) + tokenizer.encode(example.prompt)
    response = tokenizer.encode(example.response) + [tokenizer.eos_id]
    ids = (prompt + response)[:max_len]
    mask = ([0] * len(prompt) + [1] * len(response))[:max_len]
    return Encoded(ids, mask)


def collate(batch: list[Encoded], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids [B, S] and mask [B, S]; padding is never supervised, and with causal attention it
    cannot change the losses of the positions before it."""
    width = max(len(e.ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, e in enumerate(batch):
        ids[row, :len(e.ids)] = torch.tensor(e.ids)
        mask[row, :len(e.mask)] = torch.tensor(e.mask)
    return ids, mask


def token_rows(tokenizer: Tokenizer, texts: list[str], row_len: int, n_rows: int) -> torch.Tensor:
    """The first n_rows rows of row_len tokens from the texts, each ended by EOS, laid end to end: a fixed
    held-out set to measure a model's loss on (forgetting)."""
    ids: list[int] = []
    need = row_len * n_rows
    for text in texts:
        ids += tokenizer.encode(text) + [tokenizer.eos_id]
        if len(ids) >= need:
            break
    n = min(n_rows, len(ids) // row_len)
    if n < 1:
        raise ValueError(f"the texts hold {len(ids)} tokens, fewer than one row of {row_len}")
    return torch.tensor(ids[:n * row_len]).view(n, row_len)
