"""Recursive fibonacci as thunks: ``fib(n)`` tail-calls ``add(fib(n - 1), fib(n - 2))``.

Naive recursion would make ~2^n calls, but every ``fib(k)`` is the same thunk for the
same ``k`` (the SDK's thunk IDs depend only on this file and the arguments), so the
graph behind ``fib(70)`` has about 140 distinct thunks and each runs once.

This module is shipped into every thunk and loaded there on its own: it may import
only the standard library and ``ir.sdk``.
"""

from __future__ import annotations

from ir.sdk import gg_function


@gg_function
def fib(n: int):
    """fib(0) = 0, fib(1) = 1; otherwise a tail call to add(fib(n-1), fib(n-2))."""
    if n < 2:
        return n
    return add(fib(n - 1), fib(n - 2))


@gg_function
def add(left: int, right: int) -> int:
    """Both arguments arrive as the forced outputs of fib thunks, decoded as JSON ints."""
    return left + right
