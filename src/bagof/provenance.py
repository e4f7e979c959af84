"""Where a run's result came from, recorded on it as MLflow tags: the git commit of the code (and whether the
tree had uncommitted changes), the arithmetic (precision) and the memory layout. Reports name the commits of
the runs they use; precision and layout are also in the run identity (``identity.py``), so one comparison
never pairs runs of two kinds."""

from __future__ import annotations

import subprocess
from pathlib import Path

GIT_COMMIT, GIT_DIRTY = "bagof.git_commit", "bagof.git_dirty"
PRECISION, LAYOUT = "bagof.precision", "bagof.memory_layout"
PACKAGE_DIR = Path(__file__).resolve().parent


def git_state(where: Path = PACKAGE_DIR) -> tuple[str, bool | None]:
    """(commit, dirty) of the checkout holding the code; ("unknown", None) for an installed copy outside git."""

    def git(*args):
        return subprocess.run(["git", *args], cwd=where, capture_output=True, text=True, timeout=20)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return "unknown", None
        status = git("status", "--porcelain", "--untracked-files=no")
        return head.stdout.strip(), bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return "unknown", None


def run_tags(cfg) -> dict[str, str]:
    commit, dirty = git_state()
    return {
        GIT_COMMIT: commit,
        GIT_DIRTY: "unknown" if dirty is None else str(dirty).lower(),
        PRECISION: str(cfg.train.get("precision")),
        LAYOUT: "NHWC" if cfg.train.get("channels_last") else "NCHW",
    }
