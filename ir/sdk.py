"""The Python SDK: write thunks from Python, including recursive ones (tail calls).

A module-level Python function decorated with :func:`gg_function` no longer runs when
called: the call returns a :class:`ThunkHandle`, a description of that call as a thunk.
Handles can be passed as arguments to other calls (the callee then depends on the
callee's output), saved into a store with :meth:`ThunkHandle.save`, and forced with
``gg-force``. Inside a running function, *returning* a handle is a tail call: the
function's output becomes that thunk, which the scheduler forces in turn.

How a Python function becomes a thunk (see docs/sdk.md for the full contract):

* the function blob is :data:`LAUNCHER`, a constant ``/bin/sh`` script that execs
  ``$GG_PYTHON`` (the interpreter the host offers; on Lambda with ``$GG_PYTHONPATH``);
* the source file of the function's module is a value input, laid out at
  :data:`MODULE_INPUT`; the runner loads it from there, so the module must be
  self-contained (standard library, ``ir``, and what the interpreter can import);
* the call's arguments are bound to the signature (defaults applied, so ``f(1)`` and
  ``f(x=1)`` are the same thunk) and encoded as canonical JSON in the last argv entry;
  bytes, files and thunk outputs among them become inputs laid out at ``_gg/argN``.

Nothing machine-specific (paths, interpreter, checkout location) enters a thunk, so
the same call gives the same thunk ID on any machine: ``fib(5)`` built by two
different parents is one thunk, which is what lets the scheduler run it once.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import json
import os
import shutil
import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .ids import Kind, id_of_bytes, parse_ref, validate_tag

if TYPE_CHECKING:  # imported where used: a leaf function's start-up pays only for what it uses
    from .store import LocalStore
    from .thunk import Input, Thunk

LAUNCHER = (
    b"#!/bin/sh\n"
    b"# gg-py SDK launcher: run the host's Python (GG_PYTHON) on the thunk's argv.\n"
    b': "${GG_PYTHON:?the host did not set GG_PYTHON}"\n'
    b'if [ -n "${GG_PYTHONPATH:-}" ]; then PYTHONPATH="$GG_PYTHONPATH"; export PYTHONPATH; fi\n'
    b'exec "$GG_PYTHON" "$@"\n'
)
LAUNCHER_ID = id_of_bytes(LAUNCHER, Kind.VALUE)
MODULE_INPUT = "_gg/module.py"
ARG_PREFIX = "_gg/arg"
RUNNER_CODE = "from ir.sdk import _main; _main()"
MARKER = "$gg"
DEFAULT_OUTPUT = "out"
_RUNTIME_MODULE = "_gg_module"


class SdkError(Exception):
    """A call that cannot be turned into a thunk; the message says why (one line)."""


# -- blobs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Blob:
    """A value input not yet in a store: bytes in memory or a file on disk."""

    id: str
    data: bytes | None = None
    path: Path | None = None
    executable: bool = False

    def save(self, store: LocalStore) -> str:
        if store.has(self.id):
            if self.executable:
                store.mark_executable(self.id)
            return self.id
        if self.data is not None:
            ident = store.put_bytes(self.data, self.executable)
        else:
            assert self.path is not None
            ident = store.put_file(self.path, self.executable)
        if ident != self.id:
            raise SdkError(f"{self.path} changed after it was hashed ({self.id} -> {ident})")
        return ident


def Value(data: bytes | str, executable: bool = False) -> Blob:  # noqa: N802 - reads as a type
    """A value input made of these bytes (a ``str`` is encoded as UTF-8)."""
    if isinstance(data, str):
        data = data.encode()
    data = bytes(data)
    return Blob(id_of_bytes(data, Kind.VALUE), data=data, executable=executable)


def File(path: str | os.PathLike, executable: bool | None = None) -> Blob:  # noqa: N802
    """A value input with the content of ``path`` (hashed now, copied when saved)."""
    from .hashing import hash_file

    path = Path(path).absolute()
    if not path.is_file():
        raise SdkError(f"{path} is not a file")
    if executable is None:
        executable = os.access(path, os.X_OK)
    return Blob(hash_file(path), path=path, executable=executable)


# -- thunk handles ----------------------------------------------------------------------


class ThunkHandle:
    """A thunk built by the SDK, with everything it needs to be saved into a store.

    Stands for the thunk's first output wherever a value is expected;
    ``handle["tag"]`` (or :meth:`output`) names another output.
    """

    def __init__(self, thunk: Thunk, needs: Sequence[ThunkHandle | Blob], label: str = ""):
        self.thunk = thunk.canonical()
        self.data = self.thunk.serialize()
        self.id = id_of_bytes(self.data, Kind.THUNK)
        self.needs = tuple(needs)
        self.label = label

    def __repr__(self) -> str:
        return f"<thunk {self.label or 'call'} {self.id}>"

    @property
    def outputs(self) -> tuple[str, ...]:
        return self.thunk.outputs

    def output(self, tag: str) -> OutputRef:
        if tag not in self.thunk.outputs:
            raise SdkError(f"{self.label or self.id} has no output {tag!r} (it has {list(self.thunk.outputs)})")
        return OutputRef(self, tag)

    __getitem__ = output

    @property
    def ref(self) -> str:
        return self.id

    def save(self, store: LocalStore) -> str:
        """Put this thunk, the thunks it depends on and their value inputs into ``store``.

        Iterative (a chain of handles may be long) and deduplicated by ID.
        """
        done: set[str] = set()
        stack: list[tuple[ThunkHandle | Blob, bool]] = [(self, False)]
        while stack:
            item, expanded = stack.pop()
            if item.id in done:
                continue
            if isinstance(item, Blob):
                item.save(store)
                done.add(item.id)
            elif expanded:
                store.put_bytes(item.data)
                done.add(item.id)
            else:
                stack.append((item, True))
                stack.extend((need, False) for need in item.needs if need.id not in done)
        return self.id


@dataclass(frozen=True)
class OutputRef:
    """One named output of a thunk handle: ``THUNK#tag`` (the bare ID for the first)."""

    handle: ThunkHandle
    tag: str

    @property
    def ref(self) -> str:
        return self.handle.id if self.tag == self.handle.outputs[0] else f"{self.handle.id}#{self.tag}"


# -- encoding arguments -----------------------------------------------------------------


class _Encoder:
    """Turns call arguments into JSON plus the inputs they refer to, deterministically."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}  # ref -> input name
        self.values: list[Input] = []
        self.thunks: list[Input] = []
        self.needs: list[ThunkHandle | Blob] = []

    def _input(self, ref: str, need: ThunkHandle | Blob) -> dict[str, str]:
        from .thunk import Input

        name = self.names.get(ref)
        if name is None:
            name = self.names[ref] = f"{ARG_PREFIX}{len(self.names)}"
            (self.thunks if parse_ref(ref).is_thunk else self.values).append(Input(ref, name))
            self.needs.append(need)
        return {MARKER: name}

    def encode(self, value: Any, where: str) -> Any:
        if isinstance(value, ThunkHandle):
            value = value.output(value.outputs[0])
        if isinstance(value, OutputRef):
            return self._input(value.ref, value.handle)
        if isinstance(value, os.PathLike):
            value = File(value)
        if isinstance(value, bytes | bytearray | memoryview):
            value = Value(bytes(value))
        if isinstance(value, Blob):
            return self._input(value.id, value)
        if value is None or isinstance(value, bool | int | float | str):
            return value
        if isinstance(value, list | tuple):
            return [self.encode(item, f"{where}[{i}]") for i, item in enumerate(value)]
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                if not isinstance(key, str):
                    raise SdkError(f"{where}: dictionary keys must be strings, not {type(key).__name__}")
                if key == MARKER:
                    raise SdkError(f"{where}: the key {MARKER!r} is reserved by the SDK")
                out[key] = self.encode(item, f"{where}[{key!r}]")
            return out
        raise SdkError(
            f"{where}: cannot pass a {type(value).__name__} to a gg function "
            "(use JSON-like values, bytes, Path/File, Value, or a thunk handle)")


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True)


# -- functions --------------------------------------------------------------------------


class GGFunction:
    """A Python function whose calls are thunks. Made by :func:`gg_function`."""

    def __init__(self, fn: Callable, outputs: Sequence[str], timeout: float | None, resources: tuple[int, int]):
        if "<locals>" in fn.__qualname__ or fn.__name__ == "<lambda>":
            raise SdkError(f"{fn.__qualname__}: gg functions must be defined at module level")
        for tag in outputs:
            validate_tag(tag)
        if not outputs:
            raise SdkError(f"{fn.__qualname__}: a gg function needs at least one output")
        self.fn = fn
        self.outputs = tuple(outputs)
        self.timeout = timeout
        self.resources = resources
        self.signature = inspect.signature(fn)
        functools.update_wrapper(self, fn)

    def __repr__(self) -> str:
        return f"<gg function {self.fn.__module__}.{self.fn.__qualname__}>"

    @functools.cached_property
    def module_blob(self) -> Blob:
        """The source file of the defining module: shipped with every call."""
        module = sys.modules.get(self.fn.__module__)
        filename = getattr(module, "__file__", None)
        if not filename or not filename.endswith(".py"):
            raise SdkError(f"{self.fn.__qualname__}: gg functions must be defined in a .py module file")
        return Blob(id_of_bytes(Path(filename).read_bytes(), Kind.VALUE), data=Path(filename).read_bytes())

    def __call__(self, *args: Any, **kwargs: Any) -> ThunkHandle:
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise SdkError(f"{self.fn.__qualname__}: {exc}") from None
        bound.apply_defaults()
        from .thunk import Input, Resources, Thunk

        encoder = _Encoder()
        spec = {name: encoder.encode(value, f"{self.fn.__qualname__}({name})")
                for name, value in bound.arguments.items()}
        module = self.module_blob
        thunk = Thunk(
            function_hash=LAUNCHER_ID,
            args=("gg-python", "-B", "-c", RUNNER_CODE, MODULE_INPUT, self.fn.__qualname__,
                  _canonical_json(spec)),
            outputs=self.outputs,
            values=(Input(module.id, MODULE_INPUT), *encoder.values),
            thunks=tuple(encoder.thunks),
            executables=(Input(LAUNCHER_ID),),
            timeout_ms=round(self.timeout * 1000) if self.timeout else 0,
            resources=Resources(*self.resources, 0),
        )
        launcher = Blob(LAUNCHER_ID, data=LAUNCHER, executable=True)
        label = f"{self.fn.__name__}({_short(spec)})"
        return ThunkHandle(thunk, [launcher, module, *encoder.needs], label)

    # -- inside the function ----------------------------------------------------------

    def _decode_call(self, spec: Mapping[str, Any], workdir: Path) -> tuple[list, dict]:
        hints = _hints(self.fn)
        args: list = []
        kwargs: dict = {}
        for name, param in self.signature.parameters.items():
            if name not in spec:
                continue
            value = _decode(spec[name], hints.get(name), workdir, param.kind)
            if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
                args.append(value)  # in order: a *rest parameter may follow
            elif param.kind is param.VAR_POSITIONAL:
                args.extend(value)
            elif param.kind is param.VAR_KEYWORD:
                kwargs.update(value)
            else:
                kwargs[name] = value
        return args, kwargs

    def _write_outputs(self, result: Any, workdir: Path) -> None:
        if len(self.outputs) == 1:
            results = {self.outputs[0]: result}
        else:
            if not isinstance(result, Mapping) or set(result) != set(self.outputs):
                raise SdkError(f"{self.fn.__qualname__} must return a dict with exactly the keys {list(self.outputs)}")
            results = dict(result)
        for tag, value in results.items():
            _write_output(value, workdir / tag, f"{self.fn.__qualname__} output {tag!r}")


def gg_function(
    fn: Callable | None = None,
    *,
    outputs: Sequence[str] = (DEFAULT_OUTPUT,),
    timeout: float | None = None,
    memory_mib: int = 0,
    cpus: int = 0,
) -> Any:
    """Decorator: calls of ``fn`` return thunk handles instead of running it.

    ``outputs`` names the function's outputs (with more than one, the function returns
    a dict keyed by tag); ``timeout`` is in seconds; ``memory_mib``/``cpus`` are the
    resource hints the local engine honours.
    """

    def wrap(function: Callable) -> GGFunction:
        return GGFunction(function, tuple(outputs), timeout, (memory_mib, cpus))

    return wrap(fn) if fn is not None else wrap


def command(
    program: Blob | str | os.PathLike,
    *args: str,
    inputs: Mapping[str, Any] | None = None,
    outputs: Sequence[str] = (DEFAULT_OUTPUT,),
    envars: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> ThunkHandle:
    """A thunk that runs any program: ``program`` (a file or Blob) with argv ``args``.

    ``args[0]`` is argv0 (default: the program's base name). ``inputs`` maps the name an
    input is laid out under to bytes, a file (Path/File/Value) or a thunk output.
    """
    from .thunk import Input, Thunk

    blob = program if isinstance(program, Blob) else File(program, executable=True)
    if not isinstance(program, Blob):
        blob = Blob(blob.id, path=blob.path, executable=True)
    argv = tuple(args) or (Path(str(getattr(blob, "path", None) or "program")).name,)
    values: list[Input] = []
    thunks: list[Input] = []
    needs: list[ThunkHandle | Blob] = [blob]
    for name, item in (inputs or {}).items():
        if isinstance(item, ThunkHandle):
            item = item.output(item.outputs[0])
        if isinstance(item, OutputRef):
            thunks.append(Input(item.ref, name))
            needs.append(item.handle)
            continue
        if isinstance(item, os.PathLike):
            item = File(item)
        elif isinstance(item, bytes | bytearray):
            item = Value(bytes(item))
        elif isinstance(item, str):
            raise SdkError(f"input {name!r}: a str is ambiguous: use Path(...) for a file or Value(...) for text")
        if not isinstance(item, Blob):
            raise SdkError(f"input {name!r}: cannot use a {type(item).__name__} as an input")
        values.append(Input(item.id, name))
        needs.append(item)
    thunk = Thunk(
        function_hash=blob.id,
        args=argv,
        outputs=tuple(outputs),
        envars=tuple(f"{k}={v}" for k, v in (envars or {}).items()),
        values=tuple(values),
        thunks=tuple(thunks),
        executables=(Input(blob.id),),
        timeout_ms=round(timeout * 1000) if timeout else 0,
    )
    return ThunkHandle(thunk, needs, argv[0])


# -- decoding inside the function -------------------------------------------------------


def _hints(fn: Callable) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:  # unresolvable annotations: fall back to paths, never crash
        return {}


def _decode(value: Any, hint: Any, workdir: Path, kind: Any = None) -> Any:
    """Rebuild one argument; blob markers become what the parameter's annotation asks."""
    if kind is inspect.Parameter.VAR_POSITIONAL:
        return [_decode(item, hint, workdir) for item in value]
    if kind is inspect.Parameter.VAR_KEYWORD:
        return {key: _decode(item, hint, workdir) for key, item in value.items()}
    if isinstance(value, dict) and set(value) == {MARKER}:
        return _decode_blob(workdir / value[MARKER], hint)
    origin, params = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        non_none = [p for p in params if p is not type(None)]
        hint = non_none[0] if len(non_none) == 1 else None
        origin, params = typing.get_origin(hint), typing.get_args(hint)
    if isinstance(value, list):
        if origin is tuple and params and params[-1] is not Ellipsis:
            return tuple(_decode(item, params[min(i, len(params) - 1)], workdir) for i, item in enumerate(value))
        element = params[0] if params else None
        items = [_decode(item, element, workdir) for item in value]
        return tuple(items) if origin is tuple else items
    if isinstance(value, dict):
        element = params[1] if len(params) == 2 else None
        return {key: _decode(item, element, workdir) for key, item in value.items()}
    return value


def _decode_blob(path: Path, hint: Any) -> Any:
    """``bytes`` -> bytes, ``str`` -> text, ``Path``/none -> the path, else JSON."""
    if hint is None or hint is Any or hint is Path or (isinstance(hint, type) and issubclass(hint, os.PathLike)):
        return path
    if hint is bytes:
        return path.read_bytes()
    if hint is str:
        return path.read_text()
    return json.loads(path.read_bytes())


def _write_output(value: Any, path: Path, where: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(value, ThunkHandle):
        value = value.output(value.outputs[0])
    if isinstance(value, OutputRef):
        if value.tag != value.handle.outputs[0]:
            raise SdkError(f"{where}: a tail call must return a thunk's first output, not #{value.tag}")
        from .store import LocalStore

        value.handle.save(LocalStore(Path(os.environ["GG_DIR"])))
        path.write_bytes(value.handle.data)
        return
    if isinstance(value, Blob):
        if value.data is not None:
            path.write_bytes(value.data)
        else:
            assert value.path is not None  # a Blob has data or a path (see Blob.save)
            shutil.copyfile(value.path, path)
        return
    if isinstance(value, os.PathLike):
        shutil.copyfile(value, path)
    elif isinstance(value, bytes | bytearray | memoryview):
        path.write_bytes(bytes(value))
    elif isinstance(value, str):
        path.write_text(value)
    else:
        try:
            path.write_text(_canonical_json(value))
        except TypeError:
            raise SdkError(f"{where}: cannot store a {type(value).__name__} (return bytes, str, a Path, "
                           "a JSON-like value or a thunk handle)") from None


def _short(spec: Mapping[str, Any], limit: int = 40) -> str:
    text = ", ".join(f"{k}={_canonical_json(v)}" for k, v in spec.items())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- the runner: what the launcher's python -c executes ---------------------------------


def _main(argv: Sequence[str] | None = None) -> None:
    """Inside a thunk: load the shipped module, decode the call, run it, write outputs."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 3:
        raise SystemExit("gg sdk runner: expected MODULE QUALNAME ARGS")
    module_file, qualname, spec_text = argv
    workdir = Path.cwd()
    spec = importlib.util.spec_from_file_location(_RUNTIME_MODULE, workdir / module_file)
    if spec is None or spec.loader is None:
        raise SystemExit(f"gg sdk runner: cannot load {module_file}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[_RUNTIME_MODULE] = module
    spec.loader.exec_module(module)
    target: Any = module
    for part in qualname.split("."):
        target = getattr(target, part)
    if not isinstance(target, GGFunction):
        raise SystemExit(f"gg sdk runner: {qualname} is not a gg function")
    args, kwargs = target._decode_call(json.loads(spec_text), workdir)
    target._write_outputs(target.fn(*args, **kwargs), workdir)


# -- client helpers ---------------------------------------------------------------------


def save(handle: ThunkHandle | OutputRef, store: LocalStore, placeholder: str | os.PathLike | None = None) -> str:
    """Save ``handle``'s graph into ``store``; optionally write a placeholder; return its ref."""
    from .placeholder import write_placeholder

    if isinstance(handle, ThunkHandle):
        handle = handle.output(handle.outputs[0])
    handle.handle.save(store)
    if placeholder is not None:
        write_placeholder(Path(placeholder), handle.ref)
    return handle.ref


def read_result(store: LocalStore, ref: str | ThunkHandle | OutputRef, as_type: Any = bytes) -> Any:
    """The forced value of ``ref`` from ``store``, decoded like a function argument."""
    if isinstance(ref, ThunkHandle):
        ref = ref.id
    elif isinstance(ref, OutputRef):
        ref = ref.ref
    value = store.resolve(ref)
    if value is None:
        raise SdkError(f"{ref} has not been forced yet")
    return _decode_blob(store.blob_path(value), as_type)
