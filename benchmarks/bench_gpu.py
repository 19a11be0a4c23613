"""`make bench-gpu`: parcae-small (~140M parameters, Parcae arXiv 2604.12946 Tables 18, 19, 21) training on CUDA GPUs.

    .venv/bin/python benchmarks/bench_gpu.py [--out FILE] [any bench_train.py option, e.g. --batch-size 8]

bench_train.py with GPU defaults: preset `small` (d 768, P/R/C = 2/2/2, µ_rec 8, µ_bwd 4, vocab 32768,
context 2048), bf16 autocast, torch.compile of every block, fused AdamW, 16 sequences per step. Three
measurements, one JSON (printed, and written to --out, default reports/bench-gpu.json, which the sweep dry
run reads for its GPU-hours):
* `single`: one GPU, fused AdamW; tokens/s, peak memory, both FLOP counts per token (the reference
  accounting that sets budgets, and the FLOPs executed, parcae.executed_flops_per_token) and the MFU from
  the executed count against the device's dense bf16 peak (H100 SXM / H200: 989 TFLOP/s, A100: 312, ...;
  --peak-tflops for others). `mfu_reference_accounting` is what the reference count would claim (≈ 29 % high
  on small: value-embedding lookups counted as matmuls, the head left out);
* `muon`: the same step with MuonAdamW (train=parcae / gpu-parcae), whose orthogonalisation is extra work;
* `ddp`: when more than one GPU is visible, N processes through torchrun (nccl, DistributedDataParallel),
  each with the per-GPU batch: total tokens/s, scaling efficiency against N × single.
Tokens come from the embedded byte-level corpus (ids < 256), which changes no cost: every step still
computes the full 32768-way head. Without CUDA it stops at once (--device cpu with a small --preset runs the
same code on a CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from bench_train import Bench, parse_args, peak_memory_mb, run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GPU_DEFAULTS = dict(preset="small", device="cuda", batch_size=16, compile=True, autocast="bf16", warmup=10,
                    windows=5, window_steps=5, threads=4)
OUT = ROOT / "reports" / "bench-gpu.json"


def timed_tokens_per_s(bench: Bench, args: argparse.Namespace) -> float:
    bench.timed(args.warmup)
    windows = [bench.timed(args.window_steps)[0] for _ in range(args.windows)]
    return args.window_steps * bench.tokens_per_step / statistics.median(windows)


def muon_step(args: argparse.Namespace) -> dict:
    """The same step with MuonAdamW instead of fused AdamW."""
    from experiments.training.trainer import build_optimizer, wsd_multiplier

    bench = Bench(args)
    bench.train_cfg.optimizer, bench.train_cfg.lr, bench.train_cfg.muon_lr = "muon", 8e-3, 8e-3
    bench.optimizer = build_optimizer(bench.model, bench.train_cfg, bench.total_steps)
    bench.scheduler = torch.optim.lr_scheduler.LambdaLR(
        bench.optimizer, lambda s: wsd_multiplier(s, bench.total_steps, 0.0, 0.0))
    return {"tokens_per_s": round(timed_tokens_per_s(bench, args), 1), "optimizer": "MuonAdamW"}


def ddp_rank(args: argparse.Namespace) -> None:
    """One torchrun process: DDP around the benchmark model; rank 0 prints the JSON line."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    local = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)
    dist.init_process_group("nccl", device_id=torch.device("cuda", local))
    args.device = f"cuda:{local}"
    bench = Bench(args)
    bench.model = DDP(bench.model, device_ids=[local])
    tokens_per_s = timed_tokens_per_s(bench, args)
    total = torch.tensor(tokens_per_s, device=args.device)
    dist.all_reduce(total)
    if dist.get_rank() == 0:
        print("DDP " + json.dumps({"world_size": dist.get_world_size(), "tokens_per_s": round(total.item(), 1),
                                   "peak_memory_mb_rank0": round(peak_memory_mb(bench.device), 1)}), flush=True)
    dist.destroy_process_group()


def ddp(argv: list[str], n_gpus: int, single_tokens_per_s: float) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n_gpus}",
           __file__, "--ddp-rank", *argv]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900)
    line = next((x for x in out.stdout.splitlines() if x.startswith("DDP ")), None)
    if out.returncode != 0 or line is None:
        return {"error": f"torchrun exited {out.returncode}: {out.stderr.strip().splitlines()[-1:]}"}
    result = json.loads(line[4:])
    result["scaling_efficiency"] = round(result["tokens_per_s"] / (n_gpus * single_tokens_per_s), 3)
    return result


def main() -> int:
    argv = sys.argv[1:]
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--ddp-rank", action="store_true")
    own, rest = p.parse_known_args(argv)
    if not own.ddp_rank and GPU_DEFAULTS["device"] == "cuda" and "--device" not in rest and not torch.cuda.is_available():
        print(f"bench-gpu: no CUDA GPU is visible (torch {torch.__version__}, CUDA build: {torch.version.cuda}); "
              "run it on a GPU machine, or pass --device cpu --preset bench-tiny", file=sys.stderr)
        return 2
    args = parse_args(rest, defaults=GPU_DEFAULTS, doc=__doc__)
    if own.ddp_rank:
        ddp_rank(args)
        return 0
    single = run(args)
    result = {"single": single, "muon": muon_step(args)}
    n_gpus = torch.cuda.device_count() if args.device.startswith("cuda") else 0
    result["ddp"] = ddp(rest, n_gpus, single["tokens_per_s"]) if n_gpus > 1 else None
    # What the sweep dry run prices GPU-hours with (experiments.launch.dry_run).
    result.update(device=single["device"], preset=single["preset"],
                  executed_flops_per_s_per_gpu=single["executed_flops_per_token"] * single["tokens_per_s"])
    text = json.dumps(result, indent=2)
    print(text)
    if args.device.startswith("cuda"):
        own.out.parent.mkdir(parents=True, exist_ok=True)
        own.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
