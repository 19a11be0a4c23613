"""The validation every job passes first, and what a valid config will do (its Plan).

A model is a preset from `parcae.presets` plus explicit overrides (every model field of the schema
defaults to null, meaning "the preset's value"); the fully resolved model is what gets hashed, logged
and saved.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from experiments.config.errors import ConfigError
from experiments.config.launch_env import env_world_size
from experiments.data.validate import validate as validate_data
from parcae import ModelConfig, PRESETS, flops_per_token, param_counts

PRECISIONS = ("fp32", "bf16")  # train.precision

@dataclass(frozen=True)
class Plan:
    """What a validated config will do: the resolved model and the budget in steps."""

    model: ModelConfig
    flops_per_token: int
    tokens: int  # tokens actually trained on: steps × batch × block_size
    steps: int
    n_params: int
    n_params_unrolled: int
    n_params_core: int = 0  # the recurrent block's parameters (0 for a Transformer), logged for the analysis

    @property
    def train_flops(self) -> int:
        return self.tokens * self.flops_per_token

    def resolved_config(self, cfg: DictConfig) -> dict:
        """The job config as a plain dict with the model as resolved here (the preset's values, then the
        overrides): what a run logs, is named by and `show_config` prints (`--cfg job` shows nulls)."""
        c = OmegaConf.to_container(cfg, resolve=True)
        c["model"] = dataclasses.asdict(self.model)
        return c


def default_loops(model: ModelConfig) -> int | None:
    """The loop count a model is evaluated at unless told otherwise: µ_rec for Parcae (the mean recurrence
    it was trained at, Parcae arXiv 2604.12946 §3), None for a Transformer (no loop)."""
    return model.mean_recurrence if model.kind == "parcae" else None


def dense_test_loops(mean_recurrence: int) -> list[int]:
    """Every loop count up to µ_rec, then a few beyond (1.5, 2 and 3·µ_rec, rounded up): the curve L(T) is
    sampled densely where it falls and far enough past µ_rec to see where it saturates."""
    beyond = {math.ceil(f * mean_recurrence) for f in (1.5, 2, 3)}
    return sorted(set(range(1, mean_recurrence + 1)) | beyond)


def eval_loops(train_cfg: Any, model: ModelConfig) -> list[int]:
    """The loop counts a finished Parcae run is evaluated at: train.test_loops, plus the dense grid when
    train.test_loops_dense is set."""
    loops = set(train_cfg.test_loops)
    if train_cfg.get("test_loops_dense", False):
        loops |= set(dense_test_loops(model.mean_recurrence))
    return sorted(loops)


def resolve_model(model_cfg: Any) -> ModelConfig:
    m = OmegaConf.to_container(model_cfg, resolve=True) if isinstance(model_cfg, DictConfig) else dict(model_cfg)
    check_finite("model", m)
    name = m.get("name")
    if name not in PRESETS:
        raise ConfigError("model.name", name, "unknown model preset",
                          f"use model=<one of {', '.join(sorted(PRESETS))}>")
    overrides = {k: v for k, v in m.items() if v is not None and k != "name"}
    model = dataclasses.replace(PRESETS[name], **overrides)
    try:
        model.validate()
    except ValueError as err:
        msg = str(err)
        key = msg.split("=", 1)[0] if msg.startswith("model.") else "model"
        raise ConfigError(key, getattr(model, key.split(".")[-1], None), msg, "see conf/model and parcae/config.py") from err
    return model


_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+=-]*")


def check_plain_name(key: str, value: Any) -> str:
    """A user-given name that becomes part of a path (sweeps/<sweep_id>/, tune/<study>/): letters, digits
    and _ . + = -, no separator, no `..`."""
    if not isinstance(value, str) or not _PLAIN_NAME.fullmatch(value) or ".." in value or len(value) > 200:
        raise ConfigError(key, value, "must be a plain name (letters, digits, _ . + = -; no / or ..)",
                          f"e.g. {key}=isoflop-muon")
    return value


def check_subdir(key: str, value: Any) -> str:
    """A folder given relative to paths.root that stays inside it: no absolute path, no `..`."""
    parts = str(value).replace("\\", "/").split("/")
    if not isinstance(value, str) or not value.strip() or value.startswith(("/", "~")) or ".." in parts:
        raise ConfigError(key, value, "must be a folder inside paths.root (relative, without ..)",
                          f"e.g. {key}=tune, or move paths.root to where the files should go")
    return value


def check_uri_has_no_password(key: str, uri: Any) -> None:
    """Credentials never go into configs (they would be written to Hydra's output dirs and run dirs)."""
    if isinstance(uri, str) and _URI_PASSWORD.search(uri):
        raise ConfigError(key, "<a URI with a password>", "holds a password",
                          "drop it from the URI and export MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD")


_URI_PASSWORD = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:[^@/\s]+@")


def check_known_keys(node: Any, path: str = "") -> None:
    """Every key of a schema-backed node is a field of its schema. Hydra adds any key given with `+`
    (`+foo=1`, `+train.lr_typo=1`), which would only change the run's hash; here it is refused."""
    if not isinstance(node, DictConfig):
        return
    schema = OmegaConf.get_type(node)
    fields = {f.name for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else None
    for key in node.keys():
        name = f"{path}.{key}" if path else str(key)
        if fields is not None and key not in fields:
            raise ConfigError(name, "...", "is not a key of the config (a `+` override adds any key)",
                              f"drop +{name}, or fix its spelling (python -m experiments.show_config lists the keys)")
        check_known_keys(node._get_node(key), name)


def check_finite(path: str, node: Any) -> None:
    """No float anywhere in the config is nan or ±inf (`model.rope_theta=nan` would train a diverged run)."""
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=True)
    if isinstance(node, dict):
        for key, value in node.items():
            check_finite(f"{path}.{key}" if path else str(key), value)
    elif isinstance(node, list):
        for value in node:
            check_finite(path, value)
    elif isinstance(node, float) and not math.isfinite(node):
        raise ConfigError(path, node, "must be a finite number", f"set {path} to a finite value (or null where allowed)")


SEED_MAX = 2**32 - 1  # the range every generator accepts (numpy's is the narrowest)
MAX_STEPS = 10**9  # far beyond any real run: a budget buying more is a typo (e.g. flop_budget=1e300)


def _finite_positive(key: str, value: Any, example: str) -> None:
    if value is not None and (not math.isfinite(value) or value <= 0):
        raise ConfigError(key, value, "must be a finite positive number", f"e.g. {key}={example}")


BUDGET_KEYS = ("train.tokens", "train.flop_budget")


def budget_overrides(overrides: list[str]) -> list[str]:
    """The one rule for the two budget keys: the one that overrides (a command line, a sweep's grid) name
    wins over the other's default, so `train.flop_budget=5e12` alone nulls the default `train.tokens`
    (`<other>=null` is appended). Both named with a value: ConfigError. A config file's values stay
    defaults; `plan` then still wants exactly one set."""
    named: dict[str, str | None] = {}  # key -> the value given (None: given as null or deleted)
    for o in overrides:
        key, eq, value = o.lstrip("+").partition("=")
        if key.lstrip("~") in BUDGET_KEYS:  # ~train.tokens deletes it: not set
            named[key.lstrip("~")] = value if eq and value.strip().lower() not in ("null", "none", "") else None
    if all(named.get(k) for k in BUDGET_KEYS):
        raise ConfigError("train.tokens", named["train.tokens"],
                          f"given together with train.flop_budget={named['train.flop_budget']}; a run has one budget",
                          "keep one of them (the other then defaults to null)")
    return list(overrides) + [f"{other}=null" for key, other in (BUDGET_KEYS, BUDGET_KEYS[::-1])
                              if named.get(key) and other not in named]


def cooldown_start(total: int, cooldown_fraction: float) -> int:
    """The first step of a WSD run's cooldown (trainer.wsd_multiplier): where a cooldown branch leaves its trunk. Up
    to it the schedule does not depend on `total` when the warm-up is given in steps."""
    return total - int(cooldown_fraction * total)


def warmup_steps_of(t: Any, tokens_per_step: int) -> int | None:
    """train.warmup_tokens in whole steps (None: the warm-up is train.warmup_fraction of the run)."""
    tokens = getattr(t, "warmup_tokens", None)
    return None if tokens is None else int(tokens) // tokens_per_step


def branching_on(cfg: Any) -> bool:
    """Whether the run is a cooldown branch (sweep.branching; experiments.training.branching)."""
    return bool(cfg.get("sweep") is not None and cfg.sweep.get("branching", False))


def check_schedule(cfg: DictConfig, steps: int, tokens_per_step: int) -> None:
    """train.warmup_tokens fits the run, and sweep.branching has what branches need (experiments.training.branching):
    the warm-up in tokens, and a schedule that up to the cooldown does not depend on the run's length."""
    t = cfg.train
    warmup_tokens = t.get("warmup_tokens")
    if warmup_tokens is not None:
        start = cooldown_start(steps, t.cooldown_fraction)
        if warmup_tokens < 0 or warmup_steps_of(t, tokens_per_step) > start:
            raise ConfigError("train.warmup_tokens", warmup_tokens,
                              f"must lie in [0, {start * tokens_per_step:,}] (the warm-up ends before the "
                              f"cooldown starts at step {start} of {steps})",
                              "lower it, or raise the budget")
    if not branching_on(cfg):
        return
    if t.optimizer != "adamw":
        raise ConfigError("sweep.branching", True, f"needs train.optimizer=adamw (with {t.optimizer}, the weight decay "
                          "ramps to 0 over the whole run, so runs of different lengths share no trunk)",
                          "use train.optimizer=adamw, or sweep.branching=false")
    if warmup_tokens is None:
        raise ConfigError("train.warmup_tokens", None, "sweep.branching=true needs the warm-up in tokens (the same "
                          "for every branch of a trunk; a sweep sets it from its smallest run)",
                          "e.g. train.warmup_tokens=4096, or run it as a sweep (-m sweep=...)")


def plan(cfg: DictConfig) -> Plan:
    """Validate a job config and derive its budget; raises ConfigError naming the first bad key."""
    check_plain_name("sweep_id", cfg.sweep_id)
    check_uri_has_no_password("tracking.uri", cfg.tracking.uri)
    model = resolve_model(cfg.model)
    t = cfg.train
    _finite_positive("train.flop_budget", t.flop_budget, "2e11")
    _finite_positive("train.tokens", t.tokens, "500000")
    if (t.tokens is None) == (t.flop_budget is None):
        raise ConfigError("train.tokens", t.tokens, "set exactly one of train.tokens and train.flop_budget",
                          "pass train.tokens=N or train.flop_budget=C (the other then defaults to null)")
    if not 0 <= t.seed <= SEED_MAX:
        raise ConfigError("train.seed", t.seed, f"must lie in [0, {SEED_MAX}] (2**32 - 1)", "e.g. train.seed=0")
    for key in ("batch_size", "eval_every", "checkpoint_every"):
        if t[key] < 1:
            raise ConfigError(f"train.{key}", t[key], "must be a positive integer", f"set train.{key} ≥ 1")
    micro = t.get("micro_batch_size")
    if micro is not None and (micro < 1 or t.batch_size % micro):
        raise ConfigError("train.micro_batch_size", micro, f"must be ≥ 1 and divide train.batch_size={t.batch_size}",
                          "use a divisor of train.batch_size, or null for no gradient accumulation")
    world = env_world_size()  # what this launch announces; the trainer checks the live process group again
    if world > 1 and t.batch_size % (world * (micro or 1)):
        need = f"world_size × train.micro_batch_size = {world} × {micro}" if micro else f"world_size = {world}"
        raise ConfigError("train.batch_size", t.batch_size,
                          f"must be divisible by {need} (this launch has {world} processes, each taking "
                          "batch_size / world_size rows per step)",
                          f"use a multiple of {world * (micro or 1)}, or change train.micro_batch_size or the "
                          "number of processes")
    if cfg.data.val_rows < 1:
        raise ConfigError("data.val_rows", cfg.data.val_rows, "must be ≥ 1 (the validation set)", "e.g. data.val_rows=64")
    for key in ("weight_decay", "grad_clip", "muon_lr", "eps"):
        if not math.isfinite(t[key]) or t[key] < 0:
            raise ConfigError(f"train.{key}", t[key], "must be a finite number ≥ 0", f"set train.{key}")
    for key in ("beta1", "beta2"):
        if not 0 <= t[key] < 1:
            raise ConfigError(f"train.{key}", t[key], "must lie in [0, 1)", f"e.g. train.{key}=0.9")
    if t.lr <= 0 or not math.isfinite(t.lr):
        raise ConfigError("train.lr", t.lr, "must be a positive number", "set train.lr, e.g. 3e-3")
    for key in ("warmup_fraction", "cooldown_fraction"):
        if not 0 <= t[key] <= 1:
            raise ConfigError(f"train.{key}", t[key], "must lie in [0, 1]", f"e.g. train.{key}=0.02")
    if not 0 < cfg.data.val_percent < 100:
        raise ConfigError("data.val_percent", cfg.data.val_percent, "must lie in (0, 100)", "e.g. data.val_percent=2")
    if not 0 <= t.warmup_fraction + t.cooldown_fraction <= 1:
        raise ConfigError("train.cooldown_fraction", t.cooldown_fraction,
                          "warmup_fraction + cooldown_fraction must lie in [0, 1]", "lower one of them")
    if t.optimizer not in ("adamw", "muon"):
        raise ConfigError("train.optimizer", t.optimizer, "unknown optimizer", "use adamw or muon")
    if t.on_nonfinite not in ("skip", "stop"):
        raise ConfigError("train.on_nonfinite", t.on_nonfinite, "unknown policy", "use skip or stop")
    if t.get("precision", "fp32") not in PRECISIONS:
        raise ConfigError("train.precision", t.precision, "unknown precision", f"use one of {', '.join(PRECISIONS)}")
    if not t.test_loops or min(t.test_loops) < 1:
        raise ConfigError("train.test_loops", list(t.test_loops), "needs loop counts ≥ 1", "e.g. [1,2,4,8,16]")
    check_finite("", cfg)
    check_known_keys(cfg)
    validate_data(cfg.data, model.vocab_size)

    fpt = flops_per_token(model)
    tokens_per_step = t.batch_size * model.block_size
    if t.flop_budget is not None:
        if t.flop_budget <= 0:
            raise ConfigError("train.flop_budget", t.flop_budget, "must be positive", "e.g. train.flop_budget=2e11")
        budget_tokens = int(t.flop_budget // fpt)
        key, value = "train.flop_budget", t.flop_budget
        minimum = f"{tokens_per_step * fpt:.3g} FLOPs"
    else:
        budget_tokens = int(t.tokens)
        key, value = "train.tokens", t.tokens
        minimum = f"{tokens_per_step} tokens"
    steps = budget_tokens // tokens_per_step
    if steps < 1:
        raise ConfigError(key, value,
                          f"buys {budget_tokens:,} tokens, fewer than one optimizer step "
                          f"(train.batch_size × model.block_size = {tokens_per_step:,} tokens at "
                          f"{fpt:,} FLOPs/token)",
                          f"raise it to at least {minimum}, or lower train.batch_size")
    if steps > MAX_STEPS:
        raise ConfigError(key, value, f"buys {steps:.3g} optimizer steps, more than the {MAX_STEPS:.0e} any run "
                                      "here can take", "lower it (e.g. train.flop_budget=2e12 or train.tokens=500000)")
    check_schedule(cfg, steps, tokens_per_step)
    counts = param_counts(model)
    return Plan(model, fpt, steps * tokens_per_step, steps, counts["total"], counts["unrolled"], counts["core"])


