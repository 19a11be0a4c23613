"""Scaling-law analysis of Parcae sweeps logged to MLflow (no torch imports here)."""
