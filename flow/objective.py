"""The weighted fine-tuning objective and its two reductions.

- 'tokens' (the reference code's): Σ_i w_i Σ_t ℓ_it ÷ (supervised tokens in the batch). With w ≡ 1 it is
  the ordinary token-mean loss, so standard fine-tuning uses the same reduction.
- 'samples' (the paper's Algorithm 1, per-sample mean): (1/B) Σ_i w_i · mean_t ℓ_it, which does not let
  long responses weigh more (FLOW arXiv 2502.02797).
Weights may be per sample [B] (sequence-level FLOW) or per token [B, S] (token-level FLOW).
"""

from __future__ import annotations

import torch

REDUCTIONS = ("tokens", "samples")


def weighted_loss(token_loss: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor | None = None,
                  reduction: str = "tokens") -> torch.Tensor:
    """Scalar loss from per-token losses [B, S], a 0/1 supervision mask [B, S] and optional weights."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction!r}: use one of {REDUCTIONS}")
    mask = mask.to(token_loss.dtype)
    if weights is None:
        w = torch.ones_like(token_loss)
    else:
        w = weights.to(token_loss.dtype)
        w = w[:, None].expand_as(token_loss) if w.dim() == 1 else w
    # Masked positions may hold garbage (padding); keep them out of the sum even if non-finite.
    contrib = torch.where(mask > 0, w * token_loss, torch.zeros_like(token_loss))
    if reduction == "tokens":
        return contrib.sum() / mask.sum().clamp_min(1.0)
    per_sample = contrib.sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)
    return per_sample.mean()
