"""Scoring with the frozen pre-trained model, and the fine-tuning loop shared by every method.

A method is a combination of three independent choices: sample weights (none, or FLOW's), a penalty
(none, or ℓ2 to θ₀), and which parameters train (all, or LoRA adapters). WiSE-FT is applied after
training (flow.baselines.wise_interpolate), so it needs nothing here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from flow.baselines import l2_penalty
from flow.models import LanguageModel, device_of, token_losses
from flow.objective import REDUCTIONS, weighted_loss
from flow.tasks import Encoded, collate
from flow.weights import sequence_losses

LEVELS = ("sequence", "token")


@torch.no_grad()
def score(lm: LanguageModel, data: list[Encoded], level: str = "sequence", batch_size: int = 64,
          pad_id: int = 0) -> torch.Tensor:
    """Losses of the frozen model (eval mode: no dropout, fixed loop count) on every sample.

    level='sequence': [N], the mean NLL over the supervised tokens (NaN for a sample with none).
    level='token': [N, L−1] for the longest sample L, NaN wherever a token is not supervised."""
    if level not in LEVELS:
        raise ValueError(f"level={level!r}: use one of {LEVELS}")
    was_training = lm.module.training
    lm.module.eval()
    width = max(len(e.ids) for e in data) - 1
    out = []
    try:
        for i in range(0, len(data), batch_size):
            ids, mask = collate(data[i:i + batch_size], pad_id)
            loss = token_losses(lm, ids.to(device_of(lm))).cpu()
            sup = mask[:, 1:]
            if level == "sequence":
                out.append(sequence_losses(loss, sup))
            else:
                tok = torch.where(sup > 0, loss, torch.full_like(loss, float("nan")))
                out.append(torch.nn.functional.pad(tok, (0, width - tok.shape[1]), value=float("nan")))
    finally:
        lm.module.train(was_training)
    return torch.cat(out)


@dataclass
class FineTuneSpec:
    """How to fine-tune; the one place of the fine-tuning defaults (experiments.config.finetune takes its
    train.* defaults from here)."""

    steps: int = 1000
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 0.0
    warmup_fraction: float = 0.03  # then cosine to 0 (the reference recipe)
    grad_clip: float = 1.0
    seed: int = 0
    reduction: str = "tokens"  # see flow.objective
    l2_lambda: float = 0.0  # > 0 adds the ℓ2-to-θ₀ penalty
    l2_normalize: str = "mean"

    def check(self) -> None:
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"reduction={self.reduction!r}: use one of {REDUCTIONS}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be ≥ 1")


def cosine_multiplier(step: int, total: int, warmup_fraction: float) -> float:
    warmup = int(warmup_fraction * total)
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = (step - warmup) / max(total - warmup, 1)
    return 0.5 * (1 + math.cos(math.pi * progress))


def _batch_weights(weights: torch.Tensor | None, rows: list[int], width: int) -> torch.Tensor | None:
    if weights is None:
        return None
    w = weights[rows]
    if w.dim() == 2:  # token level: crop or pad to this batch's width
        w = torch.nn.functional.pad(w, (0, max(width - w.shape[1], 0)))[:, :width]
    return w


def fine_tune(lm: LanguageModel, data: list[Encoded], spec: FineTuneSpec, weights: torch.Tensor | None = None,
              theta0: dict[str, torch.Tensor] | None = None, pad_id: int = 0,
              on_log: Callable[[int, dict[str, float]], None] | None = None, log_every: int = 10) -> None:
    """Train lm.module's trainable parameters in place on `data` with the (weighted) objective.

    weights: None (standard), [N] per sample or [N, L−1] per token (from `score`, through flow_weights).
    theta0: the ℓ2 anchor, required when spec.l2_lambda > 0. Batches are drawn from seeded epochs."""
    spec.check()
    if spec.l2_lambda > 0 and theta0 is None:
        raise ValueError("l2_lambda > 0 needs theta0 (flow.baselines.anchor of the pre-trained model)")
    params = [p for p in lm.module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay, betas=(0.9, 0.999))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: cosine_multiplier(s, spec.steps, spec.warmup_fraction))
    order = torch.Generator().manual_seed(spec.seed)
    depth_gen = torch.Generator().manual_seed(spec.seed + 1)  # a looped model's depth and h_0 draws
    device = device_of(lm)
    queue: list[int] = []
    lm.module.train()
    for step in range(spec.steps):
        rows = []
        while len(rows) < spec.batch_size:
            if not queue:
                queue = torch.randperm(len(data), generator=order).tolist()
            rows.append(queue.pop())
        ids, mask = collate([data[i] for i in rows], pad_id)
        ids, sup = ids.to(device), mask[:, 1:].to(device)
        loss_tok = token_losses(lm, ids, depth_gen)
        w = _batch_weights(weights, rows, sup.shape[1])
        task_loss = weighted_loss(loss_tok, sup, None if w is None else w.to(device), spec.reduction)
        loss = task_loss
        if spec.l2_lambda > 0:
            loss = loss + l2_penalty(lm.module, theta0, spec.l2_lambda, spec.l2_normalize)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, spec.grad_clip)
        optimizer.step()
        scheduler.step()
        if on_log is not None and ((step + 1) % log_every == 0 or step + 1 == spec.steps):
            plain = float(weighted_loss(loss_tok.detach(), sup, None, "tokens"))
            on_log(step + 1, {"ft/loss": loss.item(), "ft/task_loss": plain, "ft/weighted_loss": task_loss.item(),
                              "ft/grad_norm": float(grad_norm), "ft/lr": scheduler.get_last_lr()[0]})
