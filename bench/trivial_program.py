"""The trivial C program the engine benches start as thunks: it writes its argument to
``out``. One copy, so bench_scheduler.py and bench_local_engine.py time the same program."""

from __future__ import annotations

import subprocess
from pathlib import Path

TRIVIAL_C = r"""
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int fd = open("out", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return 1;
    const char *text = argc > 1 ? argv[1] : "";
    if (write(fd, text, strlen(text)) < 0) return 1;
    return close(fd) != 0;
}
"""


def build_trivial(workdir: Path) -> Path:
    """Compile the program into ``workdir`` (gcc is on every build machine here)."""
    source, binary = workdir / "trivial.c", workdir / "trivial"
    source.write_text(TRIVIAL_C)
    subprocess.run(["gcc", "-O2", "-o", str(binary), str(source)], check=True)
    return binary
