"""Scoring with the frozen model and the weighted fine-tuning loop: the weights really steer training."""

import torch

import flow
from parcae import build_model, get_preset


def _lm():
    torch.manual_seed(0)
    return flow.ParcaeLM(build_model(get_preset("transformer-tiny")))


def _data(lm, n=8):
    return [flow.encode(e, lm.tokenizer, 16) for e in flow.arithmetic(n, seed=1)]


def test_sequence_and_token_scores_agree_and_leave_the_model_untouched():
    lm = _lm()
    data = _data(lm)
    before = {k: v.clone() for k, v in lm.module.state_dict().items()}
    seq = flow.score(lm, data, "sequence", batch_size=3)
    tok = flow.score(lm, data, "token", batch_size=3)
    assert seq.shape == (8,) and tok.shape[0] == 8
    # The sequence loss is the mean of the supervised token losses (NaN marks unsupervised positions).
    assert torch.allclose(seq, torch.nanmean(tok, dim=1), atol=1e-5)
    for e, row in zip(data, tok):
        assert int(torch.isfinite(row).sum()) == sum(e.mask)  # answer digits + the newline
    assert all(torch.equal(v, lm.module.state_dict()[k]) for k, v in before.items())
    w = flow.flow_weights(tok, flow.temperature(tok))  # token-level weights train too
    flow.fine_tune(lm, data, flow.FineTuneSpec(steps=2, batch_size=4), w)


def test_weights_steer_training_toward_the_weighted_samples():
    lm = _lm()
    data = _data(lm)
    start = flow.score(lm, data)
    weights = torch.zeros(8)
    weights[0] = 1.0  # only sample 0 counts
    flow.fine_tune(lm, data, flow.FineTuneSpec(steps=20, batch_size=8, lr=3e-3), weights)
    drop = start - flow.score(lm, data)
    assert drop[0] > 0 and drop[0] > drop[1:].max()
