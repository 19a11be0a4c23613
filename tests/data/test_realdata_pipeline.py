"""The pieces of the real-data path, in process: BPE, bits per byte, packing, shards, the row stream, and
the validation that answers bad data configs before any work."""

import collections
import json
import math
import threading
import time

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from experiments.data import bpb
from experiments.data import run_data as real_data
from experiments.data import shards
from experiments.data import tokenizer as tokenizers
from experiments.config.errors import ConfigError
from experiments.config.plan import plan
from experiments.config.schema import register
from experiments.data.packing import RowStream, check_data_position, data_position, pack_best_fit, write_rows
from realdata_helpers import REPO, stdlib_texts

register()


@pytest.fixture(scope="module")
def texts():
    return stdlib_texts(60)


@pytest.fixture(scope="module")
def bpe(texts):
    return tokenizers.train_bpe(iter(texts), 700)


def test_bpe_has_the_requested_vocab_and_round_trips(bpe, tmp_path):
    assert bpe.vocab_size == 700
    assert {bpe.bos_id, bpe.eos_id, bpe.pad_id} <= set(range(700))
    text = "Grüße, 世界! x = 1234567 + 89\n\n\tdef f(): return 'ok'"
    ids = bpe.encode(text)
    assert bpe.decode(ids) == text
    # Bytes per token add up to the text's UTF-8 length: what bits per byte divides by.
    assert int(bpe.token_bytes()[ids].sum()) == len(text.encode("utf-8"))
    # The split rule groups digits one or two at a time (Parcae arXiv 2604.12946 App. Q).
    assert all(len(tok) <= 2 for tok in (bpe.tok.id_to_token(i) for i in bpe.encode("1234567"))
               if tok.isdigit())
    again = tokenizers.load(tokenizers.save(bpe, tmp_path / "tokenizer.json"))
    assert again.encode(text) == ids and again.content_hash == bpe.content_hash


def test_tiktoken_encoder_gives_the_ids_of_tokenizers(texts, bpe, tmp_path):
    pytest.importorskip("tiktoken", reason="tiktoken is the optional fast encoder (data.encoder=tiktoken)")
    fast = tokenizers.with_encoder(bpe, "tiktoken")
    probe = [*texts, "Grüße <|bos|> 世界 12345\r\n\t  x", ""]
    assert fast.encode_batch(probe) == bpe.encode_batch(probe)
    a = shards.build_shards(iter(texts), fast, tmp_path / "a", shard_docs=16, workers=2, val_percent=10,
                            description={}, progress=False)
    b = shards.build_shards(iter(texts), bpe, tmp_path / "b", shard_docs=16, workers=0, val_percent=10,
                            description={}, progress=False)
    assert a.content_hash == b.content_hash


def test_bits_per_byte_hand_checked():
    # ln 4 nats per token = 2 bits per token; 3 tokens over 6 bytes → 1 bit per byte.
    assert bpb.bits_per_byte(math.log(4), tokens=3, n_bytes=6) == pytest.approx(1.0)
    # Byte tokens: the document separator (0) stands for no byte.
    labels = np.array([[0, 65, 66, 67]])
    assert bpb.tokens_per_byte(labels, tokenizers.ByteLevel().token_bytes()) == pytest.approx(4 / 3)
    loss = 1.7
    assert loss * math.log2(math.e) * bpb.tokens_per_byte(labels, tokenizers.ByteLevel().token_bytes()) == \
        pytest.approx(bpb.bits_per_byte(loss, 4, 3))


def _docs(rng, n, bos=1, eos=2):
    return [np.array([bos, *rng.integers(3, 50, size=rng.integers(1, 40)), eos], dtype=np.uint16) for _ in range(n)]


def test_best_fit_rows_start_with_bos_and_lose_no_token():
    rng = np.random.default_rng(0)
    docs = _docs(rng, 300)
    rows = list(pack_best_fit(iter(docs), 33, buffer_docs=16, bos_id=1))
    assert rows and all(len(r) == 33 and r[0] == 1 for r in rows)
    packed = collections.Counter(int(t) for r in rows for t in r if t != 1)
    source = collections.Counter(int(t) for d in docs for t in d if t != 1)
    assert not packed - source  # nothing invented
    assert sum((source - packed).values()) < 33  # only the last, partial row is dropped
    again = list(pack_best_fit(iter(docs), 33, buffer_docs=16, bos_id=1))
    assert all((a == b).all() for a, b in zip(rows, again))
    # Best fit keeps more documents whole than cutting their concatenation into rows would.
    whole = sum(1 for d in docs if any(_contains(r, d) for r in rows))
    ends = np.cumsum([len(d) for d in docs])
    naive_whole = sum(1 for e, d in zip(ends, docs) if (e - len(d)) // 33 == (e - 1) // 33)
    assert whole > 1.3 * naive_whole


def _contains(row, doc):
    n = len(doc)
    return any((row[i:i + n] == doc).all() for i in range(len(row) - n + 1))


def test_shards_same_with_workers_and_resume_skips_finished(texts, bpe, tmp_path):
    desc = {"test": 1}
    serial = shards.build_shards(iter(texts), bpe, tmp_path / "serial", shard_docs=16, workers=0, val_percent=10,
                                 description=desc, progress=False)
    parallel = shards.build_shards(iter(texts), bpe, tmp_path / "par", shard_docs=16, workers=2, val_percent=10,
                                   description=desc, progress=False)
    assert serial.content_hash == parallel.content_hash
    assert serial.dtype == np.uint16 and tokenizers.token_dtype(70_000) == np.uint32
    assert serial.total("train_docs") + serial.total("val_docs") == len(texts) and serial.total("val_docs") > 0
    docs = list(serial.documents("train"))
    assert all(d[0] == bpe.bos_id and d[-1] == bpe.eos_id for d in docs)
    assert bpe.decode(docs[0][1:-1]) in texts

    # An interrupted build: shard 2 never finished and no manifest was written.
    (tmp_path / "par" / shards.MANIFEST).unlink()
    (tmp_path / "par" / "00002.json").unlink()
    kept = (tmp_path / "par" / "00001.train.bin").stat().st_mtime_ns
    resumed = shards.build_shards(iter(texts), bpe, tmp_path / "par", shard_docs=16, workers=0, val_percent=10,
                                  description=desc, progress=False)
    assert resumed.content_hash == serial.content_hash
    assert (tmp_path / "par" / "00001.train.bin").stat().st_mtime_ns == kept  # not redone
    assert json.loads((tmp_path / "par" / "00002.json").read_text())["n_docs"] == 16


def test_row_stream_batches_are_a_function_of_the_step(tmp_path):
    rng = np.random.default_rng(1)
    rows = write_rows(pack_best_fit(iter(_docs(rng, 200)), 17, 8, 1), tmp_path / "rows.bin", np.dtype(np.uint16), 17)
    a, b = RowStream(rows, seed=3, content_hash="h"), RowStream(rows, seed=3, content_hash="h")
    for step in (0, 5, len(rows) // 4 + 2):  # the last one lies in the second epoch
        xa, ya = a.batch(step, 4)
        xb, yb = b.batch(step, 4)
        assert (xa == xb).all() and (ya == yb).all() and (xa[:, 1:] == ya[:, :-1]).all()
    first_epoch = {tuple(a.batch(s, 1)[0][0].tolist()) for s in range(len(rows))}
    assert len(first_epoch) == len({tuple(r[:-1]) for r in rows.tolist()})  # every row once per epoch
    pos = data_position(a, 7, 4)
    assert pos["epoch"] == 28 // len(rows) and pos["content_hash"] == "h"
    check_data_position(b, pos)
    with pytest.raises(RuntimeError, match="other data"):
        check_data_position(RowStream(rows, seed=3, content_hash="changed"), pos)


def _compose(*overrides):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.mark.parametrize("overrides, key", [
    (["data=parquet"], "data.paths"),
    (["data=text", "data.paths=[/nonexistent/*.txt]"], "data.paths"),
    (["data=hf"], "data.hf_path"),
    (["data=jsonl", "data.paths=[{here}]"], "model.vocab_size"),  # a 32,768-token BPE for a 256-token model
    (["data=jsonl", "data.paths=[{here}]", "data.tokenizer_path=/nope.json"], "data.tokenizer_path"),
    (["data=jsonl", "data.paths=[{here}]", "data.tokenizer=wordpiece"], "data.tokenizer"),
    (["data=fineweb_edu"], "model.vocab_size"),  # composes, and is refused before touching the network
    (["data=jsonl", "data.paths=[{here}]", "data.encoder=sentencepiece"], "data.encoder"),
])
def test_bad_data_config_names_the_key(overrides, key):
    overrides = [o.replace("{here}", __file__) for o in overrides]
    if overrides[0] == "data=hf":
        overrides = ["data=text", "data.source=hf", "data.paths=[]"]
    with pytest.raises(ConfigError) as err:
        plan(_compose("train.tokens=20480", *overrides))
    assert err.value.key == key and "Fix:" in str(err.value)


def test_other_ranks_wait_for_rank_0_to_build_the_data(texts, tmp_path, monkeypatch):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("END_OF_DOCUMENT".join(texts[:20]))
    cfg = _compose("data=text", f"data.paths=[{corpus}]", "data.text_separator=END_OF_DOCUMENT", "data.tokenizer=byte",
                   "data.workers=0", "data.val_percent=20", f"paths.root={tmp_path}", "model.block_size=64")
    monkeypatch.setattr(real_data, "WAIT_POLL_S", 0.01)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    waiting = threading.Thread(target=real_data.load, args=(cfg, tmp_path, 64), daemon=True)
    waiting.start()
    time.sleep(0.5)
    assert waiting.is_alive() and not (tmp_path / ".cache" / "shards").exists()  # nothing built by rank 1
    monkeypatch.setenv("RANK", "0")
    built = real_data.load(cfg, tmp_path, 64)
    waiting.join(timeout=30)
    assert not waiting.is_alive() and built.train.n_rows > 0
