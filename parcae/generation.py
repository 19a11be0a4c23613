"""Autoregressive decoding with a KV cache per (layer, loop iteration) (Parcae arXiv 2604.12946 §3, App. G–I).

In a looped model a token at iteration t of core layer j attends to the keys and values earlier tokens
produced at that same layer and iteration, so the cache keeps one entry per prelude layer, per (core layer,
iteration) pair and per coda layer: P + R·T + C entries, against n_layer for the Transformer.

Initial state. The reference draws a fresh random h_0 on every forward, so re-running the prefix and
decoding against a cache would see different h_0 for the same earlier token and disagree. Here h_0 is drawn
once per `generate` call, from `generator`, for every position up to the final length (position-major, so a
longer generation draws the same h_0 for the shared positions), and position p always uses row p. Cached
and uncached decoding then compute the same function, and greedy decoding gives the same tokens.

Length. A request beyond block_size raises instead of cropping: RoPE tables end there, and a sliding
window would invalidate every cached key (their positions shift), which defeats the cache.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Hashable, Sequence
from typing import Any

import torch

from .blocks import KVCache
from .sampling import initial_state


class DecodeCache:
    """The KV caches of one generation, one per attention layer (and iteration), created on first use."""

    def __init__(self, max_length: int) -> None:
        self.max_length = max_length
        self._layers: dict[Hashable, KVCache] = {}

    def layer(self, key: Hashable) -> KVCache:
        if key not in self._layers:
            self._layers[key] = KVCache(self.max_length)
        return self._layers[key]

    def __len__(self) -> int:
        return len(self._layers)

    def keys(self) -> list[Hashable]:
        return list(self._layers)


def _check_request(model: Any, prompt_ids: torch.Tensor, max_new_tokens: int, loops: int | None,
                   temperature: float, top_k: int | None) -> None:
    block_size = model.config.block_size
    if prompt_ids.dim() != 2 or prompt_ids.shape[1] < 1:
        raise ValueError(f"prompt_ids has shape {tuple(prompt_ids.shape)}; pass a [batch, length >= 1] LongTensor")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens}: must be >= 0")
    if prompt_ids.shape[1] + max_new_tokens > block_size:
        raise ValueError(
            f"prompt length {prompt_ids.shape[1]} + max_new_tokens {max_new_tokens} exceeds "
            f"model.block_size={block_size}; shorten the prompt or ask for fewer tokens (no cropping is done)"
        )
    if loops is not None and loops < 1:
        raise ValueError(f"loops={loops}: the recurrence must run at least once; pass loops >= 1 or None for µ_rec")
    if temperature < 0:
        raise ValueError(f"temperature={temperature}: must be >= 0 (0 = greedy)")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k={top_k}: must be >= 1 or None")


def _next_token(
    logits: torch.Tensor, temperature: float, top_k: int | None, generator: torch.Generator | None
) -> torch.Tensor:
    """[B, V] logits -> [B, 1] token ids."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    # The generator may live on another device than the model (a CPU generator drives a GPU model).
    rng_device = generator.device if generator is not None else probs.device
    return torch.multinomial(probs.to(rng_device), 1, generator=generator).to(logits.device)


@torch.no_grad()
def generate(
    model: Any,
    prompt_ids: torch.Tensor,
    max_new_tokens: int,
    *,
    loops: int | None = None,
    temperature: float = 0.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> torch.Tensor:
    """Continue prompt_ids ([B, S0]) by max_new_tokens tokens; returns [B, S0 + max_new_tokens].

    loops: recurrence depth of every position (default µ_rec; ignored by a Transformer). temperature 0 is
    greedy, otherwise softmax sampling, optionally restricted to the top_k logits. generator drives h_0 and
    sampling. use_cache=False re-runs the full forward on the whole prefix at every step (the reference
    against which the cache is tested). The model is run in eval mode and its mode restored afterwards.
    """
    _check_request(model, prompt_ids, max_new_tokens, loops, temperature, top_k)
    cfg = model.config
    batch, total = prompt_ids.shape[0], prompt_ids.shape[1] + max_new_tokens
    weight = model.wte.weight
    h0 = None
    if cfg.kind == "parcae":
        # Drawn [position, batch, d] so positions < total do not depend on total (see module docstring).
        h0 = initial_state(cfg.state_init, (total, batch, cfg.d_model), cfg.d_model, weight.device, weight.dtype,
                           generator).transpose(0, 1)
    cache = DecodeCache(total) if use_cache else None
    tokens = prompt_ids.to(weight.device)
    fresh = tokens  # tokens not yet seen by the cache
    was_training = model.training
    model.eval()
    try:
        for _ in range(max_new_tokens):
            length = tokens.shape[1]
            if cache is not None:
                start = length - fresh.shape[1]
                state = None if h0 is None else h0[:, start:length]
                logits = model.decode(fresh, cache, num_steps=loops, initial_state=state)
            else:
                state = None if h0 is None else h0[:, :length]
                logits, _ = model(tokens, num_steps=loops, initial_state=state)
            fresh = _next_token(logits[:, -1], temperature, top_k, generator)
            tokens = torch.cat((tokens, fresh), dim=1)
    finally:
        model.train(was_training)
    return tokens


def benchmark(
    model: Any,
    *,
    prompt_len: int = 16,
    new_tokens: Sequence[int] = (64, 128),
    batch_size: int = 1,
    loops: int | None = None,
    repeats: int = 5,
    seed: int = 0,
) -> dict[int, dict[str, float | bool]]:
    """Wall time of greedy generation with and without the cache, per number of new tokens.

    Cached and uncached runs alternate so that load from other processes hits both alike; the ratio is
    the median over repeats of uncached/cached time. `same_tokens` checks that both produced the same ids.
    """
    prompt = torch.randint(0, model.config.vocab_size, (batch_size, prompt_len),
                           generator=torch.Generator().manual_seed(seed))
    results: dict[int, dict[str, float | bool]] = {}
    for n in new_tokens:
        times: dict[bool, list[float]] = {True: [], False: []}
        outputs: dict[bool, torch.Tensor] = {}
        for _ in range(repeats):
            for use_cache in (True, False):
                start = time.perf_counter()
                outputs[use_cache] = generate(model, prompt, n, loops=loops, use_cache=use_cache,
                                              generator=torch.Generator().manual_seed(seed))
                times[use_cache].append(time.perf_counter() - start)
        results[n] = {
            "cached_s": statistics.median(times[True]),
            "uncached_s": statistics.median(times[False]),
            "speedup": statistics.median(u / c for u, c in zip(times[False], times[True])),
            "same_tokens": bool(torch.equal(outputs[True], outputs[False])),
        }
    return results

