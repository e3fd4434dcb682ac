"""The gcc/g++ command line, parsed into what the model needs to know.

The parser never rejects an option: anything it does not know is carried along
verbatim (as gg did not, and broke on ``-plugin``, ``--sysroot``, ...). It only needs
to know which options take a separate argument (so that the argument is not taken for
an input file), which ones name paths (to map them into the thunk), and which ones
make a call impossible to model (then the real tool runs).
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field

from .reasons import RunReal, Unmodelled

__all__ = ["RunReal", "Unmodelled"]  # re-exported: the models import them from here

# Options whose argument is the next word.
SEPARATE = {
    "-o", "-x", "-include", "-imacros", "-iquote", "-isystem", "-idirafter", "-iprefix",
    "-iwithprefix", "-iwithprefixbefore", "-isysroot", "-imultilib", "-imultiarch", "-MF", "-MT",
    "-MQ", "-Xlinker", "-Xassembler", "-Xpreprocessor", "-T", "-u", "-z", "-e", "--param",
    "-aux-info", "-dumpbase", "-dumpdir", "-dumpbase-ext", "-wrapper", "-A", "--sysroot",
    "-specs", "--entry", "-Xclang",
}
# Options whose argument is joined, or the next word when given alone.
JOINED_OR_SEPARATE = ("-I", "-D", "-U", "-L", "-l", "-B")
# Path options gcc also takes with the argument joined (-includeconfig.h, -isystem/opt/x),
# longest first where one is a prefix of another. (-T is left out: -Ttext= and friends are
# other linker options.)
JOINED_PATH_OPTIONS = ("-include", "-imacros", "-iquote", "-isystem", "-idirafter", "-isysroot")
# Options whose argument is a path to map into the thunk.
PATH_OPTIONS = {"-I", "-iquote", "-isystem", "-idirafter", "-include", "-imacros", "-isysroot", "-L", "-T",
                "--sysroot"}
# Options that only matter to the link, kept in order with the input files.
LINK_ONLY_PREFIXES = ("-l", "-Wl,", "-Xlinker", "-L", "-T", "-u", "-z", "-e", "--entry")
LINK_ONLY_FLAGS = {"-static", "-shared", "-pie", "-no-pie", "-rdynamic", "-s", "-nostdlib", "-nostartfiles",
                   "-nodefaultlibs", "-static-libgcc", "-static-libstdc++", "-symbolic", "-pthread"}
DEP_FLAGS = {"-MD", "-MMD", "-MP", "-MG"}
DEP_ARG_OPTIONS = {"-MF", "-MT", "-MQ"}

C_SUFFIXES = {".c": "c", ".i": "cpp-output"}
CXX_SUFFIXES = {".cc": "c++", ".cp": "c++", ".cxx": "c++", ".cpp": "c++", ".CPP": "c++", ".c++": "c++",
                ".C": "c++", ".ii": "c++-cpp-output"}
ASM_SUFFIXES = {".s": "assembler", ".S": "assembler-with-cpp", ".sx": "assembler-with-cpp"}
HEADER_SUFFIXES = {".h", ".hh", ".hpp", ".hxx", ".H", ".h++", ".tcc"}
SOURCE_LANGS = {**C_SUFFIXES, **CXX_SUFFIXES, **ASM_SUFFIXES}


@dataclass
class Item:
    """One element of the command line, in order."""

    kind: str  # "opt" | "input" | "link"
    words: list[str]
    path: str | None = None  # for a path option: the path; for an input: the file
    joined: bool = False  # path option written as one word (-Ifoo)
    lang: str | None = None  # for an input: the language forced by -x, or None

    @property
    def option(self) -> str:
        """The option's name, whether its argument is joined or not (``-include`` for
        ``-includeconfig.h``)."""
        if self.joined and self.path is not None:
            return self.words[0][: len(self.words[0]) - len(self.path)]
        return self.words[0]


@dataclass
class GccCall:
    driver: str  # argv[0] as given
    items: list[Item] = field(default_factory=list)
    mode: str = "link"  # "compile" (-c), "assemble" (-S), "link"
    output: str | None = None
    dep_flags: list[str] = field(default_factory=list)  # -MD -MMD -MP -MG in order
    dep_file: str | None = None  # -MF
    dep_targets: list[tuple[str, str]] = field(default_factory=list)  # ("-MT"|"-MQ", target)
    nostdinc: bool = False
    # -Wp,-MD,FILE: cc1 writes FILE itself, with its default target (the source's stem
    # .o) instead of the driver's -MQ OUTPUT
    preprocessor_depfile: bool = False

    @property
    def sources(self) -> list[Item]:
        return [i for i in self.items if i.kind == "input" and source_lang(i) is not None]

    @property
    def linker_inputs(self) -> list[Item]:
        return [i for i in self.items if i.kind == "input" and source_lang(i) is None]

    def wants_depfile(self) -> bool:
        return "-MD" in self.dep_flags or "-MMD" in self.dep_flags

    def debug_info(self) -> bool:
        """Whether the compile writes DWARF debug info: the last ``-g``/``-gN``/``-ggdb*``/
        ``-gdwarf*`` option decides (``-g0`` turns it off); ``-gz``, ``-gno-...`` and the
        other ``-g`` modifiers only change how it is written."""
        wanted = False
        for item in self.items:
            if item.kind == "opt":
                level = debug_level(item.words[0])
                if level is not None:
                    wanted = level
        return wanted


def debug_level(word: str) -> bool | None:
    """True/False if ``word`` turns debug info on/off, None if it says nothing about it."""
    if not word.startswith("-g") or word.startswith("-gno-"):
        return None
    rest = word[2:]
    if rest in ("", "1", "2", "3") or rest.startswith("dwarf"):
        return True
    if rest.startswith("gdb"):
        return rest[3:] != "0"
    if rest == "0":
        return False
    return None


def source_lang(item: Item) -> str | None:
    """The language gcc compiles ``item`` as, or None for a linker input."""
    if item.lang and item.lang != "none":
        return item.lang
    _, suffix = os.path.splitext(item.path or "")
    return SOURCE_LANGS.get(suffix)


def expand_response_files(argv: list[str], cwd: str, depth: int = 0) -> list[str]:
    """Replace every ``@file`` by the words in that file (recursively, like gcc)."""
    out: list[str] = []
    for word in argv:
        if word.startswith("@") and len(word) > 1:
            path = os.path.join(cwd, word[1:])
            if depth < 10 and os.path.isfile(path):
                with open(path, encoding="utf-8", errors="surrogateescape") as handle:
                    words = shlex.split(handle.read(), posix=True)
                out.extend(expand_response_files(words, cwd, depth + 1))
                continue
        out.append(word)
    return out


def _unmodelled_reason(word: str) -> str | None:
    if word in ("-E", "-M", "-MM", "-v", "-fsyntax-only", "-save-temps", "-aux-info", "-gsplit-dwarf",
                "-fsave-optimization-record",
                "--coverage", "-fprofile-arcs", "-ftest-coverage", "-flto", "-fuse-ld=gold", "-fuse-ld=lld",
                "-fuse-ld=mold", "-x-", "-"):
        return word
    if word.startswith(("-save-temps=", "-fplugin", "-flto=",
                        "-fprofile-generate", "-fprofile-use", "-fdump-", "-fcallgraph-info", "-fstack-usage",
                        "-specs", "-wrapper", "-B", "-fsanitize")):
        return word
    if word.startswith("-Wa,"):
        return next(filter(None, map(_assembler_extra_output, word.split(",")[1:])), None)
    if word.startswith("-fopt-info") and "=" in word:  # writes a report file
        return "-fopt-info=FILE"
    return _cxx_modules_option(word) or _link_extra_output(word)


def _cxx_modules_option(word: str) -> str | None:
    """C++ modules (``-fmodules-ts``, ``-fmodule-header``, ``-fmodule-mapper=...``): g++ writes
    and reads compiled module interfaces (``gcm.cache/NAME.gcm``, or where a mapper says)
    named by the module declarations in the source, not on the command line — a thunk would
    leave the ``.gcm`` missing and the importing compile would fail only when forced."""
    if word.startswith(("-fmodules", "-fmodule-")):
        return word.partition("=")[0]
    return None


def _assembler_extra_output(part: str) -> str | None:
    """GNU as options that write a file besides the object, which the thunk would lose:
    a listing ``-a[cdghlmns][=FILE]`` (to FILE, or to stdout) and ``--MD FILE``.

    Any word of ``-Wa,...`` or the value of ``-Xassembler`` may be one; checking only
    the first word of ``-Wa,`` let ``-Wa,--noexecstack,-adhln=x.lst`` through, and the
    listing was silently missing after gg-force.
    """
    if part.startswith("-a") or part.partition("=")[0] == "--MD":
        return f"-Wa,{part.partition('=')[0]}"
    return None


# ld options that write a file (or print) besides the output: the thunk would lose it.
_LD_EXTRA_OUTPUTS = ("-Map", "--Map", "--print-map", "-M", "--out-implib", "--dependency-file", "--verbose",
                     "--trace", "-t", "--cref", "--stats", "--print-memory-usage", "--print-gc-sections",
                     "--print-output-format", "--version", "-v")


def _link_extra_output(word: str) -> str | None:
    """``-Wl,-Map,x.map`` and friends (``-Xlinker`` values are checked by the caller)."""
    if not word.startswith("-Wl,"):
        return None
    for part in word.split(",")[1:]:
        if part.partition("=")[0] in _LD_EXTRA_OUTPUTS or part.startswith("-Map="):
            return f"-Wl,{part.partition('=')[0]}"
    return None


def _linker_response_items(ld_words: list[str], cwd: str) -> list[Item]:
    """``-Wl,@FILE`` / ``-Xlinker @FILE``: ld reads more arguments (objects, archives,
    options) from FILE. Carried as ``@FILE``, the thunk had neither the file nor the
    objects it names and the link failed only when forced ("cannot find @FILE"); expanded
    here (ld and gcc share libiberty's quoting), each word is an ``-Xlinker`` word, so
    the files are mapped and forced as any other linker input."""
    words = expand_response_files(ld_words, cwd)
    for value in words:
        if value.partition("=")[0] in _LD_EXTRA_OUTPUTS or value.startswith("-Map="):
            raise Unmodelled(f"linker option {value} writes another output", label=f"-Xlinker {value}")
    return [Item("link", ["-Xlinker", value]) for value in words]


def _is_query(word: str) -> bool:
    """Options that ask the toolchain about itself (no build output): run as they are."""
    if word in ("-###", "--version", "--help", "-dumpmachine", "-dumpversion", "-dumpfullversion", "-dumpspecs"):
        return True
    return word.startswith(("-print-", "--print", "--help="))


def _wp_depfile(word: str) -> tuple[str, str] | None:
    """``-Wp,-MD,FILE`` / ``-Wp,-MMD,FILE`` (Linux kernel style) as (flag, file)."""
    parts = word.split(",")
    if len(parts) == 3 and parts[1] in ("-MD", "-MMD") and parts[2]:
        return parts[1], parts[2]
    return None


def parse(argv: list[str], cwd: str) -> GccCall:
    """Parse a gcc command line; raise :class:`Unmodelled` for calls the model leaves
    to the real tool."""
    words = expand_response_files(argv[1:], cwd)
    for word in words:
        if _is_query(word):
            raise RunReal(f"query {word}")
    if "-v" in words and all(w.startswith("-") for w in words):
        raise RunReal("query -v")
    call = GccCall(driver=argv[0])
    lang: str | None = None
    i = 0
    saw_mode = {"-c": False, "-S": False}
    while i < len(words):
        word = words[i]
        i += 1
        reason = _unmodelled_reason(word)
        if reason:
            raise Unmodelled(f"option {reason}", label=reason)

        def take(option: str = word) -> str:
            nonlocal i
            if i >= len(words):
                raise Unmodelled(f"option {option} is missing its argument", label="(missing argument)")
            value = words[i]
            i += 1
            return value

        if word in ("-c", "-S"):
            saw_mode[word] = True
        elif word in ("-o", "--output"):
            call.output = take()
        elif word.startswith("--output="):
            call.output = word[len("--output="):]
        elif word.startswith("-o"):  # -oFILE: gcc has no other option starting with -o
            call.output = word[2:]
        elif word == "-x":
            lang = take()
            call.items.append(Item("opt", ["-x", lang]))
        elif word.startswith("-x") and len(word) > 2:
            lang = word[2:]
            call.items.append(Item("opt", [word]))
        elif word in DEP_FLAGS:
            call.dep_flags.append(word)
        elif word.startswith("-Wp,") and (wp := _wp_depfile(word)):
            flag, depfile = wp
            call.dep_flags.append(flag)
            call.dep_file = depfile
            call.preprocessor_depfile = True
        elif word.startswith("-Wp,") and "-M" in word:
            raise Unmodelled(f"dependency options in {word}", label="-Wp,-M...")
        elif word in DEP_ARG_OPTIONS or (word[:3] in DEP_ARG_OPTIONS and len(word) > 3):
            option, value = (word, take()) if word in DEP_ARG_OPTIONS else (word[:3], word[3:])
            if option == "-MF":
                call.dep_file = value
            else:
                call.dep_targets.append((option, value))
        elif word == "-nostdinc":
            call.nostdinc = True
            call.items.append(Item("opt", [word]))
        elif word in ("-Xlinker",):
            value = take()
            if value.partition("=")[0] in _LD_EXTRA_OUTPUTS:
                raise Unmodelled(f"linker option {value} writes another output", label=f"-Xlinker {value}")
            if value.startswith("@"):
                call.items.extend(_linker_response_items([value], cwd))
            else:
                call.items.append(Item("link", [word, value]))
        elif word.startswith("-Wl,") and any(part.startswith("@") for part in word.split(",")[1:]):
            call.items.extend(_linker_response_items(word.split(",")[1:], cwd))
        elif word.startswith("-Wl,"):
            call.items.append(Item("link", [word]))
        elif word == "-Xassembler" and i < len(words) and (extra := _assembler_extra_output(words[i])):
            raise Unmodelled(f"assembler option {words[i]} writes another output", label=f"-Xassembler {extra[4:]}")
        elif word in SEPARATE:
            value = take()
            kind = "link" if word in ("-T", "-u", "-z", "-e", "--entry") else "opt"
            call.items.append(Item(kind, [word, value], path=value if word in PATH_OPTIONS else None))
        elif (joined_option := _joined_path_option(word)) is not None:
            call.items.append(Item("opt", [word], path=word[len(joined_option):], joined=True))
        elif word.startswith("--sysroot="):
            call.items.append(Item("opt", [word], path=word[len("--sysroot="):], joined=True))
        elif word.startswith(JOINED_OR_SEPARATE) and not word.startswith(("-Dump", "-Long")):
            option = word[:2]
            value = word[2:] if len(word) > 2 else take()
            kind = "link" if option in ("-l", "-L") else "opt"
            path = value if option in PATH_OPTIONS else None
            call.items.append(Item(kind, [option + value] if len(word) > 2 else [option, value],
                                   path=path, joined=len(word) > 2))
        elif word in LINK_ONLY_FLAGS:
            call.items.append(Item("link" if word not in ("-pthread",) else "opt", [word]))
        elif word.startswith("-") and word != "-":
            call.items.append(Item("opt", [word]))  # unknown or plain flag: carried verbatim
        else:
            _, suffix = os.path.splitext(word)
            if suffix in HEADER_SUFFIXES and lang is None:
                raise Unmodelled("precompiled header", label="(precompiled header)")
            if lang and lang.endswith("-header"):
                raise Unmodelled("precompiled header", label="(precompiled header)")
            call.items.append(Item("input", [word], path=word, lang=lang))
    if not any(item.kind == "input" for item in call.items):
        if any(item.kind == "link" and item.words[0].startswith(("-l", "-Wl,")) for item in call.items):
            # gcc links -lNAME (and -Wl, files) without other inputs: not a query
            raise Unmodelled("link without input files", label="(link without input files)")
        raise RunReal("no input files")
    call.mode = "assemble" if saw_mode["-S"] else "compile" if saw_mode["-c"] else "link"
    if call.mode != "link" and call.output and len(call.sources) > 1:
        raise Unmodelled("-o with several sources")
    if call.mode != "link" and not call.sources:
        raise Unmodelled("compile call without sources")
    for item in call.items:
        if item.kind == "input" and os.path.basename(item.path or "").startswith("conftest"):
            raise RunReal("configure probe")
    if call.output and (call.output.startswith("/dev/") or os.path.basename(call.output).startswith("conftest")):
        raise RunReal("configure probe or output to a device")
    if call.mode == "link" and call.wants_depfile() and (len(call.sources) > 1 or not call.output):
        raise Unmodelled("dependency output from a compile-and-link call of several sources")
    return call


def _joined_path_option(word: str) -> str | None:
    """The path option ``word`` starts with, its path joined to it (``-includeconfig.h``),
    or None (the option alone, with its path in the next word, is a SEPARATE one)."""
    for option in JOINED_PATH_OPTIONS:
        if word.startswith(option) and len(word) > len(option):
            return option
    return None


def default_output(call: GccCall, source: Item) -> str:
    """The output gcc would name for ``source`` (relative to the call's cwd)."""
    if call.output:
        return call.output
    stem = os.path.splitext(os.path.basename(source.path or ""))[0]
    return stem + (".s" if call.mode == "assemble" else ".o")


def default_depfile(call: GccCall, output: str, source: Item) -> str:
    """Where -MD/-MMD write without -MF: the output with its suffix replaced by .d."""
    if call.dep_file:
        return call.dep_file
    if call.output:
        return os.path.splitext(output)[0] + ".d"
    return os.path.splitext(os.path.basename(source.path or ""))[0] + ".d"
