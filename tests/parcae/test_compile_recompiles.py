"""compile=true: the number of graphs dynamo compiles for the blocks stays bounded across training, validation
at another batch size, and every test-time loop count, and never reaches its recompile limit (past it, dynamo
would silently run the blocks eagerly). Dynamo's tracing and guards decide recompiles whatever the backend, so
the test compiles with aot_eager (the autograd graphs, no C++ code generation) to stay fast on a CPU."""

import dataclasses

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

from experiments.config.plan import dense_test_loops
from parcae import build_model, get_preset

pytestmark = pytest.mark.slow  # about a minute of compiling on a CPU: CI's `make test-slow`, not `make test`

MAX_GRAPHS = 8  # (value gate or not) × (grad mode) × (static, dynamic batch); compile_blocks allows 32


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    old = torch._dynamo.config.fail_on_recompile_limit_hit
    torch._dynamo.config.fail_on_recompile_limit_hit = True  # hitting the limit raises instead of going eager
    yield
    torch._dynamo.config.fail_on_recompile_limit_hit = old
    torch._dynamo.reset()


def graphs() -> int:
    return counters["stats"]["unique_graphs"]


def test_graphs_bounded_across_training_evaluation_and_loop_counts(fresh_dynamo):
    torch.manual_seed(0)
    cfg = dataclasses.replace(get_preset("tiny"), block_size=32, mean_recurrence=12)
    model = build_model(cfg)
    model.compile_blocks(backend="aot_eager")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, 256, (8, 32)), torch.randint(0, 256, (8, 32))

    def train_steps(n: int) -> None:
        model.train()
        for _ in range(n):  # Poisson depths per sequence: the core's running prefix changes every iteration
            with torch.autocast("cpu", dtype=torch.bfloat16):
                _, loss = model(x, y, generator=gen)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    train_steps(3)
    after_training = graphs()
    model.eval()
    loops = sorted(set(dense_test_loops(cfg.mean_recurrence)) | {1, 2, 4, 8, 16})  # T up to 3·µ_rec = 36
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for T in loops:
            for a, b in ((0, 5), (5, 8)):  # an eval batch of 5 and a tail of 3 rows
                model(x[a:b], y[a:b], num_steps=T)
    after_evaluation = graphs()
    train_steps(2)
    assert counters["frames"]["ok"] == counters["frames"]["total"]  # every frame compiled, none left to eager
    assert 0 < after_training <= after_evaluation <= MAX_GRAPHS
    assert graphs() == after_evaluation  # back to training: nothing new
    assert after_evaluation - after_training <= 2  # validation adds its no-grad variants once, for every T
