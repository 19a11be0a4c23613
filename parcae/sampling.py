"""Random draws of a looped forward pass: recurrence depths per sequence and the initial state h_0.

Every draw goes through an optional torch.Generator so that a trainer can checkpoint the generator for a
bit-exact resume and an evaluator can fix h_0 with a seeded one. Draws happen on the generator's device
(CPU for a default generator) and are then moved to the model's device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .initialization import scaled_std


@dataclass
class DepthPlan:
    """Per-sequence step counts: `free` gradient-free steps first, then `grad` steps with backprop."""

    free: torch.Tensor  # [B] long, on CPU
    grad: torch.Tensor  # [B] long, on CPU

    @property
    def total(self) -> torch.Tensor:
        return self.free + self.grad


def _rng_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def truncated_poisson_depths(
    batch_size: int, mean_recurrence: int, backprop_depth: int, generator: torch.Generator | None = None
) -> DepthPlan:
    """parcae.md B.1: T_i = max(Poisson(µ_rec), 1), k_i = min(T_i, µ_bwd) grad steps at the end.

    Sampling the total and then splitting it (rather than drawing the free part alone) keeps the realised
    depth distribution centred on µ_rec, which is what the model meets at test time.
    """
    rate = torch.full((batch_size,), float(max(mean_recurrence, backprop_depth)), device=_rng_device(generator))
    total = torch.poisson(rate, generator=generator).long().clamp_min(1).cpu()
    grad = total.clamp_max(backprop_depth)
    return DepthPlan(free=total - grad, grad=grad)


def fixed_depths(batch_size: int, num_steps: int, backprop_depth: int) -> DepthPlan:
    """Every sequence runs num_steps, the last min(num_steps, µ_bwd) of them with gradient."""
    grad = min(num_steps, backprop_depth)
    return DepthPlan(
        free=torch.full((batch_size,), num_steps - grad, dtype=torch.long),
        grad=torch.full((batch_size,), grad, dtype=torch.long),
    )


def initial_state(
    kind: str,
    shape: tuple[int, ...],
    d_model: int,
    device: torch.device,
    dtype: torch.dtype,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """h_0, drawn fresh on every forward (training and evaluation alike)."""
    if kind == "zero":
        return torch.zeros(shape, device=device, dtype=dtype)
    h0 = torch.empty(shape, device=_rng_device(generator), dtype=torch.float32)
    if kind == "like-init":
        std = scaled_std(d_model)
        torch.nn.init.trunc_normal_(h0, std=std, a=-3.0 * std, b=3.0 * std, generator=generator)
    elif kind == "normal":
        h0.normal_(generator=generator)
    else:
        raise ValueError(
            f"model.state_init={kind!r}: unknown initial-state distribution; use like-init, zero or normal"
        )
    return h0.to(device=device, dtype=dtype)
