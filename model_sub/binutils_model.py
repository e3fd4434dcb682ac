"""ar, ranlib and strip models.

``ar r``/``ar q`` (with the usual modifiers) always become a thunk: the members (often
placeholders) are laid out under their mapped names, and an existing archive is an
input under the output's name (the executor hands it over writable), exactly what ar
would update. ranlib and strip only need a thunk when the file they change in place is
a placeholder; on a real file they run for real. Anything else runs the real tool.
"""

from __future__ import annotations

import os

from .context import Inputs, ModelContext
from .gcc_args import Unmodelled

_AR_MODIFIERS = set("cusvDUlo")


def _put_in_place_thunk(ctx: ModelContext, tool: str, options: list[str], host_path: str, cwd: str) -> None:
    """A thunk that runs ``tool options FILE`` on a copy of ``host_path`` and yields it."""
    tag = os.path.basename(host_path)
    inputs = Inputs()
    ctx.add_file(inputs, host_path, tag)
    portable = ctx.toolchain.program(tool)
    ref = ctx.put(portable.function_hash, [*portable.argv_prefix, *options, tag], [tag], inputs,
                  portable.executables)
    ctx.place(host_path, ref, executable=os.access(host_path, os.X_OK))


def run_ar(ctx: ModelContext, argv: list[str], cwd: str) -> None:
    if len(argv) < 3:
        raise Unmodelled("ar without archive")
    ops = argv[1].lstrip("-")
    if not ops or ops[0] not in "rq" or not set(ops[1:]) <= _AR_MODIFIERS:
        raise Unmodelled(f"ar operation {argv[1]}")
    archive = os.path.join(cwd, argv[2])
    members = argv[3:]
    if any(m.startswith("-") for m in members):
        raise Unmodelled("ar option after the archive")
    tag = os.path.basename(archive)
    inputs = Inputs()
    if os.path.isfile(archive):
        ctx.add_file(inputs, archive, tag)
    names = []
    for member in members:
        host = os.path.join(cwd, member)
        if not os.path.isfile(host):
            raise Unmodelled(f"ar member {member} does not exist")
        name = ctx.paths.to_thunk(member, cwd)
        ctx.add_file(inputs, host, name)
        names.append(name)
    portable = ctx.toolchain.program("ar")
    ref = ctx.put(portable.function_hash, [*portable.argv_prefix, argv[1], tag, *names], [tag], inputs,
                  portable.executables)
    ctx.place(archive, ref, executable=False)


def run_in_place(ctx: ModelContext, tool: str, argv: list[str], cwd: str) -> None:
    """ranlib/strip FILE...: a thunk per placeholder file; real files run for real."""
    options = [a for a in argv[1:] if a.startswith("-")]
    files = [a for a in argv[1:] if not a.startswith("-")]
    if not files or any(o in ("-o",) or o.startswith(("-o", "--output")) for o in options):
        raise Unmodelled(f"{tool} form not modelled")
    hosts = [os.path.join(cwd, f) for f in files]
    placeholders = [h for h in hosts if ctx.is_placeholder(h)]
    if len(placeholders) != len(hosts):
        raise Unmodelled(f"{tool} on a real file")
    for host in hosts:
        _put_in_place_thunk(ctx, tool, options, host, cwd)
