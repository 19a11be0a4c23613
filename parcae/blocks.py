"""Pre-norm transformer block shared by the prelude, the recurrent core, the coda and the plain Transformer.

Details follow parcae.md A.4: RMSNorm in fp32, separate q/k/v/o projections, gated value embeddings added
to v, interleaved-pair RoPE then parameter-free QK-norm, causal SDPA, and a 0.5·ReLU² MLP. No biases.
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, S, H, head_dim]."""
        seq_len = x.shape[1]
        if seq_len > self.cos.shape[0]:
            raise ValueError(f"sequence length {seq_len} exceeds model.block_size={self.cos.shape[0]}")
        cos = self.cos[:seq_len, None, :]
        sin = self.sin[:seq_len, None, :]
        pairs = x.float().unflatten(-1, (-1, 2))
        x0, x1 = pairs[..., 0], pairs[..., 1]
        rotated = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1)
        return rotated.flatten(-2).type_as(x)


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

    def forward(self, x: torch.Tensor, rotary: Rotary, ve: torch.Tensor | None) -> torch.Tensor:
        B, S, _ = x.shape
        q = self.q_proj(x).view(B, S, self.n_head, self.head_dim)
        k = self.k_proj(x).view(B, S, self.n_head, self.head_dim)
        v = self.v_proj(x).view(B, S, self.n_head, self.head_dim)
        if self.ve_gate is not None and ve is not None:
            gate = 2.0 * torch.sigmoid(self.ve_gate(x[..., : self.gate_channels]))  # in (0, 2)
            v = v + gate.unsqueeze(-1) * ve.view(B, S, self.n_head, self.head_dim)
        q, k = rotary(q), rotary(k)
        # QK-norm after RoPE bounds the attention logits, which matters once the state is iterated.
        q = F.rms_norm(q, (self.head_dim,))
        k = F.rms_norm(k, (self.head_dim,))
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
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

    def forward(self, x: torch.Tensor, rotary: Rotary, ve: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), rotary, ve)
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
