"""Evaluate a trained run: `python -m experiments.evaluate run_dir=runs/<hash> task=val loops=[1,4,8]`
(validation loss, bits per byte and CORE-style tasks at any loop count: experiments.evals.evaluate)."""

import sys

from experiments.config.errors import one_line_errors
from experiments.evals.evaluate import main

if __name__ == "__main__":
    with one_line_errors():
        sys.exit(main())
