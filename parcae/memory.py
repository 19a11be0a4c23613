"""How much GPU memory one training process needs, and the micro-batch that fits a GPU.

The estimate is the sum of
* parameters (fp32, 4 B each) and their gradients (fp32, 4 B);
* optimizer state: AdamW 8 B per parameter (two moments); MuonAdamW 4 B per Muon matrix entry (momentum)
  plus 8 B per AdamW parameter (parcae.optim's split);
* with data parallelism, DDP's gradient buckets (one more fp32 copy of the gradients);
* under bf16 autocast, the bf16 copies of the matmul weights that autocast casts once and keeps for the
  backward (2 B each);
* activations: every tensor the forward saves for the backward, measured on a meta-device build (shapes
  only, nothing computed) of one and two sequences at one and two backpropagated iterations, so that the
  cost of a sequence and of each backpropagated iteration are both measured, then extrapolated to the
  micro-batch and to the largest number of backpropagated iterations a sequence can draw (µ_bwd for the
  truncated schemes; a high Poisson quantile of µ_rec for poisson-full). Gradient-free iterations save
  nothing. Attention is counted as flash attention keeps it (no S×S probabilities). bf16 is measured with the weights in bf16, which saves what autocast saves (norms and the
  logits stay fp32 in the model's own code);
* the backward's transient peak: two more copies of the largest saved tensor of a sequence (the fp32
  logits, S·V·4 bytes) per sequence, plus a fixed 2 GiB for the CUDA context, cuBLAS/flash workspaces and
  allocator fragmentation.

Assumptions: eager-mode saved tensors (torch.compile usually saves less, so the estimate errs high),
no activation checkpointing unless asked (then one state per backpropagated iteration is kept and the
iteration's activations exist once, during its recomputation), and the micro-batch's sequences all of
full length model.block_size.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import torch

from .config import ModelConfig
from .flops import _block_matmul_params
from .optim import param_groups

GIB = 2**30
FIXED_OVERHEAD_BYTES = 2 * GIB  # CUDA context, cuBLAS / attention workspaces, allocator fragmentation
DEFAULT_GPU_GB = 80.0  # an H100 SXM
USABLE_FRACTION = 0.9  # leave room for what the estimate does not see
POISSON_QUANTILE = 0.999  # poisson-full: the depth that one sequence in a thousand exceeds


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one training process holds at its peak, by kind."""

    micro_batch: int
    parameters: int
    gradients: int
    optimizer: int
    ddp_buckets: int
    weight_copies: int
    activations: int
    transient: int

    @property
    def total(self) -> int:
        return sum(getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "micro_batch")

    @property
    def total_gb(self) -> float:
        return self.total / 1e9

    def fits(self, gpu_gb: float = DEFAULT_GPU_GB) -> bool:
        return self.total <= USABLE_FRACTION * gpu_gb * 1e9


def _shape_key(cfg: ModelConfig) -> tuple:
    """The config (hashable) with the depth fields neutralised: activations per iteration do not depend on them."""
    return dataclasses.astuple(dataclasses.replace(cfg, mean_recurrence=1, mean_backprop=1, depth_sampling="fixed",
                                                   depth_granularity="per-sequence", depth_curriculum_steps=0))


@functools.lru_cache(maxsize=64)
def _saved_bytes(shape_key: tuple, batch: int, grad_steps: int, bf16: bool, checkpointed: bool) -> tuple[int, int]:
    """(bytes of every distinct storage a forward saves for the backward, parameters excluded; the largest
    one), for `batch` sequences running `grad_steps` backpropagated iterations, on the meta device."""
    from .model import build_model

    cfg = dataclasses.replace(ModelConfig(*shape_key), mean_recurrence=grad_steps, mean_backprop=grad_steps)
    with torch.device("meta"):
        model = build_model(cfg)
    if bf16:
        model.to(torch.bfloat16)
    if checkpointed and hasattr(model, "checkpoint_iterations"):
        model.checkpoint_iterations = True
    model.train()
    params = {p.untyped_storage()._cdata for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        # The meta device runs SDPA's math path, which keeps the S×S attention probabilities; a GPU's
        # flash / memory-efficient kernels keep only the output and a log-sum-exp per row.
        attention_probs = t.dim() >= 3 and t.shape[-1] == t.shape[-2] == cfg.block_size
        if storage._cdata not in params and not attention_probs:
            seen[storage._cdata] = max(seen.get(storage._cdata, 0), storage.nbytes())
        return t  # keeps every saved tensor alive until the end, so no storage id is reused

    idx = torch.zeros(batch, cfg.block_size, dtype=torch.long, device="meta")
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(idx, idx)
    return sum(seen.values()), max(seen.values(), default=0)


def max_backprop_steps(cfg: ModelConfig) -> int:
    """The most backpropagated iterations one sequence can run: µ_bwd (truncated schemes cap the gradient
    part at it), or for poisson-full the POISSON_QUANTILE quantile of Poisson(µ_rec)."""
    if cfg.kind != "parcae":
        return 0
    if cfg.depth_sampling != "poisson-full":
        return min(cfg.backprop_depth(), cfg.mean_recurrence)
    mu, k, term = cfg.mean_recurrence, 0, math.exp(-cfg.mean_recurrence)
    cdf = term
    while cdf < POISSON_QUANTILE:
        k += 1
        term *= mu / k
        cdf += term
    return max(k, 1)


def activation_bytes(cfg: ModelConfig, micro_batch: int, *, bf16: bool = True,
                     checkpointed: bool = False) -> tuple[int, int]:
    """(saved activations of a micro-batch at the deepest backpropagation, the largest saved tensor of one
    sequence), extrapolated linearly from four meta-device forwards (see the module docstring)."""
    key = _shape_key(cfg)
    one, largest = _saved_bytes(key, 1, 1, bf16, checkpointed)
    two_seq, _ = _saved_bytes(key, 2, 1, bf16, checkpointed)
    if cfg.kind == "parcae":
        two_steps, _ = _saved_bytes(key, 1, 2, bf16, checkpointed)
        per_step = two_steps - one  # one more backpropagated iteration of one sequence
        steps = max_backprop_steps(cfg)
    else:
        per_step, steps = 0, 1
    per_sequence = two_seq - one
    fixed = one - per_sequence
    return fixed + micro_batch * (per_sequence + (steps - 1) * per_step), largest


def _matmul_params(cfg: ModelConfig) -> int:
    """Weights autocast casts to bf16 (every matmul weight, the tied head included)."""
    d = cfg.d_model
    blocks = sum(_block_matmul_params(cfg, i) for i in range(cfg.n_unique_layers))
    if cfg.kind == "transformer":
        return cfg.vocab_size * d + blocks
    injection = {"diagonal": d * d, "add": 0, "linear": 2 * d * d}[cfg.injection]
    return cfg.vocab_size * d + blocks + d * d + injection


@functools.lru_cache(maxsize=64)
def _param_split(shape_key: tuple) -> tuple[int, int]:
    """(parameters MuonAdamW gives to Muon, to AdamW), from a meta-device build."""
    from .model import build_model

    with torch.device("meta"):
        groups = param_groups(build_model(ModelConfig(*shape_key)))
    return sum(p.numel() for p in groups["muon"]), sum(p.numel() for p in groups["adamw"])


def estimate(cfg: ModelConfig, micro_batch: int, *, precision: str = "bf16", optimizer: str = "adamw",
             world_size: int = 1, activation_checkpointing: bool = False) -> MemoryEstimate:
    """Peak bytes of one training process with `micro_batch` sequences per forward (module docstring)."""
    muon, adamw = _param_split(_shape_key(cfg))
    n = muon + adamw
    bf16 = precision == "bf16"
    activations, largest = activation_bytes(cfg, micro_batch, bf16=bf16, checkpointed=activation_checkpointing)
    return MemoryEstimate(
        micro_batch=micro_batch,
        parameters=4 * n,
        gradients=4 * n,
        optimizer=4 * muon + 8 * adamw if optimizer == "muon" else 8 * n,
        ddp_buckets=4 * n if world_size > 1 else 0,
        weight_copies=2 * _matmul_params(cfg) if bf16 else 0,
        activations=activations,
        transient=2 * largest * micro_batch + FIXED_OVERHEAD_BYTES,
    )


def choose_micro_batch(cfg: ModelConfig, local_batch: int, gpu_gb: float = DEFAULT_GPU_GB,
                       **kwargs) -> MemoryEstimate | None:
    """The estimate at the largest divisor of `local_batch` (a process's rows per step) that fits
    USABLE_FRACTION of gpu_gb; None when not even one sequence fits. kwargs go to estimate()."""
    for micro in sorted((m for m in range(1, local_batch + 1) if local_batch % m == 0), reverse=True):
        e = estimate(cfg, micro, **kwargs)
        if e.fits(gpu_gb):
            return e
    return None
