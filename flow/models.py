"""One interface over our models (looped or fixed-depth, evaluated at any loop count) and Hugging Face
causal LMs: next-token losses for a batch of ids, and greedy continuation of prompts.

`token_losses(lm, ids)` is the per-token NLL of ids[:, 1:] given the prefix, shape [B, S−1]; pair it with
mask[:, 1:] (a prompt always precedes the response, so position 0 is never supervised).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn


class ByteTokens:
    """Bytes as tokens (vocab 256). A response ends with a newline by default: a byte model trained on
    source code has seen one after every line, whereas byte 0 (the document separator) never follows
    text it could predict, and its loss would swamp the per-sample losses FLOW weights by."""

    vocab_size = 256
    pad_id = 0
    bos_id = None

    def __init__(self, eos_id: int = 10):
        self.eos_id = eos_id

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


class HFTokens:
    """A Hugging Face tokenizer behind the same small interface (no special tokens added by encode)."""

    def __init__(self, tokenizer: Any):
        self.tok = tokenizer
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.bos_id = tokenizer.bos_token_id
        self.vocab_size = len(tokenizer)

    def encode(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True)


class LanguageModel(Protocol):
    module: nn.Module
    tokenizer: Any

    def logits(self, ids: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor: ...

    def continue_greedy(self, prompt_ids: torch.Tensor, max_new_tokens: int) -> torch.Tensor: ...


@dataclass
class ParcaeLM:
    """A parcae LoopedLM or TransformerLM. In training mode a looped model draws its depth as in
    pre-training; in eval mode it runs `loops` iterations (default µ_rec) from a seeded initial state."""

    module: nn.Module
    loops: int | None = None
    tokenizer: Any = field(default_factory=ByteTokens)
    seed: int = 0

    def logits(self, ids: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if generator is None:
            generator = torch.Generator().manual_seed(self.seed)
        steps = None if self.module.training else self.loops
        return self.module(ids, num_steps=steps, generator=generator)[0]

    def continue_greedy(self, prompt_ids: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed)
        out = self.module.generate(prompt_ids, max_new_tokens, loops=self.loops, generator=gen)
        return out[:, prompt_ids.shape[1]:]


@dataclass
class HFCausalLM:
    """A `transformers` causal LM (AutoModelForCausalLM or any *ForCausalLM)."""

    module: nn.Module
    tokenizer: Any

    def logits(self, ids: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.module(input_ids=ids).logits.float()

    @torch.no_grad()
    def continue_greedy(self, prompt_ids: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        was_training = self.module.training
        self.module.eval()
        try:
            out = self.module.generate(input_ids=prompt_ids, attention_mask=torch.ones_like(prompt_ids),
                                       max_new_tokens=max_new_tokens, do_sample=False,
                                       pad_token_id=self.tokenizer.pad_id, eos_token_id=self.tokenizer.eos_id)
        finally:
            self.module.train(was_training)
        new = out[:, prompt_ids.shape[1]:]
        # generate stops early once every row has ended; pad to a fixed width with EOS.
        if new.shape[1] < max_new_tokens:
            fill = torch.full((new.shape[0], max_new_tokens - new.shape[1]), self.tokenizer.eos_id, dtype=new.dtype)
            new = torch.cat([new, fill], dim=1)
        return new


def token_losses(lm: LanguageModel, ids: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-token NLL [B, S−1] of ids[:, 1:] given the prefix."""
    logits = lm.logits(ids, generator)[:, :-1]
    return F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten(), reduction="none").view(ids.shape[0], -1)


def device_of(lm: LanguageModel) -> torch.device:
    return next(lm.module.parameters()).device
