"""The benchmark preset, and the speed work on the looped model: each fast path equals a plain reference.

The references are the straightforward computations the fast paths replace: every iteration over the whole
batch with finished rows (or tokens) masked, the injection's input term recomputed at each iteration, the
real-valued RoPE rotation, and no activation checkpointing.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from parcae import build_model, get_preset, param_counts
from parcae.blocks import rotate_pairs_complex, rotate_pairs_real
from parcae.injection import make_injection
from parcae.sampling import initial_state


def test_bench_tiny_matches_the_reference_parameter_count():
    cfg = get_preset("bench-tiny")
    shape = (cfg.d_model, cfg.n_head, cfg.head_dim, cfg.mlp_ratio * cfg.d_model, cfg.n_prelude, cfg.n_core,
             cfg.n_coda, cfg.mean_recurrence, cfg.backprop_depth(), cfg.vocab_size, cfg.block_size)
    assert shape == (128, 4, 32, 512, 2, 2, 2, 4, 2, 256, 256)
    assert cfg.value_embeddings and cfg.injection == "diagonal"
    assert build_model(cfg).num_params() == 1_345_920
    assert param_counts(cfg)["total"] == 1_345_920


def _model(**override) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(get_preset("tiny"), mean_recurrence=5, mean_backprop=2, **override))
    with torch.no_grad():  # off the identity init, so that every iteration changes the state
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.train()


def _batch(batch: int = 8, seq: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.randint(0, 256, (batch, seq), generator=g), torch.randint(0, 256, (batch, seq), generator=g)


def _masked_reference(model, idx: torch.Tensor, targets: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The loss with every iteration run on the whole batch, finished rows or tokens kept by a mask, and
    the injection applied whole (its input term recomputed each time). Same draws, in the same order."""
    cfg = model.config
    B, S = idx.shape
    ves = model._value_embeddings(idx)
    e = model._prelude(idx, ves, None)
    plan = model.depth_plan(B, None, gen, seq_len=S)
    h = initial_state(cfg.state_init, (B, S, cfg.d_model), cfg.d_model, e.device, e.dtype, gen)
    core_ves = model._core_value_embeddings(ves)

    def run(h: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        per_token = steps if steps.dim() == 2 else steps[:, None].expand(B, S)
        for t in range(int(steps.max())):
            x = model.injection(h, e)
            for block, ve in zip(model.core, core_ves):
                x = block(x, model.rotary, ve)
            h = torch.where((per_token > t).unsqueeze(-1), x, h)
        return h

    with torch.no_grad():
        h = run(h, plan.free)
    h = run(h, plan.grad)
    return model._logits_and_loss(model._coda(h, ves, None), targets)[1]


def _loss_and_grads(model, compute) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = compute()
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


def _assert_same(a, b, tol: float = 1e-6) -> None:
    (loss_a, grads_a), (loss_b, grads_b) = a, b
    assert torch.allclose(loss_a, loss_b, rtol=tol, atol=tol)
    assert len(grads_a) == len(grads_b)
    for ga, gb in zip(grads_a, grads_b):
        assert torch.allclose(ga, gb, rtol=1e-5, atol=tol * max(1.0, gb.abs().max().item()))


@pytest.mark.parametrize("granularity", ["per-sequence", "per-token"])
def test_depth_sorted_loop_equals_the_masked_full_batch_loop(granularity):
    model = _model(depth_granularity=granularity)
    idx, targets = _batch()
    plan = model.depth_plan(idx.shape[0], None, torch.Generator().manual_seed(11), seq_len=idx.shape[1])
    assert len(set(plan.total.flatten().tolist())) > 2  # rows really finish at different iterations
    fast = _loss_and_grads(model, lambda: model(idx, targets, generator=torch.Generator().manual_seed(11))[1])
    slow = _loss_and_grads(model, lambda: _masked_reference(model, idx, targets, torch.Generator().manual_seed(11)))
    _assert_same(fast, slow)


def test_checkpointed_iterations_give_the_same_loss_and_gradients():
    model = _model()
    idx, targets = _batch()

    def loss() -> torch.Tensor:
        return model(idx, targets, generator=torch.Generator().manual_seed(5))[1]

    plain = _loss_and_grads(model, loss)
    model.checkpoint_iterations = True
    checkpointed = _loss_and_grads(model, loss)
    model.checkpoint_iterations = False
    _assert_same(checkpointed, plain)


def test_rotary_forms_agree():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 7, 3, 8, generator=g)
    angles = torch.rand(7, 1, 4, generator=g) * 6.3
    cos, sin = angles.cos(), angles.sin()
    x0, x1 = x[..., 0::2], x[..., 1::2]
    by_hand = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)
    assert torch.allclose(rotate_pairs_complex(x, cos, sin), by_hand, atol=1e-6)
    assert torch.allclose(rotate_pairs_real(x, cos, sin), by_hand, atol=1e-6)


@pytest.mark.parametrize("kind", ["diagonal", "add", "linear"])
def test_injection_input_term_computed_once_is_the_same_map(kind):
    torch.manual_seed(0)
    inj = make_injection(kind, 16)
    with torch.no_grad():
        for p in inj.parameters():
            p.add_(0.1 * torch.randn_like(p))
    h, e = torch.randn(2, 5, 16), torch.randn(2, 5, 16)
    if kind == "diagonal":
        whole = inj.decay() * h + inj.delta() * F.linear(e, inj.B)
    elif kind == "add":
        whole = h + e
    else:
        whole = inj.proj(torch.cat((h, e), dim=-1))
    assert torch.allclose(inj.step(h, inj.input_term(e)), whole, atol=1e-6)
