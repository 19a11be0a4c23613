"""The training benchmark (make bench / make bench-gpu) on a tiny CPU model, and the sync-free step."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from experiments.training.trainer import clip_and_step

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import bench_gpu  # noqa: E402
import bench_train  # noqa: E402

TINY = ["--preset", "tiny", "--seq-len", "32", "--batch-size", "2", "--threads", "1", "--warmup", "1",
        "--windows", "2", "--window-steps", "2"]


def test_gpu_benchmark_code_path_runs_on_cpu_and_reports_mfu():
    # bench_gpu's defaults (preset small, CUDA, compile, bf16) with what a CPU test can afford swapped in.
    args = bench_train.parse_args([*TINY, "--device", "cpu", "--no-compile", "--peak-tflops", "2"],
                                  bench_gpu.GPU_DEFAULTS)
    assert args.autocast == "bf16" and not args.compile
    result = bench_train.run(args)
    assert result["preset"] == "tiny" and result["device"] == "cpu" and result["precision"] == "bf16 autocast"
    assert result["tokens_per_s"] > 0 and len(result["window_tokens_per_s"]) == 2
    assert result["tokens_per_step"] == 64 and result["peak_memory_mb"] > 0
    # MFU counts the FLOPs that run (parcae.executed_flops_per_token); the budget accounting is reported beside it.
    assert result["mfu"] == pytest.approx(result["executed_flops_per_token"] * result["tokens_per_s"] / 2e12, abs=1e-4)
    assert result["mfu_reference_accounting"] == pytest.approx(
        result["flops_per_token"] * result["tokens_per_s"] / 2e12, abs=1e-4)


def test_logging_overhead_logs_to_a_real_mlflow_store():
    result = bench_train.run(bench_train.parse_args(
        [*TINY, "--logging-overhead", "--logging-pairs", "2", "--checkpoint-every", "10"]))
    logging = result["logging"]
    assert result["mfu"] is None  # no peak known for a CPU
    assert len(logging["window_s_on"]) == len(logging["window_s_off"]) == 2
    assert logging["loss_points_in_mlflow"] == 2  # one log step per 10-step window with logging on
    assert 0 < logging["logging_share_of_step_time"] < 1 and logging["median_ratio_on_off"] > 0


def test_gpu_peaks_by_device_name():
    assert bench_train.peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert bench_train.peak_flops("NVIDIA H100 PCIe") == 756e12
    assert bench_train.peak_flops("NVIDIA H200") == 989e12
    assert bench_train.peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert bench_train.peak_flops("Some New Accelerator") is None


def test_nonfinite_step_is_skipped_on_the_device_by_fused_adamw():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, fused=True)
    x = torch.randn(5, 4)
    model(x).pow(2).mean().backward()
    clip_and_step(model, opt, torch.tensor(1.0), 1.0)  # one real step, so the state is not empty
    before = [p.detach().clone() for p in model.parameters()]
    state = [{k: v.clone() for k, v in opt.state[p].items()} for p in model.parameters()]
    opt.zero_grad()
    (model(x).pow(2).mean() * float("nan")).backward()
    grad_norm, nonfinite = clip_and_step(model, opt, torch.tensor(float("nan")), 1.0)
    assert nonfinite.item() == 1.0 and not torch.isfinite(grad_norm)
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))
    for saved, p in zip(state, model.parameters()):
        assert all(torch.equal(saved[k], opt.state[p][k]) for k in saved)  # moments and step count kept
    opt.zero_grad()
    model(x).pow(2).mean().backward()
    _, nonfinite = clip_and_step(model, opt, torch.tensor(1.0), 1.0)
    assert nonfinite.item() == 0.0 and not torch.equal(before[0], model.weight)


def _compose(*overrides):
    from hydra import compose, initialize_config_dir

    from experiments.config.schema import register
    from helpers import REPO

    register()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def test_speed_switches_are_validated_and_leave_the_run_identity_alone():
    from experiments.config.errors import ConfigError
    from experiments.config.identity import identity
    from experiments.config.plan import plan

    with pytest.raises(ConfigError) as err:
        plan(_compose("train.precision=fp8"))
    assert err.value.key == "train.precision" and "bf16" in str(err.value)
    plain = _compose()
    fast = _compose("train.precision=bf16", "train.compile=true", "train.activation_checkpointing=true")
    assert identity(plain, plan(plain).model, "c") == identity(fast, plan(fast).model, "c")


def test_trainer_runs_with_bf16_autocast_and_checkpointed_iterations(tmp_path):
    from helpers import SMALL, pretrain

    r = pretrain(tmp_path, *SMALL, "train.tokens=5120", "tracking.enabled=false", "train.precision=bf16",
                 "train.activation_checkpointing=true")
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = [json.loads(line) for line in next(tmp_path.glob("runs/*/metrics.jsonl")).read_text().splitlines()]
    losses = [m["train/loss"] for m in metrics if "train/loss" in m]
    assert len(losses) >= 2 and all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
