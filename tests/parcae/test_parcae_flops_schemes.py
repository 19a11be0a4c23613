"""FLOP accounting per depth-sampling scheme."""

import dataclasses

from parcae import flops_per_token, get_preset


def test_full_bptt_is_charged_for_every_iteration():
    base = get_preset("small")
    full = dataclasses.replace(base, depth_sampling="poisson-full")
    same_bwd = dataclasses.replace(base, mean_backprop=base.mean_recurrence)
    assert flops_per_token(full) == flops_per_token(same_bwd) > flops_per_token(base)
