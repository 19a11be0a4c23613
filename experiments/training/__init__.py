"""Training: the trainer's loop and step, checkpoints, data-parallel plumbing, run dirs, the jobs."""
