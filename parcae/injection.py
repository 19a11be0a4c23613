"""How the prelude output e enters the recurrent state h before each pass through the core blocks.

Every injection splits into input_term(e), which a forward computes once, and step(h, u), which each
iteration runs: e is the same at every iteration, so its projection need not be recomputed.

Parcae arXiv 2604.12946 §3 / A.6. Viewing one loop step as a linear system h' = Ā h + B̄ e (plus the core's residual):
* "diagonal" (Parcae): Ā = exp(-Δ ⊙ exp(A_log)) with Δ = softplus(dt_bias), so 0 < Ā < 1 for every
  parameter value and the loop cannot blow up through its linear part;
* "add" (looped transformers): Ā = I, marginally stable;
* "linear" (recurrent-depth / Huginn): W [h; e], Ā = W_h unconstrained, may become unstable.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .initialization import scaled_std, truncated_normal_

# Ā = sqrt(1/5) per channel at init: Δ = -ln(sqrt(1/5)) with A = -1.
INIT_DECAY = math.sqrt(1.0 / 5.0)
# Mathematically exp(-Δ·exp(A_log)) lies in (0, 1) for all finite parameters, but in float32 a rate
# below ~6e-8 rounds Ā to exactly 1 and a rate above ~104 rounds it to 0. Clamping the rate keeps
# 0 < Ā < 1 true in arithmetic too (fp32: exp(-1e-6) = 0.999999, exp(-80) ≈ 1.8e-35); inside these
# bounds, which every trained model seen so far stays in, the map is exactly the reference's.
MIN_RATE, MAX_RATE = 1e-6, 80.0


def inverse_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class DiagonalInjection(nn.Module):
    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.A_log = nn.Parameter(torch.zeros(d_model))
        self.dt_bias = nn.Parameter(torch.full((d_model,), inverse_softplus(-math.log(INIT_DECAY))))
        self.B = nn.Parameter(torch.eye(d_model))

    def delta(self) -> torch.Tensor:
        return F.softplus(self.dt_bias)

    def decay(self) -> torch.Tensor:
        """Ā, the per-channel discretised state transition (zero-order hold), in (0, 1)."""
        return self._decay(self.delta())

    def _decay(self, delta: torch.Tensor) -> torch.Tensor:
        # rate = Δ·exp(A_log), formed in log space so that no parameter value (not even Δ = 0 with a
        # huge A_log) gives 0·inf = NaN, and clamped so that its gradient is 0, never NaN, outside.
        tiny = torch.finfo(torch.float32).tiny
        log_rate = torch.log(delta.float().clamp_min(tiny)) + self.A_log.float()
        rate = torch.exp(log_rate.clamp(math.log(MIN_RATE), math.log(MAX_RATE)))
        return torch.exp(-rate)

    def input_term(self, e: torch.Tensor) -> torch.Tensor:
        """B̄ e with B̄ = Δ ⊙ B (Euler for B: row i of B scaled by Δ_i)."""
        return self.delta() * F.linear(e, self.B)

    def step(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Ā h + u for u = input_term(e)."""
        return self._decay(self.delta()).to(h.dtype) * h + u

    def forward(self, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        return self.step(h, self.input_term(e))

    @torch.no_grad()
    def reset_parameters(self) -> None:
        if self.A_log.is_meta:
            return
        self.A_log.zero_()
        self.dt_bias.fill_(inverse_softplus(-math.log(INIT_DECAY)))
        self.B.copy_(torch.eye(self.B.shape[0]))


    @torch.no_grad()
    def system_norms(self) -> dict[str, float]:
        """ρ(Ā) = max Ā (Ā is diagonal and positive), ‖B̄‖₂ with B̄ = diag(Δ)·B."""
        delta = self.delta().float()
        return {"rho_A": self.decay().max().item(),
                "B_bar_norm": torch.linalg.matrix_norm(delta[:, None] * self.B.float(), ord=2).item()}


class AdditiveInjection(nn.Module):
    def input_term(self, e: torch.Tensor) -> torch.Tensor:
        return e

    def step(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return h + u

    def forward(self, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        return self.step(h, self.input_term(e))

    def system_norms(self) -> dict[str, float]:
        return {"rho_A": 1.0, "B_bar_norm": 1.0}  # Ā = B̄ = I: marginally stable

    def reset_parameters(self) -> None:
        pass


class LinearInjection(nn.Module):
    """Concatenate-then-project adapter W [h; e] of recurrent-depth models."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.d_model = d_model
        self.proj = nn.Linear(2 * d_model, d_model, bias=False)

    def input_term(self, e: torch.Tensor) -> torch.Tensor:
        """W_e e, the half of W [h; e] that does not change across iterations."""
        return F.linear(e, self.proj.weight[:, self.d_model:])

    def step(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return F.linear(h, self.proj.weight[:, : self.d_model]) + u

    def forward(self, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        return self.step(h, self.input_term(e))

    @torch.no_grad()
    def system_norms(self) -> dict[str, float]:
        """Ā = W_h (the state half of W) is unconstrained: its spectral radius and norm can pass 1."""
        w = self.proj.weight.float()
        a, b = w[:, : self.d_model], w[:, self.d_model:]
        return {"rho_A": torch.linalg.eigvals(a).abs().max().item(),
                "A_norm": torch.linalg.matrix_norm(a, ord=2).item(),
                "B_bar_norm": torch.linalg.matrix_norm(b, ord=2).item()}

    @torch.no_grad()
    def reset_parameters(self) -> None:
        truncated_normal_(self.proj.weight, scaled_std(self.d_model))


def make_injection(kind: str, d_model: int) -> nn.Module:
    if kind == "diagonal":
        return DiagonalInjection(d_model)
    if kind == "add":
        return AdditiveInjection()
    if kind == "linear":
        return LinearInjection(d_model)
    raise ValueError(f"model.injection={kind!r}: unknown injection; use diagonal, add or linear")
