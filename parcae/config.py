"""Model configuration shared by the looped (Parcae) and the plain Transformer language models."""

from __future__ import annotations

import math
from dataclasses import dataclass

KINDS = ("parcae", "transformer")
INJECTIONS = ("diagonal", "add", "linear")
STATE_INITS = ("like-init", "zero", "normal")
DEPTH_SAMPLINGS = ("poisson-truncated", "poisson-full", "poisson-fill", "fixed")
DEPTH_GRANULARITIES = ("per-sequence", "per-batch", "per-token")
DEPTH_CURRICULA = ("linear", "sqrt")


@dataclass
class ModelConfig:
    name: str = "tiny"
    kind: str = "parcae"  # "parcae" | "transformer"
    vocab_size: int = 256
    block_size: int = 256  # sequence length: RoPE table size and S in the FLOP accounting
    d_model: int = 64
    n_head: int = 4  # head_dim = d_model // n_head
    n_prelude: int = 1
    n_core: int = 1
    n_coda: int = 1
    n_layer: int = 3  # transformer only
    mlp_ratio: int = 4
    mean_recurrence: int = 4  # µ_rec (parcae only)
    mean_backprop: int | None = None  # µ_bwd; None -> ceil(µ_rec / 2)
    injection: str = "diagonal"  # "diagonal" (Parcae) | "add" | "linear" (concat-then-project)
    state_init: str = "like-init"  # "like-init" | "zero" | "normal"
    # Training depths (Parcae arXiv 2604.12946 §3, App. G–I; formulas in parcae.sampling.draw_depths):
    depth_sampling: str = "poisson-truncated"  # | "poisson-full" | "poisson-fill" | "fixed"
    depth_granularity: str = "per-sequence"  # | "per-batch" (one draw per micro-batch) | "per-token"
    depth_curriculum_steps: int = 0  # ramp µ_rec from 1 over this many training steps; 0 = off
    depth_curriculum: str = "linear"  # ramp shape: "linear" | "sqrt" (1 - sqrt(1 - step / L))
    rope_theta: float = 50000.0
    value_embeddings: bool = True
    prelude_norm: bool = True

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def n_unique_layers(self) -> int:
        """Distinct transformer blocks: P + R + C for Parcae, n_layer for the Transformer."""
        if self.kind == "parcae":
            return self.n_prelude + self.n_core + self.n_coda
        return self.n_layer

    def backprop_depth(self) -> int:
        """µ_bwd as used: the explicit value, or ceil(µ_rec / 2) (paper Eq. 6)."""
        if self.mean_backprop is not None:
            return self.mean_backprop
        return math.ceil(self.mean_recurrence / 2)

    def validate(self) -> None:
        def fail(key: str, what: str, fix: str) -> None:
            raise ValueError(f"model.{key}={getattr(self, key)!r}: {what}; {fix}")

        if self.kind not in KINDS:
            fail("kind", "unknown model kind", f"use one of {', '.join(KINDS)}")
        for key in ("vocab_size", "block_size", "d_model", "n_head", "mlp_ratio"):
            if getattr(self, key) < 1:
                fail(key, "must be a positive integer", "set it to 1 or more")
        if self.d_model % self.n_head != 0:
            fail("n_head", f"does not divide d_model={self.d_model}", "pick n_head so that d_model % n_head == 0")
        if self.head_dim % 2 != 0:
            fail("n_head", f"gives an odd head_dim={self.head_dim}, but RoPE rotates channel pairs",
                 "pick n_head so that d_model // n_head is even")
        if self.rope_theta <= 0:
            fail("rope_theta", "must be positive", "use e.g. 50000.0")

        if self.kind == "transformer":
            if self.n_layer < 1:
                fail("n_layer", "a transformer needs at least one layer", "set n_layer >= 1")
            return

        if self.n_prelude < 0:
            fail("n_prelude", "cannot be negative", "set n_prelude >= 0")
        if self.n_coda < 0:
            fail("n_coda", "cannot be negative", "set n_coda >= 0")
        if self.n_core < 1:
            fail("n_core", "the recurrent block needs at least one layer", "set n_core >= 1")
        if self.mean_recurrence < 1:
            fail("mean_recurrence", "the recurrence must run at least once", "set mean_recurrence >= 1")
        if self.mean_backprop is not None and not 1 <= self.mean_backprop <= self.mean_recurrence:
            fail("mean_backprop", f"must lie in [1, mean_recurrence={self.mean_recurrence}]",
                 "set it in that range or null for ceil(mean_recurrence / 2)")
        if self.injection not in INJECTIONS:
            fail("injection", "unknown injection", f"use one of {', '.join(INJECTIONS)}")
        if self.state_init not in STATE_INITS:
            fail("state_init", "unknown initial-state distribution", f"use one of {', '.join(STATE_INITS)}")
        if self.depth_sampling not in DEPTH_SAMPLINGS:
            fail("depth_sampling", "unknown depth sampling scheme", f"use one of {', '.join(DEPTH_SAMPLINGS)}")
        if self.depth_granularity not in DEPTH_GRANULARITIES:
            fail("depth_granularity", "unknown depth granularity",
                 f"use one of {', '.join(DEPTH_GRANULARITIES)}")
        if not isinstance(self.depth_curriculum_steps, int) or self.depth_curriculum_steps < 0:
            fail("depth_curriculum_steps", "must be a non-negative integer number of training steps",
                 "set it to 0 (no curriculum) or the length of the ramp")
        if self.depth_curriculum not in DEPTH_CURRICULA:
            fail("depth_curriculum", "unknown curriculum shape", f"use one of {', '.join(DEPTH_CURRICULA)}")
