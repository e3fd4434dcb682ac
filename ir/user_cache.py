"""The per-user cache directory of gg-py: ``$XDG_CACHE_HOME/gg-py`` (``~/.cache/gg-py``).

For what gg-py makes for itself and may share across projects and stores — downloaded
wheels for the Lambda package, gg-infer's compiled native helpers — never a build's
results (those live in the project's store)."""

from __future__ import annotations

import os
from pathlib import Path


def user_cache_dir(*parts: str) -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base, "gg-py", *parts)
