"""Where a host file appears inside a thunk's work directory.

Thunk IDs must not depend on the checkout directory, so no absolute build path may
appear in a thunk. Every file a thunk reads is laid out under a relative name:

* ``r/<rel>`` for a file under the build root (the directory gg-infer started in),
* ``a/<abs>`` for any other absolute path (system headers, crt files, libraries),
* ``gg/...`` for the toolchain programs and their shared libraries,
* bare names at the top for outputs and intermediate files.

The ``a/`` tree doubles as the linker's ``--sysroot``, so the absolute paths inside
linker scripts such as ``libc.so`` resolve to the laid-out copies.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

ROOT_PREFIX = "r"
ABS_PREFIX = "a"
TOOL_PREFIX = "gg"


@dataclass(frozen=True)
class PathMap:
    root: str  # absolute, normalized build root
    # to_thunk's answers: a compile names ~80 headers, the same ones in every compile
    # (a pure function of its arguments and the root; a dict's get/set are atomic)
    _names: dict[tuple[str, str], str] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def for_root(cls, root: str) -> PathMap:
        return cls(os.path.normpath(os.path.abspath(root)))

    def absolute(self, path: str, cwd: str) -> str:
        return os.path.normpath(os.path.join(cwd, path))

    def to_thunk(self, path: str, cwd: str) -> str:
        """The relative name of host ``path`` (relative to ``cwd``) inside a thunk."""
        known = self._names.get((path, cwd))
        if known is not None:
            return known
        full = self.absolute(path, cwd)
        if full == self.root:
            name = ROOT_PREFIX
        elif full.startswith(self.root + "/"):
            name = f"{ROOT_PREFIX}/{full[len(self.root) + 1:]}"
        else:
            name = f"{ABS_PREFIX}{full}" if full != "/" else ABS_PREFIX
        if len(self._names) < 200_000:
            self._names[(path, cwd)] = name
        return name

    def to_host(self, name: str) -> str:
        """Inverse of :meth:`to_thunk` for names it produced (others are returned as is)."""
        if name == ROOT_PREFIX or name.startswith(ROOT_PREFIX + "/"):
            return os.path.join(self.root, name[len(ROOT_PREFIX) + 1:])
        if name.startswith(ABS_PREFIX + "/"):
            return name[len(ABS_PREFIX):]
        return name

    def under_root(self, path: str, cwd: str) -> bool:
        full = self.absolute(path, cwd)
        return full == self.root or full.startswith(self.root + "/")

    def prefix_maps(self, cwd: str, absolute: bool = False) -> list[str]:
        """``-ffile-prefix-map`` options that turn thunk names back into what the
        compiler would have printed in ``cwd`` (``__FILE__``, ``.file``), so objects
        are byte-identical to a plain build's. The most specific map comes last
        because GCC uses the last matching one.

        ``absolute``: the call names its files under the root by absolute paths (as
        CMake does), so the compiler prints absolute names: ``r/`` maps to the root
        itself. The object then holds the build directory, and so does the thunk
        (its ID depends on the checkout, as the plain build's bytes do)."""
        cwd = os.path.normpath(cwd)
        # The compile directory a -g object records is /proc/self/cwd (see THUNK_ENV in
        # context.py); "." keeps it the same in every checkout and on every machine.
        maps = ["-fdebug-prefix-map=/proc/self/cwd=.", f"-ffile-prefix-map={ABS_PREFIX}/=/"]
        if absolute:
            maps.append(f"-ffile-prefix-map={ROOT_PREFIX}/={self.root.rstrip('/')}/")
        elif cwd == self.root or cwd.startswith(self.root + "/"):
            rel_root = os.path.relpath(self.root, cwd)
            maps.append(f"-ffile-prefix-map={ROOT_PREFIX}/={'' if rel_root == '.' else rel_root + '/'}")
            here = self.to_thunk(".", cwd)
            if here != ROOT_PREFIX:
                maps.append(f"-ffile-prefix-map={here}/=")
        return maps
