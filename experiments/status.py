"""What each grid point of a sweep is doing, or one run: `python -m experiments.status <sweep_id> [--resume]`,
`python -m experiments.status <run dir | config hash>` (experiments.launch.sweep_status)."""

import sys

from experiments.config.errors import one_line_errors
from experiments.launch.sweep_status import main

if __name__ == "__main__":
    with one_line_errors():
        sys.exit(main())
