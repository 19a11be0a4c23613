"""One fine-tuning job: a pre-trained model fine-tuned with FLOW or a baseline, forgetting measured
(entry point: `python -m experiments.finetune`; the grid callback: experiments.launch.finetune_sweep).

One job = validate → resolve the base model and the run's identity → skip if finished → score the
training samples with the frozen base (FLOW) → fine-tune (or reuse the weights of the same training) →
merge LoRA / average (WiSE-FT) → evaluate target accuracy and forgetting → MLflow + run dir.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from hydra import compose
from omegaconf import DictConfig, OmegaConf

import flow
from experiments.training import checkpoint
from experiments.data import run_data as real_data
from experiments.tracking import store as tracking
from experiments.config.errors import ConfigError
from experiments.config.schema import DataSchema
from experiments.config.plan import default_loops, resolve_model
from experiments.config.schema import register as register_pretrain
from experiments.data.corpus import build_corpus
from experiments.config.finetune import Method, digest, identities, register, validate
from experiments.config.naming import point_label
from experiments.training.job import Identity, Job, identify
from experiments.training.progress import Progress
from experiments.training.run_dir import FINISHED, read_status
from parcae import build_model

register()
register_pretrain()  # base.pretrain composes the pre-training config to find its run
log = logging.getLogger("experiments.finetune")
FINETUNE_KIND = "finetune"


@dataclass
class Base:
    """The pre-trained model a run starts from: its identity, how to build it, what forgetting is measured on."""

    id: str
    label: str
    load: Callable[[], flow.models.LanguageModel]  # a fresh copy of the pre-trained model
    forgetting_rows: Callable[[], torch.Tensor]  # [N, S] token rows of the pre-training validation split
    bos_id: int | None = None


def _run_dir_of(cfg: DictConfig, root: Path) -> Path:
    b = cfg.base
    if b.run:
        path = Path(b.run)
        candidates = [path, root / path, root / cfg.paths.runs / b.run]
        found = next((p for p in candidates if (p / "status.json").exists()), None)
        if found is None:
            raise ConfigError("base.run", b.run, "no pre-training run there (no status.json)",
                              f"use a run dir or hash under {root / cfg.paths.runs}")
        return found.resolve()
    overrides = [*b.pretrain, f"paths.root={root}", f"paths.runs={cfg.paths.runs}", f"paths.cache={cfg.paths.cache}"]
    try:
        pcfg = compose(config_name="config", overrides=overrides)
    except Exception as err:
        raise ConfigError("base.pretrain", list(b.pretrain), f"does not compose a pre-training config ({err})",
                          "pass overrides that experiments.pretrain accepts") from None
    return identify(pcfg, root).run_dir


def finished_base_run(cfg: DictConfig, root: Path) -> Path:
    """The finished pre-training run a config names; ConfigError (naming the key and the fix) otherwise."""
    run_dir = _run_dir_of(cfg, root)
    status = read_status(run_dir)
    ckpt = run_dir / checkpoint.CHECKPOINT_NAME
    if status.get("status") != FINISHED or not ckpt.exists():
        key, value = ("base.pretrain", list(cfg.base.pretrain)) if cfg.base.pretrain else ("base.run", cfg.base.run)
        raise ConfigError(key, value, f"the pre-training run {run_dir.name} is not finished "
                          f"(status {status.get('status', 'missing')}, checkpoint {'present' if ckpt.exists() else 'missing'})",
                          "pre-train it first (python -m experiments.pretrain <the same overrides>), or pick a finished run")
    return run_dir


def _parcae_base(cfg: DictConfig, root: Path) -> Base:
    run_dir = finished_base_run(cfg, root)
    ckpt = run_dir / checkpoint.CHECKPOINT_NAME
    run_cfg = OmegaConf.load(run_dir / "config.yaml")
    model_cfg = resolve_model(run_cfg.model)
    loops = cfg.base.loops or default_loops(model_cfg)
    state = checkpoint.load(ckpt)["model"]

    def load() -> flow.ParcaeLM:
        model = build_model(model_cfg)
        model.load_state_dict(state)
        return flow.ParcaeLM(model.to(cfg.train.device), loops=loops)

    def rows() -> torch.Tensor:
        # The exact validation rows the pre-training run was evaluated on (older configs get today's defaults).
        data = OmegaConf.merge(OmegaConf.structured(DataSchema), run_cfg.data)
        view = OmegaConf.create({"data": data, "paths": {"cache": str(run_cfg.paths.get("cache", ".cache"))},
                                 "train": {"seed": run_cfg.train.seed}})
        view.data.val_rows = cfg.eval.val_rows
        block = cfg.eval.block_size or model_cfg.block_size
        return real_data.load(view, root, block).val[0]

    return Base(run_dir.name, f"{model_cfg.name}@{run_dir.name[:8]}", load, rows)


def _hf_base(cfg: DictConfig, root: Path) -> Base:
    try:
        import transformers
    except ImportError:
        raise ConfigError("base.hf_model", cfg.base.hf_model, "needs the hf extra (transformers, peft)",
                          "pip install -e '.[hf]'") from None
    b = cfg.base
    if b.hf_model == "random":
        spec = OmegaConf.to_container(b.hf_config, resolve=True)
        model_type = spec.pop("model_type", "llama")
        hf_cfg = transformers.AutoConfig.for_model(model_type, **spec)
        tokenizer: Any = flow.ByteTokens()
        if hf_cfg.vocab_size < tokenizer.vocab_size:
            raise ConfigError("base.hf_config.vocab_size", hf_cfg.vocab_size, "the byte tokenizer needs 256 ids",
                              "set vocab_size ≥ 256")
        torch.manual_seed(cfg.train.seed)
        model = transformers.AutoModelForCausalLM.from_config(hf_cfg)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        base_id = "hf-random-" + digest({"type": model_type, **spec, "seed": cfg.train.seed})
    else:
        model = transformers.AutoModelForCausalLM.from_pretrained(b.hf_model, dtype=torch.float32)
        tokenizer = flow.HFTokens(transformers.AutoTokenizer.from_pretrained(b.hf_model))
        state = {k: v.clone() for k, v in model.state_dict().items()}
        base_id = "hf-" + b.hf_model.replace("/", "--")
    model.to(cfg.train.device)

    def load() -> flow.HFCausalLM:
        fresh = copy.deepcopy(model)
        fresh.load_state_dict(state)
        return flow.HFCausalLM(fresh, tokenizer)

    def rows() -> torch.Tensor:
        # Our embedded corpus's validation documents, tokenised by the model's own tokenizer.
        corpus = build_corpus(root / cfg.paths.cache)
        docs = bytes(corpus.val).split(b"\0")
        texts = [d.decode("utf-8", errors="replace") for d in docs if d]
        return flow.tasks.token_rows(tokenizer, texts, cfg.eval.block_size or 256, cfg.eval.val_rows)

    return Base(base_id, b.hf_model, load, rows, getattr(tokenizer, "bos_id", None))


def resolve_base(cfg: DictConfig, root: Path) -> Base:
    return _hf_base(cfg, root) if cfg.base.hf_model else _parcae_base(cfg, root)


def load_task(t: DictConfig) -> tuple[list[flow.Example], list[flow.Example]]:
    if t.name == "arithmetic":
        return flow.arithmetic_split(t.n_train, t.n_test, t.seed, t.max_operand)
    if t.name == "metamathqa":
        return flow.tasks.load_metamathqa(t.n_train), flow.tasks.load_gsm8k(t.n_test)
    kw = dict(prompt_key=t.prompt_key, response_key=t.response_key, answer_key=t.answer_key, template=t.template)
    if t.test_path:
        return flow.load_jsonl(t.path, limit=t.n_train, **kw), flow.load_jsonl(t.test_path, limit=t.n_test, **kw)
    rows = flow.load_jsonl(t.path, **kw)
    if len(rows) <= t.n_test:
        raise ConfigError("task.n_test", t.n_test, f"{t.path} holds only {len(rows)} examples",
                          "lower task.n_test or give task.test_path")
    return rows[:-t.n_test][:t.n_train], rows[-t.n_test:]


def _evaluate(lm, base: Base, rows: torch.Tensor, test: list[flow.Example], cfg: DictConfig) -> dict[str, float]:
    return {"task_accuracy": flow.task_accuracy(lm, test, cfg.task.max_new_tokens, cfg.eval.batch_size, base.bos_id),
            "val_loss": flow.corpus_loss(lm, rows, cfg.eval.batch_size)}


def _train(cfg: DictConfig, m: Method, lm, data: list, weights, log_metrics) -> None:
    """Fine-tune lm in place; LoRA adapters are merged into lm.module afterwards."""
    peft_model = None
    if m.lora:
        try:
            peft_model = flow.add_lora(lm.module, cfg.lora.r, cfg.lora.alpha, cfg.lora.target_modules,
                                       cfg.lora.dropout)
        except ValueError as err:  # targets that this model does not have: known only once it is loaded
            raise ConfigError("lora.target_modules", list(cfg.lora.target_modules), str(err),
                              "name Linear layers of the base model, e.g. [q_proj,v_proj]") from None
    t = cfg.train
    spec = flow.FineTuneSpec(steps=t.steps, batch_size=t.batch_size, lr=t.lr, weight_decay=t.weight_decay,
                             warmup_fraction=t.warmup_fraction, grad_clip=t.grad_clip, seed=t.seed,
                             reduction=cfg.flow.reduction if m.flow else "tokens",
                             l2_lambda=cfg.l2.lam if m.l2 else 0.0, l2_normalize=cfg.l2.normalize)
    theta0 = flow.anchor(lm.module) if m.l2 else None
    # Progress (a bar on a terminal, plain lines elsewhere: experiments.training.progress), named by the
    # method, learning rate and seed (what FLOW's sweeps vary), e.g. flow-lr0.001-seed1.
    varied = point_label(OmegaConf.to_container(cfg, resolve=True), ["train.lr", "train.seed"])
    with Progress("-".join(p for p in (cfg.method, varied) if p), t.steps, unit="step") as progress:
        def on_log(step: int, metrics: dict[str, float]) -> None:
            log_metrics(metrics, step)
            progress.update(step, loss=metrics["ft/loss"])
        flow.fine_tune(lm, data, spec, weights, theta0, pad_id=lm.tokenizer.pad_id, on_log=on_log)
    if peft_model is not None:
        lm.module = flow.merge_lora(peft_model)


def _flow_weights(cfg: DictConfig, lm, data: list) -> tuple[torch.Tensor, dict[str, float]]:
    losses = flow.score(lm, data, cfg.flow.level, cfg.eval.batch_size, lm.tokenizer.pad_id)
    tau = flow.temperature(losses, cfg.flow.tau)
    w = flow.flow_weights(losses, tau)
    scored = w[torch.isfinite(losses)]
    q = torch.quantile(scored.double(), torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)).tolist()
    stats = {"flow/tau": tau, "flow/mean_weight": float(scored.mean()), "flow/weight_q10": q[0],
             "flow/weight_q50": q[1], "flow/weight_q90": q[2],
             "flow/base_loss_median": float(losses[torch.isfinite(losses)].median())}
    return w, stats


def execute(cfg: DictConfig, m: Method, base: Base, train_id: str, root: Path,
            log_metrics: Callable[[dict[str, float], int], None]) -> dict[str, float]:
    """Score, fine-tune (or reuse the same training's weights), average, evaluate; returns the final metrics."""
    lm = base.load()
    base_state = {k: v.detach().clone() for k, v in lm.module.state_dict().items()}
    rows = base.forgetting_rows()
    train_ex, test_ex = load_task(cfg.task)
    data = [flow.encode(e, lm.tokenizer, cfg.task.max_len, base.bos_id) for e in train_ex]
    before = _evaluate(lm, base, rows, test_ex, cfg)
    final = {"base/task_accuracy": before["task_accuracy"], "base/val_loss": before["val_loss"]}
    weights = None
    if m.flow:
        weights, stats = _flow_weights(cfg, lm, data)
        final.update(stats)
    cache = root / cfg.paths.cache / "finetuned" / f"{train_id}.pt"
    if cfg.train.save_model and cache.exists():
        log.info("reusing the fine-tuned weights of training %s", train_id)
        lm.module.load_state_dict(checkpoint.load(cache)["model"])
    else:
        _train(cfg, m, lm, data, weights, log_metrics)
        if cfg.train.save_model:
            cache.parent.mkdir(parents=True, exist_ok=True)
            checkpoint.save(cache, {"model": lm.module.state_dict()})
    if m.wise:
        lm.module.load_state_dict(flow.wise_interpolate(base_state, lm.module.state_dict(), cfg.wise.alpha))
    after = _evaluate(lm, base, rows, test_ex, cfg)
    retained = flow.retention(before["val_loss"], after["val_loss"])
    final.update({"task_accuracy": after["task_accuracy"], "val_loss": after["val_loss"],
                  "forgetting": flow.forgetting(before["val_loss"], after["val_loss"]),
                  "retention": retained, "combined": flow.combined_score(after["task_accuracy"], retained)})
    return final


def run(cfg: DictConfig) -> dict[str, float]:
    """Run (or skip) one fine-tuning job; returns its final metrics."""
    m = validate(cfg)
    root = Path(cfg.paths.root).resolve()
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    base = resolve_base(cfg, root)
    run_id, train_id = identities(cfg, base.id)
    ident = Identity(run_id, root / cfg.paths.runs / f"ft-{run_id}")
    params = {**tracking.flatten(OmegaConf.to_container(cfg, resolve=True)), "base.id": base.id}
    tags = {"sweep_id": cfg.sweep_id, "train_hash": train_id, "method": cfg.method,
            "tau": cfg.flow.tau if m.flow else "none", "base": base.id, "code_version": tracking.code_version()}
    name = f"{cfg.method}" + (f"-tau_{cfg.flow.tau}" if m.flow else "") + f"-{run_id[:6]}"
    with Job(cfg, ident, FINETUNE_KIND) as job:
        if job.finished:
            job.track(params, name, tags)
            log.info("[skip] %s (%s) already finished", ident.run_dir.name, cfg.method)
            return job.status["final"]
        try:
            ident.run_dir.mkdir(parents=True, exist_ok=True)
            config = job.save_config()
            tracker = job.track(params, name, tags, (config,))
            job.started(train_hash=train_id, method=cfg.method)
            final = execute(cfg, m, base, train_id, root, tracker.log_metrics if tracker else lambda *_: None)
            if tracker:
                tracker.log_metrics(final, cfg.train.steps)
        except BaseException as err:
            job.failed(err)
            raise
        job.finish(FINISHED, final, steps=cfg.train.steps)
    log.info("[done] %s %s acc=%.3f forgetting=%.4f", ident.run_dir.name, cfg.method, final["task_accuracy"],
             final["forgetting"])
    return final
