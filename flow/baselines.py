"""The forgetting baselines FLOW is compared with (FLOW arXiv 2502.02797): ℓ2 pull toward the pre-trained weights,
WiSE-FT weight averaging, and LoRA through `peft`. Each also combines with FLOW's weights."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn


def anchor(module: nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of the trainable parameters: the θ₀ the ℓ2 penalty pulls toward."""
    return {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}


def l2_penalty(module: nn.Module, theta0: dict[str, torch.Tensor], lam: float, normalize: str = "mean") -> torch.Tensor:
    """λ·Σ(θ−θ₀)², divided by the number of parameters for normalize='mean' (the reference code's form,
    λ times the mean squared deviation) or not for 'sum'."""
    if normalize not in ("mean", "sum"):
        raise ValueError(f"normalize={normalize!r}: use 'mean' or 'sum'")
    total, count = None, 0
    for name, p in module.named_parameters():
        if name in theta0:
            sq = (p - theta0[name]).pow(2).sum()
            total = sq if total is None else total + sq
            count += p.numel()
    if total is None:
        raise ValueError("no parameter of the module is in θ₀ (was the anchor taken from another model?)")
    return lam * (total / count if normalize == "mean" else total)


@torch.no_grad()
def wise_interpolate(base: dict[str, torch.Tensor], finetuned: dict[str, torch.Tensor],
                     alpha: float) -> dict[str, torch.Tensor]:
    """WiSE-FT: θ = α·θ_ft + (1−α)·θ_base over every floating-point entry (α=0: base, α=1: fine-tuned);
    integer buffers are taken from the fine-tuned model."""
    if set(base) != set(finetuned):
        missing = sorted(set(base) ^ set(finetuned))[:5]
        raise ValueError(f"state dicts differ in keys (e.g. {missing}); merge LoRA adapters before averaging")
    return {k: torch.lerp(base[k], finetuned[k].to(base[k].dtype), alpha) if base[k].is_floating_point()
            else finetuned[k].clone() for k in base}


def linear_module_names(module: nn.Module) -> list[str]:
    """Leaf names of the module's nn.Linear layers (what LoRA can target), sorted and unique."""
    return sorted({name.rsplit(".", 1)[-1] for name, m in module.named_modules() if isinstance(m, nn.Linear)})


def add_lora(module: nn.Module, r: int, alpha: float, target_modules: Iterable[str], dropout: float = 0.0):
    """Wrap `module` with LoRA adapters on the named Linear layers; only the adapters train.

    Returns the peft model; its `.base_model.model` is `module` itself with adapter layers in place, so the
    module's own forward and generate keep working."""
    from peft import LoraConfig, get_peft_model

    targets = list(target_modules)
    known = linear_module_names(module)
    unknown = [t for t in targets if t not in known]
    if unknown:
        raise ValueError(f"LoRA target modules {unknown} are not Linear layers of this model; "
                         f"choose among {known}")
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none")
    return get_peft_model(module, config)


def merge_lora(peft_model) -> nn.Module:
    """Fold the adapters into the base weights and return the plain module (as evaluated in the paper)."""
    return peft_model.merge_and_unload()
