"""Whole-list checks of a thunk's input lists, in C (one regular expression per list).

Loading a thunk used to parse every input into an ``Input`` and every reference into a
``Ref``, one Python call chain per input; a scheduler loads every thunk of a graph, so
that was a fifth of its time. The functions here only *accept*: they answer "certainly
valid" for the lists a correct writer makes, and anything else (including valid but
unusual lists, such as one input listed twice) goes to the per-input checks in
:mod:`ir.thunk`, which accept or reject it with the specific message. So the fast path
can never let through what the slow path would refuse: its grammar is a subset of the
slow path's, built from the same ID grammar (:data:`ir.ids.ALGORITHMS`).

An input is encoded as ``REF`` or ``REF=NAME``; the lists are joined with NUL, which
neither a reference nor a valid name may contain (a NUL in a name is caught by counting
the separators).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .ids import ALGORITHMS

_SEP = "\x00"
# <algorithm letter><digest of its length>_<size in hex, no leading zeros>
_ID_BODY = (
    "(?:" + "|".join(f"{letter}[0-9a-f]{{{length}}}" for letter, (length, _) in ALGORITHMS.items()) + ")"
    r"_(?:0|[1-9a-f][0-9a-f]*)"
)
# An output tag: plain relative path of [A-Za-z0-9_.+-] parts, none of them "." or "..".
_TAG_PART = r"(?!\.\.?(?![A-Za-z0-9_.+\-]))[A-Za-z0-9_.+\-]+"
_TAG = rf"{_TAG_PART}(?:/{_TAG_PART})*"
# An input name: not empty, not absolute, no ".." component, no NUL (see validate_input_name).
_NAME_PART = r"(?!\.\.(?:/|\x00|\Z))[^/\x00]*"
_NAME = rf"(?=[^/\x00]){_NAME_PART}(?:/{_NAME_PART})*"

_VALUE = rf"V{_ID_BODY}(?:={_NAME})?"
_THUNK = rf"T{_ID_BODY}(?:#{_TAG})?(?:={_NAME})?"
# (one entry, a NUL-joined list of entries): most lists have one entry, which needs
# neither the join nor the separator count (no entry's grammar admits a NUL).
_VALUES_RE = (re.compile(_VALUE), re.compile(rf"{_VALUE}(?:\x00{_VALUE})*"))
_THUNKS_RE = (re.compile(_THUNK), re.compile(rf"{_THUNK}(?:\x00{_THUNK})*"))
_TAGS_RE = (re.compile(_TAG), re.compile(rf"{_TAG}(?:\x00{_TAG})*"))
# Every name of a NUL-joined list that matched the grammar above: no reference contains
# "=", so a name is what follows an entry's first "=" (a literal prefix: a fast scan).
_NAMES_RE = re.compile(r"=([^\x00]*)")


def _joined(texts: Sequence[str], patterns: tuple[re.Pattern[str], re.Pattern[str]]) -> str | None:
    """The list joined with NUL if every entry matches, else None."""
    if len(texts) == 1:
        text = texts[0]
        return text if patterns[0].fullmatch(text) is not None else None
    joined = _SEP.join(texts)
    if patterns[1].fullmatch(joined) is None or joined.count(_SEP) != len(texts) - 1:
        return None
    return joined


def inputs_certainly_valid(
    function_hash: str, values: Sequence[str], thunks: Sequence[str], executables: Sequence[str]
) -> bool:
    """True if the three encoded input lists pass every check of ``Thunk.validate`` on
    inputs: grammar and kind of each reference, safe names, no name given to two inputs,
    and ``function_hash`` among the executables (so it is a valid value ID too). False
    means "ask the slow path"."""
    if not executables:
        return False
    execs = _joined(executables, _VALUES_RE)
    if execs is None or not any(text.partition("=")[0] == function_hash for text in executables):
        return False
    parts = [execs]
    if values:
        joined = _joined(values, _VALUES_RE)
        if joined is None:
            return False
        parts.append(joined)
    if thunks:
        joined = _joined(thunks, _THUNKS_RE)
        if joined is None:
            return False
        parts.append(joined)
    everything = _SEP.join(parts) if len(parts) > 1 else execs
    if "=" in everything:
        names = _NAMES_RE.findall(everything)
        if len(set(names)) != len(names):
            return False  # maybe the same input twice (allowed), maybe a conflict: the slow path says
    return True


def tags_certainly_valid(outputs: Sequence[str]) -> bool:
    """True if every output tag is valid and none repeats; False means "ask the slow path"."""
    if not outputs:
        return False
    if len(outputs) > 1 and len(set(outputs)) != len(outputs):
        return False
    return _joined(outputs, _TAGS_RE) is not None
