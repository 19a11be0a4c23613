"""Launching work: the sweep driver, sweep manifests and status, Optuna tuning."""
