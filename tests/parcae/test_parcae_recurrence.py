"""Looped forward pass: depth sampling, masking of finished sequences, truncated backprop, randomness."""

import dataclasses
import math

import pytest
import torch

from parcae import build_model, get_preset

SEQ = 32


def tiny(**override):
    return dataclasses.replace(get_preset("tiny"), **override)


def tokens(batch=4, seq=SEQ, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, seq), generator=g)


def seeded(seed=123):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build_model(tiny())
    with torch.no_grad():  # move off the zero-init identity blocks so depth actually matters
        for p in m.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return m


def test_eval_is_deterministic_for_a_seeded_generator(model):
    model.eval()
    idx = tokens()
    with torch.no_grad():
        a, _ = model(idx, num_steps=5, generator=seeded())
        b, _ = model(idx, num_steps=5, generator=seeded())
        c, _ = model(idx, num_steps=6, generator=seeded())
        d, _ = model(idx, num_steps=5, generator=seeded(7))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert not torch.equal(a, d)  # h_0 is random, resampled every forward


def test_eval_default_depth_is_mean_recurrence(model):
    model.eval()
    idx = tokens()
    with torch.no_grad():
        a, _ = model(idx, generator=seeded())
        b, _ = model(idx, num_steps=model.config.mean_recurrence, generator=seeded())
    assert torch.equal(a, b)


def test_poisson_depths_have_mean_mu_rec():
    model = build_model(tiny(mean_recurrence=8)).train()
    plan = model.depth_plan(20000, None, seeded())
    total = plan.total.float()
    assert total.min() >= 1
    assert abs(total.mean().item() - (8 + math.exp(-8))) < 0.1
    assert torch.equal(plan.grad, plan.total.clamp_max(4))
    assert plan.grad.float().mean().item() < 4
    # per-sequence draws: a batch holds many different depths
    assert len(torch.unique(plan.total[:32])) > 3
    # the same seed gives the same draws (checkpointable randomness)
    assert torch.equal(model.depth_plan(64, None, seeded()).total, model.depth_plan(64, None, seeded()).total)


def test_depth_plan_modes():
    model = build_model(tiny(mean_recurrence=6))  # µ_bwd = 3
    model.train()
    plan = model.depth_plan(3, 10, None)
    assert plan.free.tolist() == [7] * 3 and plan.grad.tolist() == [3] * 3
    plan = model.depth_plan(3, 2, None)
    assert plan.free.tolist() == [0] * 3 and plan.grad.tolist() == [2] * 3
    model.config.depth_sampling = "fixed"
    assert model.depth_plan(2, None, None).total.tolist() == [6, 6]
    model.eval()
    plan = model.depth_plan(2, 9, None)
    assert plan.free.tolist() == [0, 0] and plan.grad.tolist() == [9, 9]
    with pytest.raises(ValueError, match="num_steps"):
        model.depth_plan(2, 0, None)


def test_each_sequence_runs_its_own_depth():
    """A batch with sampled depths equals running every sequence alone at its depth (zero h_0: no RNG)."""
    torch.manual_seed(1)
    model = build_model(tiny(state_init="zero", mean_recurrence=3))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    idx = tokens(batch=6)
    model.train()
    plan = model.depth_plan(6, None, seeded(5))
    assert len(torch.unique(plan.total)) > 1
    batched, _ = model(idx, generator=seeded(5))
    model.eval()
    with torch.no_grad():
        for i, depth in enumerate(plan.total.tolist()):
            alone, _ = model(idx[i : i + 1], num_steps=depth)
            assert torch.allclose(batched[i], alone[0], atol=1e-5), (i, depth)


def test_core_work_follows_the_plan(model):
    """Finished sequences are not recomputed: core rows processed == Σ T_i, rows with grad == Σ k_i."""
    calls = []
    hook = model.core[0].register_forward_hook(lambda m, inp, out: calls.append((out.shape[0], out.requires_grad)))
    try:
        model.train()
        plan = model.depth_plan(8, None, seeded(3))
        model(tokens(batch=8), generator=seeded(3))
    finally:
        hook.remove()
    assert sum(rows for rows, _ in calls) == plan.total.sum().item()
    assert sum(rows for rows, grad in calls if grad) == plan.grad.sum().item()


def test_gradients_flow_only_through_the_last_mu_bwd_steps():
    torch.manual_seed(2)
    model = build_model(tiny(state_init="zero", mean_recurrence=4))  # µ_bwd = 2
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    idx, targets = tokens(batch=2), tokens(batch=2, seed=1)
    model.train()
    _, loss = model(idx, targets, num_steps=5)
    loss.backward()
    truncated = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    # The same computation by hand: 3 steps without gradient, then 2 with.
    model.zero_grad()
    ves = {int(i): t(idx) for i, t in model.value_embeds.items()}
    x = model.wte(idx)
    x = model.prelude[0](x, model.rotary, ves.get(0))
    e = model.prelude_norm(x)
    h = torch.zeros_like(e)
    with torch.no_grad():
        for _ in range(3):
            h = model.core[0](model.injection(h, e), model.rotary, ves.get(1))
    for _ in range(2):
        h = model.core[0](model.injection(h, e), model.rotary, ves.get(1))
    y = model.coda[0](model.C(h), model.rotary, ves.get(2))
    logits = torch.nn.functional.linear(model.norm_f(y), model.wte.weight)
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten()).backward()
    for name, p in model.named_parameters():
        if p.grad is not None or name in truncated:
            assert torch.allclose(truncated[name], p.grad, atol=1e-6, rtol=1e-4), name

    # Full backprop through all 5 steps (eval mode does not truncate) gives different gradients.
    model.zero_grad()
    model.eval()
    _, loss = model(idx, targets, num_steps=5)
    loss.backward()
    assert not torch.allclose(model.injection.B.grad, truncated["injection.B"], rtol=1e-3)


@pytest.mark.parametrize("kind", ["parcae", "transformer"])
def test_causality(kind):
    torch.manual_seed(3)
    model = build_model(tiny() if kind == "parcae" else get_preset("transformer-tiny")).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    idx = tokens(batch=2)
    j = 17
    changed = idx.clone()
    changed[:, j] = (changed[:, j] + 1) % 256
    with torch.no_grad():
        a, _ = model(idx, num_steps=3, generator=seeded())
        b, _ = model(changed, num_steps=3, generator=seeded())
    assert torch.allclose(a[:, :j], b[:, :j], atol=1e-6)
    assert not torch.allclose(a[:, j:], b[:, j:])


@pytest.mark.parametrize(
    "override",
    [dict(injection="add"), dict(injection="linear"), dict(state_init="normal"), dict(state_init="zero"),
     dict(depth_sampling="fixed"), dict(value_embeddings=False, prelude_norm=False),
     dict(n_prelude=0, n_core=2, n_coda=0), dict(d_model=24, n_head=2)],
)
def test_variants_train_step(override):
    model = build_model(tiny(**override)).train()
    idx = tokens(batch=2, seq=16)
    logits, loss = model(idx, idx, generator=seeded())
    assert logits.shape == (2, 16, 256) and torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert "state_norm" in model.injection_stats()


def test_transformer_ignores_loop_arguments():
    model = build_model(get_preset("transformer-tiny")).eval()
    idx = tokens(batch=2)
    a, loss = model(idx)
    b, _ = model(idx, num_steps=7, generator=seeded())
    assert loss is None and torch.equal(a, b)


def test_sequence_longer_than_block_size_is_rejected():
    model = build_model(tiny(block_size=16))
    with pytest.raises(ValueError, match="block_size"):
        model(tokens(batch=1, seq=17))


def test_padding_targets_are_ignored():
    model = build_model(tiny()).eval()
    idx = tokens(batch=2)
    targets = idx.clone()
    targets[:, SEQ // 2 :] = -1
    logits, masked = model(idx, targets, generator=seeded())
    kept = torch.nn.functional.cross_entropy(logits[:, : SEQ // 2].flatten(0, 1), idx[:, : SEQ // 2].flatten())
    assert torch.allclose(masked, kept)


def test_training_randomness_replays_from_a_saved_generator(model):
    model.train()
    idx = tokens()
    g = seeded(11)
    model(idx, idx, generator=g)  # advance it, as a trainer would
    saved = g.get_state()
    _, first = model(idx, idx, generator=g)
    g.set_state(saved)
    _, replay = model(idx, idx, generator=g)
    assert torch.equal(first, replay)


def test_like_init_state_is_truncated_small_normal():
    from parcae.sampling import initial_state

    h0 = initial_state("like-init", (64, 64, 64), 64, torch.device("cpu"), torch.float32, seeded())
    std = math.sqrt(2 / (5 * 64))
    assert abs(h0.std().item() - 0.986 * std) < 0.02 * std  # a ±3σ cut shrinks the std by 1.4%
    assert h0.abs().max().item() <= 3 * std + 1e-7
    assert torch.equal(h0, initial_state("like-init", (64, 64, 64), 64, torch.device("cpu"), torch.float32, seeded()))
