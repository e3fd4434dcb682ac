"""Why a call does not become a thunk: the two kinds of "run the real tool".

* :class:`Unmodelled` — the model cannot express this call (an ``ar t``, a thin
  archive, ``objcopy --add-section``...). It still runs, for real, but only after every
  placeholder among its inputs has been forced (``model_sub.fallback``), and it is
  counted in gg-infer's closing summary line: the result is correct, just not remote.
* :class:`RunReal` — configure-time probes and toolchain queries (``conftest.c``,
  ``gcc --version``, ``-print-search-dirs``): they must behave exactly as without gg and
  their result is consumed at once, so they run as they are, not forced, not counted.

A call whose output an ancestor reads at once (``$(shell ...)``, ``$(...)``; see
``consumed.py``) is decided in the server before any model and runs for real the same
way — not counted — except that its placeholder inputs are forced first (``ar t
libx.a`` in a recipe's backticks must list the real archive).

``label`` is the short text the summary line groups calls by (``(thin archive)``,
``t``, ``--add-section``); the message is the detail written to ``.gg/infer/log``.
"""

from __future__ import annotations


class Unmodelled(Exception):
    """This call runs the real tool after its placeholder inputs are forced."""

    def __init__(self, message: str, label: str | None = None):
        super().__init__(message)
        self.label = label if label is not None else f"({message})"


class RunReal(Unmodelled):
    """A configure probe or a query: run the real tool as is; not a fallback."""
