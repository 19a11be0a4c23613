"""MuonAdamW: Muon for the hidden 2-D matrices, AdamW for everything else (Parcae arXiv 2604.12946 App. Q).

Parameter split (``param_groups``):

* **AdamW**: the token embedding (= tied output head), the value-embedding tables, every parameter with
  fewer than two dimensions (norm gains, the injection's ``A_log`` and ``dt_bias``), *every* parameter of
  the injection module (Parcae's ``B``; also the ``linear`` baseline's concat adapter ``W``, so that
  injection ablations differ in the parameterisation only, not in how it is optimised), and the ``C``
  projection.
* **Muon**: every other 2-D matrix: attention q/k/v/o, MLP fc/proj and, by default, the value-embedding
  gates (``ve_gate``). The gates follow the reference code; the paper's Table 20 lists them under AdamW
  (Parcae arXiv 2604.12946). ``ve_gates="adamw"`` selects the paper's variant.

Muon step for a group of same-shape matrices (stacked and stepped together), at optimizer step t:

    μ_t   = μ_0 + (μ - μ_0)·min(t / warmup, 1)              momentum warm-up 0.85 → 0.95 over 300 steps
    m    ← μ_t·m + (1-μ_t)·g                               momentum EMA
    u     = (1-μ_t)·g + μ_t·m                               Nesterov look-ahead
    O     = PolarExpress_5(u / (1.02‖u‖_F))                 approximate polar factor (ns_dtype)
    NorMuon: v ← β₂·v + (1-β₂)·mean(O², per row if rows ≥ cols else per column);
             O ← O / (√v + eps), rescaled to the Frobenius norm it had before
    λ_t   = λ·max(0, 1 - t / total_steps)                   weight decay 0.2 → 0 over training
    η     = lr·√max(1, rows/cols)                           (lr carries the LR schedule s(t))
    p    ← p - η·O - η·λ_t·[O ⊙ p ≥ 0]⊙p                   cautious weight decay

Sign convention of the cautious mask: the step moves p along -O, so ``O·p ≥ 0`` is exactly where the
update already shrinks |p|; decay is applied there and skipped where the update pushes |p| up. Weight
decay is scaled by the (scheduled, shape-scaled) learning rate, i.e. decoupled as in AdamW.

Polar-Express coefficients: for each of the 5 iterations, X ← aX + (bA + cA²)X with A = XXᵀ (on the wide
orientation). The (a, b, c) below were derived here (not copied) following Amsel et al. 2025 ("The Polar
Express", arXiv 2505.16932): greedy minimax-optimal odd quintics for the sign function on the interval
of singular values reached so far, starting from [1e-3, 1], each fitted on [max(ℓ, u/10), u]
("cushioning"), then made safe for low precision by evaluating p(x/1.01). With the ÷1.02 Frobenius
normalisation they map every singular value in [1e-3·‖X‖_F, ‖X‖_F] into [0.36, 1.20] and every singular
value in [1e-2·‖X‖_F, ‖X‖_F] into [0.80, 1.20] (Keller Jordan's fixed quintic: [0.68, 1.20]).

Why not ``torch.optim.Muon`` (torch 2.13): it runs the iteration in bf16 unconditionally (slow and lossy on
CPU), uses one fixed Newton–Schulz quintic for every iteration (not Polar Express), applies plain
(non-cautious) weight decay, has no NorMuon step and steps matrices one at a time. Working around all of
that would leave nothing of it in use, so only its per-matrix LR rule ("original": √max(1, rows/cols))
is shared. The AdamW groups, on the other hand, are stepped by PyTorch's own functional
``torch.optim.adamw.adamw`` (bias-corrected; identical to ``torch.optim.AdamW``), with the same per-parameter
state (``step``, ``exp_avg``, ``exp_avg_sq``).

The optimizer is one ``torch.optim.Optimizer``: one AdamW group (``kind="adamw"``) and one Muon group per
matrix shape (``kind="muon"``), each with its own ``lr`` so that a ``LambdaLR`` multiplies all of them by s(t).
Its state (per-parameter tensors plus python numbers in the groups, including the step counter ``t``)
round-trips through ``torch.save`` / ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn
from torch.optim.adamw import adamw as _functional_adamw

# (a, b, c) per iteration, derived as described in the module docstring (safety factor 1.01 included).
POLAR_EXPRESS_COEFFICIENTS: tuple[tuple[float, float, float], ...] = (
    (5.548212382812371, -13.475372948310351, 9.261008133922457),
    (3.8173578152764285, -4.389046393842404, 1.4279310216648051),
    (3.8173578152764285, -4.389046393842404, 1.4279310216648051),
    (3.8173578152764285, -4.389046393842404, 1.4279310216648051),
    (2.766709416159688, -2.543305428421467, 0.7593455573031278),
)
FROBENIUS_MARGIN = 1.02  # X / (1.02 ‖X‖_F): spectral norm safely below 1


def _is_injection(name: str) -> bool:
    return name.startswith("injection.")


def named_param_groups(model: nn.Module, *, ve_gates: str = "muon") -> dict[str, list[tuple[str, nn.Parameter]]]:
    """Split ``model``'s trainable parameters into {"adamw": [...], "muon": [...]} as (name, parameter) pairs.

    Tied parameters appear once (``named_parameters`` deduplicates the tied head). ``ve_gates`` is "muon"
    (reference code) or "adamw" (paper Table 20).
    """
    if ve_gates not in ("muon", "adamw"):
        raise ValueError(f"ve_gates={ve_gates!r}: use 'muon' (reference code) or 'adamw' (paper Table 20)")
    groups: dict[str, list[tuple[str, nn.Parameter]]] = {"adamw": [], "muon": []}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_gate = name.split(".")[-2:-1] == ["ve_gate"]
        to_adamw = (
            p.ndim != 2
            or name == "wte.weight"
            or name.startswith("value_embeds.")
            or _is_injection(name)
            or name == "C.weight"
            or (is_gate and ve_gates == "adamw")
        )
        groups["adamw" if to_adamw else "muon"].append((name, p))
    return groups


def param_groups(model: nn.Module, *, ve_gates: str = "muon") -> dict[str, list[nn.Parameter]]:
    """Like ``named_param_groups`` without the names."""
    return {k: [p for _, p in v] for k, v in named_param_groups(model, ve_gates=ve_gates).items()}


def momentum_at(step: int, start: float, final: float, warmup_steps: int) -> float:
    """Muon momentum at optimizer step ``step`` (0-based): linear from ``start`` to ``final`` over ``warmup_steps``."""
    if warmup_steps <= 0:
        return final
    frac = min(step / warmup_steps, 1.0)
    return start + (final - start) * frac


def weight_decay_at(step: int, base: float, total_steps: int) -> float:
    """Muon weight decay at ``step``: linear from ``base`` to 0 at ``total_steps`` (and 0 afterwards)."""
    return base * max(0.0, 1.0 - step / total_steps)


def orthogonalize(
    update: torch.Tensor,
    steps: int = 5,
    dtype: torch.dtype | None = torch.float32,
    coefficients: Iterable[tuple[float, float, float]] = POLAR_EXPRESS_COEFFICIENTS,
) -> torch.Tensor:
    """Approximate polar factor U Vᵀ of each matrix in ``update`` (shape (..., rows, cols)).

    Frobenius-normalised (÷1.02‖X‖_F), then ``steps`` Polar-Express iterations in ``dtype`` (None: the
    input's dtype); ``steps`` > 5 repeats the last quintic. Returned in ``dtype``.
    """
    coefficients = list(coefficients)
    x = update if dtype is None else update.to(dtype)
    wide = x.size(-2) <= x.size(-1)
    if not wide:
        x = x.mT  # iterate on the wide orientation: the Gram matrix is the smaller one
    norm = torch.linalg.vector_norm(x.float(), dim=(-2, -1), keepdim=True).to(x.dtype)
    x = x / (norm * FROBENIUS_MARGIN + 1e-7)
    for i in range(steps):
        a, b, c = coefficients[min(i, len(coefficients) - 1)]
        gram = x @ x.mT
        poly = torch.baddbmm(gram, gram, gram, beta=b, alpha=c) if gram.ndim == 3 else b * gram + c * gram @ gram
        x = torch.baddbmm(x, poly, x, beta=a) if x.ndim == 3 else a * x + poly @ x
    return x if wide else x.mT


class MuonAdamW(torch.optim.Optimizer):
    """Muon (Polar Express, NorMuon, cautious weight decay) for hidden matrices + AdamW for the rest.

    Args mirror Parcae arXiv 2604.12946 App. Q; ``total_steps`` sets the weight-decay ramp λ·(1 - t/total_steps).
    ``ns_dtype``: dtype of the orthogonalisation; None = bf16 for CUDA parameters, fp32 otherwise.
    ``normuon``: per-row/column second-moment normalisation of the orthogonalised update (β₂ = ``normuon_beta2``).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        adamw_lr: float = 8e-3,
        muon_lr: float = 8e-3,
        betas: tuple[float, float] = (0.8, 0.95),
        eps: float = 1e-10,
        adamw_weight_decay: float = 0.0,
        muon_weight_decay: float = 0.2,
        momentum: float = 0.95,
        momentum_warmup: tuple[float, int] = (0.85, 300),
        ns_steps: int = 5,
        ns_dtype: torch.dtype | None = None,
        normuon: bool = True,
        normuon_beta2: float = 0.95,
        ve_gates: str = "muon",
        total_steps: int,
    ) -> None:
        if total_steps < 1:
            raise ValueError(f"total_steps={total_steps}: must be >= 1 (the weight-decay ramp spans it)")
        if ns_steps < 1:
            raise ValueError(f"ns_steps={ns_steps}: need at least one orthogonalisation iteration")
        split = param_groups(model, ve_gates=ve_gates)
        groups: list[dict] = []
        if split["adamw"]:
            groups.append(dict(
                params=split["adamw"], kind="adamw", lr=adamw_lr, betas=tuple(betas), eps=eps,
                weight_decay=adamw_weight_decay,
            ))
        by_shape: dict[tuple[int, ...], list[nn.Parameter]] = {}
        for p in split["muon"]:
            by_shape.setdefault(tuple(p.shape), []).append(p)
        warm_start, warm_steps = momentum_warmup
        for shape, params in by_shape.items():
            groups.append(dict(
                params=params, kind="muon", lr=muon_lr, shape=list(shape),
                lr_scale=math.sqrt(max(1.0, shape[0] / shape[1])),
                momentum=momentum_at(0, warm_start, momentum, int(warm_steps)),
                momentum_final=momentum, momentum_start=warm_start, momentum_warmup_steps=int(warm_steps),
                weight_decay=muon_weight_decay, base_weight_decay=muon_weight_decay,
                total_steps=int(total_steps), ns_steps=ns_steps, normuon=normuon, normuon_beta2=normuon_beta2,
                eps=eps, step=0,
            ))
        super().__init__(groups, defaults={})
        self.ns_dtype = ns_dtype

    # -- AdamW -------------------------------------------------------------------------------------------
    def _step_adamw(self, group: dict) -> None:
        params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                state["step"] = torch.tensor(0.0, dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            params.append(p)
            grads.append(p.grad)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            steps.append(state["step"])
        if not params:
            return
        beta1, beta2 = group["betas"]
        _functional_adamw(
            params, grads, exp_avgs, exp_avg_sqs, [], steps,
            amsgrad=False, beta1=beta1, beta2=beta2, lr=group["lr"], weight_decay=group["weight_decay"],
            eps=group["eps"], maximize=False,
        )

    # -- Muon --------------------------------------------------------------------------------------------
    def _step_muon(self, group: dict) -> None:
        t = group["step"]
        mu = momentum_at(t, group["momentum_start"], group["momentum_final"], group["momentum_warmup_steps"])
        wd = weight_decay_at(t, group["base_weight_decay"], group["total_steps"])
        group["momentum"], group["weight_decay"] = mu, wd  # current values, for logging
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            group["step"] = t + 1
            return
        rows, cols = params[0].shape
        tall = rows >= cols
        for p in params:
            state = self.state[p]
            if not state:
                state["momentum_buffer"] = torch.zeros_like(p)
                if group["normuon"]:
                    stat_shape = (rows, 1) if tall else (1, cols)
                    state["second_moment"] = torch.zeros(stat_shape, dtype=torch.float32, device=p.device)

        grad = torch.stack([p.grad for p in params])
        buf = torch.stack([self.state[p]["momentum_buffer"] for p in params])
        buf.lerp_(grad, 1.0 - mu)
        update = grad.lerp_(buf, mu)  # Nesterov: (1-μ)g + μ·m
        ns_dtype = self.ns_dtype
        if ns_dtype is None:
            ns_dtype = torch.bfloat16 if params[0].is_cuda else torch.float32
        ortho = orthogonalize(update, group["ns_steps"], ns_dtype).float()

        if group["normuon"]:
            v = torch.stack([self.state[p]["second_moment"] for p in params])
            v.lerp_(ortho.square().mean(dim=-1 if tall else -2, keepdim=True), 1.0 - group["normuon_beta2"])
            before = torch.linalg.vector_norm(ortho, dim=(-2, -1), keepdim=True)
            ortho = ortho / (v.sqrt() + group["eps"])
            after = torch.linalg.vector_norm(ortho, dim=(-2, -1), keepdim=True)
            ortho = ortho * (before / after.clamp_min(1e-30))
            for p, v_i in zip(params, v.unbind(0)):
                self.state[p]["second_moment"].copy_(v_i)

        lr = group["lr"] * group["lr_scale"]
        stacked = torch.stack(params)
        ortho = ortho.to(stacked.dtype)
        cautious = (ortho * stacked >= 0).to(stacked.dtype)
        stacked.sub_(lr * ortho + (lr * wd) * cautious * stacked)
        for p, new, b in zip(params, stacked.unbind(0), buf.unbind(0)):
            p.copy_(new)
            self.state[p]["momentum_buffer"].copy_(b)
        group["step"] = t + 1

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group["kind"] == "adamw":
                self._step_adamw(group)
            else:
                self._step_muon(group)
        return loss
