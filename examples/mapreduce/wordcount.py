"""Word counts as thunks: one ``count_words`` thunk per chunk, one ``merge_counts`` for all.

The map thunks are independent, so the scheduler runs them in parallel; the reduce
thunk waits for every one of them. ``merge_counts`` has two named outputs: the full
counts (JSON) and a human-readable top-N list, which ``gg-force`` can fetch as
``THUNK#top``.

This module is shipped into every thunk and loaded there on its own: it may import
only the standard library and ``ir.sdk``.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from ir.sdk import gg_function

WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")


@gg_function
def count_words(chunk: Path) -> dict[str, int]:
    """Map: the chunk arrives as a read-only file in the thunk's work directory."""
    return dict(Counter(WORD.findall(chunk.read_text(errors="replace").lower())))


@gg_function(outputs=("counts", "top"))
def merge_counts(parts: list[dict], top: int = 10) -> dict:
    """Reduce: every part is the JSON output of one count_words thunk."""
    total: Counter[str] = Counter()
    for part in parts:
        total.update(part)
    ranked = sorted(total.items(), key=lambda item: (-item[1], item[0]))
    lines = "".join(f"{count}\t{word}\n" for word, count in ranked[:top])
    return {"counts": dict(sorted(total.items())), "top": lines}


def word_count(chunks: list[Path | bytes], top: int = 10):
    """The whole job: map every chunk, reduce the results. Returns the reduce handle."""
    return merge_counts([count_words(chunk) for chunk in chunks], top=top)
