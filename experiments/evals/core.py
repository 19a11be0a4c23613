"""CORE-style in-context evaluation (Parcae arXiv 2604.12946 App. M): accuracy centred on the random baseline.

A task is a local JSONL file, one example a line, of one of two kinds:

* multiple choice: {"context": "...", "choices": [" a", " b", ...], "gold": 1}. The model picks the
  choice whose continuation tokens have the highest mean log-likelihood (length-normalised, as DCLM's
  Core does). Random baseline: the mean of 1/len(choices).
* completion (LAMBADA-style): {"context": "...", "continuation": " word"}. Correct when greedy
  decoding reproduces every continuation token. Random baseline: 0.

Few-shot prompts put `num_fewshot` other examples of the same file (drawn with a fixed seed per example)
before the example, each as context + its correct answer, separated by a blank line. Centred accuracy
is (accuracy − baseline) / (1 − baseline); a CORE score is the mean of the tasks' centred accuracies.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from experiments.evals.scoring import Scorer

FEWSHOT_SEPARATOR = "\n\n"


@dataclass
class TaskResult:
    task: str
    kind: str
    n: int
    num_fewshot: int
    accuracy: float
    random_baseline: float
    centered: float

    def as_dict(self) -> dict:
        return asdict(self)


def load_task(path: Path) -> tuple[str, list[dict]]:
    """(kind, examples) of a task file; ValueError naming the line that is malformed."""
    examples, kinds = [], set()
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        ex = json.loads(line)
        if "choices" in ex and "gold" in ex and "context" in ex:
            if not 0 <= int(ex["gold"]) < len(ex["choices"]) or len(ex["choices"]) < 2:
                raise ValueError(f"{path}:{n}: gold must index one of ≥ 2 choices")
            kinds.add("multiple_choice")
        elif "context" in ex and "continuation" in ex:
            kinds.add("completion")
        else:
            raise ValueError(f"{path}:{n}: an example needs context + choices + gold, or context + continuation")
        examples.append(ex)
    if len(kinds) != 1:
        raise ValueError(f"{path}: needs examples of exactly one kind, found {sorted(kinds) or 'none'}")
    return kinds.pop(), examples


def _answer(ex: dict) -> str:
    return ex["choices"][int(ex["gold"])] if "choices" in ex else ex["continuation"]


def fewshot_prefix(examples: list[dict], index: int, num_fewshot: int, seed: int) -> str:
    if num_fewshot == 0:
        return ""
    others = [i for i in range(len(examples)) if i != index]
    shots = random.Random(seed * 1_000_003 + index).sample(others, min(num_fewshot, len(others)))
    return "".join(examples[i]["context"] + _answer(examples[i]) + FEWSHOT_SEPARATOR for i in shots)


def evaluate_task(scorer: Scorer, path: Path, num_fewshot: int = 0, seed: int = 0,
                  max_examples: int | None = None) -> TaskResult:
    kind, examples = load_task(path)
    chosen = examples[:max_examples] if max_examples else examples
    contexts = [fewshot_prefix(examples, i, num_fewshot, seed) + ex["context"] for i, ex in enumerate(chosen)]
    if kind == "multiple_choice":
        pairs = [(c, choice) for c, ex in zip(contexts, chosen) for choice in ex["choices"]]
        scores = iter(scorer.loglikelihood(pairs))
        correct = 0
        for ex in chosen:
            mean_ll = [ll / n for ll, _, n in (next(scores) for _ in ex["choices"])]
            correct += int(max(range(len(mean_ll)), key=mean_ll.__getitem__) == int(ex["gold"]))
        baseline = sum(1 / len(ex["choices"]) for ex in chosen) / len(chosen)
    else:
        results = scorer.loglikelihood([(c, ex["continuation"]) for c, ex in zip(contexts, chosen)])
        correct = sum(greedy for _, greedy, _ in results)
        baseline = 0.0
    accuracy = correct / len(chosen)
    return TaskResult(Path(path).stem, kind, len(chosen), num_fewshot, accuracy, baseline,
                      (accuracy - baseline) / (1 - baseline))


def core_score(results: list[TaskResult]) -> float:
    return sum(r.centered for r in results) / len(results)
