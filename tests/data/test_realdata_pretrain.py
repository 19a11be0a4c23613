"""End to end on a parquet dataset the test writes: the `datasets` loader → a BPE trained on it → shards →
packed rows → training; a run killed mid-epoch resumes onto exactly the batches of an uninterrupted run."""

import json
import os
import re
import signal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from realdata_helpers import SMALL, python_module, stdlib_texts, wait_for_file

STEPS = 40


@pytest.fixture(scope="module")
def parquet_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("parquet")
    texts = stdlib_texts(160)
    for i, part in enumerate((texts[:80], texts[80:])):
        pq.write_table(pa.table({"text": part, "id": list(range(len(part)))}), folder / f"part-{i}.parquet")
    return folder


def _run_args(parquet_dir, cache):
    # An absolute paths.cache is shared by both roots: the second run reuses the tokenizer and shards.
    return ["data=parquet", f"data.paths=[{parquet_dir}/*.parquet]", "data.bpe_vocab_size=512",
            "model.vocab_size=512", "data.shard_docs=32", "data.val_percent=10", f"paths.cache={cache}",
            *SMALL, f"train.tokens={STEPS * 8 * 64}"]


def _pretrain(root, args, **kw):
    return python_module("experiments.pretrain", f"paths.root={root}", *args, **kw)


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _train_losses(run_dir):
    return {m["step"]: m["train/loss"] for m in _metrics(run_dir) if "train/loss" in m}


def test_parquet_shards_train_and_resume_mid_epoch_exactly(parquet_dir, tmp_path):
    args = _run_args(parquet_dir, tmp_path / "cache")
    ref = _pretrain(tmp_path / "ref", args)
    assert ref.returncode == 0, ref.stderr
    (ref_dir,) = (tmp_path / "ref" / "runs").iterdir()
    (shard_dir,) = (tmp_path / "cache" / "shards").iterdir()
    manifest = json.loads((shard_dir / "manifest.json").read_text())
    assert manifest["dtype"] == "uint16" and manifest["vocab_size"] == 512 and len(manifest["shards"]) == 5
    ref_status = json.loads((ref_dir / "status.json").read_text())
    assert {"eval/loss", "eval/bpb", "eval/bpb_T1", "eval/bpb_T2"} <= set(ref_status["final"])
    assert json.loads((ref_dir / "tokenizer.json").read_text())["model"]["type"] == "BPE"

    # Mid-epoch: a 40-step run over the train rows sees each of them less than once.
    rows = sum(1 for _ in shard_dir.glob("rows-train-65-*.bin"))
    assert rows == 1 and (next(shard_dir.glob("rows-train-65-*.bin")).stat().st_size // (65 * 2)) > STEPS * 8

    root = tmp_path / "killed"
    proc = _pretrain(root, args, wait=False)
    ckpt = wait_for_file(proc, root, "runs/*/checkpoint.pt")
    assert ckpt is not None, "the run ended before its first checkpoint"
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    again = _pretrain(root, args)
    assert again.returncode == 0, again.stderr
    (resumed_from,) = re.findall(r"resuming from step (\d+)/", again.stdout + again.stderr)
    assert 0 < int(resumed_from) < STEPS
    run_dir = ckpt.parent
    assert run_dir.name == ref_dir.name  # same identity: same config and same data hash
    status = json.loads((run_dir / "status.json").read_text())
    for key, value in ref_status["final"].items():
        assert status["final"][key] == pytest.approx(value, abs=1e-5), key
    ref_losses, losses = _train_losses(ref_dir), _train_losses(run_dir)
    after = [s for s in ref_losses if s > int(resumed_from)]  # batches drawn after the resume
    assert after and all(losses[s] == pytest.approx(ref_losses[s], abs=1e-5) for s in after)

    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("parcae").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["data.source"] == "parquet" and run.data.params["data.tokenizer_vocab"] == "512"
    assert run.data.params["data.tokenizer_hash"] == manifest["tokenizer"]
    assert "val/bpb" in run.data.metrics and "eval/bpb_T2" in run.data.metrics
    assert "tokenizer.json" in {a.path for a in client.list_artifacts(run.info.run_id)}
