"""The bytes that mark a placeholder file (the format itself is in :mod:`ir.placeholder`).

A module of its own because ``gg-infer`` compiles them into its exec interposition
library (``model_sub/preload.c``) on every start, to find the cached build by the hash
of its flags, and needs nothing else of :mod:`ir.placeholder` (whose ID parsing costs
more to import than the rest of a start that calls no tool).
"""

SHEBANG_PREFIX = b"#!/usr/bin/env gg-force-and-run\n"
LINKER_PREFIX = b'OUTPUT_FORMAT("elf64-x86-64")/*\n'
LINKER_SUFFIX = b"*/\n"
# A placeholder is tiny; anything larger is certainly a real file.
MAX_PLACEHOLDER_SIZE = 512
