"""A generated folder (the synthetic dataset, its crops) made once, safely when several processes want it at the
same time: the jobs of a sweep (``--jobs 2``) start on an empty cache together."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path


def build_once(out: Path, marker: str, build: Callable[[Path], None]) -> Path:
    """``out``, made by ``build(folder)`` unless ``out/marker`` already exists. Each process builds into a private
    sibling folder and renames it into place whole, so no process reads a folder another is still writing; the
    first rename wins and the others drop their copy (the same content: generation is deterministic)."""
    if (out / marker).is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        build(tmp)
        for attempt in range(2):
            try:
                os.rename(tmp, out)
                break
            except OSError:
                if (out / marker).is_file():  # another process moved its copy in first
                    break
                if attempt:
                    raise
                shutil.rmtree(out, ignore_errors=True)  # a partial folder from an interrupted older version
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
