"""The "scaled-zero + orthogonal" initialisation of Parcae arXiv 2604.12946 §3 and the like-init state draw of A.3."""

from __future__ import annotations

import math

import torch


def scaled_std(d_model: int) -> float:
    """Per-entry std sqrt(2 / (5 d)) used for every non-zero weight (the "small init" of nanochat/Huginn)."""
    return math.sqrt(2.0 / (5.0 * d_model))


@torch.no_grad()
def orthogonal_scaled_(weight: torch.Tensor, std: float) -> torch.Tensor:
    """Fill a 2-D weight with a (semi-)orthogonal matrix whose entries have standard deviation `std`.

    A matrix with orthonormal columns (or rows) of length n has per-entry variance 1/n, so scaling by
    std * sqrt(max(rows, cols)) lands on the requested std while keeping all singular values equal.
    """
    if weight.is_meta:  # shape-only models (parameter counting) need no values
        return weight
    rows, cols = weight.shape
    tall = torch.empty(max(rows, cols), min(rows, cols), dtype=torch.float32, device=weight.device)
    torch.nn.init.trunc_normal_(tall, std=1.0, a=-2.0, b=2.0)
    q, r = torch.linalg.qr(tall)
    # QR is unique only up to column signs; fixing them makes the draw uniformly distributed.
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
    if rows < cols:
        q = q.T
    weight.copy_(q * (std * math.sqrt(max(rows, cols))))
    return weight


@torch.no_grad()
def truncated_normal_(
    tensor: torch.Tensor, std: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """N(0, std²) cut at ±3 std."""
    if tensor.is_meta:
        return tensor
    return torch.nn.init.trunc_normal_(tensor, std=std, a=-3.0 * std, b=3.0 * std, generator=generator)
