"""The benchmark preset: the exact shape the issue fixes, and the reference parameter count."""

from __future__ import annotations

from parcae import build_model, get_preset, param_counts


def test_bench_tiny_matches_the_reference_parameter_count():
    cfg = get_preset("bench-tiny")
    shape = (cfg.d_model, cfg.n_head, cfg.head_dim, cfg.mlp_ratio * cfg.d_model, cfg.n_prelude, cfg.n_core,
             cfg.n_coda, cfg.mean_recurrence, cfg.backprop_depth(), cfg.vocab_size, cfg.block_size)
    assert shape == (128, 4, 32, 512, 2, 2, 2, 4, 2, 256, 256)
    assert cfg.value_embeddings and cfg.injection == "diagonal"
    assert build_model(cfg).num_params() == 1_345_920
    assert param_counts(cfg)["total"] == 1_345_920
