import os

# Keep test processes polite on a 2-core machine and MLflow quiet.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# make test runs test files on every core (pytest-xdist): the analysis's own worker pool
# (analysis/workers.py) would only compete with it, so analyses in tests fit inline.
os.environ.setdefault("ANALYSIS_WORKERS", "1")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
