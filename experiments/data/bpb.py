"""Bits per byte: validation loss made comparable across tokenizers.

A loss in nats per token becomes bits per byte through the text the tokens stand for:
bpb = loss · log2(e) · tokens ÷ bytes. Special tokens (BOS/EOS) stand for no bytes; their loss still
counts, as it does in the loss itself.
"""

from __future__ import annotations

import math

import numpy as np


def tokens_per_byte(labels, token_bytes: np.ndarray) -> float:
    """Predicted tokens per byte of text they decode to, over a validation set's labels."""
    ids = np.asarray(labels).reshape(-1)
    n_bytes = int(token_bytes[ids].sum())
    if n_bytes == 0:
        raise ValueError("the validation labels decode to no bytes: bits per byte is undefined")
    return ids.size / n_bytes


def bits_per_byte(loss_nats_per_token: float, tokens: float, n_bytes: float) -> float:
    return loss_nats_per_token * math.log2(math.e) * tokens / n_bytes


def bpb_from_tokens_per_byte(loss_nats_per_token: float, tokens_per_byte: float) -> float:
    """bits_per_byte with the ratio tokens ÷ bytes of the evaluated labels already taken."""
    return bits_per_byte(loss_nats_per_token, tokens_per_byte, 1.0)
