"""Configuration errors name the offending key and say how to fix it."""

import dataclasses

import pytest

from parcae import ModelConfig, build_model, get_preset


def test_defaults_are_valid_and_mu_bwd_resolves():
    cfg = ModelConfig()
    cfg.validate()
    assert cfg.backprop_depth() == 2
    assert dataclasses.replace(cfg, mean_recurrence=7).backprop_depth() == 4
    assert dataclasses.replace(cfg, mean_recurrence=7, mean_backprop=7).backprop_depth() == 7
    assert dataclasses.replace(cfg, mean_recurrence=1).backprop_depth() == 1


@pytest.mark.parametrize(
    "key, value",
    [
        ("kind", "rnn"),
        ("mean_recurrence", 0),
        ("mean_backprop", 0),
        ("mean_backprop", 9),
        ("n_head", 5),
        ("n_head", 64),  # head_dim 1 is odd, RoPE needs pairs
        ("injection", "gated"),
        ("state_init", "embed"),
        ("depth_sampling", "per-batch"),
        ("n_core", 0),
        ("n_prelude", -1),
        ("d_model", 0),
        ("vocab_size", 0),
        ("block_size", 0),
        ("rope_theta", 0.0),
    ],
)
def test_invalid_values_name_the_key(key, value):
    cfg = dataclasses.replace(get_preset("tiny"), **{key: value})
    with pytest.raises(ValueError, match=rf"^model\.{key}={value!r}: .+; .+"):
        build_model(cfg)


def test_transformer_needs_layers_but_ignores_loop_fields():
    cfg = dataclasses.replace(get_preset("transformer-tiny"), mean_recurrence=0, injection="whatever")
    cfg.validate()
    with pytest.raises(ValueError, match=r"^model\.n_layer=0"):
        dataclasses.replace(cfg, n_layer=0).validate()
