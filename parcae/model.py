"""The looped language model (Parcae) and its parameter-matched Transformer baseline.

LoopedLM, Parcae arXiv 2604.12946 §3:

    e   = PreludeNorm(Prelude(wte(ids)))
    h_0 ~ random state
    h_t = Core(Inject(h_{t-1}, e))          t = 1..T
    out = Head(FinalNorm(Coda(C h_T)))     head tied to wte

During training T is drawn per sequence (truncated Poisson around µ_rec; other schemes and granularities in
parcae.sampling) and only the last µ_bwd steps carry gradient; the update does not depend on the step
index, so running short sequences' steps early or late is the same computation (Parcae arXiv 2604.12946 §3, App. G–I).
Both models also decode incrementally against a KV cache (parcae.generation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .blocks import Block, KVCache, RMSNorm, Rotary, has_value_embedding
from .config import ModelConfig
from .generation import DecodeCache, generate
from .initialization import orthogonal_scaled_, scaled_std
from .injection import DiagonalInjection, make_injection
from .sampling import DepthPlan, curriculum_mean, draw_depths, fixed_depths
from .sampling import initial_state as initial_state_draw

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

    def _run_blocks(
        self,
        stage: str,
        blocks: nn.ModuleList,
        first_layer: int,
        x: torch.Tensor,
        ves: dict[int, torch.Tensor],
        cache: DecodeCache | None,
    ) -> torch.Tensor:
        for i, block in enumerate(blocks):
            layer_cache = None if cache is None else cache.layer((stage, i))
            x = block(x, self.rotary, ves.get(first_layer + i), layer_cache)
        return x

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

    def compile_blocks(self, backend: str = "inductor") -> None:
        """torch.compile every transformer block in place, so parameter names (and checkpoints) stay as
        they are. Loop depths vary per sequence, so the core's batch dimension varies from iteration to
        iteration: it becomes dynamic after its first change (one recompile), not one graph per size, and
        the loop count itself never reaches a block (the loop is Python around it), so evaluating at any
        number of test-time loops or batch sizes adds no graph (tests/parcae/test_compile_recompiles.py
        counts them). Blocks share one code object, and (value gate or not) × (grad mode) × (static,
        dynamic batch) can make 8 graphs, dynamo's default limit; past it, new variants would silently run
        eagerly, so the limit is raised. `backend` is torch.compile's (tests trace with a cheap one)."""
        import torch._dynamo

        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 32)
        for module in self.modules():
            if isinstance(module, Block):
                module.compile(backend=backend)

    def generate(
        self,
        prompt_ids: torch.Tensor,
        max_new_tokens: int,
        *,
        loops: int | None = None,
        temperature: float = 0.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """Autoregressive continuation of prompt_ids; see parcae.generation.generate."""
        return generate(self, prompt_ids, max_new_tokens, loops=loops, temperature=temperature, top_k=top_k,
                        generator=generator, use_cache=use_cache)


def _to(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor of the depth plan on the model's device, without waiting for the device."""
    return t.to(device, non_blocking=True)


def _depth_order(row_steps: torch.Tensor) -> tuple[torch.Tensor | None, list[int]]:
    """(rows sorted by descending depth, or None when they already are; running rows per iteration).

    In that order the rows still running at iteration t are a prefix of length counts[t], so each iteration
    slices instead of gathering, and every index is computed on the host before the loop starts.
    """
    order = torch.argsort(row_steps, descending=True, stable=True)
    depth = row_steps[order]
    counts = (depth[None, :] > torch.arange(int(depth[0]))[:, None]).sum(1).tolist()
    if bool((order == torch.arange(len(order))).all()):
        return None, counts
    return order, counts


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
        # Recompute each backpropagated iteration's activations in the backward instead of keeping them:
        # memory per iteration drops to the state h, at the cost of one more forward of the core.
        self.checkpoint_iterations = False
        # Monitors of the latest forward, read by injection_stats (Parcae arXiv 2604.12946 App. F).
        self._last_state_norm: torch.Tensor | None = None
        self._last_residual: torch.Tensor | None = None
        self._last_rel_residual: torch.Tensor | None = None
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        self._reset_shared_parameters()
        for block in (*self.prelude, *self.core, *self.coda):
            block.reset_parameters(self.config.d_model)
        orthogonal_scaled_(self.C.weight, scaled_std(self.config.d_model))
        self.injection.reset_parameters()

    def depth_plan(
        self,
        batch_size: int,
        num_steps: int | None,
        generator: torch.Generator | None,
        *,
        seq_len: int = 1,
        step: int | None = None,
    ) -> DepthPlan:
        """How many gradient-free and gradient steps each sequence (or token) runs in this forward.

        `step` is the training step, which only the depth curriculum reads; None means fully ramped.
        """
        cfg = self.config
        if num_steps is not None and num_steps < 1:
            raise ValueError(f"num_steps={num_steps}: the recurrence must run at least once; pass num_steps >= 1")
        if not self.training:
            # Evaluation runs every step under the caller's grad mode: no truncation.
            steps = cfg.mean_recurrence if num_steps is None else num_steps
            return fixed_depths(batch_size, steps, backprop_depth=steps)
        if num_steps is not None:
            return fixed_depths(batch_size, num_steps, cfg.backprop_depth())
        mean = curriculum_mean(cfg.mean_recurrence, step, cfg.depth_curriculum_steps, cfg.depth_curriculum)
        return draw_depths(cfg.depth_sampling, cfg.depth_granularity, batch_size, seq_len, mean,
                           cfg.backprop_depth(), generator)

    def _core_step(
        self,
        h: torch.Tensor,
        u: torch.Tensor,
        core_ves: list[torch.Tensor | None],
        caches: list[KVCache] | None = None,
    ) -> torch.Tensor:
        """One iteration: inject u = injection.input_term(e) into h, then the core blocks."""
        x = self.injection.step(h, u)
        for j, (block, ve) in enumerate(zip(self.core, core_ves)):
            x = block(x, self.rotary, ve, None if caches is None else caches[j])
        return x

    def _iteration(self, h: torch.Tensor, u: torch.Tensor, core_ves: list[torch.Tensor | None]) -> torch.Tensor:
        if self.checkpoint_iterations and torch.is_grad_enabled():
            return checkpoint(self._core_step, h, u, core_ves, use_reentrant=False)
        return self._core_step(h, u, core_ves)

    def _recur(
        self,
        h: torch.Tensor,
        u: torch.Tensor,
        core_ves: list[torch.Tensor | None],
        steps: torch.Tensor,
        residual: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Advance each sequence ([B] steps) or token ([B, S] steps) by its own number of iterations.

        Only rows with work left run, so the tail of a Poisson batch (max depth ≈ 2µ) does not cost
        full-batch compute: rows are sorted by depth once, so the running ones are a prefix (a slice, no
        gather), and nothing inside the loop waits for the device. Per token, a row runs while any of its
        tokens does and finished tokens keep their state, which later tokens still attend to. `residual`
        ([B, S]) receives ‖h_T − h_{T−1}‖ at each token's final step: one norm per token, however deep.
        """
        per_token = steps.dim() == 2
        row_steps = steps.amax(1) if per_token else steps
        if row_steps.numel() == 0 or int(row_steps.max()) == 0:
            return h
        order, counts = _depth_order(row_steps)
        device = h.device
        perm = None if order is None else _to(order, device)

        def sort(t: torch.Tensor) -> torch.Tensor:
            return t if perm is None else t.index_select(0, perm)

        h, u = sort(h), sort(u)
        core_ves = [None if ve is None else sort(ve) for ve in core_ves]
        token_steps = sort(_to(steps, device)) if per_token else None
        res = None if residual is None else torch.zeros_like(residual)
        for t, n in enumerate(counts):
            old = h[:n]
            new = self._iteration(old, u[:n], [None if ve is None else ve[:n] for ve in core_ves])
            if token_steps is not None:
                new = torch.where((token_steps[:n] > t).unsqueeze(-1), new, old)
            if res is not None:
                self._record_residual(res, old, new, token_steps, t, n, counts)
            h = new if n == h.shape[0] else torch.cat((new, h[n:]))
        if perm is not None:
            inverse = _to(torch.argsort(order), device)
            h = h.index_select(0, inverse)
            res = None if res is None else res.index_select(0, inverse)
        if residual is not None and res is not None:
            residual.copy_(res)
        return h

    @staticmethod
    @torch.no_grad()
    def _record_residual(
        res: torch.Tensor, old: torch.Tensor, new: torch.Tensor, token_steps: torch.Tensor | None, t: int, n: int,
        counts: list[int],
    ) -> None:
        """Write ‖new − old‖ into res (depth-sorted rows) for the rows (or tokens) whose last step is t."""
        if token_steps is None:  # rows of depth t + 1 are those that stop running after this iteration
            first = counts[t + 1] if t + 1 < len(counts) else 0
            if first < n:
                res[first:n] = (new[first:] - old[first:]).norm(dim=-1).to(res.dtype)
            return
        delta = (new - old).norm(dim=-1).to(res.dtype)
        res[:n] = torch.where(token_steps[:n] == t + 1, delta, res[:n])

    def _prelude(self, idx: torch.Tensor, ves: dict[int, torch.Tensor], cache: DecodeCache | None) -> torch.Tensor:
        return self.prelude_norm(self._run_blocks("prelude", self.prelude, 0, self.wte(idx), ves, cache))

    def _coda(self, h: torch.Tensor, ves: dict[int, torch.Tensor], cache: DecodeCache | None) -> torch.Tensor:
        first = self.config.n_prelude + self.config.n_core
        return self._run_blocks("coda", self.coda, first, self.C(h), ves, cache)

    def _core_value_embeddings(self, ves: dict[int, torch.Tensor]) -> list[torch.Tensor | None]:
        return [ves.get(self.config.n_prelude + j) for j in range(self.config.n_core)]

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        num_steps: int | None = None,
        generator: torch.Generator | None = None,
        step: int | None = None,
        initial_state: torch.Tensor | None = None,
        depth_plan: DepthPlan | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits [B, S, V] and the mean loss if targets are given.

        num_steps fixes the depth (evaluation, or training without sampling); step is the training step for
        the depth curriculum; initial_state ([B, S, d]) replaces the random h_0, e.g. to fix it per position;
        depth_plan replaces the sampled depths (e.g. a data-parallel rank's rows of the global batch's draw).
        """
        cfg = self.config
        B, S = idx.shape
        ves = self._value_embeddings(idx)
        e = self._prelude(idx, ves, None)

        plan = depth_plan if depth_plan is not None else self.depth_plan(B, num_steps, generator, seq_len=S, step=step)
        if initial_state is None:
            h = initial_state_draw(cfg.state_init, (B, S, cfg.d_model), cfg.d_model, e.device, e.dtype, generator)
        elif initial_state.shape != e.shape:
            raise ValueError(f"initial_state has shape {tuple(initial_state.shape)}; expected {tuple(e.shape)}")
        else:
            h = initial_state.to(e.dtype)
        core_ves = self._core_value_embeddings(ves)
        u = self.injection.input_term(e)
        if bool(plan.free.any()):
            with torch.no_grad():
                h = self._recur(h, u, core_ves, plan.free)
        # Every scheme gives each sequence at least one grad step, so its final step happens here.
        residual = torch.zeros(B, S, device=h.device)
        h = self._recur(h, u, core_ves, plan.grad, residual)
        self._record_monitors(h, residual, plan.total)
        return self._logits_and_loss(self._coda(h, ves, None), targets)

    @torch.no_grad()
    def _record_monitors(self, h: torch.Tensor, residual: torch.Tensor, total: torch.Tensor) -> None:
        """Keep detached tensors only: .item() waits until injection_stats, so forward never syncs a GPU."""
        state_norm = h.norm(dim=-1).float()
        self._last_state_norm = state_norm.mean()
        self._last_residual = self._last_rel_residual = None
        looped = total >= 2  # the residual is undefined for a single step
        if not bool(looped.any()):
            return
        weight = _to((looped if looped.dim() == 2 else looped.unsqueeze(1)).expand_as(residual), h.device).float()
        self._last_residual = (residual * weight).sum() / weight.sum()
        self._last_rel_residual = self._last_residual / ((state_norm * weight).sum() / weight.sum())

    @torch.no_grad()
    def decode(
        self,
        idx: torch.Tensor,
        cache: DecodeCache,
        *,
        num_steps: int | None = None,
        initial_state: torch.Tensor,
    ) -> torch.Tensor:
        """Logits [B, S, V] for tokens idx at the positions following those already in cache (extended in place).

        Every position runs num_steps (default µ_rec) iterations. Core layer j at iteration t has its own
        cache entry ("core", j, t): a token at iteration t attends to the keys earlier tokens produced at
        that same iteration, so one entry per core layer would mix states of different depths.
        initial_state is h_0 for these positions ([B, S, d]).
        """
        steps = self.config.mean_recurrence if num_steps is None else num_steps
        if steps < 1:
            raise ValueError(f"num_steps={steps}: the recurrence must run at least once; pass num_steps >= 1")
        ves = self._value_embeddings(idx)
        e = self._prelude(idx, ves, cache)
        h = initial_state.to(e.dtype)
        core_ves = self._core_value_embeddings(ves)
        u = self.injection.input_term(e)
        for t in range(steps):
            h = self._core_step(h, u, core_ves, [cache.layer(("core", j, t)) for j in range(len(self.core))])
        return self._logits_and_loss(self._coda(h, ves, cache), None)[0]

    @torch.no_grad()
    def injection_stats(self) -> dict[str, float]:
        """Stability monitors (Parcae arXiv 2604.12946 App. F): the injection seen as a linear system h ← Ā h + B̄ e — ρ(Ā)
        (spectral radius), ‖B̄‖₂ — for every injection type, ‖C‖₂, and the last forward's state.

        Norms are spectral (largest singular value); the diagonal injection adds ‖B‖₂ (before Δ). From the most recent forward:
        state_norm = mean over tokens of ‖h_T‖₂; recurrent_residual = mean over tokens of
        ‖h_T − h_{T−1}‖₂, counting only sequences (tokens, per-token depths) that ran ≥ 2 steps, each at its own last step
        (the reference averages over frozen sequences too, which dilutes it); rel_residual = that divided
        by the mean ‖h_T‖ of the same tokens. The residual keys are absent when no sequence ran twice.
        """
        stats: dict[str, float] = dict(self.injection.system_norms())
        stats["C_norm"] = torch.linalg.matrix_norm(self.C.weight.float(), ord=2).item()
        if isinstance(self.injection, DiagonalInjection):
            decay = self.injection.decay().float()
            stats["A_mean"] = decay.mean().item()
            stats["delta_mean"] = self.injection.delta().float().mean().item()
            stats["B_norm"] = torch.linalg.matrix_norm(self.injection.B.float(), ord=2).item()
        if self._last_state_norm is not None:
            stats["state_norm"] = self._last_state_norm.item()
        if self._last_residual is not None and self._last_rel_residual is not None:
            stats["recurrent_residual"] = self._last_residual.item()
            stats["rel_residual"] = self._last_rel_residual.item()
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
        # The loop arguments are accepted for a common call signature; a Transformer has no loop.
        num_steps: int | None = None,
        generator: torch.Generator | None = None,
        step: int | None = None,
        initial_state: torch.Tensor | None = None,
        depth_plan: object | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        ves = self._value_embeddings(idx)
        x = self._run_blocks("block", self.blocks, 0, self.wte(idx), ves, None)
        return self._logits_and_loss(x, targets)

    @torch.no_grad()
    def decode(
        self,
        idx: torch.Tensor,
        cache: DecodeCache,
        *,
        num_steps: int | None = None,
        initial_state: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits [B, S, V] for tokens idx following the positions in cache; the loop arguments are ignored."""
        ves = self._value_embeddings(idx)
        x = self._run_blocks("block", self.blocks, 0, self.wte(idx), ves, cache)
        return self._logits_and_loss(x, None)[0]

    def injection_stats(self) -> dict[str, float]:
        return {}


def build_model(cfg: ModelConfig) -> LoopedLM | TransformerLM:
    cfg.validate()
    if cfg.kind == "parcae":
        return LoopedLM(cfg)
    return TransformerLM(cfg)
