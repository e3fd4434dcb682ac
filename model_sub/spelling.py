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
