"""MuonAdamW (Parcae arXiv 2604.12946 App. Q): parameter split, Polar-Express orthogonalisation, schedules, cautious weight
decay, learning on `tiny`, and exact checkpoint round-trips."""

import copy
import io

import pytest
import torch
from torch import nn

from parcae import build_model, get_preset
from parcae.optim import (
    MuonAdamW,
    momentum_at,
    named_param_groups,
    orthogonalize,
    param_groups,
    weight_decay_at,
)

MUON_LEAVES = ("q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight", "fc.weight", "proj.weight")


def _check_partition(model: nn.Module, groups: dict[str, list[tuple[str, nn.Parameter]]]) -> None:
    ids = [id(p) for g in groups.values() for _, p in g]
    assert len(ids) == len(set(ids)), "a parameter landed in two groups"
    assert set(ids) == {id(p) for p in model.parameters()}, "a parameter is in no group"


@pytest.mark.parametrize("preset", ["tiny", "transformer-tiny"])
def test_every_parameter_lands_in_exactly_one_group(preset):
    model = build_model(get_preset(preset))
    groups = named_param_groups(model)
    _check_partition(model, groups)
    adamw = {name for name, _ in groups["adamw"]}
    muon = {name for name, _ in groups["muon"]}
    assert "wte.weight" in adamw
    assert any(n.startswith("value_embeds.") for n in adamw)
    assert all(n in adamw for n, p in model.named_parameters() if p.ndim < 2)  # norms, A_log, dt_bias
    assert all(n.endswith(MUON_LEAVES) or ".ve_gate." in n for n in muon)
    expected_muon = {n for n, _ in model.named_parameters() if n.endswith(MUON_LEAVES)}
    assert expected_muon <= muon
    assert {n for n in muon if ".ve_gate." in n}, "VE gates follow the reference code (Muon) by default"
    if preset == "tiny":
        assert {"injection.A_log", "injection.dt_bias", "injection.B", "C.weight", "prelude_norm.weight"} <= adamw


def test_ve_gates_can_follow_the_paper_table():
    model = build_model(get_preset("tiny"))
    groups = named_param_groups(model, ve_gates="adamw")
    _check_partition(model, groups)
    assert not any(".ve_gate." in n for n, _ in groups["muon"])
    assert any(".ve_gate." in n for n, _ in groups["adamw"])
    with pytest.raises(ValueError, match="ve_gates"):
        param_groups(model, ve_gates="sgd")


def test_linear_injection_adapter_goes_to_adamw():
    cfg = get_preset("tiny")
    cfg.injection = "linear"
    model = build_model(cfg)
    groups = named_param_groups(model)
    _check_partition(model, groups)
    assert "injection.proj.weight" in {n for n, _ in groups["adamw"]}


@pytest.mark.parametrize("shape", [(64, 256), (256, 64), (64, 64), (3, 32, 128)])
def test_orthogonalize_brings_singular_values_near_one(shape):
    # The 5 Polar-Express quintics map singular values in [1e-2, 1]·‖X‖_F into [0.80, 1.20] (never above 1.20);
    # the quintics are monotone there, so input and output singular values pair up in sorted order.
    g = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    s_in = torch.linalg.svdvals(g.double())
    s_out = torch.linalg.svdvals(orthogonalize(g, 5, torch.float32).double())
    resolved = s_in >= 1e-2 * torch.linalg.vector_norm(g.double(), dim=(-2, -1), keepdim=True).squeeze(-1)
    assert resolved.float().mean() > 0.9  # a square Gaussian has a few tiny singular values; they stay small
    assert (s_out[resolved] - 1).abs().max() < 0.21, s_out.aminmax()
    assert s_out.max() < 1.21


def test_orthogonalize_handles_ill_conditioned_matrices_and_stacks():
    gen = torch.Generator().manual_seed(1)
    u, _ = torch.linalg.qr(torch.randn(64, 64, generator=gen, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(128, 64, generator=gen, dtype=torch.float64))
    g = (u @ torch.diag(torch.logspace(0, -2, 64, dtype=torch.float64)) @ v.T).float()  # condition number 100
    out = orthogonalize(g, 5, torch.float32)
    s = torch.linalg.svdvals(out.double())
    assert (s - 1).abs().max() < 0.21, s.aminmax()
    # Direction is the polar factor: close to U Vᵀ.
    polar = (u @ v.T).float()
    cos = (out * polar).sum() / (out.norm() * polar.norm())
    assert cos > 0.99
    stacked = orthogonalize(torch.stack([g, 2 * g]), 5, torch.float32)
    torch.testing.assert_close(stacked[0], out, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(stacked[1], out, rtol=1e-4, atol=1e-5)  # scale-invariant


def test_orthogonalize_in_bfloat16():
    # The GPU path: same iteration in bf16 (rounding widens the band a little).
    g = torch.randn(2, 64, 256, generator=torch.Generator().manual_seed(2))
    out = orthogonalize(g, 5, torch.bfloat16)
    assert out.dtype == torch.bfloat16
    s = torch.linalg.svdvals(out.double())
    assert (s - 1).abs().max() < 0.3, s.aminmax()


def test_momentum_warmup_and_weight_decay_ramp():
    assert momentum_at(0, 0.85, 0.95, 300) == pytest.approx(0.85)
    assert momentum_at(150, 0.85, 0.95, 300) == pytest.approx(0.90)
    assert momentum_at(300, 0.85, 0.95, 300) == pytest.approx(0.95)
    assert momentum_at(10_000, 0.85, 0.95, 300) == pytest.approx(0.95)
    assert weight_decay_at(0, 0.2, 1000) == pytest.approx(0.2)
    assert weight_decay_at(500, 0.2, 1000) == pytest.approx(0.1)
    assert weight_decay_at(1000, 0.2, 1000) == 0.0
    assert weight_decay_at(1500, 0.2, 1000) == 0.0


class _OneMatrix(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(16, 8, generator=torch.Generator().manual_seed(3)))


def _muon_step(wd: float, total_steps: int = 10, steps: int = 1) -> tuple[torch.Tensor, torch.Tensor, MuonAdamW]:
    model = _OneMatrix()
    opt = MuonAdamW(model, muon_lr=0.01, muon_weight_decay=wd, total_steps=total_steps)
    start = model.weight.detach().clone()
    gen = torch.Generator().manual_seed(4)
    for _ in range(steps):
        model.weight.grad = torch.randn(16, 8, generator=gen)
        opt.step()
    return start, model.weight.detach().clone(), opt


def test_optimizer_tracks_momentum_and_weight_decay_schedules():
    _, _, opt = _muon_step(0.2, total_steps=10, steps=10)
    (group,) = opt.param_groups
    assert group["kind"] == "muon" and group["step"] == 10
    assert group["momentum"] == pytest.approx(momentum_at(9, 0.85, 0.95, 300))
    assert group["weight_decay"] == pytest.approx(0.2 * (1 - 9 / 10))
    # The step taken at t = total_steps uses no decay at all.
    _, _, opt = _muon_step(0.2, total_steps=10, steps=11)
    assert opt.param_groups[0]["weight_decay"] == 0.0


def test_cautious_weight_decay_skips_where_update_and_param_disagree():
    start, no_wd, opt = _muon_step(0.0)
    _, with_wd, _ = _muon_step(0.2)
    lr = 0.01 * (16 / 8) ** 0.5  # √max(1, rows/cols)
    update = (start - no_wd) / lr  # the step is p ← p - lr·O
    agree = update * start >= 0
    assert agree.any() and (~agree).any()
    decay = with_wd - no_wd
    torch.testing.assert_close(decay[agree], -lr * 0.2 * start[agree], rtol=1e-4, atol=1e-7)
    assert torch.equal(decay[~agree], torch.zeros_like(decay[~agree]))


def test_adamw_group_matches_torch_adamw():
    class Small(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.wte = nn.Embedding(10, 6)
            self.gain = nn.Parameter(torch.ones(6))

    torch.manual_seed(0)
    a = Small()
    b = copy.deepcopy(a)
    ours = MuonAdamW(a, adamw_lr=1e-2, total_steps=10)
    ref = torch.optim.AdamW(b.parameters(), lr=1e-2, betas=(0.8, 0.95), eps=1e-10, weight_decay=0.0)
    idx = torch.arange(10)
    for _ in range(5):
        for m, opt in ((a, ours), (b, ref)):
            loss = ((m.wte(idx) * m.gain).sin() ** 2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    data = torch.randint(0, 256, (8, 65), generator=torch.Generator().manual_seed(0))
    return data[:, :-1], data[:, 1:]


def _train(model, opt, sched, idx, targets, steps: int, first: int) -> list[float]:
    losses = []
    for step in range(first, first + steps):
        _, loss = model(idx, targets, generator=torch.Generator().manual_seed(step))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return losses


def _wsd(total: int):
    return lambda t: 1.0 if t <= total // 2 else max(0.0, (total - t) / (total - total // 2))


def test_muon_adamw_trains_tiny():
    torch.manual_seed(0)
    model = build_model(get_preset("tiny")).train()
    opt = MuonAdamW(model, total_steps=30)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0)
    idx, targets = _batch()
    losses = _train(model, opt, sched, idx, targets, 30, 0)
    assert losses[0] > 5.0
    assert losses[-1] < 0.25 * losses[0], losses  # measured: 5.7 -> 0.02


def test_lambda_lr_drives_every_group():
    model = build_model(get_preset("tiny"))
    opt = MuonAdamW(model, adamw_lr=4e-3, muon_lr=8e-3, total_steps=10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 ** t)
    opt.step()
    sched.step()
    sched.step()
    for group in opt.param_groups:
        base = 4e-3 if group["kind"] == "adamw" else 8e-3
        assert group["lr"] == pytest.approx(base * 0.25)


def test_checkpoint_round_trip_is_bit_identical():
    total = 10
    torch.manual_seed(0)
    model = build_model(get_preset("tiny")).train()
    opt = MuonAdamW(model, total_steps=total)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _wsd(total))
    idx, targets = _batch()
    _train(model, opt, sched, idx, targets, 5, 0)

    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}, buffer)
    buffer.seek(0)
    ckpt = torch.load(buffer, weights_only=True)

    torch.manual_seed(123)  # a different init: everything must come from the checkpoint
    resumed = build_model(get_preset("tiny")).train()
    resumed.load_state_dict(ckpt["model"])
    resumed_opt = MuonAdamW(resumed, total_steps=total)
    resumed_opt.load_state_dict(ckpt["opt"])
    resumed_sched = torch.optim.lr_scheduler.LambdaLR(resumed_opt, _wsd(total))
    resumed_sched.load_state_dict(ckpt["sched"])

    expected = _train(model, opt, sched, idx, targets, 5, 5)
    got = _train(resumed, resumed_opt, resumed_sched, idx, targets, 5, 5)
    assert got == expected
    for (name, a), b in zip(model.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), name
    assert [g["step"] for g in resumed_opt.param_groups if g["kind"] == "muon"] == [10] * (len(opt.param_groups) - 1)
