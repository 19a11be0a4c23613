"""The tiny preset learns: a few dozen AdamW steps memorise a small batch."""

import time

import torch

from parcae import build_model, get_preset


def test_tiny_overfits_a_small_batch():
    torch.manual_seed(0)
    model = build_model(get_preset("tiny")).train()
    data = torch.randint(0, 256, (4, 65), generator=torch.Generator().manual_seed(0))
    idx, targets = data[:, :-1], data[:, 1:]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.0)
    generator = torch.Generator().manual_seed(1)
    losses = []
    start = time.perf_counter()
    for _ in range(50):
        _, loss = model(idx, targets, generator=generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert time.perf_counter() - start < 30
    model.eval()
    with torch.no_grad():
        _, final = model(idx, targets, generator=torch.Generator().manual_seed(2))
    assert losses[0] > 5.0
    assert final.item() < 1.0, (losses[0], final.item())
