"""Config schemas of `experiments.finetune` (Hydra root conf/finetune.yaml), their validation and the
identity of a fine-tuning run.

A method name is a combination of parts: `flow` (FLOW's sample weights), `l2` (pull toward θ₀), `lora`
(adapters only) and `wise` (WiSE-FT averaging after training). Keys that a method does not use are left
out of its identity, so a method × τ grid trains standard fine-tuning once, and WiSE-FT reuses the
weights its un-averaged twin trained.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from experiments.config.errors import ConfigError
from experiments.config.plan import check_plain_name, check_uri_has_no_password
from experiments.config.schema import PathsSchema, TrackingSchema
from flow.objective import REDUCTIONS
from flow.training import LEVELS, FineTuneSpec
from flow.weights import TauRule

METHODS = ("standard", "l2", "wise", "lora", "flow", "flow_l2", "flow_wise", "flow_lora")
TASKS = ("arithmetic", "jsonl", "metamathqa")


@dataclass
class BaseSchema:
    # Exactly one of: a pre-training run (its dir, or its hash under paths.runs), the overrides of a
    # pre-training config (the run they identify, e.g. [model=tiny,train.tokens=2000000]), or an HF model.
    run: Optional[str] = None
    pretrain: Optional[list[str]] = None
    hf_model: Optional[str] = None  # a Hugging Face id or local folder; "random" builds hf_config untrained
    hf_config: Any = None  # a dict; hf_model=random: model_type plus config fields (tests)
    loops: Optional[int] = None  # loop count of a looped model for scoring and evaluation; null = µ_rec


@dataclass
class TaskSchema:
    name: str = "arithmetic"  # arithmetic | jsonl | metamathqa (trains on MetaMathQA, evaluates on GSM8K)
    n_train: int = 2000
    n_test: int = 200
    seed: int = 0
    max_operand: int = 99  # arithmetic: operands in [0, max_operand]
    path: Optional[str] = None  # jsonl: training file
    test_path: Optional[str] = None  # jsonl: evaluation file; null = the last n_test rows of path
    prompt_key: str = "prompt"
    response_key: str = "response"
    answer_key: Optional[str] = None  # null = the final number of the response
    template: str = "{instruction}"  # jsonl: how the prompt field becomes the prompt
    max_len: int = 64  # tokens per example (prompt + response + EOS); the reference uses 1024
    max_new_tokens: int = 6  # greedy decoding budget at evaluation


@dataclass
class FlowSchema:
    tau: str = "median"  # median | q<p> (a quantile, e.g. q0.25) | x<m> (m × median) | a number
    level: str = "sequence"  # sequence (the paper) | token
    reduction: str = "tokens"  # tokens (the reference code) | samples (the paper's per-sample mean)


@dataclass
class L2Schema:
    lam: float = 1e-3
    normalize: str = "mean"  # mean: λ × mean squared deviation (the reference code) | sum


@dataclass
class WiseSchema:
    alpha: float = 0.5  # θ = α·θ_ft + (1−α)·θ_base


@dataclass
class LoraSchema:
    r: int = 8
    alpha: float = 8.0
    dropout: float = 0.0
    # Linear layers of a parcae block; for Llama-style HF models use q_proj,...,down_proj.
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "fc", "proj"])


_SPEC = FineTuneSpec()  # the fine-tuning defaults, defined once (flow.training)


@dataclass
class FTTrainSchema:
    steps: int = _SPEC.steps
    batch_size: int = _SPEC.batch_size
    lr: float = _SPEC.lr
    weight_decay: float = _SPEC.weight_decay
    warmup_fraction: float = _SPEC.warmup_fraction
    grad_clip: float = _SPEC.grad_clip
    seed: int = _SPEC.seed
    threads: int = 0  # torch intra-op threads; 0 = torch's default
    device: str = "cpu"
    save_model: bool = True  # keep the fine-tuned weights (.cache/finetuned) for WiSE-FT and re-evaluation


@dataclass
class FTEvalSchema:
    val_rows: int = 32  # rows of the pre-training validation split that forgetting is measured on
    block_size: Optional[int] = None  # row length; null = the base model's block size (HF: 256)
    batch_size: int = 64


@dataclass
class FinetuneConfig:
    base: BaseSchema = field(default_factory=BaseSchema)
    task: TaskSchema = field(default_factory=TaskSchema)
    method: str = "standard"
    flow: FlowSchema = field(default_factory=FlowSchema)
    l2: L2Schema = field(default_factory=L2Schema)
    wise: WiseSchema = field(default_factory=WiseSchema)
    lora: LoraSchema = field(default_factory=LoraSchema)
    train: FTTrainSchema = field(default_factory=FTTrainSchema)
    eval: FTEvalSchema = field(default_factory=FTEvalSchema)
    tracking: TrackingSchema = field(default_factory=lambda: TrackingSchema(experiment="flow"))
    paths: PathsSchema = field(default_factory=PathsSchema)
    sweep_id: str = "adhoc"


def register() -> None:
    ConfigStore.instance().store(name="finetune_schema", node=FinetuneConfig)


@dataclass(frozen=True)
class Method:
    flow: bool
    l2: bool
    lora: bool
    wise: bool

    @classmethod
    def parse(cls, name: str) -> "Method":
        parts = set(name.split("_"))
        return cls("flow" in parts, "l2" in parts, "lora" in parts, "wise" in parts)

    @property
    def trained_as(self) -> str:
        """The method whose training this one shares (WiSE-FT averages after training)."""
        return "_".join(p for p, on in (("flow", self.flow), ("l2", self.l2), ("lora", self.lora)) if on) or "standard"


def validate(cfg: DictConfig) -> Method:
    """Check every key before any work; raises ConfigError naming the first bad one."""
    check_plain_name("sweep_id", cfg.sweep_id)
    check_uri_has_no_password("tracking.uri", cfg.tracking.uri)
    if cfg.method not in METHODS:
        raise ConfigError("method", cfg.method, "unknown fine-tuning method", f"use one of {', '.join(METHODS)}")
    m = Method.parse(cfg.method)
    try:
        TauRule.parse(cfg.flow.tau)
    except ValueError as err:
        raise ConfigError("flow.tau", cfg.flow.tau, str(err),
                          "use median, q<p> with 0<p<1 (e.g. q0.25), x<m> with m>0 (e.g. x2), or a number > 0") from None
    choices = {"flow.level": (cfg.flow.level, LEVELS), "flow.reduction": (cfg.flow.reduction, REDUCTIONS),
               "l2.normalize": (cfg.l2.normalize, ("mean", "sum")), "task.name": (cfg.task.name, TASKS)}
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigError(key, value, "unknown choice", f"use one of {', '.join(allowed)}")
    positive = {"train.steps": cfg.train.steps, "train.batch_size": cfg.train.batch_size, "train.lr": cfg.train.lr,
                "lora.r": cfg.lora.r, "task.n_train": cfg.task.n_train, "task.n_test": cfg.task.n_test,
                "task.max_len": cfg.task.max_len, "task.max_new_tokens": cfg.task.max_new_tokens,
                "eval.val_rows": cfg.eval.val_rows}
    for key, value in positive.items():
        if not value > 0:
            raise ConfigError(key, value, "must be positive", f"set {key} > 0")
    if not 0 <= cfg.wise.alpha <= 1:
        raise ConfigError("wise.alpha", cfg.wise.alpha, "must lie in [0, 1]", "e.g. wise.alpha=0.5")
    if cfg.l2.lam < 0:
        raise ConfigError("l2.lam", cfg.l2.lam, "must be ≥ 0", "e.g. l2.lam=1e-3")
    if m.wise and m.lora:
        raise ConfigError("method", cfg.method, "WiSE-FT of a LoRA model is not offered", "use lora or wise")
    if cfg.task.name == "jsonl" and not (cfg.task.path and Path(cfg.task.path).is_file()):
        raise ConfigError("task.path", cfg.task.path, "task=jsonl needs an existing JSONL file",
                          "set task.path=/path/to/train.jsonl")
    sources = [k for k in ("run", "pretrain", "hf_model") if cfg.base.get(k)]
    if len(sources) != 1:
        raise ConfigError("base.run", cfg.base.run, f"set exactly one of base.run, base.pretrain, base.hf_model "
                          f"(got {sources or 'none'})",
                          "point base.run at a finished pre-training run (runs/<hash>), or pass "
                          "base.pretrain=[<its overrides>], or base.hf_model=<id>")
    if cfg.base.hf_model == "random" and not cfg.base.hf_config:
        raise ConfigError("base.hf_config", None, "base.hf_model=random builds an untrained model from a config",
                          "set base.hf_config={model_type: llama, hidden_size: 32, ...}")
    if cfg.base.loops is not None and cfg.base.loops < 1:
        raise ConfigError("base.loops", cfg.base.loops, "must be ≥ 1", "e.g. base.loops=4, or null for µ_rec")
    return m


def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def identities(cfg: DictConfig, base_id: str) -> tuple[str, str]:
    """(run identity, training identity): hashes of what the run computes, given the base model's identity.

    Keys a method does not use are dropped, so duplicate grid points share one identity; the training
    identity also drops WiSE-FT's α and names the method whose training it shares."""
    m = Method.parse(cfg.method)
    c = OmegaConf.to_container(cfg, resolve=True)
    train = {k: v for k, v in c["train"].items() if k not in ("threads", "device", "save_model")}
    trained = {"base": base_id, "loops": c["base"]["loops"], "task": c["task"], "train": train,
               "method": m.trained_as, "flow": c["flow"] if m.flow else None,
               "l2": c["l2"] if m.l2 else None, "lora": c["lora"] if m.lora else None}
    train_id = digest(trained)
    run_id = digest({"trained": train_id, "method": cfg.method, "wise": c["wise"] if m.wise else None,
                      "eval": c["eval"]})
    return run_id, train_id
