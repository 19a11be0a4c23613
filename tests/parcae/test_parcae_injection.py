"""The diagonal injection keeps Ā inside (0, 1) and starts at Ā = 1/sqrt(5), Δ = ln sqrt(5), B = I."""

import math

import pytest
import torch

from parcae import build_model, get_preset
from parcae.injection import DiagonalInjection


def test_init_values():
    inj = DiagonalInjection(16)
    assert torch.allclose(inj.delta(), torch.full((16,), 0.80472), atol=1e-5)
    assert torch.allclose(inj.decay(), torch.full((16,), 1 / math.sqrt(5)), atol=1e-6)
    assert torch.allclose(inj.decay(), torch.full((16,), 0.44721), atol=1e-5)
    assert torch.equal(inj.B.detach(), torch.eye(16))
    assert torch.allclose(inj.dt_bias.detach(), torch.full((16,), 0.21194), atol=1e-5)


def test_decay_stays_in_unit_interval_for_random_parameters():
    torch.manual_seed(0)
    inj = DiagonalInjection(4096).double()
    with torch.no_grad():
        inj.A_log.normal_()
        inj.dt_bias.normal_()
    decay = inj.decay()
    assert (decay > 0).all() and (decay < 1).all()
    # Extreme values may round to exactly 0 or 1 in floating point, but never leave [0, 1].
    with torch.no_grad():
        inj.A_log.normal_(std=20.0)
        inj.dt_bias.normal_(std=20.0)
    decay = inj.float().decay()
    assert torch.isfinite(decay).all() and (decay >= 0).all() and (decay <= 1).all()


def test_update_is_decay_times_state_plus_scaled_input():
    torch.manual_seed(0)
    inj = DiagonalInjection(8)
    with torch.no_grad():
        inj.A_log.normal_()
        inj.dt_bias.normal_()
        inj.B.normal_()
    h, e = torch.randn(2, 3, 8), torch.randn(2, 3, 8)
    delta = torch.nn.functional.softplus(inj.dt_bias)
    expected = torch.exp(-delta * inj.A_log.exp()) * h + (e @ (delta[:, None] * inj.B).T)
    assert torch.allclose(inj(h, e), expected, atol=1e-6)


def test_model_init_and_stats():
    torch.manual_seed(0)
    model = build_model(get_preset("tiny")).eval()
    std = math.sqrt(2 / (5 * 64))
    assert model.wte.weight.std().item() == pytest.approx(std, rel=0.05)
    assert model.core[0].attn.o_proj.weight.abs().max() == 0 and model.core[0].mlp.proj.weight.abs().max() == 0
    assert model.C.weight.std().item() == pytest.approx(std, rel=0.05)
    # orthogonal: all singular values equal
    s = torch.linalg.svdvals(model.C.weight)
    assert (s.max() / s.min()).item() < 1.0001
    model(torch.randint(0, 256, (2, 16)), num_steps=3)
    stats = model.injection_stats()
    assert abs(stats["rho_A"] - 1 / math.sqrt(5)) < 1e-6
    assert abs(stats["B_norm"] - 1.0) < 1e-5
    assert stats["state_norm"] > 0 and math.isfinite(stats["C_norm"])
    assert build_model(get_preset("transformer-tiny")).injection_stats() == {}

