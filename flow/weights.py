"""FLOW's sample weights: losses of the frozen pre-trained model, a temperature, w = exp(−loss/τ).

The weights are static (FLOW arXiv 2502.02797): computed once from θ*, never refreshed during fine-tuning, and not
normalised. A sample whose loss is undefined (no supervised token, or a non-finite loss) gets weight 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def sequence_losses(token_loss: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sample mean NLL over the supervised (response) tokens: [N, S] → [N]; NaN where none is supervised."""
    mask = mask.to(token_loss.dtype)
    total = (torch.nan_to_num(token_loss, nan=0.0) * mask).sum(dim=1)
    count = mask.sum(dim=1)
    out = total / count  # 0/0 → NaN: an unscorable sample
    # A non-finite loss on a supervised token makes the whole sample unscorable.
    bad = (~torch.isfinite(token_loss) & (mask > 0)).any(dim=1)
    return torch.where(bad, torch.full_like(out, float("nan")), out)


@dataclass(frozen=True)
class TauRule:
    """How τ is derived from the losses: 'median' (the paper's default), 'q<p>' (the p-quantile, e.g. q0.25),
    'x<m>' (m × the median, e.g. x2), or a number (a fixed τ)."""

    kind: str  # median | quantile | scale | fixed
    value: float = 1.0

    @classmethod
    def parse(cls, spec: str | float) -> "TauRule":
        text = str(spec).strip().lower()
        try:
            if text == "median":
                rule = cls("median")
            elif text.startswith("q"):
                rule = cls("quantile", float(text[1:]))
            elif text.startswith("x"):
                rule = cls("scale", float(text[1:]))
            else:
                rule = cls("fixed", float(text))
        except ValueError:
            raise ValueError(f"τ spec {spec!r} is not 'median', 'q<p>', 'x<m>' or a number") from None
        rule.check()
        return rule

    def check(self) -> None:
        if self.kind == "quantile" and not 0 < self.value < 1:
            raise ValueError(f"τ quantile {self.value} must lie strictly between 0 and 1")
        if self.kind in ("scale", "fixed") and not (self.value > 0 and math.isfinite(self.value)):
            raise ValueError(f"τ {self.kind} value {self.value} must be a positive finite number")

    def __str__(self) -> str:
        return {"median": "median", "quantile": f"q{self.value:g}", "scale": f"x{self.value:g}",
                "fixed": f"{self.value:g}"}[self.kind]


def temperature(losses: torch.Tensor, rule: TauRule | str | float = "median") -> float:
    """τ from the finite losses (any shape) by `rule`; NaN entries are ignored."""
    rule = rule if isinstance(rule, TauRule) else TauRule.parse(rule)
    if rule.kind == "fixed":
        return rule.value
    finite = losses[torch.isfinite(losses)].double()
    if finite.numel() == 0:
        raise ValueError("no finite loss to derive τ from (is any response token supervised?)")
    if rule.kind == "quantile":
        tau = float(torch.quantile(finite, rule.value))
    else:
        # torch.median takes the lower middle value; the paper's median is the usual midpoint one.
        tau = float(torch.quantile(finite, 0.5)) * (rule.value if rule.kind == "scale" else 1.0)
    if not tau > 0:
        raise ValueError(f"τ from rule {rule} is {tau}; the losses are all ~0, so use a fixed τ > 0")
    return tau


def flow_weights(losses: torch.Tensor, tau: float) -> torch.Tensor:
    """w = exp(−loss/τ), with NaN (unscorable) → 0. Works per sample [N] or per token [N, S]."""
    if not tau > 0:
        raise ValueError(f"τ must be positive, got {tau}")
    w = torch.exp(-losses / tau)
    return torch.nan_to_num(w, nan=0.0, posinf=0.0, neginf=0.0)
