"""The sweeper: hands the command's overrides to ``bagof.experiments.search.driver.run_search`` (which composes every
trial itself, through the same compose + ``fit`` path as ``run.py`` and the table sweeps)."""

from __future__ import annotations

import shlex
import sys

from hydra.plugins.sweeper import Sweeper


class BagofGASweeper(Sweeper):
    def __init__(self) -> None:
        self.config = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.config = config

    def sweep(self, arguments: list[str]):
        from bagof.errors import BagofError
        from bagof.experiments.search.driver import run_search

        try:
            res = run_search(list(arguments), command=" ".join(shlex.quote(a) for a in sys.argv))
        except BagofError as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        if res.interrupted is not None:  # the shell's 130 (SIGINT) / 143 (SIGTERM)
            print(
                f"interrupted by {res.interrupted}: {res.complete} trials finished; the same command resumes",
                file=sys.stderr,
            )
            raise SystemExit(res.interrupted.exit_code)
        return res
