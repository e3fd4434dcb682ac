"""Run one shell build plainly and through gg-infer + gg-force, and compare outputs.

Shared by the grammar end-to-end tests: each test writes sources and a build script;
the script runs with the real tools in one directory and under gg-infer in another
(same relative layout, so the bytes must be equal), then the named outputs are forced
with the toolchain hidden and compared byte for byte.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.test_infer_support import gg_force, gg_infer, tool_env


@dataclass
class ScriptRun:
    plain: Path
    gg: Path
    plain_result: subprocess.CompletedProcess
    gg_result: subprocess.CompletedProcess

    def log(self) -> str:
        return (self.gg / ".gg" / "infer" / "log").read_text()

    def summary(self) -> str:
        lines = [line for line in self.gg_result.stderr.splitlines() if line.startswith("gg-infer: ")]
        return "\n".join(lines)


def run_both(tmp_path: Path, files: dict[str, str | bytes], script: str) -> ScriptRun:
    """Write ``files`` into two trees and run ``script`` (sh) plainly and via gg-infer."""
    trees = []
    for name in ("plain", "gg"):
        tree = tmp_path / name
        for rel, content in {**files, "build.sh": script}.items():
            path = tree / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
        trees.append(tree)
    plain, gg = trees
    plain_result = subprocess.run(["sh", "-e", "build.sh"], cwd=plain, env=tool_env(), capture_output=True,
                                  text=True)
    assert plain_result.returncode == 0, plain_result.stderr
    gg_result = gg_infer(gg, "sh", "-e", "build.sh")
    assert gg_result.returncode == 0, gg_result.stderr
    return ScriptRun(plain, gg, plain_result, gg_result)


def force_and_compare(tmp_path: Path, run: ScriptRun, outputs: list[str]) -> None:
    """Force ``outputs`` (toolchain hidden) and check each equals the plain build's."""
    forced = gg_force(run.gg, outputs, tmp_path / "trace.jsonl")
    assert forced.returncode == 0, forced.stderr
    for name in outputs:
        assert (run.gg / name).read_bytes() == (run.plain / name).read_bytes(), name
        assert (run.gg / name).stat().st_mode == (run.plain / name).stat().st_mode, name


def copy_tree(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, symlinks=True)
    return target
