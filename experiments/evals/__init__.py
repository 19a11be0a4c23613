"""Evaluation of trained runs: scoring, validation loss and bits per byte, CORE-style tasks."""
