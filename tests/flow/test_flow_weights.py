"""FLOW's weights, temperature and objective against hand-computed numbers."""

import math

import pytest
import torch

from flow import TauRule, flow_weights, sequence_losses, temperature, weighted_loss

# Two samples: sample 0 supervises tokens with losses 1 and 2, sample 1 one token with loss 4.
LOSS = torch.tensor([[1.0, 2.0, 9.0], [4.0, 7.0, 7.0]])
MASK = torch.tensor([[1, 1, 0], [1, 0, 0]])


def test_weights_and_both_reductions_match_a_hand_computed_example():
    seq = sequence_losses(LOSS, MASK)
    assert seq.tolist() == [1.5, 4.0]
    tau = temperature(seq, "median")
    assert tau == pytest.approx(2.75)  # midpoint median of {1.5, 4}
    w = flow_weights(seq, tau)
    w0, w1 = math.exp(-1.5 / 2.75), math.exp(-4 / 2.75)
    assert w.tolist() == pytest.approx([w0, w1])
    # Reference reduction: Σ_i w_i Σ_t ℓ_it ÷ supervised tokens (3).
    assert float(weighted_loss(LOSS, MASK, w, "tokens")) == pytest.approx((w0 * 3 + w1 * 4) / 3)
    # The paper's per-sample mean: (1/B) Σ_i w_i mean_t ℓ_it.
    assert float(weighted_loss(LOSS, MASK, w, "samples")) == pytest.approx((w0 * 1.5 + w1 * 4) / 2)
    # Unweighted 'tokens' is the ordinary token mean (standard fine-tuning).
    assert float(weighted_loss(LOSS, MASK)) == pytest.approx(7 / 3)


def test_token_level_weights_multiply_each_token():
    w = torch.tensor([[0.5, 0.25, 100.0], [2.0, 100.0, 100.0]])
    assert float(weighted_loss(LOSS, MASK, w, "tokens")) == pytest.approx((0.5 * 1 + 0.25 * 2 + 2 * 4) / 3)


def test_unscorable_samples_get_weight_zero():
    loss = torch.tensor([[1.0, 2.0], [float("nan"), 3.0], [5.0, 5.0]])
    mask = torch.tensor([[1, 1], [1, 1], [0, 0]])  # sample 1 has a NaN loss, sample 2 no supervised token
    seq = sequence_losses(loss, mask)
    assert math.isnan(seq[1]) and math.isnan(seq[2])
    tau = temperature(seq, "median")  # NaNs ignored: median of {1.5}
    assert tau == pytest.approx(1.5)
    assert flow_weights(seq, tau).tolist() == pytest.approx([math.exp(-1), 0.0, 0.0])


def test_temperature_rules():
    losses = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    assert temperature(losses, "median") == pytest.approx(3.0)
    assert temperature(losses, "q0.25") == pytest.approx(2.0)
    assert temperature(losses, "x2") == pytest.approx(6.0)
    assert temperature(losses, "0.7") == pytest.approx(0.7)
    assert str(TauRule.parse("q0.25")) == "q0.25"
    for bad in ("-1", "0", "q1.5", "x0", "warm"):
        with pytest.raises(ValueError):
            TauRule.parse(bad)
    with pytest.raises(ValueError):
        temperature(torch.zeros(3), "median")  # τ would be 0


def test_reduction_name_is_checked():
    with pytest.raises(ValueError, match="reduction"):
        weighted_loss(LOSS, MASK, None, "mean")
