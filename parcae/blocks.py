"""Pre-norm transformer block shared by the prelude, the recurrent core, the coda and the plain Transformer.

Details follow Parcae arXiv 2604.12946 §3: RMSNorm in fp32, separate q/k/v/o projections, gated value embeddings added
to v, interleaved-pair RoPE then parameter-free QK-norm, causal SDPA, and a 0.5·ReLU² MLP. No biases.
Attention optionally reads and extends a KVCache, which is how generation avoids re-running the prefix.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .initialization import orthogonal_scaled_, scaled_std

VE_GATE_CHANNELS = 32  # the value-embedding gate reads this many leading channels of the normed input


def has_value_embedding(layer_index: int, n_layers: int) -> bool:
    """Alternate layers, always including the last one (nanochat's rule)."""
    return layer_index % 2 == (n_layers - 1) % 2


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # fp32 statistics: under bf16 autocast the mean of squares loses too many bits.
        out = F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps)
        return out.type_as(x)


class Rotary(nn.Module):
    """RoPE over interleaved channel pairs (2i, 2i+1), tables precomputed in fp32 for block_size positions."""

    def __init__(self, head_dim: int, max_positions: int, theta: float) -> None:
        super().__init__()
        inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        angles = torch.outer(torch.arange(max_positions, dtype=torch.float32), inv_freq)
        # Not persistent: derived from the config, so checkpoints stay free of it.
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """x: [B, S, H, head_dim] holding positions offset .. offset + S - 1."""
        end = offset + x.shape[1]
        if end > self.cos.shape[0]:
            raise ValueError(f"sequence length {end} exceeds model.block_size={self.cos.shape[0]}")
        cos, sin = self.cos[offset:end, None, :], self.sin[offset:end, None, :]
        # Inductor generates no code for complex numbers, so compiled code takes the real form.
        rotate = rotate_pairs_real if torch.compiler.is_compiling() else rotate_pairs_complex
        return rotate(x.float(), cos, sin).type_as(x)


def rotate_pairs_complex(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (x0, x1) by the angles of (cos, sin): the pair is x0 + i·x1, the rotation one
    complex product, a single kernel in eager mode where the real form needs several."""
    pairs = torch.view_as_complex(x.unflatten(-1, (-1, 2)).contiguous())
    return torch.view_as_real(pairs * torch.complex(cos, sin)).flatten(-2)


def rotate_pairs_real(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """The same rotation in real arithmetic, (x0 cos - x1 sin, x1 cos + x0 sin) = x·cos + swap(x)·(-sin, sin),
    which a compiler fuses into one kernel."""
    swapped = x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)
    signed_sin = torch.stack((-sin, sin), dim=-1).flatten(-2)
    return x * cos.repeat_interleave(2, dim=-1) + swapped * signed_sin


class KVCache:
    """Keys and values one attention layer has produced so far, in a buffer allocated on first use.

    Preallocating max_length positions keeps each decode step an O(1) write instead of a growing torch.cat.
    """

    def __init__(self, max_length: int) -> None:
        self.max_length = max_length
        self.length = 0
        self._k: torch.Tensor | None = None
        self._v: torch.Tensor | None = None

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add [B, H, S, head_dim] keys/values; returns those of every position cached so far."""
        end = self.length + k.shape[2]
        if end > self.max_length:
            raise ValueError(f"KV cache holds {self.max_length} positions, {end} requested; size it for the "
                             "prompt plus every new token")
        if self._k is None or self._v is None:
            shape = (k.shape[0], k.shape[1], self.max_length, k.shape[3])
            self._k, self._v = k.new_empty(shape), v.new_empty(shape)
        self._k[:, :, self.length : end] = k
        self._v[:, :, self.length : end] = v
        self.length = end
        return self._k[:, :, :end], self._v[:, :, :end]


def _causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """SDPA where the queries are the last q.shape[2] of the k.shape[2] positions."""
    n_query, n_key = q.shape[2], k.shape[2]
    if n_query == n_key:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    if n_query == 1:  # the newest token sees every cached position
        return F.scaled_dot_product_attention(q, k, v)
    # SDPA's is_causal aligns the mask top-left, which is wrong once a cached prefix precedes the queries.
    mask = torch.ones(n_query, n_key, dtype=torch.bool, device=q.device).tril(diagonal=n_key - n_query)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_head: int, value_gate: bool) -> None:
        super().__init__()
        self.n_head = n_head
        self.head_dim = d_model // n_head
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.o_proj = nn.Linear(d_model, d_model, bias=False)
        self.gate_channels = min(VE_GATE_CHANNELS, d_model)
        # One gate per KV head; KV heads equal query heads in every config (no GQA).
        self.ve_gate = nn.Linear(self.gate_channels, n_head, bias=False) if value_gate else None

    def forward(
        self, x: torch.Tensor, rotary: Rotary, ve: torch.Tensor | None, cache: KVCache | None = None
    ) -> torch.Tensor:
        B, S, _ = x.shape
        offset = 0 if cache is None else cache.length
        q = self.q_proj(x).view(B, S, self.n_head, self.head_dim)
        k = self.k_proj(x).view(B, S, self.n_head, self.head_dim)
        v = self.v_proj(x).view(B, S, self.n_head, self.head_dim)
        if self.ve_gate is not None and ve is not None:
            gate = 2.0 * torch.sigmoid(self.ve_gate(x[..., : self.gate_channels]))  # in (0, 2)
            v = v + gate.unsqueeze(-1) * ve.view(B, S, self.n_head, self.head_dim)
        q, k = rotary(q, offset), rotary(k, offset)
        # QK-norm after RoPE bounds the attention logits, which matters once the state is iterated.
        q = F.rms_norm(q, (self.head_dim,)).transpose(1, 2)
        k = F.rms_norm(k, (self.head_dim,)).transpose(1, 2)
        v = v.transpose(1, 2)
        if cache is not None:
            k, v = cache.append(k, v)
        y = _causal_attention(q, k, v)
        return self.o_proj(y.transpose(1, 2).reshape(B, S, -1))


class MLP(nn.Module):
    def __init__(self, d_model: int, ratio: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d_model, ratio * d_model, bias=False)
        self.proj = nn.Linear(ratio * d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The reference's ReLU² carries an extra factor 1/2; kept so activations match its scale.
        return self.proj(0.5 * F.relu(self.fc(x)).square())


class Block(nn.Module):
    def __init__(self, d_model: int, n_head: int, mlp_ratio: int, value_gate: bool) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_head, value_gate)
        self.mlp_norm = RMSNorm(d_model)
        self.mlp = MLP(d_model, mlp_ratio)

    @property
    def has_value_gate(self) -> bool:
        return self.attn.ve_gate is not None

    def forward(
        self, x: torch.Tensor, rotary: Rotary, ve: torch.Tensor | None = None, cache: KVCache | None = None
    ) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), rotary, ve, cache)
        return x + self.mlp(self.mlp_norm(x))

    @torch.no_grad()
    def reset_parameters(self, d_model: int) -> None:
        """Scaled-zero: orthogonal inputs, zero outputs, so every block starts as the identity map."""
        std = scaled_std(d_model)
        for linear in (self.attn.q_proj, self.attn.k_proj, self.attn.v_proj, self.mlp.fc):
            orthogonal_scaled_(linear.weight, std)
        if not self.attn.o_proj.weight.is_meta:
            self.attn.o_proj.weight.zero_()
            self.mlp.proj.weight.zero_()
        # Norm gains start at one and the VE gate keeps PyTorch's default U(±1/sqrt(fan_in)).
