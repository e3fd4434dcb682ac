"""The README's main job: build the bundled C/C++ project through gg on the local engine.

It copies ``examples/cproject`` to ``build/example-cproject/src`` (so the checkout stays
clean), runs ``gg-infer make`` there (the real make, with model shims that write thunks
and placeholders), then ``gg-force app`` (which runs the thunks on the local engine),
and finally runs the program it built. The store lives in
``build/example-cproject/.gg``, so running it again is all cache hits.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def step(title: str, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
    print(f"\n$ {' '.join(argv)}    # {title}", flush=True)
    result = subprocess.run(argv, cwd=cwd, env=env)
    if result.returncode != 0:
        raise SystemExit(f"main job: '{' '.join(argv)}' failed with status {result.returncode}")


def main() -> int:
    work = REPO / "build" / "example-cproject"
    source = work / "src"
    if source.exists():
        shutil.rmtree(source)
    shutil.copytree(REPO / "examples" / "cproject", source)
    env = dict(os.environ, GG_DIR=str(work / ".gg"), PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    step("the real build, with models writing thunks", [str(BIN / "gg-infer"), "make", "-j2"], source, env)
    step("force the program on the local engine", [str(BIN / "gg-force"), "-j2", "app"], source, env)
    step("run what gg built", ["./app"], source, env)
    print(f"\nBuilt in {source} with the store in {work / '.gg'}; run again for an all-cache-hit build.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
