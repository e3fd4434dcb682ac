"""A deterministic synthetic corpus, so the example needs no download."""

from __future__ import annotations

import random

VOCABULARY = (
    "the of and to in a is that for it as was with be by on not he this are or his from at which "
    "but have an they you were her she there been one all we their has would when if so no will "
    "thunk lambda force reduce map value tail call graph cache hash store engine function"
).split()


def make_chunks(count: int, words_per_chunk: int = 2000, seed: int = 7) -> list[bytes]:
    """``count`` chunks of text drawn with a Zipf-like skew; same arguments, same bytes."""
    rng = random.Random(seed)
    weights = [1.0 / (rank + 1) for rank in range(len(VOCABULARY))]
    chunks = []
    for _ in range(count):
        words = rng.choices(VOCABULARY, weights, k=words_per_chunk)
        lines = [" ".join(words[i : i + 12]) for i in range(0, len(words), 12)]
        chunks.append(("\n".join(lines) + "\n").encode())
    return chunks
