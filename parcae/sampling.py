"""Random draws of a looped forward pass: recurrence depths and the initial state h_0.

Every draw goes through an optional torch.Generator so that a trainer can checkpoint the generator for a
bit-exact resume and an evaluator can fix h_0 with a seeded one. Draws happen on the generator's device
(CPU for a default generator) and are then moved to the model's device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .initialization import scaled_std


@dataclass
class DepthPlan:
    """Step counts: `free` gradient-free steps first, then `grad` steps with backprop.

    Shape [B] (one depth per sequence) or [B, S] (one per token); long tensors on CPU.
    """

    free: torch.Tensor
    grad: torch.Tensor

    @property
    def total(self) -> torch.Tensor:
        return self.free + self.grad


def _rng_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def _poisson(rate: float, shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
    rates = torch.full(shape, float(rate), device=_rng_device(generator))
    return torch.poisson(rates, generator=generator).long().cpu()


def _draw(
    scheme: str, shape: tuple[int, ...], mean_recurrence: int, backprop_depth: int,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(free, grad) for one depth-sampling scheme, Parcae arXiv 2604.12946 §3, App. G–I / B.3 with µ = µ_rec, s = µ_bwd."""
    mu, s = mean_recurrence, backprop_depth
    if scheme == "poisson-truncated":
        # Sample the total, then split it: the realised depth stays centred on µ_rec (paper Alg. 4).
        total = _poisson(mu, shape, generator).clamp_min(1)
        grad = total.clamp_max(s)
        return total - grad, grad
    if scheme == "poisson-full":
        return torch.zeros(shape, dtype=torch.long), _poisson(mu, shape, generator).clamp_min(1)
    if scheme == "poisson-fill":
        # Huginn's split (Alg. 3): the free part alone is random, so the depth is s + Pois(µ - s).
        return _poisson(max(mu - s, 0), shape, generator), torch.full(shape, s, dtype=torch.long)
    if scheme == "fixed":
        grad = min(mu, s)
        return torch.full(shape, mu - grad, dtype=torch.long), torch.full(shape, grad, dtype=torch.long)
    raise ValueError(f"model.depth_sampling={scheme!r}: unknown depth sampling scheme; see parcae.config")


def draw_depths(
    scheme: str,
    granularity: str,
    batch_size: int,
    seq_len: int,
    mean_recurrence: int,
    backprop_depth: int,
    generator: torch.Generator | None = None,
) -> DepthPlan:
    """Training depths for a micro-batch of batch_size sequences of seq_len tokens.

    Schemes (T = free + grad steps):
    * poisson-truncated: T = max(Pois(µ_rec), 1), grad = min(T, µ_bwd)
    * poisson-full:      free = 0, grad = max(Pois(µ_rec), 1)          (backprop through every step)
    * poisson-fill:      free ~ Pois(max(µ_rec - µ_bwd, 0)), grad = µ_bwd
    * fixed:             T = µ_rec, grad = min(T, µ_bwd)
    Granularity: one draw per sequence ([B]), one shared by the micro-batch ([B], all equal) or one per
    token ([B, S]). Per-batch splits T exactly like per-sequence, so it runs T steps in total — the
    reference's per-batch truncated scheme ran T free steps plus the grad steps (Parcae arXiv 2604.12946 §3, App. G–I).
    """
    if granularity == "per-sequence":
        free, grad = _draw(scheme, (batch_size,), mean_recurrence, backprop_depth, generator)
    elif granularity == "per-batch":
        free, grad = _draw(scheme, (1,), mean_recurrence, backprop_depth, generator)
        free, grad = free.expand(batch_size), grad.expand(batch_size)
    elif granularity == "per-token":
        free, grad = _draw(scheme, (batch_size, seq_len), mean_recurrence, backprop_depth, generator)
    else:
        raise ValueError(f"model.depth_granularity={granularity!r}: unknown depth granularity; see parcae.config")
    return DepthPlan(free=free, grad=grad)


def fixed_depths(batch_size: int, num_steps: int, backprop_depth: int) -> DepthPlan:
    """Every sequence runs num_steps, the last min(num_steps, µ_bwd) of them with gradient."""
    return draw_depths("fixed", "per-sequence", batch_size, 1, num_steps, backprop_depth)


def curriculum_mean(mean_recurrence: int, step: int | None, ramp_steps: int, shape: str) -> int:
    """The µ_rec that depth sampling uses at training step `step` (Parcae arXiv 2604.12946 §3, App. G–I curriculum).

    Ramps from 1 to µ_rec over ramp_steps as ceil(progress · µ_rec), progress = step / L ("linear") or
    1 - sqrt(1 - step / L) ("sqrt"). step=None or ramp_steps=0 means no curriculum.
    """
    if step is not None and step < 0:
        raise ValueError(f"step={step}: the training step must be >= 0; count steps from 0")
    if step is None or ramp_steps == 0 or step >= ramp_steps:
        return mean_recurrence
    if shape == "linear":
        ramped = -(-step * mean_recurrence // ramp_steps)  # exact integer ceil: no float round-up at k/L
    elif shape == "sqrt":
        progress = 1.0 - math.sqrt(1.0 - step / ramp_steps)
        ramped = math.ceil(progress * mean_recurrence - 1e-9)
    else:
        raise ValueError(f"model.depth_curriculum={shape!r}: unknown curriculum shape; use linear or sqrt")
    return max(ramped, 1)


def _row_seed(seed: int, row: int) -> int:
    return (int(seed) % 2**31) * 2**32 + int(row)


def row_initial_states(kind: str, rows: range, seq_len: int, d_model: int, device: torch.device,
                       seed: int) -> torch.Tensor:
    """h_0 for rows `rows` of a batch ([len(rows), seq_len, d_model], float32), row i drawn by its own generator
    seeded from (seed, i) on `device`.

    Any split of a batch (data-parallel ranks, micro-batches, evaluation batches) then gives every row the same
    h_0, and each process draws only its own rows: a rank of an 8-GPU job no longer draws the whole global
    batch's initial state (gigabytes at the published sizes) to use an eighth of it."""
    device = torch.device(device)
    if kind == "zero":
        return torch.zeros((len(rows), seq_len, d_model), device=device)
    out = []
    for i in rows:
        g = torch.Generator(device=device).manual_seed(_row_seed(seed, i))
        out.append(initial_state(kind, (1, seq_len, d_model), d_model, device, torch.float32, g))
    return torch.cat(out) if out else torch.zeros((0, seq_len, d_model), device=device)


def initial_state(
    kind: str,
    shape: tuple[int, ...],
    d_model: int,
    device: torch.device,
    dtype: torch.dtype,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """h_0, drawn fresh on every forward (training and evaluation alike).

    When the generator lives elsewhere than `device` (a CPU generator, a GPU model), h_0 is drawn on the
    device by a generator seeded from one draw of the given generator: a GPU step then neither waits for
    millions of host-side draws nor copies them over, and h_0 stays a function of the generator's state
    (so checkpoint/resume remains exact). On the generator's own device nothing changes.
    """
    if kind == "zero":
        return torch.zeros(shape, device=device, dtype=dtype)
    device = torch.device(device)
    if device.type != _rng_device(generator).type:
        if generator is not None:
            seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
            generator = torch.Generator(device=device).manual_seed(seed)
        draw_device = device
    else:
        draw_device = _rng_device(generator)
    h0 = torch.empty(shape, device=draw_device, dtype=torch.float32)
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
