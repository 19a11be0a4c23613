import numpy as np
import torch

from experiments.data.corpus import ByteTokenizer, PackedStream, build_corpus, stdlib_documents


def test_corpus_is_deterministic_cached_and_split_by_document(tmp_path):
    a = build_corpus(tmp_path)
    b = build_corpus(tmp_path)  # from the cache
    assert a.content_hash == b.content_hash
    assert np.array_equal(a.train, b.train) and np.array_equal(a.val, b.val)
    assert len(a.train) > 5_000_000 and len(a.val) > 50_000
    assert a.n_val_docs > 0 and a.n_train_docs > 20 * a.n_val_docs
    # Whole documents go to one split: each split is a sequence of NUL-terminated documents.
    assert a.train[-1] == 0 and a.val[-1] == 0
    assert (a.train == 0).sum() == a.n_train_docs
    assert any("pydoc_data/topics.py" == n for n, _ in stdlib_documents())


def test_other_split_changes_hash(tmp_path):
    assert build_corpus(tmp_path, val_percent=2.0).content_hash != build_corpus(tmp_path, val_percent=5.0).content_hash


def test_packed_stream_is_a_function_of_step():
    tokens = np.arange(10_000, dtype=np.int64) % 256
    s1, s2 = PackedStream(tokens, 32, seed=3), PackedStream(tokens, 32, seed=3)
    x5, y5 = s1.batch(5, 4)
    s1.batch(6, 4)
    x5b, _ = s2.batch(5, 4)
    assert torch.equal(x5, x5b)
    assert torch.equal(x5[:, 1:], y5[:, :-1])  # labels are inputs shifted by one
    # An epoch visits every row once.
    n = s1.n_rows
    seen = torch.cat([s1.batch(k, 1)[0][:, 0] for k in range(n)])
    assert len(set((seen // 32).tolist())) <= n


def test_byte_tokenizer_roundtrip():
    tok = ByteTokenizer()
    text = "def f(x):\n    return x ** 2  # µ"
    assert tok.decode(tok.encode(text)) == text
