"""Every bad input ends in one line naming it and exit 2, before Hydra writes anything (preflight), and a
seeded random search over the schema's fields finds no value that escapes that contract."""

import dataclasses
import math
import random
import os
import subprocess
import sys

import pytest

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from experiments.config import schema
from experiments.config.errors import one_line_errors
from experiments.config.plan import plan
from experiments.config.errors import ConfigError, TrackingError
from experiments.data import run_data
from experiments.launch.preflight import preflight
from experiments.tracking import store as tracking
from helpers import REPO

schema.register()  # as the entry points do
BASE = ["model=tiny", "train.tokens=5120", "model.block_size=64", "train.batch_size=8"]


def _one_line(capsys, argv, config_name="config"):
    """Run preflight; returns the error line (None when the input is valid)."""
    try:
        preflight(config_name, argv)
    except SystemExit as stop:
        err = capsys.readouterr().err.strip()
        assert stop.code == 2 and len(err.splitlines()) == 1, err
        return err
    return None


@pytest.mark.parametrize("override, names", [
    ("train.nope=1", "train.nope"),  # Hydra: unknown key
    ("train.test_loops=[1,", "train.test_loops"),  # Hydra: unparsable value
    ("train.lr=abc", "train.lr"),  # Hydra: wrong type
    ("train.flop_budget=inf", "train.flop_budget"),  # was "NaN" deep inside
    ("data.val_rows=0", "data.val_rows"),
    ("sweep_id=../../elsewhere", "sweep_id"),  # a path, not a name
    ("tracking.uri=http://me:s3cret@host:5000", "tracking.uri"),  # a password in a config
    ("train.seed=-1", "train.seed"),
    (f"train.seed={2**70}", "train.seed"),
    ("train.seed=2**70", "train.seed"),  # not an int for Hydra
    ("model.vocab_size=10", "model.vocab_size"),  # smaller than the byte tokenizer's 256
    ("train.flop_budget=1e300", "train.flop_budget"),  # 1e291 steps
    ("model.rope_theta=nan", "model.rope_theta"),  # any non-finite float
    ("+foo=1", "foo"),  # an unknown key is refused, not hashed
    ("+train.lr_warmup=1", "train.lr_warmup"),
    ("data.tokenizer=banana", "data.tokenizer"),
])
def test_bad_input_is_one_line_naming_the_key(capsys, override, names):
    args = BASE + ["train.tokens=null"] * override.startswith("train.flop_budget") + [override]
    line = _one_line(capsys, args)
    assert line and line.startswith("config error:") and names in line
    assert "s3cret" not in line


def test_bad_input_leaves_no_hydra_output_dir(tmp_path):
    r = subprocess.run([sys.executable, "-m", "experiments.pretrain", *BASE, "sweep_id=../x",
                        f"hydra.run.dir={tmp_path}/out", f"paths.root={tmp_path}"], cwd=REPO, capture_output=True,
                       text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 2 and r.stderr.strip().startswith("config error: sweep_id=")
    assert len(r.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_a_dead_tracking_server_is_one_line_in_seconds(tmp_path):
    with pytest.raises(TrackingError, match="no MLflow server answers"):
        tracking.ensure_experiment("http://127.0.0.1:9", "x", tmp_path)  # port 9: nothing listens


def test_a_missing_store_folder_is_one_line(tmp_path):
    with pytest.raises(TrackingError, match="does not exist"):
        tracking.ensure_experiment(f"sqlite:///{tmp_path}/no/such/mlflow.db", "x", tmp_path)


def _bad_values(field: dataclasses.Field, rng: random.Random) -> list:
    pool = [-1, 0, -1e30, 1e30, math.inf, -math.inf, math.nan, "abc", "", "../x", True, [], 2**63]
    return rng.sample(pool, 4)


def _override(key, value) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        value = "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, list):
        value = "[]"
    if isinstance(value, str) and value == "":
        value = "''"
    return f"{key}={value}"


def test_random_bad_values_for_every_schema_field_keep_the_one_line_contract(capsys):
    """A seeded draw of bad values for every field of the train and data schemas: each is accepted (a
    harmless value) or rejected with one line and exit 2, never a traceback. The base config is composed
    once; each value is applied as Hydra applies an override to a structured config (an OmegaConf merge,
    which type-checks it), then validated as every job is (plan)."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        base = compose(config_name="config", overrides=BASE)
    rng = random.Random(14)
    fields = [(f"train.{f.name}", f) for f in dataclasses.fields(schema.TrainSchema)]
    fields += [(f"data.{f.name}", f) for f in dataclasses.fields(schema.DataSchema)]
    rejected = draws = 0
    for key, field in fields:
        for value in _bad_values(field, rng):
            override = _override(key, value)
            try:
                with one_line_errors():
                    plan(OmegaConf.merge(base, OmegaConf.from_dotlist([override])))
            except SystemExit as stop:
                err = capsys.readouterr().err.strip()
                assert stop.code == 2 and len(err.splitlines()) == 1 and err.startswith("config error:"), override
                rejected += 1
            except Exception as err:  # anything but the one-line exit breaks the contract
                pytest.fail(f"{override}: {type(err).__name__}: {err}")
            draws += 1
    assert rejected > draws // 2  # most bad values are caught before any work


@pytest.mark.parametrize("content, key", [(b"   \n", "data.paths"), (bytes(range(256)) * 12, "data.val_percent")])
def test_an_empty_or_binary_corpus_is_a_config_error(tmp_path, content, key):
    (tmp_path / "corpus.txt").write_bytes(content)
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*BASE, "data=text", f"data.paths=[{tmp_path}/corpus.txt]",
                                                       "data.tokenizer=byte", "data.workers=0",
                                                       f"paths.root={tmp_path}"])
    with pytest.raises(ConfigError, match=key):
        run_data.load(cfg, tmp_path, 64)


def test_preflight_lets_a_sweep_file_grid_through():
    """`make sweep` names only the sweep file: its grid (e.g. the budgets) comes from hydra.sweeper.params, so
    the preflight must treat it as a multirun, not plan the file's defaults as one run."""
    import subprocess
    import sys

    from helpers import REPO
    code = ("from experiments.config.schema import register; from experiments.launch.preflight import preflight; "
            "register(); preflight('config', ['sweep=isoflop'])")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.parametrize("uri, says", [
    ("banana://x", "not a store training can log to"),
    ("file:///tmp/mlruns", "not a store training can log to"),
    ("sqlite:///{tmp}/notes.txt", "is not a sqlite database"),
    ("sqlite:///{tmp}", "is not a sqlite database"),  # a folder
])
def test_an_unusable_tracking_uri_is_one_line_before_anything_is_written(capsys, tmp_path, uri, says):
    (tmp_path / "notes.txt").write_text("not a database\n")
    line = _one_line(capsys, BASE + [f"tracking.uri={uri.format(tmp=tmp_path)}", f"paths.root={tmp_path}"])
    assert line.startswith("tracking error:") and says in line and "tracking.uri" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_an_http_server_that_is_not_mlflow_is_refused(tmp_path):
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(TrackingError, match="not as an MLflow tracking server"):
            tracking.check_uri(f"http://127.0.0.1:{server.server_address[1]}", timeout=5)
    finally:
        server.shutdown()
        server.server_close()


def test_a_mis_indented_sweep_file_is_one_line_naming_file_and_line(capsys, tmp_path, monkeypatch):
    import shutil

    from experiments.launch import preflight as pf

    conf = tmp_path / "conf"
    shutil.copytree(REPO / "conf", conf)
    (conf / "sweep" / "bad.yaml").write_text("hydra:\n  mode: MULTIRUN\n  sweeper:\n    params:\n"
                                              "     train.seed: 1,2\n      model.mean_recurrence: 1,2\n")
    monkeypatch.setattr(pf, "CONF", conf)
    line = _one_line(capsys, ["sweep=bad"])
    assert line.startswith("config error:") and "bad.yaml line 6" in line and "not valid YAML" in line


@pytest.mark.parametrize("content, name, says", [
    ('{"text": "a document"}\n{"text": "cut', "c.jsonl", "cannot be read as jsonl"),
    ("PAR1 not really parquet", "c.parquet", "cannot be read as parquet"),
    ("   \n", "c.text", "holds no document with text"),  # empty: before outputs/, not after
])
def test_a_bad_corpus_is_one_line_before_outputs_is_written(capsys, tmp_path, content, name, says):
    (tmp_path / name).write_text(content)
    source = name.split(".")[1]
    line = _one_line(capsys, BASE + [f"data={source}", f"data.paths=[{tmp_path / name}]", "data.workers=0",
                                     "data.tokenizer=byte", f"paths.root={tmp_path}"])
    assert line.startswith("config error: data.paths=") and says in line
    assert not {"outputs", "runs", "mlflow.db"} & {p.name for p in tmp_path.iterdir()}


def test_tune_dir_outside_the_root_is_refused(capsys, tmp_path):
    from experiments.launch import tune

    assert tune.main(BASE + [f"paths.root={tmp_path}", "tune.dir=../../x", "tune.dry_run=true"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("config error: tune.dir='../../x'")
    assert list(tmp_path.iterdir()) == []
