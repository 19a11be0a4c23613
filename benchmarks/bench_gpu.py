"""`make bench-gpu`: parcae-small (~140M parameters, Parcae arXiv 2604.12946 Tables 18, 19, 21) training on one CUDA GPU.

    .venv/bin/python benchmarks/bench_gpu.py [any bench_train.py option, e.g. --batch-size 8 --windows 3]

bench_train.py with GPU defaults: preset `small` (d 768, P/R/C = 2/2/2, µ_rec 8, µ_bwd 4, vocab 32768,
context 2048), bf16 autocast, torch.compile of every block, fused AdamW, 16 sequences per step; the JSON
adds the device name, tokens/s, MFU against the device's dense bf16 peak (H100 SXM / H200: 989 TFLOP/s,
A100: 312, ...; --peak-tflops for others) and the peak allocated memory. Tokens come from the embedded
byte-level corpus (ids < 256), which changes no cost: every step still computes the full 32768-way head.
On a machine without CUDA, pass --device cpu (and a small --preset) to run the same code path.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_train import main  # noqa: E402

GPU_DEFAULTS = dict(preset="small", device="cuda", batch_size=16, compile=True, autocast="bf16", warmup=10,
                    windows=5, window_steps=5, threads=4)

if __name__ == "__main__":
    sys.exit(main(defaults=GPU_DEFAULTS, doc=__doc__))
