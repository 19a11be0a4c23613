"""A trained run as a scorer of text: log-likelihoods of continuations, rolling log-likelihoods, greedy
continuations, at any loop count. CORE-style tasks (experiments.evals.core) and the lm-evaluation-harness
adapter (experiments.evals.lm_eval_adapter) both ask their questions through it.

Every scored sequence starts with the tokenizer's BOS, as every training row does. Sequences longer
than the model's context keep their last block_size + 1 tokens (the context is cut from the left).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from experiments.training import checkpoint
from experiments.data import tokenizer as tokenizers
from experiments.config.plan import resolve_model
from parcae import build_model


@dataclass
class LoadedRun:
    cfg: DictConfig
    model: torch.nn.Module
    tokenizer: tokenizers.ByteLevel | tokenizers.BPE
    steps: int


def load_run(run_dir: Path, device: str = "cpu") -> LoadedRun:
    """The model of a run dir's last checkpoint, with the run's config and tokenizer."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists():
        raise FileNotFoundError(f"{run_dir} is not a run dir (no config.yaml): pass run_dir=runs/<config hash>")
    state = checkpoint.load(run_dir / checkpoint.CHECKPOINT_NAME)
    if state is None:
        raise FileNotFoundError(f"{run_dir} has no {checkpoint.CHECKPOINT_NAME}: train (or resume) the run first")
    cfg = OmegaConf.load(run_dir / "config.yaml")
    model = build_model(resolve_model(cfg.model))
    model.load_state_dict(state["model"])
    tok_path = run_dir / "tokenizer.json"  # runs from before real data have none: their tokens are bytes
    tok = tokenizers.load(tok_path) if tok_path.exists() else tokenizers.ByteLevel()
    return LoadedRun(cfg, model.to(device).eval(), tok, int(state["step"]))


class Scorer:
    """Scores text with `model` at `loops` recurrences (None: µ_rec, or a Transformer's fixed depth)."""

    def __init__(self, model: torch.nn.Module, tokenizer, loops: int | None = None, batch_size: int = 16,
                 seed: int = 0):
        self.model, self.tok, self.loops = model, tokenizer, loops
        self.batch_size, self.seed = batch_size, seed
        self.block_size = model.config.block_size
        self.device = next(model.parameters()).device

    @torch.no_grad()
    def _token_scores(self, seqs: list[list[int]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """For each token sequence and each i ≥ 1: log p(token_i | tokens_<i), and whether token_i is
        the model's most likely next token (len - 1 values each)."""
        out: list[tuple[torch.Tensor, torch.Tensor]] = []
        gen = torch.Generator().manual_seed(self.seed)  # the initial recurrent state, as in validation
        for i in range(0, len(seqs), self.batch_size):
            chunk = seqs[i:i + self.batch_size]
            # Right padding: a causal model's earlier positions never see it.
            ids = torch.zeros(len(chunk), max(len(s) for s in chunk), dtype=torch.long)
            for r, s in enumerate(chunk):
                ids[r, :len(s)] = torch.tensor(s)
            logits, _ = self.model(ids[:, :-1].to(self.device), num_steps=self.loops, generator=gen)
            logits, targets = logits.float().cpu(), ids[:, 1:]
            logp = F.log_softmax(logits, dim=-1).gather(-1, targets[..., None])[..., 0]
            top = logits.argmax(-1) == targets
            out += [(logp[r, :len(s) - 1], top[r, :len(s) - 1]) for r, s in enumerate(chunk)]
        return out

    def _pair(self, context: str, continuation: str) -> tuple[list[int], int]:
        ctx = [self.tok.bos_id, *self.tok.encode(context)]
        cont = self.tok.encode(continuation)
        if not cont:
            raise ValueError(f"the continuation {continuation!r} encodes to no tokens")
        seq = (ctx + cont)[-(self.block_size + 1):]
        return seq, min(len(cont), len(seq) - 1)

    def loglikelihood(self, pairs: list[tuple[str, str]]) -> list[tuple[float, bool, int]]:
        """(log p(continuation | context), whether greedy decoding yields it, its token count) per pair."""
        encoded = [self._pair(c, x) for c, x in pairs]
        scores = self._token_scores([s for s, _ in encoded])
        return [(float(logp[-n:].sum()), bool(top[-n:].all()), n) for (_, n), (logp, top) in zip(encoded, scores)]

    def loglikelihood_rolling(self, texts: list[str]) -> list[float]:
        """log p(text) with every token predicted once, in windows of the model's context (each window
        after the first is conditioned on the block_size tokens before it)."""
        totals = []
        for text in texts:
            ids = [self.tok.bos_id, *self.tok.encode(text)]
            total = 0.0
            for end in range(1, len(ids), self.block_size):
                stop = min(end + self.block_size, len(ids))
                start = max(0, stop - self.block_size - 1)
                logp = self._token_scores([ids[start:stop]])[0][0]
                total += float(logp[-(stop - end):].sum())
            totals.append(total)
        return totals

    @torch.no_grad()
    def generate(self, context: str, max_new_tokens: int, until: list[str] | None = None) -> str:
        """Greedy continuation of context, cut before the first stop string."""
        ids = [self.tok.bos_id, *self.tok.encode(context)]
        room = max(1, min(max_new_tokens, self.block_size - 1))
        prompt = torch.tensor([ids[-(self.block_size - room):]])
        out = self.model.generate(prompt, room, loops=self.loops,
                                  generator=torch.Generator().manual_seed(self.seed))
        text = self.tok.decode(out[0, prompt.shape[1]:].tolist())
        for stop in until or []:
            if stop and stop in text:
                text = text[:text.index(stop)]
        return text
