"""FLOW: fine-tuning with pre-trained loss-oriented weighting (spec: shared/reference/FLOW arXiv 2502.02797), its
baselines (ℓ2 to θ₀, WiSE-FT, LoRA), tasks and forgetting metrics. Knows nothing of Hydra or MLflow."""

from .baselines import add_lora, anchor, l2_penalty, merge_lora, wise_interpolate
from .metrics import combined_score, corpus_loss, exact_match, forgetting, retention, task_accuracy
from .models import ByteTokens, HFCausalLM, HFTokens, ParcaeLM, token_losses
from .objective import weighted_loss
from .tasks import Example, arithmetic, arithmetic_split, encode, final_answer, load_jsonl
from .training import FineTuneSpec, fine_tune, score
from .weights import TauRule, flow_weights, sequence_losses, temperature

__all__ = [
    "add_lora", "anchor", "l2_penalty", "merge_lora", "wise_interpolate",
    "combined_score", "corpus_loss", "exact_match", "forgetting", "retention", "task_accuracy",
    "ByteTokens", "HFCausalLM", "HFTokens", "ParcaeLM", "token_losses",
    "weighted_loss",
    "Example", "arithmetic", "arithmetic_split", "encode", "final_answer", "load_jsonl",
    "FineTuneSpec", "fine_tune", "score",
    "TauRule", "flow_weights", "sequence_losses", "temperature",
]
