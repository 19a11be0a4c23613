"""Parcae: stable looped language models and their Transformer baselines (spec: shared/reference/Parcae arXiv 2604.12946 A–C)."""

from .config import ModelConfig
from .flops import executed_flops_per_token, flops_per_token, param_counts, tokens_for_budget
from .model import LoopedLM, TransformerLM, build_model
from .presets import PRESETS, get_preset

__all__ = [
    "ModelConfig",
    "PRESETS",
    "get_preset",
    "build_model",
    "LoopedLM",
    "TransformerLM",
    "executed_flops_per_token",
    "flops_per_token",
    "param_counts",
    "tokens_for_budget",
]
