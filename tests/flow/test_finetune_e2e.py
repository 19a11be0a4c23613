"""experiments.finetune end to end: a tiny pre-trained checkpoint, a method grid logged to a temporary MLflow
sqlite store, skipping of finished runs, the report, the HF path through the entry point, and bad configs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.experiments.helpers import REPO, SMALL, pretrain

BASE = [*SMALL, "train.tokens=20000", "sweep_id=flow-base"]
QUICK = ["train.steps=15", "train.batch_size=8", "train.threads=1", "task.n_train=64", "task.n_test=16",
         "eval.val_rows=4", "eval.batch_size=16"]


def finetune(root: Path, *overrides: str, timeout: float = 300):
    flags = [o for o in overrides if o.startswith("-")]
    cmd = [sys.executable, "-m", "experiments.finetune", *flags, f"paths.root={root}",
           *(o for o in overrides if not o.startswith("-"))]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def base_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("flow")
    out = pretrain(root, *BASE)
    assert out.returncode == 0, out.stderr[-3000:]
    return root


def _pretrain_list() -> str:
    return "base.pretrain=[" + ",".join(f"'{o}'" for o in BASE) + "]"


def test_method_grid_logs_every_method_and_skips_finished_runs(base_root):
    args = ["finetune/sweep=flow", _pretrain_list(), "method=standard,wise,flow", "flow.tau=median,x2",
            "sweep_id=e2e", *QUICK]
    out = finetune(base_root, *args)
    assert out.returncode == 0, out.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{base_root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("flow")
    runs = client.search_runs([exp.experiment_id], "tags.run_kind = 'finetune' and tags.sweep_id = 'e2e'")
    # τ is no part of standard/wise: 6 grid points, 4 distinct runs.
    assert sorted(r.data.tags["method"] for r in runs) == ["flow", "flow", "standard", "wise"]
    for r in runs:
        assert r.info.status == "FINISHED"
        assert {"task_accuracy", "forgetting", "retention", "combined"} <= set(r.data.metrics)
        assert r.data.tags["mlflow.parentRunId"]
    flows = {r.data.tags["tau"]: r.data.metrics for r in runs if r.data.tags["method"] == "flow"}
    assert flows["x2"]["flow/tau"] == pytest.approx(2 * flows["median"]["flow/tau"], rel=1e-6)
    std = next(r for r in runs if r.data.tags["method"] == "standard")
    assert std.data.metrics["forgetting"] != 0.0
    assert "ft/loss" in std.data.metrics

    again = finetune(base_root, *args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (again.stdout + again.stderr).count("[skip]") == 6
    assert len(client.search_runs([exp.experiment_id], "tags.run_kind = 'finetune' and tags.sweep_id = 'e2e'")) == 4

    report = subprocess.run([sys.executable, "-m", "analysis.flow_report", "--tracking-uri",
                             f"sqlite:///{base_root / 'mlflow.db'}", "--sweep-id", "e2e", "--out",
                             str(base_root / "reports")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr[-3000:]
    text = (base_root / "reports" / "report.md").read_text()
    assert "Verdict" in text and "| flow | 0.0003 | 0 | x2 |" in text
    assert (base_root / "reports" / "pareto.png").exists() and (base_root / "reports" / "pareto.pdf").exists()


def test_hf_model_through_the_entry_point(base_root):
    hf = "base.hf_config={model_type:llama,vocab_size:256,hidden_size:32,intermediate_size:64," \
         "num_hidden_layers:2,num_attention_heads:4,num_key_value_heads:4,max_position_embeddings:128}"
    out = finetune(base_root, "base.hf_model=random", hf, "method=flow_lora", "lora.target_modules=[q_proj,v_proj]",
                   "eval.block_size=64", "tracking.enabled=false", *QUICK)
    assert out.returncode == 0, out.stderr[-3000:]
    status = [json.loads(p.read_text()) for p in (base_root / "runs").glob("ft-*/status.json")]
    hf_runs = [s for s in status if s.get("method") == "flow_lora"]
    assert hf_runs and hf_runs[0]["status"] == "finished" and 0 <= hf_runs[0]["final"]["task_accuracy"] <= 1


@pytest.mark.parametrize("override, key", [
    ("method=flowish", "method"),
    ("flow.tau=-1", "flow.tau"),
    ("flow.tau=q2", "flow.tau"),
    ("wise.alpha=1.5", "wise.alpha"),
    ("base.run=nowhere", "base.run"),
])
def test_bad_config_is_refused_before_any_work(tmp_path, override, key):
    from hydra import compose, initialize_config_dir

    from experiments.config.errors import ConfigError
    from experiments.training.finetune import run

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        base = [] if override.startswith("base.") else ["base.run=somewhere"]
        cfg = compose("finetune", [f"paths.root={tmp_path}", *base, *QUICK, override])
        with pytest.raises(ConfigError) as err:
            run(cfg)
    assert err.value.key == key and "Fix:" in str(err.value)
    assert not (tmp_path / "runs").exists()


def test_missing_base_checkpoint_exits_2_naming_the_key(tmp_path):
    out = finetune(tmp_path, "base.pretrain=['model=tiny','train.tokens=12345']", *QUICK)
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.startswith("config error: base.pretrain") and "not finished" in out.stderr
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").glob("ft-*"))


def test_a_saved_hf_model_and_tokenizer_load_from_a_folder(tmp_path, monkeypatch):
    """base.hf_model=<folder>: AutoModelForCausalLM + AutoTokenizer, as with a downloaded checkpoint."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    transformers = pytest.importorskip("transformers")
    from hydra import compose, initialize_config_dir
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from experiments.training.finetune import run

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([f"{a}+{b}={a + b}\n" for a in range(30) for b in range(30)],
                            trainers.BpeTrainer(vocab_size=300, special_tokens=["<eos>"],
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    folder = tmp_path / "tiny-hf"
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>")
    fast.save_pretrained(folder)
    cfg = transformers.LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                   num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128)
    transformers.LlamaForCausalLM(cfg).save_pretrained(folder)
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        ft = compose("finetune", [f"paths.root={tmp_path}", f"base.hf_model={folder}", "method=flow",
                                  "eval.block_size=32", "tracking.enabled=false", *QUICK])
        final = run(ft)
    assert 0 <= final["task_accuracy"] <= 1 and final["flow/tau"] > 0 and final["forgetting"] != 0
