"""`make gpu-check`: the one prepared check of the GPU path, about 8 minutes on one GPU. Writes ONE JSON file,
$OUT/gpu-check.json when the environment sets OUT, else reports/gpu-check.json:

1. `bench`: make bench-gpu (benchmarks/bench_gpu.py: one GPU with AdamW and with Muon, N-GPU DDP when there
   are several), also kept as reports/bench-gpu.json, which the sweep dry run prices GPU-hours with;
2. `train`: a short real training run of parcae-small with train=gpu (bf16 autocast, torch.compile, TF32) on
   the embedded corpus, validation every 25 steps and the final evaluation at several loop counts T:
   tokens/s (the trainer's own, last logged), MFU from the executed FLOPs, peak GPU memory, the losses;
3. `rerun_2gpu`: with two or more GPUs, the same short run (fewer steps) under
   `torchrun --standalone --nproc_per_node=2`, twice: the second finds it finished and must end, on every
   rank, within 60 s with exit 0.
Without CUDA it stops at once with one line and exit 2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

TRAIN = ["model=small", "train=gpu", "data=stdlib", "tracking.enabled=false", "train.batch_size=16",
         "train.eval_every=25", "train.eval_batch_size=8", "train.test_loops=[1,4,8,16]", "data.val_rows=32",
         "sweep_id=gpu-check"]
STEPS = 100  # × 16 × 2,048 tokens
RERUN_STEPS = 10


def out_path() -> Path:
    base = Path(os.environ["OUT"]) if os.environ.get("OUT") else ROOT / "reports"
    base.mkdir(parents=True, exist_ok=True)
    return base / "gpu-check.json"


def bench() -> dict:
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--windows", "3"],
                       cwd=ROOT, capture_output=True, text=True, timeout=360)
    if r.returncode != 0:
        return {"error": r.stderr.strip().splitlines()[-3:]}
    return json.loads((ROOT / "reports" / "bench-gpu.json").read_text())


def train(root: Path) -> dict:
    """One short run in this process, so that its peak memory can be read."""
    from hydra import compose, initialize_config_dir

    from experiments.config.schema import register
    from experiments.training.pretrain import run
    from parcae import executed_flops_per_token, get_preset

    register()
    tokens = STEPS * 16 * 2048
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*TRAIN, f"train.tokens={tokens}", f"paths.root={root}"])
    torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    final = run(cfg)
    wall = time.time() - t0
    rows = [json.loads(line) for p in root.glob("runs/*/metrics.jsonl") for line in p.read_text().splitlines()]
    tps = [r["train/tokens_per_s"] for r in rows if "train/tokens_per_s" in r]
    evals = {k: v for r in rows for k, v in r.items() if k.startswith("eval/loss")}
    executed = executed_flops_per_token(get_preset("small"))
    from benchmarks.bench_train import peak_flops

    peak = peak_flops(torch.cuda.get_device_name())
    return {"steps": STEPS, "tokens": tokens, "wall_s_with_compile_and_eval": round(wall, 1),
            "tokens_per_s": tps[-1] if tps else None,
            "mfu_executed": round(executed * tps[-1] / peak, 4) if tps and peak else None,
            "peak_memory_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2), "final_eval_loss": final,
            "eval": evals}


def rerun_2gpu(root: Path) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
           "experiments.pretrain", *TRAIN, f"train.tokens={RERUN_STEPS * 16 * 2048}", f"paths.root={root}"]
    runs = []
    for attempt in ("first", "rerun"):
        t0 = time.time()
        try:
            r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600 if attempt == "first" else 60)
            runs.append({"attempt": attempt, "rc": r.returncode, "seconds": round(time.time() - t0, 1),
                         "tail": r.stderr.strip().splitlines()[-2:]})
        except subprocess.TimeoutExpired:
            runs.append({"attempt": attempt, "rc": None, "seconds": round(time.time() - t0, 1), "timed_out": True})
    ok = len(runs) == 2 and runs[1]["rc"] == 0 and runs[1]["seconds"] < 60
    return {"ok": ok, "runs": runs}


def main() -> int:
    if not torch.cuda.is_available():
        print(f"gpu-check: no CUDA GPU is visible (torch {torch.__version__}, CUDA build: {torch.version.cuda}); "
              "run it on a GPU machine with a CUDA build of torch (README, 'From laptop to cluster')", file=sys.stderr)
        return 2
    out = out_path()
    result: dict = {"device": torch.cuda.get_device_name(), "gpus": torch.cuda.device_count(),
                    "torch": torch.__version__, "cuda": torch.version.cuda}
    result["bench"] = bench()
    with tempfile.TemporaryDirectory() as tmp:
        result["train"] = train(Path(tmp) / "single")
        result["rerun_2gpu"] = rerun_2gpu(Path(tmp) / "ddp") if torch.cuda.device_count() >= 2 else None
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"gpu-check: wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
