"""Our runs as lm-evaluation-harness models (LAMBADA and the rest, when the user has the task data).

lm-eval is optional and imported only here, lazily: `pip install lm-eval`, then

    python -m experiments.evals.lm_eval_adapter run_dir=runs/<hash> tasks=lambada_openai loops=8 [limit=100]

or, from Python, `lm_eval.simple_evaluate(model=parcae_lm(run_dir), tasks=[...])`. The model is also
registered under the name "parcae" (`lm_eval --model parcae --model_args run_dir=...,loops=8` after
`import experiments.evals.lm_eval_adapter; experiments.evals.lm_eval_adapter.lm_class()`).

The adapter implements the harness's three request types (its `lm_eval.api.model.LM` interface) through
experiments.evals.scoring.Scorer: loglikelihood → (log p(continuation | context), is greedy);
loglikelihood_rolling → log p(text); generate_until → greedy text cut at the first stop string.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from experiments.evals.scoring import Scorer, load_run

_CLASS = None
DEFAULT_MAX_GEN_TOKS = 256


def _require_lm_eval():
    try:
        import lm_eval  # noqa: F401
    except ImportError as err:
        raise ImportError("lm-evaluation-harness is not installed: `pip install lm-eval` (it is optional; "
                          "CORE-style tasks from local files need only experiments.evaluate)") from err


def lm_class():
    """The `lm_eval.api.model.LM` subclass for our runs, registered as "parcae" (built once)."""
    global _CLASS
    if _CLASS is not None:
        return _CLASS
    _require_lm_eval()
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model

    @register_model("parcae")
    class ParcaeLM(LM):
        def __init__(self, run_dir: str, loops: int | None = None, batch_size: int = 16, device: str = "cpu",
                     **_ignored):
            super().__init__()
            run = load_run(Path(run_dir), device)
            self.scorer = Scorer(run.model, run.tokenizer, int(loops) if loops else None, int(batch_size))

        def loglikelihood(self, requests) -> list[tuple[float, bool]]:
            return [(ll, greedy) for ll, greedy, _ in self.scorer.loglikelihood([r.args for r in requests])]

        def loglikelihood_rolling(self, requests) -> list[float]:
            return self.scorer.loglikelihood_rolling([r.args[0] for r in requests])

        def generate_until(self, requests) -> list[str]:
            out = []
            for r in requests:
                context, kwargs = r.args
                until = kwargs.get("until") or []
                until = [until] if isinstance(until, str) else list(until)
                out.append(self.scorer.generate(context, int(kwargs.get("max_gen_toks", DEFAULT_MAX_GEN_TOKS)), until))
            return out

    _CLASS = ParcaeLM
    return _CLASS


def parcae_lm(run_dir: str | Path, loops: int | None = None, batch_size: int = 16):
    return lm_class()(run_dir=str(run_dir), loops=loops, batch_size=batch_size)


def main(argv: list[str] | None = None) -> int:
    args = dict(a.split("=", 1) for a in (sys.argv[1:] if argv is None else argv))
    if "run_dir" not in args or "tasks" not in args:
        print("usage: python -m experiments.evals.lm_eval_adapter run_dir=runs/<hash> tasks=lambada_openai "
              "[loops=8] [limit=N] [num_fewshot=0]", file=sys.stderr)
        return 2
    try:
        _require_lm_eval()
    except ImportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    import lm_eval

    results = lm_eval.simple_evaluate(
        model=parcae_lm(args["run_dir"], int(args["loops"]) if "loops" in args else None),
        tasks=args["tasks"].split(","), num_fewshot=int(args.get("num_fewshot", 0)),
        limit=int(args["limit"]) if "limit" in args else None)
    out = Path(args["run_dir"]) / "eval" / "lm_eval.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results["results"], indent=1, default=str))
    print(json.dumps(results["results"], indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
