"""Evaluation of a trained run: scores that match the model's own forward, CORE-style centred accuracy of
local task files logged to MLflow, validation loss/bpb at any loop count, and the lm-eval adapter."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from mlflow.tracking import MlflowClient

from experiments.evals import core as core_eval
from experiments.evals import evaluate
from experiments.evals import lm_eval_adapter
from experiments.evals.scoring import Scorer, load_run
from realdata_helpers import SMALL, python_module

CHOICES = [" x", " ]]]]", " 1 +* 2"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny model trained for 40 steps on the embedded corpus, tracked in a sqlite store."""
    root = tmp_path_factory.mktemp("root")
    done = python_module("experiments.pretrain", f"paths.root={root}", *SMALL, "train.tokens=20480")
    assert done.returncode == 0, done.stderr
    (path,) = (root / "runs").iterdir()
    return path


@pytest.fixture(scope="module")
def scorer(run_dir):
    run = load_run(run_dir)
    return Scorer(run.model, run.tokenizer, loops=2, batch_size=4)


def _write(path, examples):
    path.write_text("".join(json.dumps(e) + "\n" for e in examples))
    return path


def test_scores_match_the_models_own_forward(scorer):
    context, continuation = "import os\nimport", " sys"
    (ll, greedy, n), = scorer.loglikelihood([(context, continuation)])
    ids = torch.tensor([[0, *context.encode(), *continuation.encode()]])
    with torch.no_grad():
        logits, _ = scorer.model(ids[:, :-1], num_steps=2, generator=torch.Generator().manual_seed(0))
    logp = F.log_softmax(logits.float(), -1)[0, -n:].gather(-1, ids[0, -n:, None])
    assert n == 4 and ll == pytest.approx(float(logp.sum()), abs=1e-4)
    assert greedy == bool((logits[0, -n:].argmax(-1) == ids[0, -n:]).all())
    # A text shorter than the context: rolling log-likelihood is the continuation of BOS alone.
    text = "def f(x):\n    return x\n"
    assert scorer.loglikelihood_rolling([text])[0] == pytest.approx(scorer.loglikelihood([("", text)])[0][0], abs=1e-3)
    # Longer than the context (64): every token still predicted once, each with a context of its own.
    long = text * 8
    assert scorer.loglikelihood_rolling([long])[0] < scorer.loglikelihood_rolling([text])[0] < 0
    assert isinstance(scorer.generate("import", 5, until=["\n"]), str)


def test_centred_accuracy_of_a_task_file(scorer, tmp_path):
    contexts = [f"def f{i}(x):\n    return" for i in range(6)]
    picked = []
    for c in contexts:
        mean_ll = [ll / n for ll, _, n in scorer.loglikelihood([(c, ch) for ch in CHOICES])]
        picked.append(max(range(3), key=mean_ll.__getitem__))
    right = _write(tmp_path / "right.jsonl", [{"context": c, "choices": CHOICES, "gold": g} for c, g in zip(contexts, picked)])
    wrong = _write(tmp_path / "wrong.jsonl", [{"context": c, "choices": CHOICES, "gold": (g + 1) % 3}
                                              for c, g in zip(contexts, picked)])
    assert core_eval.evaluate_task(scorer, right).centered == pytest.approx(1.0)
    r = core_eval.evaluate_task(scorer, wrong)
    assert r.accuracy == 0 and r.random_baseline == pytest.approx(1 / 3) and r.centered == pytest.approx(-0.5)
    shots = core_eval.fewshot_prefix(core_eval.load_task(right)[1], 0, 2, seed=0)
    assert shots.count(core_eval.FEWSHOT_SEPARATOR) == 2 and contexts[0] not in shots


def test_evaluate_cli_logs_core_and_bpb_to_mlflow(run_dir, tmp_path):
    mc = _write(tmp_path / "mc.jsonl", [{"context": f"x = {i} +", "choices": [" 1", " }}"], "gold": 0} for i in range(8)])
    comp = _write(tmp_path / "lambada_like.jsonl", [{"context": "import os\nimport", "continuation": " sys"}] * 3)
    done = python_module("experiments.evaluate", f"run_dir={run_dir}", f"task=val,{mc},{comp}", "loops=[1,2]",
                         "num_fewshot=1", "threads=1")
    assert done.returncode == 0, done.stderr
    results = json.loads((run_dir / "eval" / "results.json").read_text())
    by_task = {(t["task"], t["loops"]): t for t in results["tasks"]}
    assert by_task[("mc", 1)]["random_baseline"] == 0.5 and by_task[("lambada_like", 2)]["random_baseline"] == 0
    status = json.loads((run_dir / "status.json").read_text())
    client = MlflowClient(f"sqlite:///{run_dir.parent.parent}/mlflow.db")
    metrics = client.get_run(status["mlflow_run_id"]).data.metrics
    for T in (1, 2):
        acc = by_task[("mc", T)]["accuracy"]
        assert metrics[f"core/mc/centered_T{T}"] == pytest.approx((acc - 0.5) / 0.5)
        assert metrics[f"core/centered_T{T}"] == pytest.approx(
            (metrics[f"core/mc/centered_T{T}"] + metrics[f"core/lambada_like/centered_T{T}"]) / 2)
        # Validation at any loop count reproduces the trainer's own final evaluation.
        assert metrics[f"eval/loss_T{T}"] == pytest.approx(status["final"][f"eval/loss_T{T}"], abs=1e-5)
        assert metrics[f"eval/bpb_T{T}"] == pytest.approx(status["final"][f"eval/bpb_T{T}"], abs=1e-5)
        # Byte tokens: one byte each, except the document separator (none), so bpb ≥ loss in bits.
        assert metrics[f"eval/bpb_T{T}"] >= metrics[f"eval/loss_T{T}"] * math.log2(math.e) - 1e-9
    assert client.get_run(status["mlflow_run_id"]).info.status == "FINISHED"


def test_evaluate_cli_rejects_a_missing_task_file(run_dir, capsys):
    assert evaluate.main([f"run_dir={run_dir}", "task=nope.jsonl"]) == 2
    assert "task='nope.jsonl'" in capsys.readouterr().err
    assert not (run_dir / "eval").exists() or "nope" not in (run_dir / "eval" / "results.json").read_text()


def test_lm_eval_adapter_without_the_package_says_how_to_install():
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install lm-eval"):
            lm_eval_adapter.lm_class()
    else:
        pytest.skip("lm_eval is installed: covered by test_lm_eval_adapter_answers_requests")


def test_lm_eval_adapter_answers_requests(run_dir):
    pytest.importorskip("lm_eval", reason="lm-evaluation-harness is optional and not installed here")
    from lm_eval.api.instance import Instance

    lm = lm_eval_adapter.parcae_lm(run_dir, loops=2, batch_size=4)
    req = Instance(request_type="loglikelihood", doc={}, arguments=("import os\nimport", " sys"), idx=0)
    ((ll, greedy),) = lm.loglikelihood([req])
    assert ll < 0 and isinstance(greedy, bool)
