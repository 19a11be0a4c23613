"""ρ(Ā) < 1 for any parameter values, extreme ones included, in floating-point arithmetic too."""

import itertools

import torch

from parcae.injection import DiagonalInjection

EXTREMES = [-1e30, -1e4, -100.0, -20.0, -1.0, 0.0, 1.0, 20.0, 100.0, 1e4, 1e30]


def test_decay_strictly_inside_unit_interval_on_a_grid_of_extremes():
    inj = DiagonalInjection(len(EXTREMES) ** 2)
    pairs = torch.tensor(list(itertools.product(EXTREMES, EXTREMES)))
    with torch.no_grad():
        inj.dt_bias.copy_(pairs[:, 0])
        inj.A_log.copy_(pairs[:, 1])
    decay = inj.decay()
    assert torch.isfinite(decay).all()
    assert (decay > 0).all() and (decay < 1).all()
    decay.sum().backward()  # no NaN gradient anywhere, however extreme the parameters
    assert torch.isfinite(inj.dt_bias.grad).all() and torch.isfinite(inj.A_log.grad).all()


def test_decay_strictly_inside_unit_interval_for_random_wide_parameters():
    gen = torch.Generator().manual_seed(0)
    inj = DiagonalInjection(4096)
    for _ in range(20):
        with torch.no_grad():
            scale = 10 ** torch.empty(4096).uniform_(-3, 6, generator=gen)
            inj.dt_bias.copy_(torch.randn(4096, generator=gen) * scale)
            inj.A_log.copy_(torch.randn(4096, generator=gen) * scale)
        decay = inj.decay()
        assert (decay > 0).all() and (decay < 1).all()


def test_bounded_state_under_repeated_injection_with_extreme_parameters():
    """With Ā < 1 the linear recurrence h ← Ā h + B̄ e stays bounded however long it runs."""
    inj = DiagonalInjection(8)
    with torch.no_grad():
        inj.dt_bias.fill_(-1e4)  # Δ → 0: the slowest possible decay
    h, e = torch.ones(1, 1, 8), torch.ones(1, 1, 8)
    for _ in range(1000):
        h = inj(h, e)
    assert torch.isfinite(h).all() and h.abs().max() <= 1.0 + 1e-3

