"""Everything a model needs for one gg-infer run, passed explicitly (no globals)."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import TextIO

import xxhash

from ir.placeholder import MAX_PLACEHOLDER_SIZE, read_placeholder, render, wants_linker_form, write_placeholder
from ir.store import LocalStore
from ir.thunk import Input, Thunk

from .deps import DepScanner, write_depfile
from .driver import Driver
from .early import Placements
from .fallback import Forcer, LocalRuns
from .fileids import FileIds
from .memo import Memo
from .memo_observer import Observer
from .paths import PathMap
from .replay import OutputReplay
from .thunkids import ThunkRecords
from .toolchain import Toolchain, closure_fact, program_fact

# Thunk environment: a fixed epoch makes __DATE__/__TIME__ reproducible (gcc reads
# SOURCE_DATE_EPOCH), and a fixed locale makes diagnostics stable. The tools take the
# directory they record in debug info (DW_AT_comp_dir) from $PWD when it names the
# working directory, and /proc/self/cwd always does: so a -g object records a fixed
# name (mapped to "." by paths.prefix_maps) instead of the random run directory.
THUNK_ENV = ("SOURCE_DATE_EPOCH=0", "LC_ALL=C", "PWD=/proc/self/cwd")


def thunk_env(build_env: dict[str, str]) -> tuple[str, ...]:
    """The environment of a gcc-model thunk for a call made with ``build_env``. Two
    variables of the build change what the real tools write, so the thunk keeps them:
    ``SOURCE_DATE_EPOCH`` (reproducible builds, Debian's packaging), which the compiler
    uses for ``__DATE__``/``__TIME__`` (the fixed 0 silently gave 1970), and
    ``LD_RUN_PATH``, which ld writes as the output's RUNPATH when no ``-rpath`` is given
    (the thunk's output had none)."""
    epoch = build_env.get("SOURCE_DATE_EPOCH")
    env = (f"SOURCE_DATE_EPOCH={epoch}", *THUNK_ENV[1:]) if epoch else THUNK_ENV
    run_path = build_env.get("LD_RUN_PATH")
    return (*env, f"LD_RUN_PATH={run_path}") if run_path else env


@dataclass
class Inputs:
    """Inputs of one thunk being assembled."""

    values: set[Input] = field(default_factory=set)
    thunks: set[Input] = field(default_factory=set)


@dataclass
class ModelContext:
    store: LocalStore
    paths: PathMap
    real_path: str
    toolchain: Toolchain
    driver: Driver
    scanner: DepScanner
    ids: FileIds
    log_path: Path
    thunk_ids: ThunkRecords
    forcer: Forcer
    observer: Observer = field(default_factory=Observer)  # what the call being modelled looks at (memo.py)
    memo: Memo | None = None  # None: GG_INFER_MEMO=off
    local_runs: LocalRuns = field(default_factory=LocalRuns)
    # gg-infer's early forcing (model_sub/early.py): every placeholder's thunk, as written
    placements: Placements | None = None
    # what the thunks of a call printed when they ran, replayed on its stderr (replay.py)
    outputs: OutputReplay | None = None
    _log_lock: threading.Lock = field(default_factory=threading.Lock)
    _log_handle: TextIO | None = None

    @classmethod
    def create(cls, store: LocalStore, root: str, real_path: str, memo: bool = True,
               placements: Placements | None = None) -> ModelContext:
        """``memo``: answer unchanged calls from their records (``GG_INFER_MEMO``, see memo.py);
        ``placements``: where early forcing takes each placeholder's thunk (early.py)."""
        cache = store.root / "infer"
        observer = Observer()
        ids = FileIds(store, observer)
        driver = Driver(cache / "driver", real_path, observer)
        ctx = cls(
            store=store,
            paths=PathMap.for_root(root),
            real_path=real_path,
            toolchain=Toolchain(ids, cache / "closure", real_path, observer),
            driver=driver,
            scanner=DepScanner(ids, cache / "deps", real_path, driver, observer),
            ids=ids,
            log_path=cache / "log",
            thunk_ids=ThunkRecords(cache / "thunk-ids"),
            forcer=Forcer(str(store.root)),
            observer=observer,
            placements=placements,
            outputs=OutputReplay(store),
        )
        if memo:
            from .warm import code_fingerprint

            toolchain = ctx.toolchain
            ctx.memo = Memo(cache / "memo", ids, code_fingerprint, [str(store.root), ctx.paths.root, real_path],
                            {"which": toolchain.which,
                             "program": lambda name: program_fact(toolchain.program(name)),
                             "closure": lambda path: closure_fact(toolchain.closure(path))},
                            {"place": lambda path, ref, executable: ctx.place(path, ref, bool(executable)),
                             "depfile": write_depfile, "debug_dirs": ctx.note_relative_debug_dirs,
                             "dated": ctx.note_dated})
        return ctx

    def cache_snapshot(self) -> dict[str, dict]:
        """What a later run may start from (see :meth:`seed_caches`)."""
        snapshot: dict[str, dict] = {"ids": self.ids.snapshot(), "scans": self.scanner.snapshot(),
                                     "driver": self.driver.snapshot()}
        if self.memo is not None:
            snapshot["memo"] = self.memo.snapshot()
        return snapshot

    def seed_caches(self, snapshot: dict[str, dict]) -> None:
        """Start from earlier runs' in-memory caches (the warm model server keeps them).

        Each is the in-memory copy of an on-disk cache the run would read anyway, and
        is checked the same way before use (file IDs by stat identity, scans by their
        files' IDs, driver answers by the driver's mtime in their key): seeding saves
        the reads, never a check."""
        self.ids.seed(snapshot.get("ids", {}))
        self.scanner.seed(snapshot.get("scans", {}))
        self.driver.seed(snapshot.get("driver", {}))
        if self.memo is not None:
            self.memo.seed(snapshot.get("memo", {}))

    def close(self) -> None:
        """Release what the run's helpers hold (the driver's empty directory, the log)."""
        self.driver.close()
        self.scanner.close()
        if self.placements is not None:
            self.placements.close()
        self.thunk_ids.close()
        with self._log_lock:
            if self._log_handle is not None:
                self._log_handle.close()
                self._log_handle = None

    def log(self, line: str) -> None:
        """Why a call ran the real tool, etc.; one line per event in .gg/infer/log.

        The file stays open for the run (line-buffered, so each line is written at
        once); opening it for every call cost more than most model decisions."""
        with self._log_lock:
            if self._log_handle is None:
                self.log_path.parent.mkdir(parents=True, exist_ok=True)
                self._log_handle = open(self.log_path, "a", encoding="utf-8", errors="replace",  # noqa: SIM115
                                        buffering=1)
            self._log_handle.write(line.rstrip("\n") + "\n")

    def add_file(self, inputs: Inputs, host_path: str, name: str) -> None:
        """Add ``host_path`` as input ``name``: a thunk input if it is a placeholder."""
        ref = self._placeholder_ref(host_path)
        if ref is not None:
            inputs.thunks.add(Input(ref, name))
        else:
            inputs.values.add(Input(self.ids.stored(host_path), name))

    def is_placeholder(self, host_path: str) -> bool:
        return self._placeholder_ref(host_path) is not None

    def _placeholder_ref(self, host_path: str) -> str | None:
        placeholder = read_placeholder(host_path)
        ref = placeholder.ref if placeholder is not None else None
        self.observer.placeholder(host_path, ref)
        return ref

    # The models ask the file system these questions through the context, so that the
    # memo knows every answer its record depends on (a library search's misses too).
    def isfile(self, path: str) -> bool:
        return self.observer.probe("isfile", path)

    def exists(self, path: str) -> bool:
        return self.observer.probe("exists", path)

    def executable(self, path: str) -> bool:
        return self.observer.probe("x_ok", path)

    def put(self, function_hash: str, args: list[str], outputs: list[str], inputs: Inputs,
            executables: tuple[Input, ...], envars: tuple[str, ...] = THUNK_ENV) -> str:
        """Store the thunk and return its ID (``envars``: its environment, see :func:`thunk_env`).

        Validating and serializing a compile thunk (~80 inputs) costs ~1.5 ms, most of a
        warm model call, and the same thunk is made again on every run of an unchanged
        build. So the ID is also recorded (:class:`ThunkRecords`) under a hash of the
        thunk's fields (canonical order, length-prefixed); a recorded ID is used only
        while its blob is in the store. A miss builds, validates and stores as before.
        """
        # Input's own order (dataclass order=True: by ref, then name), without a Python
        # __lt__ call per comparison (~1,500 of them for a compile's ~85 inputs)
        values, thunks, execs = (sorted(set(group), key=_INPUT_ORDER)
                                 for group in (inputs.values, inputs.thunks, executables))
        parts = [function_hash, *_counted(args), *_counted(outputs), *_counted(envars)]
        for group in (values, thunks, execs):
            parts.append(str(len(group)))
            for item in group:
                parts += [item.ref, item.name]
        key = xxhash.xxh3_128_hexdigest("\0".join(parts).encode("utf-8", "surrogateescape"))
        known = self.thunk_ids.get(key)
        if known and self.ids.has_blob(known):
            self.observer.thunk(known)
            return known
        thunk = Thunk(
            function_hash=function_hash,
            args=tuple(args),
            outputs=tuple(outputs),
            envars=envars,
            values=tuple(values),
            thunks=tuple(thunks),
            executables=tuple(execs),
        )
        ident = self.store.put_thunk(thunk)
        self.thunk_ids.add(key, ident)
        self.observer.thunk(ident)
        return ident

    def note_relative_debug_dirs(self, count: int) -> None:
        """``count`` compiles with debug info became thunks (their objects name their
        directory "."): said at the end of the run (fallback.LocalRuns), replayed by the memo."""
        self.observer.wrote("debug_dirs", count)
        self.local_runs.record_relative_debug_dir(count)

    def note_dated(self, count: int) -> None:
        """``count`` compiles read files that name ``__DATE__``/``__TIME__``/``__TIMESTAMP__``
        and became thunks without the build's own SOURCE_DATE_EPOCH: they get the date of
        ``SOURCE_DATE_EPOCH=0`` (THUNK_ENV), where a plain build gets the day it ran. Said
        at the end of the run (fallback.LocalRuns), replayed by the memo."""
        self.observer.wrote("dated", count)
        self.local_runs.record_dated(count)

    def place(self, host_path: str, ref: str, executable: bool) -> None:
        """Write the placeholder for an output (mode as the real file would have)."""
        self.observer.wrote("place", host_path, ref, executable)
        path = Path(host_path)
        mode = 0o755 if executable else 0o644
        if self.placements is not None:
            self.placements.send(ref)
        if path.is_symlink() or (path.exists() and not path.is_file()):
            os.unlink(path)
        elif _same_placeholder(path, ref, mode):
            # make only needs a newer mtime; replacing an existing file by rename makes
            # ext4 flush the new data (auto_da_alloc), which costs milliseconds.
            os.utime(path)
            return
        write_placeholder(path, ref, mode=mode)


_INPUT_ORDER = attrgetter("ref", "name")


def _counted(words) -> list[str]:
    return [str(len(words)), *words]


def _same_placeholder(path: Path, ref: str, mode: int) -> bool:
    """Whether ``path`` already is exactly the placeholder that would be written."""
    try:
        st = os.lstat(path)
        if st.st_size > MAX_PLACEHOLDER_SIZE or (st.st_mode & 0o7777) != mode:
            return False
        with open(path, "rb") as handle:
            return handle.read(MAX_PLACEHOLDER_SIZE + 1) == render(ref, wants_linker_form(path))
    except OSError:
        return False
