"""sweep.dry_run=true plans a sweep (tokens, steps, micro-batch, memory, device-hours) and launches nothing; the
CUDA check before launching; the per-point memory estimate (parcae.memory); the executed-FLOP params of a run."""

import dataclasses
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from experiments.config.errors import ConfigError
from experiments.config.plan import plan
from experiments.config.schema import register
from experiments.launch.preflight import check_device, preflight
from parcae import executed_flops_per_token, get_preset
from parcae.memory import _saved_bytes, _shape_key, activation_bytes, choose_micro_batch, estimate
from helpers import sweep

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # CI's `make test-slow`
def test_gpu_sweep_dry_run_on_slurm_prices_every_point_and_submits_nothing(tmp_path):
    # The isoflop-gpu file's recipe, with the grid narrowed on the command line to its extremes.
    r = sweep(tmp_path, "sweep=isoflop-gpu", "sweep_id=isoflop-gpu", "launcher=slurm_gpu", "sweep.dry_run=true",
              "model.mean_recurrence=1,12", "train.flop_budget=1e18,64e18")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "4 grid points valid" in lines[0] and "8 processes per job" in lines[0]
    rows = {line.split()[0]: line.split() for line in lines if line.startswith("  mu")}
    assert set(rows) == {"mu1-C1e18", "mu1-C6.4e19", "mu12-C1e18", "mu12-C6.4e19"}
    assert all(row[3] == "16/32" and "fits" in row for row in rows.values())  # the sweep's micro-batch of 16
    assert rows["mu12-C1e18"][2] == "1,130"  # steps: ⌊1e18 / F(µ=12) / 524,288⌋
    total = next(line for line in lines if line.startswith("  total"))
    assert float(total.split()[-2]) == pytest.approx(sum(float(row[-2]) for row in rows.values()), abs=0.1)
    assert "GPU-h" in lines[1] and "nominal" in r.stdout
    assert not any(tmp_path.iterdir())  # no store, manifest, run dir or submitit folder


@pytest.mark.slow  # CI's `make test-slow`
def test_cpu_sweep_dry_run_with_the_local_launcher(tmp_path):
    r = sweep(tmp_path, "sweep=isoflop", "sweep.dry_run=true", "model.mean_recurrence=1,4", "train.flop_budget=1e12")
    assert r.returncode == 0, r.stderr
    assert "2 grid points valid" in r.stdout and "CPU-h" in r.stdout and "this machine" in r.stdout
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("device", ["banana", "cuda"])
def test_a_run_on_a_device_it_cannot_use_is_one_line_and_exit_2(device, capsys):
    import torch

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    register()
    with pytest.raises(SystemExit) as exit_:
        preflight("config", [f"train.device={device}", "tracking.enabled=false"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"config error: train.device='{device}'")


def test_check_device_rules():
    check_device("cpu", needs_visible_gpu=True)
    check_device("cuda", needs_visible_gpu=False, needs_cuda_build=False)  # a dry run only plans
    with pytest.raises(ConfigError, match="unknown device"):
        check_device("banana", needs_visible_gpu=False, needs_cuda_build=False)
    import torch

    if torch.version.cuda is None:
        with pytest.raises(ConfigError, match="not a CUDA build"):
            check_device("cuda", needs_visible_gpu=False)  # even a SLURM submission needs the build


def test_activation_estimate_extrapolates_from_small_measurements():
    """Saved activations are close to linear in sequences and backpropagated iterations: the extrapolation
    from (1, 1), (2, 1), (1, 2) is within 2 % of a direct meta-device measurement at 3 sequences × 3
    iterations, and not below it."""
    cfg = dataclasses.replace(get_preset("cpu-m"), mean_recurrence=6, mean_backprop=3)
    direct, _ = _saved_bytes(_shape_key(cfg), 3, 3, True, False)
    assert direct <= activation_bytes(cfg, 3)[0] <= 1.02 * direct


def test_memory_estimate_and_micro_batch_choice():
    small = get_preset("small")
    e = estimate(small, 1, precision="bf16", optimizer="adamw", world_size=8)
    n = 144_323_136
    assert (e.parameters, e.gradients, e.optimizer, e.ddp_buckets) == (4 * n, 4 * n, 8 * n, 4 * n)
    assert 0.5e9 < e.activations < 3e9  # one 2,048-token sequence at µ_bwd = 4, flash-style attention
    deeper = estimate(dataclasses.replace(small, mean_recurrence=12), 1)
    assert deeper.activations > e.activations  # µ_bwd 6 > 4
    muon = estimate(small, 1, optimizer="muon")
    assert muon.optimizer < 8 * n
    chosen = choose_micro_batch(small, 32, 80.0, world_size=8)
    assert chosen is not None and 32 % chosen.micro_batch == 0 and chosen.fits(80.0)
    if chosen.micro_batch < 32:
        assert not estimate(small, 2 * chosen.micro_batch, world_size=8).fits(80.0)
    assert choose_micro_batch(get_preset("xlarge"), 32, 1.0) is None  # nothing fits a 1 GB GPU


def test_run_params_log_executed_flops_and_embedding_size():
    from experiments.training.pretrain import _run_params

    register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["model=tiny", "train.tokens=40960"])
    p = plan(cfg)
    params = _run_params(cfg, p, "hash")
    assert params["derived.executed_flops_per_token"] == executed_flops_per_token(p.model)
    assert params["derived.n_params_embedding"] == 256 * 64
