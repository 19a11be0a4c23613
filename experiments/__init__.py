"""What runs: entry points at the top (`python -m experiments.<name>`), the rest grouped by concern.

config/    schemas, validation (plan), run identity, the launch environment; ConfigError (config.errors, a leaf)
data/      the embedded corpus and real data: sources, tokenizers, shards, packing, bits per byte
training/  the trainer, checkpoints, data-parallel plumbing, run dirs, the pre-training and fine-tuning jobs
tracking/  MLflow: the store, runs, secret filtering, the tracking server
launch/    sweeps (driver callback, manifest, status, resume) and Optuna tuning
evals/     scoring, validation loss / bits per byte at any loop count, CORE-style tasks, lm-eval adapter
"""
