"""The Hugging Face path end to end on a tiny Llama built locally from a config (nothing downloaded)."""

import os

import pytest
import torch

import flow

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")


def _tiny_llama():
    cfg = transformers.LlamaConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg)


def test_flow_fine_tunes_a_tiny_hf_model_end_to_end():
    torch.set_num_threads(1)
    lm = flow.HFCausalLM(_tiny_llama(), flow.ByteTokens())
    train, test = flow.arithmetic_split(64, 16, seed=0, max_operand=9)
    data = [flow.encode(e, lm.tokenizer, 16) for e in train]
    rows = flow.tasks.token_rows(lm.tokenizer, ["def f(x):\n    return x + 1\n" * 20], 32, 4)
    base_loss = flow.corpus_loss(lm, rows)
    losses = flow.score(lm, data)
    assert losses.shape == (64,) and torch.isfinite(losses).all()
    weights = flow.flow_weights(losses, flow.temperature(losses))
    log = []
    flow.fine_tune(lm, data, flow.FineTuneSpec(steps=30, batch_size=16, lr=3e-3), weights,
                   on_log=lambda step, m: log.append(m["ft/task_loss"]))
    assert log[-1] < log[0]  # it learns the task
    acc = flow.task_accuracy(lm, test, max_new_tokens=3)
    assert 0.0 <= acc <= 1.0
    assert flow.forgetting(base_loss, flow.corpus_loss(lm, rows)) != 0.0


def test_lora_on_a_hf_model_merges_to_the_same_outputs():
    model = _tiny_llama()
    peft_model = flow.add_lora(model, r=4, alpha=8, target_modules=["q_proj", "v_proj"])
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_()
    ids = torch.randint(0, 256, (2, 10))
    lm = flow.HFCausalLM(model, flow.ByteTokens())
    model.eval()
    with torch.no_grad():
        adapted = flow.token_losses(lm, ids)
        lm.module = flow.merge_lora(peft_model)
        assert torch.allclose(flow.token_losses(lm, ids), adapted, atol=1e-5)
