"""The cost of verify-on-use on a real C build: Lua 5.4 (from the lupa sdist).

``gg-infer make -j2`` writes the thunks, then ``gg-force -j2 lua luac`` runs them on the
local engine in this process, with :meth:`LocalStore.verify_for_use` wrapped to add up
the time spent in it (hashing included: the first use of every blob in a run is
hashed, later uses cost one ``lstat`` while the blob is unchanged). Verification runs
in the scheduler's event loop, so its sum is an upper bound on what it adds to the
build's wall time. Each forced build starts from an empty reduction cache, so every
thunk runs. Prints one table (markdown) for docs/force.md.

Run: .venv/bin/python bench/bench_verify.py [ROUNDS]
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from executor.force import force  # noqa: E402
from ir.atomic import unlink_quietly  # noqa: E402
from ir.store import LocalStore  # noqa: E402
from tests.test_infer_support import VENV_BIN, extract_lua54, tool_env  # noqa: E402


class Meter:
    """Adds up the time and calls of verify_for_use, and how many of them hashed."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0
        self.hashed = 0
        self.hashed_bytes = 0

    def install(self) -> None:
        original = LocalStore.verify_for_use
        meter = self

        def timed(store: LocalStore, ident: str):
            trusted_before = _trusted(store, ident)
            started = time.perf_counter()
            try:
                return original(store, ident)
            finally:
                meter.seconds += time.perf_counter() - started
                meter.calls += 1
                if not trusted_before:
                    meter.hashed += 1
                    meter.hashed_bytes += int(ident.rsplit("_", 1)[1], 16)

        LocalStore.verify_for_use = timed


def _trusted(store: LocalStore, ident: str) -> bool:
    import os

    try:
        return store.verified.trusts(ident, os.lstat(store.blob_path(ident)))
    except OSError:
        return False


def force_once(root: Path, targets: list[str]) -> tuple[float, float, int]:
    """Force ``targets`` in ``root`` from an empty reduction cache; (wall s, CPU s, thunks run)."""
    store = LocalStore.locate(root)
    unlink_quietly(store.reduction_log.path)
    before = _cpu()
    started = time.perf_counter()
    summary = force([str(root / t) for t in targets], ("local",), store=store, jobs=2, quiet=True)
    wall = time.perf_counter() - started
    return wall, _cpu() - before, summary.executed


def _cpu() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    meter = Meter()
    meter.install()
    with tempfile.TemporaryDirectory(prefix="gg-bench-verify-") as tmp:
        root = extract_lua54(Path(tmp) / "lua")
        subprocess.run([str(VENV_BIN / "gg"), "init"], cwd=root, env=tool_env(), check=True, capture_output=True)
        infer = subprocess.run([sys.executable, "-m", "model_sub.infer", "make", "-s", "-j2"], cwd=root,
                               env=tool_env(), capture_output=True, text=True)
        if infer.returncode != 0:
            raise SystemExit(f"gg-infer make failed:\n{infer.stderr[-2000:]}")
        targets = [t for t in ("lua", "luac") if (root / t).exists()]
        placeholders = {t: (root / t).read_bytes() for t in targets}
        rows = []
        for n in range(rounds):
            meter.__init__()
            wall, cpu, executed = force_once(root, targets)
            rows.append((n + 1, executed, wall, cpu, meter.seconds, meter.calls, meter.hashed, meter.hashed_bytes))
            for target, data in placeholders.items():  # back to placeholders for the next round
                (root / target).unlink()
                (root / target).write_bytes(data)
    print("| round | thunks run | build wall s | build CPU s | in verification s | % of wall | "
          "verifications | of which hashed (MiB) |")
    print("|---|---|---|---|---|---|---|---|")
    for n, executed, wall, cpu, seconds, calls, hashed, hashed_bytes in rows:
        print(f"| {n} | {executed} | {wall:.2f} | {cpu:.2f} | {seconds:.3f} | {100 * seconds / wall:.2f} | {calls} | "
              f"{hashed} ({hashed_bytes / (1 << 20):.0f}) |")


if __name__ == "__main__":
    main()
