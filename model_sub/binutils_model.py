"""ar, ranlib, strip and objcopy models (grammars in ``binutils_args``).

``ar r``/``ar q`` (any key spelling, modifiers a b i c D s S u f v, ``--target``)
always become a thunk: the members (often placeholders) are laid out under their
mapped names, whose base names are what ar stores, and an existing archive is an
input under the output's name (the executor hands it over writable), exactly what ar
would update. ranlib/strip/objcopy that change a file in place need a thunk only when
that file is a placeholder; ``strip -o OUT IN`` and ``objcopy IN OUT`` always do.
Anything else raises :class:`Unmodelled` and runs the real tool on forced inputs.
"""

from __future__ import annotations

import os

from ir.archives import THIN_MAGIC

from .binutils_args import ArCall, ObjCall, check_ar_modelled, parse_ar, parse_objtool
from .context import Inputs, ModelContext
from .reasons import Unmodelled

_UNUSED_U = b"ar: `u' modifier ignored since `D' is the default (see `U')\n"


def _existing_archive_kind(path: str, ctx: ModelContext) -> str:
    """"none", "placeholder", "archive", "thin" or "other" for ``path``."""
    if not ctx.exists(path):
        return "none"
    if ctx.is_placeholder(path):
        return "placeholder"
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError:
        return "other"
    if head == THIN_MAGIC:
        return "thin"
    return "archive" if head == b"!<arch>\n" else "other"


def run_ar(ctx: ModelContext, argv: list[str], cwd: str) -> bytes:
    """Model an ``ar`` call; returns what ar would print on stderr."""
    call = parse_ar(argv, cwd)
    check_ar_modelled(call)
    _check_deterministic(ctx, "ar", call.modifiers)
    archive = os.path.join(cwd, call.archive)
    kind = _existing_archive_kind(archive, ctx)
    if kind == "thin":
        raise Unmodelled("ar on an existing thin archive", label="(thin archive)")
    if kind == "other":
        raise Unmodelled("ar: the archive exists but is not an archive", label="(not an archive)")
    if call.operation == "s":
        if kind != "placeholder":
            raise Unmodelled("ar s on a real archive", label="s (real file)")
        _put_in_place_thunk(ctx, "ar", _replace(call.words, {call.archive_index: "TAG"}), archive)
        return b""
    tag = os.path.basename(archive)
    inputs = Inputs()
    if kind != "none":
        ctx.add_file(inputs, archive, tag)
    replaced = {call.archive_index: tag}
    for index in call.member_indices:
        member = call.words[index]
        host = os.path.join(cwd, member)
        if not ctx.isfile(host):
            raise Unmodelled(f"ar member {member} does not exist", label="(missing member)")
        name = ctx.paths.to_thunk(member, cwd)
        if os.path.basename(name) != os.path.basename(os.path.normpath(member)):
            raise Unmodelled(f"ar member {member}: unusual name", label="(member name)")
        ctx.add_file(inputs, host, name)
        replaced[index] = name
    portable = ctx.toolchain.program("ar")
    ref = ctx.put(portable.function_hash, [*portable.argv_prefix, *_replace(call.words, replaced)], [tag], inputs,
                  portable.executables)
    ctx.place(archive, ref, executable=False)
    return _ar_messages(call, kind)


def _check_deterministic(ctx: ModelContext, tool: str, flags: set[str]) -> None:
    """Refuse a call whose real output would carry timestamps (see
    :meth:`Driver.deterministic_by_default`): its bytes cannot be reproduced."""
    if "U" in flags or ("D" not in flags and not ctx.driver.deterministic_by_default(ctx.toolchain.which(tool))):
        raise Unmodelled(f"{tool} would record real timestamps", label="(timestamps)")


def _ar_messages(call: ArCall, kind: str) -> bytes:
    """The warnings GNU ar prints for this call (its verbose listing is not repeated)."""
    out = b""
    if "u" in call.modifiers and "U" not in call.modifiers:
        out += _UNUSED_U
    if kind == "none" and "c" not in call.modifiers:
        out += f"ar: creating {call.archive}\n".encode("utf-8", "surrogateescape")
    return out


def _replace(words: list[str], replaced: dict[int, str]) -> list[str]:
    return [replaced.get(i, w) for i, w in enumerate(words)]


def _put_in_place_thunk(ctx: ModelContext, tool: str, args: list[str], host_path: str) -> None:
    """A thunk that runs ``tool args`` (``TAG`` = a copy of ``host_path``) and yields it."""
    tag = os.path.basename(host_path)
    inputs = Inputs()
    ctx.add_file(inputs, host_path, tag)
    portable = ctx.toolchain.program(tool)
    ref = ctx.put(portable.function_hash, [*portable.argv_prefix, *[tag if a == "TAG" else a for a in args]], [tag],
                  inputs, portable.executables)
    ctx.place(host_path, ref, executable=ctx.executable(host_path))


def _option_words(ctx: ModelContext, call: ObjCall, cwd: str, inputs: Inputs) -> list[str]:
    """The options of ``call`` for the thunk; file-valued ones become inputs."""
    words = [w for option in call.options for w in option]
    for option, value, _sep in call.file_options:
        host = os.path.join(cwd, value)
        if not ctx.isfile(host):
            raise Unmodelled(f"{option} file {value} does not exist", label="(missing input)")
        name = ctx.paths.to_thunk(value, cwd)
        if os.path.basename(name) != os.path.basename(os.path.normpath(value)):
            raise Unmodelled(f"{option} {value}: unusual name", label=option)
        ctx.add_file(inputs, host, name)
        words.append(f"{option}={name}")
    return words


def _in_place(ctx: ModelContext, tool: str, call: ObjCall, cwd: str) -> None:
    hosts = [os.path.join(cwd, f) for f in call.files]
    placeholders = [h for h in hosts if ctx.is_placeholder(h)]
    if not placeholders:
        raise Unmodelled(f"{tool} on a real file", label="(real file)")
    if len(placeholders) != len(hosts):
        raise Unmodelled(f"{tool} on real files and placeholders", label="(real file)")
    for host in hosts:
        inputs = Inputs()
        options = _option_words(ctx, call, cwd, inputs)
        tag = os.path.basename(host)
        ctx.add_file(inputs, host, tag)
        portable = ctx.toolchain.program(tool)
        ref = ctx.put(portable.function_hash, [*portable.argv_prefix, *options, tag], [tag], inputs,
                      portable.executables)
        ctx.place(host, ref, executable=ctx.executable(host))


def _copy(ctx: ModelContext, tool: str, call: ObjCall, source: str, output: str, cwd: str) -> None:
    """``tool options SOURCE -> OUTPUT`` as one thunk (strip -o, objcopy IN OUT)."""
    host_in, host_out = os.path.join(cwd, source), os.path.join(cwd, output)
    if not ctx.isfile(host_in):
        raise Unmodelled(f"{tool} input {source} does not exist", label="(missing input)")
    inputs = Inputs()
    options = _option_words(ctx, call, cwd, inputs)
    in_name = ctx.paths.to_thunk(source, cwd)
    out_tag = os.path.basename(host_out)
    if in_name == out_tag:
        raise Unmodelled(f"{tool}: output name clashes", label="(names)")
    ctx.add_file(inputs, host_in, in_name)
    portable = ctx.toolchain.program(tool)
    args = [*options, "-o", out_tag, in_name] if tool == "strip" else [*options, in_name, out_tag]
    ref = ctx.put(portable.function_hash, [*portable.argv_prefix, *args], [out_tag], inputs, portable.executables)
    executable = ctx.executable(host_in)  # strip and objcopy give the output the input's mode
    ctx.place(host_out, ref, executable=executable)


def run_ranlib(ctx: ModelContext, argv: list[str], cwd: str) -> None:
    call = parse_objtool("ranlib", argv, cwd)
    _check_deterministic(ctx, "ranlib", {option[0][1:] for option in call.options if option[0] == "-D"})
    _in_place(ctx, "ranlib", call, cwd)


def run_strip(ctx: ModelContext, argv: list[str], cwd: str) -> None:
    call = parse_objtool("strip", argv, cwd)
    if call.output is not None:
        if len(call.files) != 1:
            raise Unmodelled("strip -o with several inputs", label="-o (several inputs)")
        _copy(ctx, "strip", call, call.files[0], call.output, cwd)
    else:
        _in_place(ctx, "strip", call, cwd)


def run_objcopy(ctx: ModelContext, argv: list[str], cwd: str) -> None:
    call = parse_objtool("objcopy", argv, cwd)
    if len(call.files) == 1:
        _in_place(ctx, "objcopy", call, cwd)
    elif len(call.files) == 2:
        _copy(ctx, "objcopy", call, call.files[0], call.files[1], cwd)
    else:
        raise Unmodelled("objcopy with more than two files", label="(files)")
