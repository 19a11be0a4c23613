"""Run under torchrun: a few MuonAdamW steps on a DDP-wrapped looped model, then every rank's parameters are
compared (all-gather of a checksum per tensor). Exits 0 when all ranks hold identical weights."""

import os
import sys

import torch
import torch.distributed as dist

from experiments.training import distributed
from experiments.training.trainer import build_optimizer
from parcae import build_model
from parcae.presets import get_preset

torch.set_num_threads(1)
ctx = distributed.setup("cpu")
cfg = get_preset("tiny")
torch.manual_seed(0)
model = build_model(cfg)


class T:  # the train config fields build_optimizer reads
    optimizer, lr, muon_lr, beta1, beta2, eps, weight_decay = "muon", 3e-3, 8e-3, 0.9, 0.95, 1e-8, 0.1


opt = build_optimizer(model, T, total_steps=4)
ddp = ctx.wrap(model)
g = torch.Generator().manual_seed(100 + ctx.rank)  # each rank its own data, as in data-parallel training
for step in range(3):
    x = torch.randint(0, cfg.vocab_size, (2, 32), generator=g)
    _, loss = ddp(x, x, num_steps=2)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
sums = torch.stack([p.detach().double().sum() for p in model.parameters()])
gathered = [torch.zeros_like(sums) for _ in range(ctx.world_size)]
dist.all_gather(gathered, sums)
worst = max(float((gathered[0] - other).abs().max()) for other in gathered)
if ctx.rank == 0:
    print(f"muon ddp: max checksum difference across ranks {worst:.3g}", flush=True)
dist.destroy_process_group()
sys.exit(0 if worst == 0.0 else 1)
