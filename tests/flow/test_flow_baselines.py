"""ℓ2-to-θ₀, WiSE-FT and LoRA (through peft) on our own models."""

import pytest
import torch

import flow
from flow.models import token_losses
from parcae import build_model, get_preset


def _trained_like(seed: int = 0):
    """A tiny looped model whose output projections are non-zero (a fresh model zero-initialises them,
    which would hide any change to the layers before)."""
    torch.manual_seed(seed)
    model = build_model(get_preset("tiny"))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model


def test_l2_penalty_gradient_is_2_lambda_delta_over_n():
    model = torch.nn.Linear(3, 2)
    theta0 = flow.anchor(model)
    with torch.no_grad():
        model.weight.add_(1.0)
    n = sum(p.numel() for p in model.parameters())
    flow.l2_penalty(model, theta0, lam=0.5).backward()
    assert torch.allclose(model.weight.grad, torch.full_like(model.weight, 2 * 0.5 * 1.0 / n))
    assert torch.allclose(model.bias.grad, torch.zeros_like(model.bias))
    model.zero_grad()
    flow.l2_penalty(model, theta0, lam=0.5, normalize="sum").backward()
    assert torch.allclose(model.weight.grad, torch.full_like(model.weight, 1.0))


def test_wise_endpoints_and_midpoint():
    base, ft = _trained_like(0).state_dict(), _trained_like(1).state_dict()
    at0, at1 = flow.wise_interpolate(base, ft, 0.0), flow.wise_interpolate(base, ft, 1.0)
    mid = flow.wise_interpolate(base, ft, 0.5)
    for k in base:
        assert torch.equal(at0[k], base[k]) and torch.equal(at1[k], ft[k])
        if base[k].is_floating_point():
            assert torch.allclose(mid[k], (base[k] + ft[k]) / 2, atol=1e-6)


def test_lora_trains_only_adapters_and_merges_to_the_same_outputs():
    model = _trained_like()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    peft_model = flow.add_lora(model, r=4, alpha=8, target_modules=["q_proj", "v_proj", "fc"])
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    lm = flow.ParcaeLM(model, loops=2)
    data = [flow.encode(e, lm.tokenizer, 16) for e in flow.arithmetic(32, seed=0)]
    flow.fine_tune(lm, data, flow.FineTuneSpec(steps=5, batch_size=8, lr=1e-2))
    for n, p in model.named_parameters():
        base_name = n.replace("base_layer.", "")
        if "lora_" not in n:
            assert torch.equal(p, before[base_name]), n  # frozen
    assert any(not torch.all(p == 0) for n, p in model.named_parameters() if "lora_B" in n)
    ids = torch.randint(0, 256, (3, 12))
    model.eval()
    with torch.no_grad():
        adapted = token_losses(lm, ids)
        merged = flow.merge_lora(peft_model)
        assert not any("lora" in k for k in merged.state_dict())
        lm.module = merged
        assert torch.allclose(token_losses(lm, ids), adapted, atol=1e-5)


def test_lora_rejects_unknown_targets():
    with pytest.raises(ValueError, match="not Linear layers"):
        flow.add_lora(_trained_like(), r=2, alpha=2, target_modules=["query_key_value"])
