"""Every phase boundary of the lifecycle × SIGKILL, SIGINT, SIGTERM, SIGUSR2 on 1 process: the job dies there,
the same command is run again, and the run is recorded exactly once, FINISHED, at the uninterrupted loss.

By default one chain crosses every point once, with every signal and a full disk (each launch resumes what the one
before left);
the full matrix, each (point, signal) on its own fresh run, is marked faults_full."""

import pytest

import harness as h

# (point, nth): the nth time a fresh launch of h.JOB passes the point (checkpoints every 7 steps: 7, 14, 21, 28,
# 35 and the final one at 42, which holds the final evaluation; rows reach metrics.jsonl at 7, 14, 21, 35, 42, and
# MLflow is flushed once at the start, after each of those, and once at the finish).
PHASES = [
    ("status.before_write", 1),      # before "running" is first written
    ("status.after_write", 1),       # "running" written, nothing trained
    ("checkpoint.before_write", 5),  # step 35 not written while step 30's rows wait (Ctrl-C between checkpoints)
    ("checkpoint.after_write", 3),   # step 21 written, its rows (step 20) carried but not flushed
    ("checkpoint.after_write", 6),   # the final checkpoint (with the final evaluation) written, nothing flushed
    ("metrics.before_jsonl", 3),     # step 21's flush, before metrics.jsonl
    ("metrics.after_jsonl", 3),      # in metrics.jsonl, not in MLflow
    ("metrics.after_jsonl", 5),      # the final flush in metrics.jsonl, not in MLflow
    ("metrics.before_mlflow", 4),    # step 21's flush handed to MLflow
    ("metrics.after_mlflow", 4),
    ("metrics.after_mlflow", 6),     # after the final flush
    ("metrics.before_mlflow", 7),    # the finish's sync (the test-time curve)
    ("eval.final", 2),               # between the final evaluation's loop counts
    ("artifacts.after_log", 1),      # the model artifacts in MLflow, status not finished
    ("status.before_write", 2),      # before "finished"
    ("status.after_write", 2),       # "finished" in status.json, MLflow not told
    ("finish.before_mlflow", 1),     # the same, from the job's side
]


def _case(point, nth, sig):
    return pytest.param(f"{point}:{sig}::{nth}", id=f"{point}:{nth}-{sig}", marks=pytest.mark.faults_full)


@pytest.mark.parametrize("fault", [_case(p, n, s) for p, n in PHASES for s in h.SIGNALS])
def test_fault_then_rerun_records_the_run_once(fault, root, cache, ref):
    faulted, rerun = h.fault_then_rerun(root, fault, cache=cache)
    if fault.split(":")[1] == "SIGKILL":  # proves the point exists and is reached
        assert faulted.killed_by == "SIGKILL", f"the fault {fault} never fired\n{faulted.tail()}"
    assert rerun.returncode == 0, h.report(faulted, rerun, ["the rerun failed"])
    bad = h.violations(root, ref)
    assert not bad, h.report(faulted, rerun, bad)


# One chain through every point, each signal and a full disk at least once: every launch carries one fault, counted
# from its own start (a resumed launch begins at the last checkpoint), and the last launch none. SIGTERM and SIGUSR2
# are caught once training runs (checkpoint, then a clean stop at the next step), so they go where training is ahead.
CHAIN = [
    "status.after_write:SIGUSR2::1",      # fresh: "running" written, before the handlers are installed
    "checkpoint.after_write:SIGKILL::1",  # fresh: step 7 written, step 1's rows only in the checkpoint
    "metrics.before_jsonl:ENOSPC::1",     # from 7: the disk is full when step 10's rows are appended at 14
    "metrics.after_mlflow:SIGINT::2",     # from 14: step 21's flush in MLflow (the first flush is the start's sync)
    "checkpoint.before_write:SIGINT::2",  # from 21: 35 not written while step 30's rows wait (Ctrl-C in between)
    "metrics.before_mlflow:SIGTERM::2",   # from 28: step 35's rows in metrics.jsonl, not in MLflow; stops at 36
    "eval.final:SIGINT::2",               # from 36: during the final evaluation
    "metrics.after_jsonl:SIGKILL::1",     # from 36: the final flush in metrics.jsonl, not in MLflow
    "artifacts.after_log:SIGKILL::1",     # from 42: model artifacts logged, status not finished
    "status.before_write:SIGINT::2",      # from 42: before "finished" ("running" is the first write)
    "finish.before_mlflow:SIGKILL::1",    # from 42: status.json says finished, MLflow not told
]


def test_a_chain_of_faults_through_every_phase_records_the_run_once(root, cache, ref):
    launches = [(fault, h.launch(root, fault=fault, cache=cache)) for fault in CHAIN]
    rerun = h.launch(root, cache=cache)
    story = "\n".join(f"  {fault:38s} → exit {o.returncode} ({o.killed_by or 'no signal'}) after {o.seconds:.0f}s"
                      for fault, o in launches)
    print("launches:\n" + story)
    unfired = [f for f, o in launches if f.split(":")[1] == "SIGKILL" and o.killed_by != "SIGKILL"
               or f.split(":")[1] == "ENOSPC" and "No space left on device" not in o.stderr]
    finished_early = [f for f, o in launches if o.returncode == 0]
    bad = h.violations(root, ref) if rerun.returncode == 0 else ["the last (clean) launch failed"]
    bad += [f"fault never fired: {f}" for f in unfired]
    bad += [f"the launch with {f} exited 0: the chain ended there" for f in finished_early]
    assert not bad, "launches:\n" + story + "\n" + h.report(launches[-1][1], rerun, bad)
