"""Where the book's files are: the repository root, its notebooks and the build area."""

from __future__ import annotations

import os
from pathlib import Path


def root() -> Path:
    """The repository root: ``$RLBOOK_ROOT``, else the folder above this package if it
    holds ``notebooks/`` and ``book/`` (an editable install), else the working directory."""
    env = os.environ.get("RLBOOK_ROOT")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve().parent.parent
    if (here / "notebooks").is_dir() and (here / "book").is_dir():
        return here
    cwd = Path.cwd().resolve()
    for p in (cwd, *cwd.parents):
        if (p / "notebooks").is_dir() and (p / "book").is_dir():
            return p
    raise FileNotFoundError("cannot find the book's repository (set RLBOOK_ROOT)")


def build_dir() -> Path:
    """``_build/`` under the root (ignored by git): staging, run records, the site."""
    return root() / "_build"
