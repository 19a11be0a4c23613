import os

# Keep test processes polite on a 2-core machine and MLflow quiet.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# make test runs test files on every core (pytest-xdist): the analysis's own worker pool
# (analysis/workers.py) would only compete with it, so analyses in tests fit inline.
os.environ.setdefault("ANALYSIS_WORKERS", "1")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

# The longest files first: pytest-xdist (--dist loadfile) hands files out in collection order, and a long file
# handed out last runs alone at the end while the other core idles (the fault chain: ~3 min of launches in series).
LONG_FIRST = ("tests/faults/test_phases.py", "tests/experiments/test_ddp_lifecycle.py", "tests/faults/test_ranks.py")


def pytest_collection_modifyitems(session, config, items):
    rank = {path: i for i, path in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(LONG_FIRST)))  # stable: the rest keep order
