"""Every injection reports itself as a linear system (ρ(Ā), ‖B̄‖) so stability runs can compare them."""

import dataclasses

import pytest
import torch

from parcae import build_model, get_preset


@pytest.mark.parametrize("injection", ["diagonal", "linear", "add"])
def test_injection_stats_report_the_linear_system(injection):
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(get_preset("tiny"), injection=injection))
    model.train()
    model(torch.randint(0, 256, (2, 32)), torch.randint(0, 256, (2, 32)))
    stats = model.injection_stats()
    assert {"rho_A", "B_bar_norm", "C_norm", "state_norm"} <= set(stats)
    if injection == "diagonal":
        assert abs(stats["rho_A"] - 0.4472) < 1e-3 and abs(stats["B_bar_norm"] - 0.8047) < 1e-3
    elif injection == "add":
        assert stats["rho_A"] == 1.0
    else:
        w = model.injection.proj.weight[:, :64].detach()
        assert abs(stats["rho_A"] - torch.linalg.eigvals(w).abs().max().item()) < 1e-6
