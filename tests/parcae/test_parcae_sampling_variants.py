"""Depth sampling schemes, granularities, the depth curriculum and the recurrent-residual monitor."""

import dataclasses
import math

import pytest
import torch

from parcae import build_model, get_preset
from parcae.sampling import curriculum_mean, draw_depths


def tiny(**override):
    return dataclasses.replace(get_preset("tiny"), **override)


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def tokens(batch=4, seq=16, seed=0):
    return torch.randint(0, 256, (batch, seq), generator=seeded(seed))


def perturbed(**override):
    torch.manual_seed(0)
    model = build_model(tiny(**override))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model


def count_core_calls(model, run):
    """(rows, requires_grad) of every call of the first core block while run() executes."""
    calls = []
    hook = model.core[0].register_forward_hook(lambda m, inp, out: calls.append((out.shape[0], out.requires_grad)))
    try:
        run()
    finally:
        hook.remove()
    return calls


MU, BWD, N = 6, 3, 40000


def test_truncated_poisson_statistics():
    plan = draw_depths("poisson-truncated", "per-sequence", N, 1, MU, BWD, seeded())
    total = plan.total.float()
    assert total.min() >= 1
    assert abs(total.mean().item() - (MU + math.exp(-MU))) < 0.05
    assert torch.equal(plan.grad, plan.total.clamp_max(BWD))


def test_full_backprop_statistics():
    plan = draw_depths("poisson-full", "per-sequence", N, 1, MU, BWD, seeded())
    assert (plan.free == 0).all() and plan.grad.min() >= 1
    assert abs(plan.grad.float().mean().item() - (MU + math.exp(-MU))) < 0.05
    assert plan.grad.max() > BWD  # not capped at µ_bwd


def test_fill_statistics():
    plan = draw_depths("poisson-fill", "per-sequence", N, 1, MU, BWD, seeded())
    assert (plan.grad == BWD).all()
    assert abs(plan.free.float().mean().item() - (MU - BWD)) < 0.05
    assert abs(plan.free.float().var().item() - (MU - BWD)) < 0.1  # Poisson: variance = mean


def test_fixed_is_deterministic():
    plan = draw_depths("fixed", "per-token", 3, 5, MU, BWD, seeded())
    assert (plan.free == MU - BWD).all() and (plan.grad == BWD).all() and plan.free.shape == (3, 5)


@pytest.mark.parametrize("scheme", ["poisson-truncated", "poisson-full", "poisson-fill"])
def test_per_batch_draws_one_depth_per_micro_batch(scheme):
    draws = [draw_depths(scheme, "per-batch", 8, 1, MU, BWD, seeded(s)) for s in range(2000)]
    assert all(len(set(p.total.tolist())) == 1 and len(set(p.grad.tolist())) == 1 for p in draws)
    totals = torch.stack([p.total[0] for p in draws]).float()
    expected = {"poisson-truncated": MU + math.exp(-MU), "poisson-full": MU + math.exp(-MU), "poisson-fill": MU}
    assert abs(totals.mean().item() - expected[scheme]) < 0.2
    assert len(set(totals.tolist())) > 3  # still random across micro-batches


def test_per_batch_truncated_runs_exactly_t_steps():
    """The reference's per-batch truncated scheme ran T + min(T, µ_bwd) steps; this one runs T."""
    model = perturbed(mean_recurrence=MU, mean_backprop=BWD, depth_granularity="per-batch").train()
    seen_free = False
    for seed in range(6):
        plan = model.depth_plan(4, None, seeded(seed), seq_len=16)
        calls = count_core_calls(model, lambda: model(tokens(), tokens(), generator=seeded(seed)))
        T, k = plan.total[0].item(), plan.grad[0].item()
        assert all(rows == 4 for rows, _ in calls)  # the whole micro-batch runs every step
        assert len(calls) == T and sum(grad for _, grad in calls) == k == min(T, BWD)
        seen_free |= T > k
    assert seen_free


def test_per_token_depths_vary_within_a_sequence():
    model = perturbed(depth_granularity="per-token").train()
    plan = model.depth_plan(4, None, seeded(2), seq_len=16)
    assert plan.total.shape == (4, 16)
    assert all(len(set(row.tolist())) > 1 for row in plan.total)
    assert torch.equal(plan.grad, plan.total.clamp_max(model.config.backprop_depth()))


def test_per_token_masks_freeze_each_token_at_its_own_depth():
    """Position 0 attends only to itself, so its output must equal a plain run at its own depth."""
    model = perturbed(depth_granularity="per-token", state_init="zero")
    idx = tokens(batch=6)
    model.train()
    plan = model.depth_plan(6, None, seeded(7), seq_len=16)
    calls = count_core_calls(model, lambda: model(idx, generator=seeded(7)))
    assert len(calls) == plan.total.max().item()
    batched, _ = model(idx, generator=seeded(7))
    model.eval()
    with torch.no_grad():
        for i in range(6):
            alone, _ = model(idx[i : i + 1, :1], num_steps=plan.total[i, 0].item())
            assert torch.allclose(batched[i, 0], alone[0, 0], atol=1e-5), i
    # Tokens at different depths attend to each other: a later token differs from its depth run alone.
    depths = plan.total[0]
    j = next(j for j in range(1, 16) if depths[j] != depths[0])
    with torch.no_grad():
        alone, _ = model(idx[:1, : j + 1], num_steps=depths[j].item())
    assert not torch.allclose(batched[0, j], alone[0, j], atol=1e-4)


def test_poisson_full_backpropagates_through_every_step():
    model = perturbed(depth_sampling="poisson-full", mean_recurrence=MU, mean_backprop=BWD, state_init="zero")
    idx, targets = tokens(batch=1), tokens(batch=1, seed=1)
    model.train()
    seed = next(s for s in range(100) if model.depth_plan(1, None, seeded(s)).grad.item() > BWD)
    T = model.depth_plan(1, None, seeded(seed)).grad.item()
    calls = count_core_calls(model, lambda: model(idx, targets, generator=seeded(seed))[1].backward())
    assert len(calls) == T and all(grad for _, grad in calls)
    sampled = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    # Eval mode never truncates, so it is the full-BPTT reference at the same depth.
    model.zero_grad()
    model.eval()
    model(idx, targets, num_steps=T)[1].backward()
    for name, p in model.named_parameters():
        if p.grad is not None:
            assert torch.allclose(sampled[name], p.grad, atol=1e-6, rtol=1e-4), name


def test_curriculum_ramps_linearly_and_by_sqrt():
    assert [curriculum_mean(8, s, 100, "linear") for s in (0, 1, 12, 13, 50, 99, 100, 10**6)] == \
        [1, 1, 1, 2, 4, 8, 8, 8]
    assert curriculum_mean(10, 30, 100, "linear") == 3  # exact: no float round-up of 0.3 * 10
    # sqrt: 1 - sqrt(1 - p) lags the linear ramp early on.
    assert [curriculum_mean(8, s, 100, "sqrt") for s in (0, 25, 50, 75, 99)] == [1, 2, 3, 4, 8]
    assert curriculum_mean(8, None, 100, "sqrt") == 8 and curriculum_mean(8, 3, 0, "linear") == 8
    with pytest.raises(ValueError, match="step"):
        curriculum_mean(8, -1, 100, "linear")


def test_forward_depth_follows_the_curriculum():
    model = perturbed(mean_recurrence=8, depth_sampling="fixed", depth_curriculum_steps=100).train()
    for step, depth in ((0, 1), (50, 4), (75, 6), (100, 8), (None, 8)):
        assert model.depth_plan(2, None, None, step=step).total.tolist() == [depth, depth]
        calls = count_core_calls(model, lambda: model(tokens(batch=2), step=step))
        assert len(calls) == depth
    # Poisson draws centre on the ramped mean; evaluation ignores the curriculum.
    poisson = perturbed(mean_recurrence=8, depth_curriculum_steps=100).train()
    mean = poisson.depth_plan(20000, None, seeded(), step=50).total.float().mean().item()
    assert abs(mean - (4 + math.exp(-4))) < 0.1
    poisson.eval()
    assert poisson.depth_plan(2, None, None, step=0).total.tolist() == [8, 8]


@pytest.mark.parametrize(
    "key, value",
    [("depth_sampling", "poisson-bounded"), ("depth_granularity", "per-layer"), ("depth_curriculum_steps", -5),
     ("depth_curriculum", "cosine")],
)
def test_invalid_sampling_fields_name_the_key(key, value):
    with pytest.raises(ValueError, match=rf"^model\.{key}={value!r}: .+; .+"):
        build_model(tiny(**{key: value}))


def capture_final_state(model, run):
    states = []
    hook = model.C.register_forward_hook(lambda m, inp, out: states.append(inp[0].detach()))
    try:
        run()
    finally:
        hook.remove()
    return states[-1]


def test_recurrent_residual_matches_the_last_step_difference():
    model = perturbed().eval()
    idx = tokens(batch=2)
    h0 = 0.05 * torch.randn(2, 16, 64, generator=seeded())
    with torch.no_grad():
        h2 = capture_final_state(model, lambda: model(idx, num_steps=2, initial_state=h0))
        h3 = capture_final_state(model, lambda: model(idx, num_steps=3, initial_state=h0))
    stats = model.injection_stats()
    residual = (h3 - h2).norm(dim=-1).mean().item()
    assert stats["recurrent_residual"] == pytest.approx(residual, rel=1e-5)
    assert stats["rel_residual"] == pytest.approx(residual / h3.norm(dim=-1).mean().item(), rel=1e-5)
    with torch.no_grad():
        model(idx, num_steps=1)
    assert "recurrent_residual" not in model.injection_stats()  # undefined after a single step


@pytest.mark.parametrize("granularity", ["per-sequence", "per-token"])
def test_recurrent_residual_counts_only_multi_step_sequences(granularity):
    """Sampled depths: each sequence (token) is measured at its own last step; T = 1 ones are left out.

    Also checks that gathering only the still-running rows equals the plain masked loop of the reference.
    """
    model = perturbed(mean_recurrence=2, mean_backprop=1, depth_granularity=granularity)
    idx = tokens(batch=8)
    h0 = 0.05 * torch.randn(8, 16, 64, generator=seeded(1))
    model.train()
    plan = model.depth_plan(8, None, seeded(3), seq_len=16)
    total = plan.total if granularity == "per-token" else plan.total[:, None].expand(8, 16)
    assert (total == 1).any() and (total >= 2).any()
    with torch.no_grad():
        model(idx, generator=seeded(3), initial_state=h0)
    stats = model.injection_stats()

    # Reference: the masked loop written out over the whole batch, every token frozen after its T steps.
    with torch.no_grad():
        ves = {int(i): t(idx) for i, t in model.value_embeds.items()}
        e = model.prelude_norm(model.prelude[0](model.wte(idx), model.rotary, ves.get(0)))
        h, residual = h0.clone(), torch.zeros(8, 16)
        for t in range(int(total.max())):
            new = model.core[0](model.injection(h, e), model.rotary, ves.get(1))
            residual = torch.where(total == t + 1, (new - h).norm(dim=-1), residual)
            h = torch.where((total > t)[..., None], new, h)
    mask = total >= 2
    expected = residual[mask].mean().item()
    assert stats["recurrent_residual"] == pytest.approx(expected, rel=1e-4)
    assert stats["rel_residual"] == pytest.approx(expected / h.norm(dim=-1)[mask].mean().item(), rel=1e-4)
