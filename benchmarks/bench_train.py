"""Training throughput of a model preset, printed as one JSON object (`make bench`, `make bench-gpu`).

    .venv/bin/python benchmarks/bench_train.py [--preset bench-tiny] [--device cpu|cuda] [--threads 2]
        [--warmup 3] [--windows 7] [--window-steps 4] [--batch-size N] [--compile] [--autocast bf16]
        [--checkpoint-activations] [--logging-overhead] [--logging-pairs 3] [--peak-tflops X]

Each step is the trainer's own step function (experiments.training.trainer.train_step) on a batch of the
embedded corpus (experiments.data.corpus): the model's forward with a sampled depth plan, backward,
clip_and_step (fused AdamW, no host sync) and the WSD schedule. After --warmup steps (compilation happens there), --windows windows of --window-steps steps
are timed with the device synchronised at window edges only; the JSON gives the median window's tokens/s
and step time, the peak memory (CUDA: max allocated; CPU: peak RSS of the process), and on a GPU the
model FLOP utilisation: parcae.flops_per_token (the reference accounting) × tokens/s ÷ the device's dense
bf16 peak (table below, or --peak-tflops).

--logging-overhead also times the trainer's logging at its default intervals (step_metrics every
LOG_EVERY steps, MetricSink + an MLflow RunTracker on a temporary sqlite store flushed every
checkpoint_every steps) against the same steps without it, in interleaved windows (on, off, off, on, ...)
so that a shared machine's drift hits both alike; it reports the median on/off ratio and, more precise,
the time spent inside the logging calls as a share of the step time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from experiments.config.schema import TrainSchema  # noqa: E402
from experiments.data.corpus import PackedStream, build_corpus  # noqa: E402
from experiments.training.trainer import (  # noqa: E402
    LOG_EVERY, MetricSink, build_optimizer, step_metrics, train_step, wsd_multiplier,
)
from parcae import build_model, executed_flops_per_token, flops_per_token, get_preset  # noqa: E402
from parcae.model import LoopedLM  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TRAIN = OmegaConf.load(ROOT / "conf" / "train" / "default.yaml")  # the intervals runs use

# Dense bf16 tensor-core peaks (FLOP/s, no sparsity) by device-name fragment; the first match wins.
PEAK_BF16 = (
    ("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("GH200", 989e12), ("H200", 989e12), ("H100", 989e12),
    ("B200", 2250e12), ("A100", 312e12), ("L40S", 362e12), ("L4", 121e12), ("A10", 125e12),
)


def peak_flops(device_name: str) -> float | None:
    return next((peak for key, peak in PEAK_BF16 if key in device_name), None)


def parse_args(argv: list[str] | None = None, defaults: dict | None = None, doc: str | None = None) -> argparse.Namespace:
    """The benchmark's options; `defaults` replaces some defaults (bench_gpu.py's GPU settings)."""
    p = argparse.ArgumentParser(description=doc or __doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="bench-tiny", help="a parcae.presets name, e.g. bench-tiny or small")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (CPU)")
    p.add_argument("--batch-size", type=int, default=16, help="sequences per step")
    p.add_argument("--seq-len", type=int, default=None, help="tokens per sequence (default: the preset's)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation happens here)")
    p.add_argument("--windows", type=int, default=7, help="timed windows; the median is reported")
    p.add_argument("--window-steps", type=int, default=4, help="steps per timed window")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                   help="torch.compile every transformer block")
    p.add_argument("--autocast", choices=("bf16", "none"), default="none", help="mixed precision for the forward")
    p.add_argument("--checkpoint-activations", action=argparse.BooleanOptionalAction, default=False,
                   help="recompute each backpropagated loop iteration in the backward (looped models)")
    p.add_argument("--logging-overhead", action="store_true",
                   help="also measure the trainer's logging cost (MetricSink + MLflow on sqlite)")
    p.add_argument("--logging-pairs", type=int, default=3, help="on/off window pairs of the logging measurement")
    p.add_argument("--checkpoint-every", type=int, default=DEFAULT_TRAIN.checkpoint_every,
                   help="steps between metric flushes in the logging measurement (the trainer flushes when it "
                        "checkpoints)")
    p.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU when not in the table")
    p.set_defaults(**(defaults or {}))
    args = p.parse_args(argv)
    args.autocast = None if args.autocast == "none" else args.autocast
    for key in ("threads", "batch_size", "windows", "window_steps", "logging_pairs", "checkpoint_every"):
        if getattr(args, key) < 1:
            p.error(f"--{key.replace('_', '-')}={getattr(args, key)}: must be at least 1")
    if args.warmup < 0:
        p.error(f"--warmup={args.warmup}: must be 0 or more")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error(f"--device={args.device}: no CUDA device is visible; use --device cpu")
    return args


class Bench:
    """The model, optimizer, schedule and data of one benchmark, and its training step."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = torch.device(args.device)
        cfg = get_preset(args.preset)
        if args.seq_len is not None:
            cfg.block_size = args.seq_len
        self.cfg = cfg
        torch.manual_seed(0)
        self.model = build_model(cfg).to(self.device)
        self.model.train()
        if isinstance(self.model, LoopedLM):
            self.model.checkpoint_iterations = args.checkpoint_activations
        if args.compile:
            self.model.compile_blocks()
        self.train_cfg = TrainSchema()
        self.total_steps = 10**6  # the stable phase of the WSD schedule, as in most of a run
        self.optimizer = build_optimizer(self.model, self.train_cfg, self.total_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: wsd_multiplier(s, self.total_steps, 0.0, 0.0))
        corpus = build_corpus(ROOT / ".cache")
        self.stream = PackedStream(corpus.train, cfg.block_size, seed=0)
        self.gen = torch.Generator().manual_seed(1)
        self.step_index = 0
        self.tokens_per_step = args.batch_size * cfg.block_size
        self.last: tuple[torch.Tensor, torch.Tensor] | None = None

    def step(self) -> None:
        x, y = self.stream.batch(self.step_index, self.args.batch_size)
        loss, grad_norm, _ = train_step(self.model, self.optimizer, self.scheduler, x, y, self.gen, self.step_index,
                                        self.device, self.args.autocast or "fp32", self.train_cfg.grad_clip)
        self.step_index += 1
        self.last = (loss, grad_norm)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def timed(self, n_steps: int, after_step: Callable[[int], float] | None = None) -> tuple[float, float, float]:
        """(wall seconds of n_steps, seconds inside after_step, CPU seconds of this process), the device
        synchronised at the edges. CPU time counts only this process's work, so on a shared machine it
        varies less than wall time (with one thread it is close to the step's compute)."""
        self.sync()
        start, cpu, inside = time.perf_counter(), time.process_time(), 0.0
        for _ in range(n_steps):
            self.step()
            if after_step is not None:
                inside += after_step(self.step_index)
        self.sync()
        return time.perf_counter() - start, inside, time.process_time() - cpu


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class LoggingProbe:
    """The trainer's logging at its default intervals, writing to a real MLflow sqlite store."""

    def __init__(self, bench: Bench, store: Path, checkpoint_every: int) -> None:
        from experiments.tracking import store as tracking

        uri = f"sqlite:///{store / 'mlflow.db'}"
        exp = tracking.ensure_experiment(uri, "bench", store / "artifacts")
        self.tracker = tracking.RunTracker(uri, exp, run_name="bench-logging")
        self.sink = MetricSink(store / "metrics.jsonl", self.tracker)
        self.bench = bench
        self.checkpoint_every = checkpoint_every
        self.start = time.time()

    def __call__(self, done: int) -> float:
        """Log as the trainer does after step `done`; returns the seconds it took."""
        t0 = time.perf_counter()
        b = self.bench
        if done % LOG_EVERY == 0 and b.last is not None:
            loss, grad_norm = b.last
            tps = done * b.tokens_per_step / max(time.time() - self.start, 1e-9)
            self.sink.log(step_metrics(b.model, loss, grad_norm, b.scheduler.get_last_lr()[0], done,
                                       b.tokens_per_step, 0, tps), done)
        if done % self.checkpoint_every == 0:
            self.sink.flush()
        return time.perf_counter() - t0

    def close(self) -> int:
        """Finish the run; returns how many train/loss points reached the store (a check that it logged)."""
        self.tracker.finish("FINISHED")
        return len(self.tracker.client.get_metric_history(self.tracker.run_id, "train/loss"))


def logging_overhead(bench: Bench, pairs: int, checkpoint_every: int) -> dict:
    """Windows of checkpoint_every steps, logging on and off in the order on, off, off, on, ..."""
    with tempfile.TemporaryDirectory() as store:
        probe = LoggingProbe(bench, Path(store), checkpoint_every)
        on, off, inside = [], [], 0.0
        bench.step_index = math.ceil(bench.step_index / checkpoint_every) * checkpoint_every  # window = interval
        for i in range(2 * pairs):
            logging_on = (i % 4) in (0, 3)
            wall, spent, _ = bench.timed(checkpoint_every, probe if logging_on else None)
            (on if logging_on else off).append(wall)
            inside += spent
        logged = probe.close()
    ratios = [a / b for a, b in zip(on, off)]
    return {
        "window_steps": checkpoint_every, "log_every": LOG_EVERY, "flush_every": checkpoint_every,
        "pairs": pairs, "window_s_on": [round(w, 3) for w in on], "window_s_off": [round(w, 3) for w in off],
        "median_ratio_on_off": round(statistics.median(ratios), 4),
        "logging_share_of_step_time": round(inside / sum(on), 5),
        "logging_ms_per_step": round(1e3 * inside / (pairs * checkpoint_every), 3),
        "loss_points_in_mlflow": logged,
    }


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        torch.set_float32_matmul_precision("high")  # TF32 for what autocast leaves in fp32
    bench = Bench(args)
    t0 = time.perf_counter()
    bench.timed(args.warmup)
    warmup_s = time.perf_counter() - t0
    if bench.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(bench.device)
    timings = [bench.timed(args.window_steps) for _ in range(args.windows)]
    windows = [wall for wall, _, _ in timings]
    window = statistics.median(windows)
    cpu_window = statistics.median(cpu for _, _, cpu in timings)
    tokens_per_s = args.window_steps * bench.tokens_per_step / window
    fpt = flops_per_token(bench.cfg)
    executed = executed_flops_per_token(bench.cfg)  # MFU counts what runs, not the budget accounting
    name = torch.cuda.get_device_name(bench.device) if bench.device.type == "cuda" else "cpu"
    peak = args.peak_tflops * 1e12 if args.peak_tflops else (peak_flops(name) if bench.device.type == "cuda" else None)
    result = {
        "preset": bench.cfg.name, "params": bench.model.num_params(), "flops_per_token": fpt,
        "executed_flops_per_token": executed,
        "batch_size": args.batch_size, "seq_len": bench.cfg.block_size, "tokens_per_step": bench.tokens_per_step,
        "tokens_per_s": round(tokens_per_s, 1),
        "step_time_ms": round(1e3 * window / args.window_steps, 2),
        "cpu_time_per_step_ms": round(1e3 * cpu_window / args.window_steps, 2),
        "window_tokens_per_s": [round(args.window_steps * bench.tokens_per_step / w, 1) for w in windows],
        "warmup_steps": args.warmup, "warmup_s": round(warmup_s, 2), "windows": args.windows,
        "window_steps": args.window_steps,
        "peak_memory_mb": round(peak_memory_mb(bench.device), 1),
        "mfu": round(executed * tokens_per_s / peak, 4) if peak else None,
        "mfu_reference_accounting": round(fpt * tokens_per_s / peak, 4) if peak else None,
        "peak_flops": peak,
        "compile": args.compile, "autocast": args.autocast, "checkpoint_activations": args.checkpoint_activations,
        "threads": torch.get_num_threads(), "torch": torch.__version__, "device": name,
        "optimizer": "AdamW (fused)", "precision": "bf16 autocast" if args.autocast else "fp32",
        "cpu_count": os.cpu_count(),
    }
    if args.logging_overhead:
        result["logging"] = logging_overhead(bench, args.logging_pairs, args.checkpoint_every)
    return result


def main(argv: list[str] | None = None, defaults: dict | None = None, doc: str | None = None) -> int:
    print(json.dumps(run(parse_args(argv, defaults, doc)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
