"""`sweep.dry_run=true`: plan a sweep before spending on it. Every grid point is validated and priced; nothing
is built, tracked or submitted, and the command exits 0 (2 when a point is invalid, as a real launch would).

    make sweep SWEEP=isoflop-gpu ARGS='launcher=slurm_gpu sweep.dry_run=true'

Per point: tokens and optimizer steps (experiments.config.plan), the micro-batch per process and its peak
memory against sweep.gpu_memory_gb (parcae.memory; a point whose micro-batch does not fit is marked and the
largest that fits is named), the FLOPs actually executed (parcae.executed_flops_per_token × tokens) and the
device-hours they take at a stated throughput, then the sweep's total. The throughput is the executed FLOP/s
per GPU that `make bench-gpu` measured (reports/bench-gpu.json under paths.root) when that file exists, else
NOMINAL_GPU_FLOPS: 35 % of an H100 SXM's dense bf16 peak (989 TFLOP/s), a typical executed-FLOP MFU of a
compiled bf16 run of this size. CPU points are priced at what `make bench` measured on this machine
(reports/bench.json), else NOMINAL_CPU_FLOPS (its result on a 2-core machine). Processes per job come from the launcher (SLURM: nodes × tasks_per_node; local: 1).

A sweep with train.device=cuda also needs a CUDA build of torch where it is submitted (a real launch stops
there, experiments.launch.preflight.check_device); the dry run reports it in one line instead of stopping,
so that a sweep can be planned on a laptop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from hydra import compose
from omegaconf import DictConfig

from experiments.config.errors import ConfigError
from experiments.config.naming import compact, point_label
from experiments.config.plan import Plan, branching_on, cooldown_start, plan
from experiments.launch.preflight import check_device, cuda_build, runs_here
from experiments.launch.grid import effective_grid, grid_overrides, point_error, stop_on_invalid_points
from experiments.config.identity import trunk_identity
from experiments.training.branching import sweep_cost
from experiments.training.progress import fmt_seconds
from parcae import executed_flops_per_token
from parcae.memory import choose_micro_batch, estimate

H100_BF16_PEAK = 989e12
NOMINAL_MFU = 0.35
NOMINAL_GPU_FLOPS = NOMINAL_MFU * H100_BF16_PEAK  # executed FLOP/s per GPU until make bench-gpu measures one
NOMINAL_CPU_FLOPS = 1.3e11  # make bench: bench-tiny, 2 cores, 8,589 tokens/s × 15.1 MFLOP/token executed
BENCH_JSON = Path("reports") / "bench-gpu.json"  # written by make bench-gpu (benchmarks/bench_gpu.py)
CPU_BENCH_JSON = Path("reports") / "bench.json"  # written by make bench (benchmarks/bench_train.py)


@dataclass(frozen=True)
class PointPlan:
    device: str
    tokens: int
    steps: int
    micro_batch: int
    local_batch: int
    memory_gb: float
    fits: bool
    fitting_micro: int | None  # the largest micro-batch that fits, when the configured one does not
    executed_flops: float
    device_hours: float
    wall_hours: float


def processes_per_job(config: DictConfig) -> int:
    """Data-parallel processes of one job: nodes × tasks_per_node for SLURM, 1 for a local launcher."""
    launcher = config.hydra.launcher
    if runs_here(launcher.get("_target_")):
        return 1
    return int(launcher.get("nodes") or 1) * int(launcher.get("tasks_per_node") or 1)


def throughput(root: Path) -> tuple[float, str]:
    """(executed FLOP/s per GPU, where the number comes from)."""
    path = root / BENCH_JSON
    if path.exists():
        try:
            bench = json.loads(path.read_text())
            flops = float(bench["executed_flops_per_s_per_gpu"])
            return flops, (f"measured by make bench-gpu on {bench.get('device', 'a GPU')} "
                           f"({bench.get('preset', '?')}, {path})")
        except (ValueError, KeyError, TypeError):
            pass
    return NOMINAL_GPU_FLOPS, (f"nominal: {NOMINAL_MFU:.0%} executed-FLOP MFU of an H100's "
                               f"{H100_BF16_PEAK / 1e12:.0f} TFLOP/s (run make bench-gpu to measure; "
                               f"it writes {BENCH_JSON})")


def cpu_throughput(root: Path) -> tuple[float, str]:
    """(executed FLOP/s of training on this machine's CPU, where the number comes from): what `make bench`
    measured (tokens/s × executed FLOPs per token of its preset), else NOMINAL_CPU_FLOPS."""
    path = root / CPU_BENCH_JSON
    try:
        bench = json.loads(path.read_text())
        if bench.get("device") == "cpu":
            flops = float(bench["tokens_per_s"]) * float(bench["executed_flops_per_token"])
            return flops, (f"measured by make bench ({bench.get('preset', '?')}, {bench.get('threads', '?')} "
                           f"threads, {path})")
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return NOMINAL_CPU_FLOPS, f"nominal: make bench on a 2-core machine; make bench measures this one into {CPU_BENCH_JSON}"


def plan_point(cfg: DictConfig, world: int, gpu_gb: float, gpu_flops: float,
               cpu_flops: float = NOMINAL_CPU_FLOPS, p: Plan | None = None) -> PointPlan:
    """Validate one composed point (p: its plan, when already made) and price it; ConfigError when it cannot run
    as launched."""
    p = p or plan(cfg)
    t = cfg.train
    check_device(t.device, needs_visible_gpu=False, needs_cuda_build=False)  # a missing build: one note
    if t.batch_size % world:
        raise ConfigError("train.batch_size", t.batch_size,
                          f"does not split over the {world} processes of a job of this launcher",
                          f"use a multiple of {world}, or change hydra.launcher.tasks_per_node / nodes")
    local = t.batch_size // world
    micro = t.get("micro_batch_size") or local
    if local % micro:
        raise ConfigError("train.micro_batch_size", micro,
                          f"does not divide the {local} rows per process (batch_size / {world} processes)",
                          "use a divisor of it, or null")
    on_gpu = t.device.startswith("cuda")
    kwargs = dict(precision=t.get("precision", "fp32"), optimizer=t.optimizer, world_size=world,
                  activation_checkpointing=bool(t.get("activation_checkpointing", False)))
    mem = estimate(p.model, micro, **kwargs)
    fits = mem.fits(gpu_gb) if on_gpu else True
    fitting = None
    if not fits:
        best = choose_micro_batch(p.model, local, gpu_gb, **kwargs)
        fitting = best.micro_batch if best else 0
    executed = float(p.tokens) * executed_flops_per_token(p.model)
    # Device-hours over all processes of the job (data parallelism assumed to scale linearly), and wall hours.
    hours = executed / (gpu_flops if on_gpu else cpu_flops) / 3600
    return PointPlan("GPU" if on_gpu else "CPU", p.tokens, p.steps, micro, local, mem.total_gb, fits, fitting,
                     executed, hours, hours / world)


def _row(label: str, pp: PointPlan) -> str:
    fit = "fits" if pp.fits else f"TOO BIG: ≤ {pp.fitting_micro}" if pp.fitting_micro else "TOO BIG even at 1"
    return (f"  {label:<16} {compact(pp.tokens):>9} {pp.steps:>8,} {f'{pp.micro_batch}/{pp.local_batch}':>7} "
            f"{pp.memory_gb:>7.1f} GB {fit:<17} {pp.executed_flops:>9.3g} {pp.device_hours:>9.2f} {pp.wall_hours:>8.2f}")


def report(config: DictConfig) -> None:
    """Validate and price every point of the sweep `config` describes, print the table, exit (module doc)."""
    task = list(config.hydra.overrides.task)
    params = config.hydra.sweeper.get("params")
    varied = list(effective_grid(params, task))
    points = grid_overrides(params, task)
    world = processes_per_job(config)
    gpu_gb = float(config.sweep.get("gpu_memory_gb", 80.0))
    root = Path(config.paths.root).resolve()
    gpu_flops, source = throughput(root)
    cpu_flops, cpu_source = cpu_throughput(root)
    errors, rows, branches = [], [], []
    for overrides in points:
        try:
            cfg = compose(config_name=config.hydra.job.config_name, overrides=overrides)
            p = plan(cfg)
            pp = plan_point(cfg, world, gpu_gb, gpu_flops, cpu_flops, p)
        except Exception as err:  # a ConfigError, or e.g. an unknown config group option
            errors.append(point_error(overrides, err))
            continue
        rows.append((point_label(cfg, varied), pp))
        # The trunk a branch would share: its key without the data (the same data for every point).
        branches.append((trunk_identity(cfg, p.model, "dry-run"), pp.steps,
                         cooldown_start(pp.steps, cfg.train.cooldown_fraction), pp.device_hours / pp.steps))
    stop_on_invalid_points(errors, len(points))
    unit = "GPU-h" if any(pp.device == "GPU" for _, pp in rows) else "CPU-h"
    where = "this machine" if world == 1 and runs_here(config.hydra.launcher.get("_target_")) else \
        f"{world} processes per job ({config.hydra.launcher.get('nodes') or 1} node(s) × " \
        f"{config.hydra.launcher.get('tasks_per_node') or 1} tasks)"
    out = [f"[dry run {config.sweep_id}] {len(rows)} grid points valid; nothing was built, tracked or submitted. "
           f"Jobs: {where}; memory per process against {gpu_gb:g} GB (parcae.memory).",
           f"  {'point':<16} {'tokens':>9} {'steps':>8} {'micro':>7} {'memory':>10} {'':<17} {'exec FLOP':>9} "
           f"{unit:>9} {'wall h':>8}"]
    out += [_row(label, pp) for label, pp in rows]
    total_h = sum(pp.device_hours for _, pp in rows)
    total_flops = sum(pp.executed_flops for _, pp in rows)
    out.append(f"  {'total':<16} {compact(sum(pp.tokens for _, pp in rows)):>9} "
               f"{sum(pp.steps for _, pp in rows):>8,} {'':>7} {'':>10} {'':<17} {total_flops:>9.3g} "
               f"{total_h:>9.1f} {total_h / world:>8.1f}")
    if unit == "GPU-h":
        out.append(f"  throughput: {gpu_flops / 1e12:.0f} TFLOP/s executed per GPU, {source}; wall h = {unit} / "
                   f"{world} processes per job, one job at a time")
        if cuda_build() is None:
            out.append("  cuda: this torch is a CPU-only build: a real launch stops here until a CUDA build is "
                       "installed (README, 'From laptop to cluster')")
    else:
        out.append(f"  estimated wall time: {fmt_seconds(total_h * 3600 / world)} in total, training only, one job at a "
                   f"time, at {cpu_flops / 1e9:.0f} GFLOP/s executed ({cpu_source})")
    with_b, without_b, trunks = sweep_cost(branches)
    if branching_on(config):
        out.append(f"  cooldown branches (sweep.branching=true): {trunks} trunk(s); the sweep trains "
                   f"{with_b:.2f} {unit} instead of {without_b:.2f} ({with_b / without_b:.0%}); each point still counts "
                   "its whole budget (trunk prefix + cooldown)")
    elif trunks < len(rows):
        out.append(f"  with sweep.branching=true ({trunks} trunks) the sweep would train {with_b:.2f} {unit} instead of "
                   f"{without_b:.2f} ({with_b / without_b:.0%})")
    too_big = [label for label, pp in rows if not pp.fits]
    if too_big:
        out.append(f"  memory: {len(too_big)} point(s) would not fit their micro-batch; set train.micro_batch_size "
                   "to the size shown (gradient accumulation, the same result)")
    print("\n".join(out), flush=True)
    raise SystemExit(0)
