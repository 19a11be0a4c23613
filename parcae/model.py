"""The looped language model (Parcae) and its parameter-matched Transformer baseline.

LoopedLM, parcae.md A.1:

    e   = PreludeNorm(Prelude(wte(ids)))
    h_0 ~ random state
    h_t = Core(Inject(h_{t-1}, e))          t = 1..T
    out = Head(FinalNorm(Coda(C h_T)))     head tied to wte

During training T is drawn per sequence (truncated Poisson around µ_rec) and only the last µ_bwd steps
carry gradient; the update does not depend on the step index, so running short sequences' steps early
or late is the same computation (parcae.md B.1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import Block, RMSNorm, Rotary, has_value_embedding
from .config import ModelConfig
from .initialization import orthogonal_scaled_, scaled_std
from .injection import DiagonalInjection, make_injection
from .sampling import DepthPlan, fixed_depths, initial_state, truncated_poisson_depths

IGNORE_INDEX = -1  # targets equal to this are left out of the loss (padding)


class _TiedEmbeddingLM(nn.Module):
    """Token embedding, value-embedding tables, final norm and the tied output head common to both models."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        n_layers = cfg.n_unique_layers
        self.ve_layers = frozenset(
            i for i in range(n_layers) if cfg.value_embeddings and has_value_embedding(i, n_layers)
        )
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        # One table per selected layer (KV heads x head_dim = d_model); looked up once per forward.
        self.value_embeds = nn.ModuleDict(
            {str(i): nn.Embedding(cfg.vocab_size, cfg.d_model) for i in sorted(self.ve_layers)}
        )
        self.norm_f = RMSNorm(cfg.d_model)
        self.rotary = Rotary(cfg.head_dim, cfg.block_size, cfg.rope_theta)

    def _block(self, layer_index: int) -> Block:
        cfg = self.config
        return Block(cfg.d_model, cfg.n_head, cfg.mlp_ratio, value_gate=layer_index in self.ve_layers)

    def _value_embeddings(self, idx: torch.Tensor) -> dict[int, torch.Tensor]:
        return {int(i): table(idx) for i, table in self.value_embeds.items()}

    def _logits_and_loss(
        self, x: torch.Tensor, targets: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = F.linear(self.norm_f(x), self.wte.weight).float()
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)
        return logits, loss

    @torch.no_grad()
    def _reset_shared_parameters(self) -> None:
        # Value-embedding tables keep PyTorch's N(0, 1), as in the reference.
        orthogonal_scaled_(self.wte.weight, scaled_std(self.config.d_model))

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


class LoopedLM(_TiedEmbeddingLM):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        P, R, C = cfg.n_prelude, cfg.n_core, cfg.n_coda
        # Layer indices are those of the model unrolled once (prelude, core, coda), which decides VE placement.
        self.prelude = nn.ModuleList(self._block(i) for i in range(P))
        self.prelude_norm = RMSNorm(cfg.d_model) if cfg.prelude_norm else nn.Identity()
        self.injection = make_injection(cfg.injection, cfg.d_model)
        self.core = nn.ModuleList(self._block(P + j) for j in range(R))
        self.C = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.coda = nn.ModuleList(self._block(P + R + j) for j in range(C))
        self._last_state_norm: torch.Tensor | None = None
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        self._reset_shared_parameters()
        for block in (*self.prelude, *self.core, *self.coda):
            block.reset_parameters(self.config.d_model)
        orthogonal_scaled_(self.C.weight, scaled_std(self.config.d_model))
        self.injection.reset_parameters()

    def depth_plan(self, batch_size: int, num_steps: int | None, generator: torch.Generator | None) -> DepthPlan:
        """How many gradient-free and gradient steps each sequence runs in this forward."""
        cfg = self.config
        if num_steps is not None and num_steps < 1:
            raise ValueError(f"num_steps={num_steps}: the recurrence must run at least once; pass num_steps >= 1")
        if not self.training:
            # Evaluation runs every step under the caller's grad mode: no truncation.
            steps = cfg.mean_recurrence if num_steps is None else num_steps
            return fixed_depths(batch_size, steps, backprop_depth=steps)
        if num_steps is not None:
            return fixed_depths(batch_size, num_steps, cfg.backprop_depth())
        if cfg.depth_sampling == "fixed":
            return fixed_depths(batch_size, cfg.mean_recurrence, cfg.backprop_depth())
        return truncated_poisson_depths(batch_size, cfg.mean_recurrence, cfg.backprop_depth(), generator)

    def _core_step(self, h: torch.Tensor, e: torch.Tensor, core_ves: list[torch.Tensor | None]) -> torch.Tensor:
        x = self.injection(h, e)
        for block, ve in zip(self.core, core_ves):
            x = block(x, self.rotary, ve)
        return x

    def _recur(
        self, h: torch.Tensor, e: torch.Tensor, core_ves: list[torch.Tensor | None], steps: torch.Tensor
    ) -> torch.Tensor:
        """Advance sequence i by steps[i] iterations; finished sequences are frozen.

        Instead of computing the whole batch and discarding frozen rows with torch.where, only the rows
        still running are gathered: identical result, but the tail of a Poisson batch (max depth ≈ 2µ)
        no longer costs full-batch compute.
        """
        for step in range(int(steps.max()) if steps.numel() else 0):
            active = steps > step
            if bool(active.all()):
                h = self._core_step(h, e, core_ves)
                continue
            rows = active.nonzero().squeeze(1).to(h.device)
            sub_ves = [None if ve is None else ve[rows] for ve in core_ves]
            h = h.index_copy(0, rows, self._core_step(h[rows], e[rows], sub_ves))
        return h

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        num_steps: int | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        cfg = self.config
        P, R = cfg.n_prelude, cfg.n_core
        B, S = idx.shape
        ves = self._value_embeddings(idx)

        x = self.wte(idx)
        for i, block in enumerate(self.prelude):
            x = block(x, self.rotary, ves.get(i))
        e = self.prelude_norm(x)

        plan = self.depth_plan(B, num_steps, generator)
        h = initial_state(cfg.state_init, (B, S, cfg.d_model), cfg.d_model, e.device, e.dtype, generator)
        core_ves = [ves.get(P + j) for j in range(R)]
        if bool(plan.free.any()):
            with torch.no_grad():
                h = self._recur(h, e, core_ves, plan.free)
        h = self._recur(h, e, core_ves, plan.grad)
        self._last_state_norm = h.detach().norm(dim=-1).mean()

        y = self.C(h)
        for j, block in enumerate(self.coda):
            y = block(y, self.rotary, ves.get(P + R + j))
        return self._logits_and_loss(y, targets)

    @torch.no_grad()
    def injection_stats(self) -> dict[str, float]:
        """Stability monitors (parcae.md E): ρ(Ā) = max Ā, spectral norms of B and C, last state norm.

        B_norm and C_norm are spectral norms (largest singular value). state_norm is the mean over tokens
        of ‖h_T‖₂ from the most recent forward. Non-diagonal injections report only state_norm.
        """
        stats: dict[str, float] = {}
        if isinstance(self.injection, DiagonalInjection):
            decay = self.injection.decay().float()
            stats["rho_A"] = decay.max().item()
            stats["A_mean"] = decay.mean().item()
            stats["delta_mean"] = self.injection.delta().float().mean().item()
            stats["B_norm"] = torch.linalg.matrix_norm(self.injection.B.float(), ord=2).item()
            stats["C_norm"] = torch.linalg.matrix_norm(self.C.weight.float(), ord=2).item()
        if self._last_state_norm is not None:
            stats["state_norm"] = self._last_state_norm.item()
        return stats


class TransformerLM(_TiedEmbeddingLM):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        self.blocks = nn.ModuleList(self._block(i) for i in range(cfg.n_layer))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        self._reset_shared_parameters()
        for block in self.blocks:
            block.reset_parameters(self.config.d_model)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        num_steps: int | None = None,  # accepted for a common call signature; a Transformer has no loop
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        ves = self._value_embeddings(idx)
        x = self.wte(idx)
        for i, block in enumerate(self.blocks):
            x = block(x, self.rotary, ves.get(i))
        return self._logits_and_loss(x, targets)

    def injection_stats(self) -> dict[str, float]:
        return {}


def build_model(cfg: ModelConfig) -> LoopedLM | TransformerLM:
    cfg.validate()
    if cfg.kind == "parcae":
        return LoopedLM(cfg)
    return TransformerLM(cfg)
