"""Named model sizes: CPU-sized ones for the laptop lab and the published Parcae / Transformer sizes.

The CPU ladder shrinks the published ladder (d 768/1024/1280/1536, head_dim 128, P=R=C=2/4/6/8) by 8 in
width at the same head counts (head_dim 16) and by 2 in stage depth, so the family keeps its shape.
"""

from __future__ import annotations

import dataclasses

from .config import ModelConfig

# Published sizes (Parcae arXiv 2604.12946 Tables 18, 19, 21): name -> (d_model, stage depth P=R=C, transformer layers).
_PUBLISHED = {
    "small": (768, 2, 6),
    "medium": (1024, 4, 12),
    "large": (1280, 6, 18),
    "xlarge": (1536, 8, 24),
}
_PUBLISHED_VOCAB = 32768
_PUBLISHED_CONTEXT = 2048
_PUBLISHED_HEAD_DIM = 128


def _published(name: str) -> list[ModelConfig]:
    d, depth, layers = _PUBLISHED[name]
    shared = dict(
        vocab_size=_PUBLISHED_VOCAB, block_size=_PUBLISHED_CONTEXT, d_model=d, n_head=d // _PUBLISHED_HEAD_DIM
    )
    return [
        # µ_bwd left to the rule ceil(µ_rec / 2) (paper Eq. 6): 4 at the published µ_rec = 8, and valid for
        # the µ_rec = 1, 2, ... of an isoFLOP sweep (a fixed 4 would exceed them).
        ModelConfig(name=name, kind="parcae", n_prelude=depth, n_core=depth, n_coda=depth,
                    mean_recurrence=8, **shared),
        ModelConfig(name=f"transformer-{name}", kind="transformer", n_layer=layers, **shared),
    ]


def _cpu(name: str, d: int, heads: int, depth: int) -> list[ModelConfig]:
    shared = dict(vocab_size=256, block_size=256, d_model=d, n_head=heads)
    return [
        ModelConfig(name=name, kind="parcae", n_prelude=depth, n_core=depth, n_coda=depth, **shared),
        ModelConfig(name=f"transformer-{name}", kind="transformer", n_layer=3 * depth, **shared),
    ]


def _bench_tiny() -> ModelConfig:
    """The benchmark model (`make bench`): fixed dimensions whose parameter count, 1,345,920, equals the
    reference implementation's for the same shape (tied head, value embeddings on layers 1, 3, 5)."""
    return ModelConfig(name="bench-tiny", kind="parcae", vocab_size=256, block_size=256, d_model=128, n_head=4,
                       mlp_ratio=4, n_prelude=2, n_core=2, n_coda=2, mean_recurrence=4, mean_backprop=2)


def _build_presets() -> dict[str, ModelConfig]:
    configs = [
        *_cpu("tiny", 64, 4, 1),
        *_cpu("cpu-s", 96, 6, 1),
        *_cpu("cpu-m", 128, 8, 2),
        *_cpu("cpu-l", 160, 10, 3),
        _bench_tiny(),
        *(cfg for name in _PUBLISHED for cfg in _published(name)),
    ]
    return {cfg.name: cfg for cfg in configs}


PRESETS: dict[str, ModelConfig] = _build_presets()


def get_preset(name: str) -> ModelConfig:
    """A fresh copy of a preset, safe to modify."""
    if name not in PRESETS:
        raise ValueError(f"model.name={name!r}: unknown preset; known presets: {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[name])
