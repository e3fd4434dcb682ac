"""Thunk names that the compiler prints back exactly as the build spelled the path.

gcc prints a file (``__FILE__``, ``assert`` messages, debug info's file and directory
names) as it reached it: the source's path *as written* (``.//dict/x.c``, ``./x.c``,
``src/../src/x.c``) and, for a header, the spelling of the directory that led to it
(``-I.`` gives ``./config.h``, a header beside ``./x.c`` is ``./x.h``). A thunk names
files by normalized names (``r/dict/x.c``) and ``-ffile-prefix-map`` turns them back
into relative or absolute names (:meth:`~.paths.PathMap.prefix_maps`), which are the
normalized ones: zstd's ``.//dictBuilder/divsufsort.c`` came out of its thunk as
``dictBuilder/divsufsort.c`` inside the object, silently different from a plain build.

So where the maps would not give the build's spelling back, the thunk's command line
names the path as the build did, under the thunk name of the call's directory
(``r/lib/.//dict/x.c``): the map that strips that directory then gives exactly the
build's text, by the compiler's own string handling. The thunk's *inputs* keep their
normalized names; the kernel resolves ``.``, empty components and ``..`` to them. A
``..`` needs the directory before it to exist in the thunk, i.e. to hold an input; a
path whose ``..`` passes through a directory the thunk lacks cannot be spelled, and
the call runs locally (said in the summary line).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .paths import ABS_PREFIX, ROOT_PREFIX, PathMap
from .reasons import Unmodelled


def remap(name: str, prefix_map_options: list[str]) -> str:
    """``name`` as gcc prints it under ``prefix_map_options`` (``-f*-prefix-map=OLD=NEW``):
    the last option whose OLD is a string prefix of ``name`` applies, as in gcc's
    ``remap_filename`` (each option is prepended to its list)."""
    for option in reversed(prefix_map_options):
        old, _, new = option.partition("=")[2].partition("=")
        if name.startswith(old):
            return new + name[len(old):]
    return name


@dataclass
class Spelling:
    """The names one compile's command line uses for the paths the build wrote.

    ``maps``: the call's ``-ffile-prefix-map`` options; ``inputs``: the thunk names of
    the compile's input files (a ``..`` is only spelled through a directory among them).
    """

    paths: PathMap
    cwd: str
    maps: list[str]
    inputs: set[str] = field(default_factory=set)
    extra_maps: list[str] = field(default_factory=list)  # to add after ``maps``

    def file(self, path: str, normalized: str) -> str:
        """The name for file ``path`` whose normalized thunk name is ``normalized``."""
        if remap(normalized, self.maps) == path:
            return normalized
        return self._spelled(path, normalized)

    def directory(self, path: str, normalized: str) -> str:
        """The name for directory ``path`` (``-I``, ``-iquote``, ...): what matters is
        the directory's text in front of a header name (gcc drops trailing slashes)."""
        wanted = path.rstrip("/") + "/" if path.rstrip("/") else path
        if remap(normalized.rstrip("/") + "/", self.maps) == wanted:
            return normalized
        return self._spelled(path, normalized)

    def forced_include(self, path: str, normalized: str) -> str:
        """The name for a ``-include``/``-imacros`` file. gcc opens a relative one in
        the working directory and prints it as ``./`` + the name given (``./inc/x.h``
        for ``-include inc/x.h``), which no map of the thunk's plain names matches; so
        it is named under the call's directory, with a map for that ``./`` form."""
        if os.path.isabs(path):
            return self.file(path, normalized)
        here = self.paths.to_thunk(".", self.cwd)
        option = f"-ffile-prefix-map=./{here}/=./"
        if option not in self.extra_maps:
            self.extra_maps.append(option)
        return self._spelled(path, normalized)

    def _spelled(self, path: str, normalized: str) -> str:
        root = self.paths.root
        if os.path.isabs(path):
            if path == root or path.startswith(root + "/"):
                name = ROOT_PREFIX + path[len(root):]
            else:
                name = ABS_PREFIX + path
        else:
            name = self.paths.to_thunk(".", self.cwd) + "/" + path
        if os.path.normpath(name) != normalized.rstrip("/"):
            raise Unmodelled(f"path {path} cannot be spelled inside a thunk as the build wrote it",
                             label="(path spelling)")
        parts = name.split("/")
        for index, part in enumerate(parts):
            if part != "..":
                continue
            before = os.path.normpath("/".join(parts[:index]))
            if not any(i.startswith(before + "/") for i in self.inputs):
                raise Unmodelled(f"path {path} goes through {before}, a directory without inputs in the thunk",
                                 label="(.. through a directory without inputs)")
        return name


# The build's own prefix maps (Debian's dpkg-buildflags adds -ffile-prefix-map=/build/pkg=.).
USER_MAP_OPTIONS = ("-ffile-prefix-map=", "-fmacro-prefix-map=", "-fdebug-prefix-map=")


def _map_parts(option: str) -> tuple[str, str, str]:
    """(kind, old, new) of ``-fKIND-prefix-map=OLD=NEW``; kind: file, macro or debug."""
    flag, _, rest = option.partition("=")
    old, _, new = rest.partition("=")
    return flag[2:-len("-prefix-map")], old, new


def with_user_maps(ours: list[str], user: list[str], cwd: str) -> list[str]:
    """The thunk's maps (``ours``: thunk name -> what gcc prints on the host) composed with
    the build's own (``user``: host name -> what the build wants printed).

    gcc applies one map per name (the last that matches), so the build's maps, whose
    ``OLD`` is a host path, never matched a thunk's names and were silently lost behind
    ours (``-ffile-prefix-map=$ROOT=.`` gave ``$ROOT/src/a.c`` instead of
    ``./src/a.c``). Each of our maps gets the build's maps applied to its ``NEW``
    (per list: ``__FILE__`` uses the file and macro maps, debug info the file and debug
    maps); a build map whose ``OLD`` lies below one of our absolute ``NEW``s is also
    put into thunk terms, last, so it wins as it would on the host. The compile
    directory (``/proc/self/cwd``) gets what the build's debug maps make of ``cwd``.
    """
    if not user:
        return ours
    for option in user:
        if not _map_parts(option)[1].startswith("/"):
            raise Unmodelled(f"the build's own {option} names a relative path", label="(relative prefix map)")
    composed: list[str] = []
    translated: list[str] = []
    for option in ours:
        kind, old, new = _map_parts(option)
        for target in (("macro", "debug") if kind == "file" else (kind,)):
            theirs = [u for u in user if _map_parts(u)[0] in ("file", target)]
            if old == "/proc/self/cwd":
                mapped = remap(cwd, theirs)
                value = mapped if mapped != cwd else new
            else:
                value = remap(new, theirs)
            composed.append(f"-f{target}-prefix-map={old}={value}")
            if new.startswith("/"):
                for theirs_option in theirs:
                    _, their_old, their_new = _map_parts(theirs_option)
                    if their_old.startswith(new) and len(their_old) > len(new):
                        translated.append(f"-f{target}-prefix-map={old}{their_old[len(new):]}={their_new}")
    return composed + translated
