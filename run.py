"""`python run.py [overrides]`, `python run.py +bof=mosaic,ciou -m`: the same as `bagof train` (bagof.cli.train)."""

import sys

from bagof.cli.train import multirun_flag_first, run  # noqa: F401  (multirun_flag_first: tests import it here)

if __name__ == "__main__":
    sys.exit(run(sys.argv[1:], prog=sys.argv[0]))
