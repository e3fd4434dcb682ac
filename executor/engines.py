"""The engine registry: engines by name, so a separate package can add one.

An engine is opened by a *factory*: an async callable taking :class:`EngineOptions`
and returning an object that satisfies :class:`~executor.engine.Engine`. Factories
come from two places, looked up in this order:

1. :func:`register_engine` (or :meth:`EngineRegistry.register`), for programs that
   embed gg-py;
2. the ``gg.engines`` entry-point group, so an installed package adds an engine
   without editing this one::

       [project.entry-points."gg.engines"]
       toy = "toy_engine:open_engine"

gg-py declares its own two engines (``local``, ``lambda``) the same way in its
pyproject, so they are found by the same path as anyone else's. ``gg-force --engine
NAME`` and ``GG_ENGINE`` are checked against :meth:`EngineRegistry.names`.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, NamedTuple

from ir.errors import UsageError

if TYPE_CHECKING:  # types only: checking the name of a built-in engine imports none of these
    from ir.storage import RemoteStorage
    from ir.store import LocalStore

    from .engine import Engine

ENTRY_POINT_GROUP = "gg.engines"


# The time limit of a thunk that sets none (seconds), the same on every engine: a thunk
# that hangs is then an execution failure after this long, never a run that does not end.
# On Lambda the function's own timeout caps it (the thunk then moves to the fallback
# engine, which applies the full limit). ``gg-force --default-timeout`` overrides it.
# Here, not in :mod:`executor.engine` (which re-exports it): gg-force's command line
# needs it for its defaults, and the cached fast path imports neither the engine
# interface nor dataclasses.
DEFAULT_THUNK_TIMEOUT = 600.0


class _EngineOptionsFields(NamedTuple):
    store: LocalStore
    # -j: concurrent thunks; None lets the engine choose (local: cores, lambda: 64).
    jobs: int | None
    environ: Mapping[str, str]
    # Set for a fallback engine: the storage the primary engine leaves results in, so
    # the fallback can fetch inputs produced there.
    remote: RemoteStorage | None


class EngineOptions(_EngineOptionsFields):
    """What a factory may use to open its engine (immutable). ``environ`` defaults to a
    copy of this process's environment."""

    __slots__ = ()

    def __new__(cls, store: LocalStore, jobs: int | None = None, environ: Mapping[str, str] | None = None,
                remote: RemoteStorage | None = None) -> EngineOptions:
        return super().__new__(cls, store, jobs, dict(os.environ) if environ is None else environ, remote)


EngineFactory = Callable[[EngineOptions], Awaitable["Engine"]]


# -- gg-py's own engines (declared as entry points in pyproject.toml) ----------------

async def open_local(options: EngineOptions) -> Engine:
    """The local engine: ``jobs`` child processes (default: one per core)."""
    from .local_engine import LocalEngine

    return LocalEngine(options.store, options.jobs or os.cpu_count() or 1, remote=options.remote)


async def open_lambda(options: EngineOptions) -> Engine:
    """The Lambda engine from GG_STORAGE_URI / GG_LAMBDA_*, checked before anything runs.

    A wrong setting stops the run here with one line (:meth:`LambdaEngine.preflight`),
    never as a quiet local build. The engine's :attr:`remote` is its storage: the run
    closes it after every engine is closed.
    """
    from .lambda_engine import build_lambda_engine

    engine, storage = build_lambda_engine(options.store, options.jobs, options.environ)
    try:
        await engine.preflight()
    except BaseException:
        await engine.close()
        await storage.close()
        raise
    return engine


class UnknownEngine(UsageError):
    """A name no factory is registered under (a usage error: exit status 2)."""


class EngineRegistry:
    """Engine factories by name; entry points are read on first use, not at import."""

    def __init__(self, group: str | None = ENTRY_POINT_GROUP, built_in: bool = True):
        self._group = group
        self._factories: dict[str, EngineFactory] = dict(_BUILT_IN) if built_in else {}
        self._entry_points: dict[str, object] | None = None

    def register(self, name: str, factory: EngineFactory) -> None:
        """Add (or replace) the engine ``name``; replaces an entry point of that name."""
        if not name or not name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"engine name {name!r} must be letters, digits, '-' or '_'")
        self._factories[name] = factory

    def unregister(self, name: str) -> None:
        """Forget a registered factory (an entry point of that name becomes visible again)."""
        self._factories.pop(name, None)
        if self._entry_points is not None and name in self._entry_points:
            self._entry_points = None  # a loaded entry point was cached as a factory

    def _declared(self) -> dict[str, object]:
        if self._entry_points is None:
            from importlib.metadata import entry_points  # slow to import and to scan: only for other engines

            found = entry_points(group=self._group) if self._group else ()
            self._entry_points = {ep.name: ep for ep in found}
        return self._entry_points

    def names(self) -> list[str]:
        return sorted({*self._factories, *self._declared()})

    def factory(self, name: str) -> EngineFactory:
        if name in self._factories:
            return self._factories[name]
        entry = self._declared().get(name)
        if entry is None:
            raise UnknownEngine(f"{name!r} is not an engine (choose from {', '.join(self.names())})")
        factory = entry.load()  # type: ignore[attr-defined]
        self._factories[name] = factory
        return factory

    def check(self, name: str, origin: str = "--engine ") -> str:
        """``name`` if an engine has it, else :class:`UnknownEngine` naming ``origin``
        (the option or variable it came from, e.g. ``"GG_ENGINE="``)."""
        if name not in self._factories and name not in self._declared():
            raise UnknownEngine(f"{origin}{name!r} is not an engine (choose from {', '.join(self.names())})")
        return name

    async def open(self, name: str, options: EngineOptions) -> Engine:
        return await self.factory(name)(options)


# gg-py's own engines, also declared as entry points in pyproject.toml (the example to
# follow). Registered here as well because metadata can be stale: a source checkout's
# old gg_py.egg-info on sys.path shadows the installed entry points.
_BUILT_IN: dict[str, EngineFactory] = {"local": open_local, "lambda": open_lambda}

# The registry gg-force uses. It is the one process-wide table a plug-in system needs
# (entry points are process-wide too); programs that want their own pass an
# EngineRegistry to executor.force.force().
ENGINES = EngineRegistry()


def register_engine(name: str, factory: EngineFactory) -> None:
    """Make ``gg-force --engine NAME`` (and ``force(..., engines=[NAME])``) open ``factory``."""
    ENGINES.register(name, factory)
