"""What a fine-tuning run is judged by: target-task exact match, forgetting on the pre-training corpus,
retention, and a combined score."""

from __future__ import annotations

from collections import defaultdict

import torch

from flow.models import LanguageModel, device_of, token_losses
from flow.tasks import Example, final_answer


def exact_match(predictions: list[str], answers: list[str]) -> float:
    """Share of predictions whose final answer equals the reference answer."""
    if not answers:
        raise ValueError("no answers to compare against")
    return sum(final_answer(p) == a for p, a in zip(predictions, answers, strict=True)) / len(answers)


@torch.no_grad()
def greedy_answers(lm: LanguageModel, examples: list[Example], max_new_tokens: int, batch_size: int = 64,
                   bos_id: int | None = None) -> list[str]:
    """Greedy completions of every prompt, cut at the first EOS. Prompts are batched by token length,
    so no padding ever enters a prompt."""
    tok = lm.tokenizer
    encoded = [([bos_id] if bos_id is not None else []) + tok.encode(e.prompt) for e in examples]
    by_length: dict[int, list[int]] = defaultdict(list)
    for i, ids in enumerate(encoded):
        by_length[len(ids)].append(i)
    out: list[str] = [""] * len(examples)
    device = device_of(lm)
    for rows in by_length.values():
        for k in range(0, len(rows), batch_size):
            chunk = rows[k:k + batch_size]
            prompts = torch.tensor([encoded[i] for i in chunk], device=device)
            new = lm.continue_greedy(prompts, max_new_tokens).tolist()
            for i, ids in zip(chunk, new):
                if tok.eos_id in ids:
                    ids = ids[:ids.index(tok.eos_id)]
                out[i] = tok.decode(ids)
    return out


def task_accuracy(lm: LanguageModel, examples: list[Example], max_new_tokens: int, batch_size: int = 64,
                  bos_id: int | None = None) -> float:
    """Exact match of the final answer under greedy decoding."""
    preds = greedy_answers(lm, examples, max_new_tokens, batch_size, bos_id)
    return exact_match(preds, [e.answer for e in examples])


@torch.no_grad()
def corpus_loss(lm: LanguageModel, rows: torch.Tensor, batch_size: int = 16) -> float:
    """Mean next-token loss (nats/token) over fixed rows [N, S] of the pre-training corpus, in eval mode."""
    was_training = lm.module.training
    lm.module.eval()
    total, count = 0.0, 0
    gen = torch.Generator().manual_seed(0)  # one initial-state draw sequence for every model compared
    try:
        for i in range(0, len(rows), batch_size):
            ids = rows[i:i + batch_size].to(device_of(lm))
            loss = token_losses(lm, ids, gen)
            total += float(loss.sum())
            count += loss.numel()
    finally:
        lm.module.train(was_training)
    return total / count


def forgetting(base_loss: float, finetuned_loss: float) -> float:
    """Rise of the pre-training validation loss (nats/token); > 0 means the model forgot."""
    return finetuned_loss - base_loss


def retention(base_loss: float, finetuned_loss: float) -> float:
    """base loss ÷ fine-tuned loss: 1 keeps everything, below 1 forgets, above 1 improves."""
    return base_loss / finetuned_loss


def combined_score(accuracy: float, retained: float) -> float:
    """The paper's unified average in our setting: mean of target accuracy and retention (both ~[0, 1])."""
    return (accuracy + retained) / 2
