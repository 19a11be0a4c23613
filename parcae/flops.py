"""Analytic parameter counts and training FLOPs per token: the reference accounting (Parcae arXiv 2604.12946 App. D) and the FLOPs executed.

The reference counts 6 FLOPs per parameter for everything except the tied embedding/head matrix: value-
embedding tables (pure lookups) are counted, the output head matmul is not. That is not the textbook count
(paper App. D says the opposite), but it is what fixed the token budgets of the published isoFLOP runs, so
budgets computed here line up with theirs.
"""

from __future__ import annotations

from .blocks import VE_GATE_CHANNELS, has_value_embedding
from .config import ModelConfig


def _block_params(cfg: ModelConfig) -> int:
    d = cfg.d_model
    attention = 4 * d * d
    mlp = 2 * cfg.mlp_ratio * d * d
    norms = 2 * d
    return attention + mlp + norms


def _gate_params(cfg: ModelConfig) -> int:
    return min(VE_GATE_CHANNELS, cfg.d_model) * cfg.n_head


def _layers_params(cfg: ModelConfig, layer_indices: range) -> tuple[int, int]:
    """(block params including VE gates, VE table params) for the given unrolled-once layer indices."""
    n = cfg.n_unique_layers
    ve = [i for i in layer_indices if cfg.value_embeddings and has_value_embedding(i, n)]
    blocks = len(layer_indices) * _block_params(cfg) + len(ve) * _gate_params(cfg)
    return blocks, len(ve) * cfg.vocab_size * cfg.d_model


def _injection_params(cfg: ModelConfig) -> int:
    d = cfg.d_model
    return {"diagonal": 2 * d + d * d, "add": 0, "linear": 2 * d * d}[cfg.injection]


def param_counts(cfg: ModelConfig) -> dict[str, int]:
    """Unique parameter counts, equal to counting an instantiated model.

    total     all unique parameters (tied head counted once)
    embedding V·d, the tied token embedding / output head
    core      the R recurrent blocks (with their VE gates); 0 for a Transformer
    non_core  total − embedding − core: prelude, coda, all VE tables, injection, C, norms
    unrolled  N(µ_rec) = total + (µ_rec − 1)·core, the parameter count of the model unrolled µ_rec times
              (what the parametric scaling law calls the effective size; VE tables and embedding included)
    """
    d, V = cfg.d_model, cfg.vocab_size
    embedding = V * d
    final_norm = d
    if cfg.kind == "transformer":
        blocks, tables = _layers_params(cfg, range(cfg.n_layer))
        total = embedding + blocks + tables + final_norm
        return dict(total=total, embedding=embedding, core=0, non_core=total - embedding, unrolled=total)

    P, R, C = cfg.n_prelude, cfg.n_core, cfg.n_coda
    core, core_tables = _layers_params(cfg, range(P, P + R))
    outer, outer_tables = _layers_params(cfg, [*range(P), *range(P + R, P + R + C)])  # type: ignore[arg-type]
    prelude_norm = d if cfg.prelude_norm else 0
    c_projection = d * d
    non_core = outer + outer_tables + core_tables + _injection_params(cfg) + c_projection + prelude_norm + final_norm
    total = embedding + core + non_core
    unrolled = total + (cfg.mean_recurrence - 1) * core
    return dict(total=total, embedding=embedding, core=core, non_core=non_core, unrolled=unrolled)


def attention_flops_per_layer(cfg: ModelConfig) -> int:
    """4·d·S: QKᵀ and AV over the full context, forward only, without causal halving (reference choice)."""
    return 4 * cfg.d_model * cfg.block_size


def flops_per_token(cfg: ModelConfig) -> int:
    """Training FLOPs per token at the configured mean depths µ_rec, µ_bwd (not realised samples).

    Parcae:      6·N_nc + 3·(P+C)·attn + (2·N_core + R·attn)·µ_rec + (4·N_core + 2·R·attn)·µ_bwd
    Transformer: 6·(N_all − N_emb) + 3·L·attn
    Every iteration pays a forward; only backpropagated iterations pay the 2× backward. The
    truncated-Poisson, Poisson-fill and fixed schemes all backpropagate µ_bwd steps on average;
    Poisson-full backpropagates all µ_rec. Curricula and the per-batch maximum are not counted (the
    reference counts the configured means too).
    """
    counts = param_counts(cfg)
    attn = attention_flops_per_layer(cfg)
    if cfg.kind == "transformer":
        return 6 * counts["non_core"] + 3 * cfg.n_layer * attn
    R = cfg.n_core
    mu_rec, mu_bwd = cfg.mean_recurrence, cfg.backprop_depth()
    if cfg.depth_sampling == "poisson-full":  # full BPTT: every iteration is backpropagated
        mu_bwd = mu_rec
    return (
        6 * counts["non_core"]
        + 3 * (cfg.n_prelude + cfg.n_coda) * attn
        + (2 * counts["core"] + R * attn) * mu_rec
        + (4 * counts["core"] + 2 * R * attn) * mu_bwd
    )


def tokens_for_budget(cfg: ModelConfig, flop_budget: float) -> int:
    """Training tokens an isoFLOP run gets: ⌊budget / F⌋."""
    return int(flop_budget // flops_per_token(cfg))


# Executed FLOPs: what a training step multiplies, beside the reference accounting above (which fixes budgets).


def _block_matmul_params(cfg: ModelConfig, layer_index: int) -> int:
    """Weights of one block that enter a matrix multiply: q/k/v/o, the MLP and the VE gate (norms do not)."""
    d = cfg.d_model
    ve = cfg.value_embeddings and has_value_embedding(layer_index, cfg.n_unique_layers)
    return 4 * d * d + 2 * cfg.mlp_ratio * d * d + (_gate_params(cfg) if ve else 0)


def executed_flops_per_token(cfg: ModelConfig, seq_len: int | None = None) -> int:
    """Training FLOPs per token that the forward and backward actually execute, at the mean depths µ_rec, µ_bwd.

    Counted as torch.utils.flop_counter counts them: every matmul, 2 FLOPs per multiply-add, forward 2·W per
    weight W, backward 4·W (input and weight gradients); attention 4·d·S per layer forward and twice that
    backward (QKᵀ and AV over the whole context: no causal halving, as the flop counter and the usual MFU
    convention count it); norms, RoPE, softmax and elementwise work are not counted. Unlike the reference
    accounting (flops_per_token): value-embedding tables are lookups (0 FLOPs), the tied output head is a
    matmul (6·V·d), and gradient-free iterations pay their forward only. The linear injection's state half
    W_h has no input gradient at the first gradient step (h_0 and the gradient-free state carry none), so
    that step pays 4·d², not 6·d². seq_len defaults to model.block_size.
    """
    d, S = cfg.d_model, cfg.block_size if seq_len is None else seq_len
    attn = 4 * d * S  # forward, per layer and token; the backward doubles it
    head = 6 * cfg.vocab_size * d

    def grad_layers(indices) -> int:
        return sum(6 * _block_matmul_params(cfg, i) + 3 * attn for i in indices)

    if cfg.kind == "transformer":
        return head + grad_layers(range(cfg.n_layer))
    P, R, C = cfg.n_prelude, cfg.n_core, cfg.n_coda
    mu_rec, mu_bwd = cfg.mean_recurrence, cfg.backprop_depth()
    if cfg.depth_sampling == "poisson-full":  # every iteration is backpropagated
        mu_bwd = mu_rec
    mu_bwd = min(mu_bwd, mu_rec)
    core = range(P, P + R)
    core_forward = sum(2 * _block_matmul_params(cfg, i) + attn for i in core)
    injection = {"diagonal": 6 * d * d,  # B once per forward (input_term); the per-step update is elementwise
                 "add": 0,
                 # W_e once; W_h every iteration: forward 2·d², backward 4·d² except 2·d² at the first grad step
                 "linear": 6 * d * d + 2 * d * d * (mu_rec - mu_bwd) + 6 * d * d * mu_bwd - 2 * d * d}[cfg.injection]
    return (head + grad_layers([*range(P), *range(P + R, P + R + C)]) + 6 * d * d  # C
            + injection + core_forward * (mu_rec - mu_bwd) + grad_layers(core) * mu_bwd)
