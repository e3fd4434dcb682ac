"""Command-line grammars of ar, ranlib, strip and objcopy (GNU binutils 2.40).

Parsing only: which words are options, which are files, and whether the call can be
a thunk whose output is byte-identical to what the real tool would write on the host.
Anything that cannot raises :class:`Unmodelled` with a short label for gg-infer's
summary (then the real tool runs on forced inputs).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .gcc_args import expand_response_files
from .reasons import RunReal, Unmodelled

_TOOL_NAME = re.compile(r"^(?:x86_64-linux-gnu-)?(ar|ranlib|strip|objcopy)(?:-\d+(?:\.\d+)*)?$")

AR_OPERATIONS = set("dmpqrstx")
AR_MODIFIERS = set("abcDfilMNoOPsSTuvVU")
# Modifiers of r/q a thunk reproduces exactly. Not here: U (real timestamps and owners:
# not reproducible), P (full paths: the thunk's names would be stored), T (thin: the
# archive stores member paths), l (library dependencies), M (MRI script), o/O/N (not
# for r/q).
AR_MODELLED_MODIFIERS = set("abicDsSufv")


def binutils_name(tool: str) -> str | None:
    """``ar`` for ``ar``, ``x86_64-linux-gnu-ar`` or ``ar-2.40`` (the names build systems
    use, e.g. CMake's CMAKE_AR); None for other tools."""
    match = _TOOL_NAME.match(tool)
    return match.group(1) if match else None


@dataclass
class ArCall:
    words: list[str]  # argv[1:] with response files expanded
    operation: str  # one of AR_OPERATIONS
    modifiers: set[str]
    archive_index: int  # index of the archive in ``words``
    member_indices: list[int]
    thin: bool = False
    plugin: bool = False
    other_options: list[str] = field(default_factory=list)  # --output, --record-libdeps, -l ...

    @property
    def archive(self) -> str:
        return self.words[self.archive_index]

    @property
    def members(self) -> list[str]:
        return [self.words[i] for i in self.member_indices]


def parse_ar(argv: list[str], cwd: str) -> ArCall:
    """GNU ar: the key letters in the first word (with or without a dash) or in
    separate dash words, options such as ``--plugin P``/``--target=T`` before the
    archive, then ``[relpos] [count] archive members...``."""
    words = expand_response_files(argv[1:], cwd)
    letters: list[str] = []
    thin = plugin = False
    other: list[str] = []
    positional: list[int] = []
    index = 0
    if words and not words[0].startswith("-"):
        letters += words[0]
        index = 1
    while index < len(words):
        word = words[index]
        index += 1
        if positional and word.startswith("-"):
            raise Unmodelled(f"ar option {word} after the archive", label="(option after the archive)")
        if word == "--plugin" or word.startswith("--plugin="):
            plugin = True
            index += word == "--plugin"
        elif word == "--target" or word.startswith("--target="):
            index += word == "--target"  # passed through: the thunk's ar has the same targets
        elif word in ("--output", "--record-libdeps"):
            other.append(word)
            index += 1
        elif word.startswith(("--output=", "--record-libdeps=")):
            other.append(word.partition("=")[0])
        elif word == "--thin":
            thin = True
        elif word in ("--help", "--version", "-h", "-V"):
            raise RunReal(f"query {word}")
        elif word.startswith("--"):
            raise Unmodelled(f"ar option {word}", label=word.partition("=")[0])
        elif word.startswith("-") and len(word) > 1:
            letters += word[1:]
            if "l" in word[1:]:
                other.append("-l")
                index += 1
        elif not letters and not positional:
            letters += word  # the key after leading options: ar --target=T rcs lib.a ...
        else:
            positional.append(index - 1)
    for letter in letters:
        if letter not in AR_OPERATIONS and letter not in AR_MODIFIERS:
            raise Unmodelled(f"ar: unknown key letter {letter!r}", label="(bad key)")
    if "V" in letters:
        raise RunReal("query ar V")
    operations = [c for c in letters if c in AR_OPERATIONS and c != "s"]
    if len(operations) > 1:
        raise Unmodelled("ar: more than one operation", label="(bad key)")
    operation = operations[0] if operations else ("s" if "s" in letters else "")
    if not operation:
        raise Unmodelled("ar: no operation", label="(bad key)")
    modifiers = set(letters) - {operation}
    if operation == "s" and letters.count("s") == 1:
        modifiers.discard("s")
    extra = int(bool(modifiers & set("abi")) and operation in "rm") + int("N" in modifiers and operation in "dx")
    if len(positional) <= extra:
        raise Unmodelled("ar without an archive", label="(no archive)")
    return ArCall(words, operation, modifiers, positional[extra], positional[extra + 1:],
                  thin=thin or "T" in modifiers, plugin=plugin, other_options=other)


def check_ar_modelled(call: ArCall) -> None:
    """Raise :class:`Unmodelled` unless ``call`` is an r/q (or s) a thunk reproduces."""
    if call.thin:
        raise Unmodelled("ar: thin archive", label="(thin archive)")
    if call.operation not in "rqs":
        raise Unmodelled(f"ar operation {call.operation}", label=call.operation)
    if call.plugin:
        raise Unmodelled("ar --plugin", label="--plugin")
    if call.other_options:
        raise Unmodelled(f"ar {call.other_options[0]}", label=call.other_options[0])
    odd = sorted(call.modifiers - AR_MODELLED_MODIFIERS)
    if odd:
        raise Unmodelled(f"ar modifier {''.join(odd)}", label=f"{call.operation}{''.join(odd)}")
    if "u" in call.modifiers and "D" in call.modifiers:
        raise Unmodelled("ar: u with D", label="uD")
    if call.operation == "s" and call.members:
        raise Unmodelled("ar s with members", label="s")


@dataclass
class ObjCall:
    """strip / objcopy / ranlib: options (kept in order) and positional files."""

    options: list[tuple[str, ...]]  # each option with its value words, as given
    files: list[str]
    output: str | None = None  # strip -o FILE
    file_options: list[tuple[str, str, str]] = field(default_factory=list)  # (option, value, "=" or " ")


# Options per tool: no argument; a non-file argument; a file argument (modelled: the
# file becomes a thunk input). Long options may be written --opt=VALUE or --opt VALUE.
_STRIP_FLAGS = {"-D", "--enable-deterministic-archives", "-s", "--strip-all", "-g", "-S", "-d", "--strip-debug",
                "--strip-dwo", "--strip-unneeded", "--only-keep-debug", "-M", "--merge-notes", "--no-merge-notes",
                "--keep-section-symbols", "--keep-file-symbols", "-w", "--wildcard", "-x", "--discard-all", "-X",
                "--discard-locals"}
_STRIP_VALUES = {"-I", "--input-target", "-O", "--output-target", "-F", "--target", "-R", "--remove-section",
                 "--remove-relocations", "-N", "--strip-symbol", "--keep-section", "-K", "--keep-symbol"}
_OBJCOPY_FLAGS = (_STRIP_FLAGS - {"-s", "-d"}) | {
    "--debugging", "--extract-dwo", "--extract-symbol", "--localize-hidden", "--weaken",
    "--change-leading-char", "--remove-leading-char", "--writable-text", "--readonly-text", "--pure", "--impure",
    "--decompress-debug-sections", "--compress-debug-sections", "--srec-forceS3"}
_OBJCOPY_VALUES = (_STRIP_VALUES - {"-F"}) | {
    "-F", "-B", "--binary-architecture", "-j", "--only-section", "--strip-unneeded-symbol", "-L",
    "--localize-symbol", "--globalize-symbol", "-G", "--keep-global-symbol", "-W", "--weaken-symbol",
    "--interleave-width", "-b", "--byte", "--gap-fill", "--pad-to", "--set-start", "--change-section-lma",
    "--change-section-vma", "--change-section-address", "--adjust-section-vma", "--set-section-flags",
    "--set-section-alignment", "--rename-section", "--long-section-names", "--redefine-sym", "--add-symbol",
    "--alt-machine-code", "--prefix-symbols", "--prefix-sections", "--prefix-alloc-sections", "--srec-len",
    "--change-start", "--adjust-start", "--change-addresses", "--adjust-vma", "--verilog-data-width",
    "--elf-stt-common", "--reverse-bytes", "--file-alignment", "--heap", "--image-base", "--section-alignment",
    "--stack", "--subsystem"}
_OBJCOPY_FILE_VALUES = {"--add-gnu-debuglink"}
_RANLIB_FLAGS = {"-D"}
_OPTIONAL_VALUE = {"--compress-debug-sections"}

GRAMMARS = {
    "strip": (_STRIP_FLAGS, _STRIP_VALUES, set()),
    "objcopy": (_OBJCOPY_FLAGS, _OBJCOPY_VALUES, _OBJCOPY_FILE_VALUES),
    "ranlib": (_RANLIB_FLAGS, set(), set()),
}
_QUERIES = {"-V", "--version", "-h", "--help", "--info"}


def parse_objtool(tool: str, argv: list[str], cwd: str) -> ObjCall:
    """Parse a strip/objcopy/ranlib call; unknown or unmodelled options raise."""
    flags, values, file_values = GRAMMARS[tool]
    words = expand_response_files(argv[1:], cwd)
    call = ObjCall([], [])
    index = 0
    only_files = False
    while index < len(words):
        word = words[index]
        index += 1
        if only_files or not word.startswith("-") or word == "-":
            call.files.append(word)
            continue
        if word == "--":
            only_files = True
            continue
        if word in _QUERIES:
            raise RunReal(f"query {word}")
        name, eq, value = word.partition("=") if word.startswith("--") else (word, "", "")
        if word == "-o" and tool == "strip":
            if index >= len(words):
                raise Unmodelled("strip -o without a file", label="(missing argument)")
            call.output = words[index]
            index += 1
        elif word.startswith("-o") and tool == "strip":
            call.output = word[2:]
        elif name in flags or (name in _OPTIONAL_VALUE and eq):
            call.options.append((word,))
        elif name in values:
            if eq:
                call.options.append((word,))
            elif index < len(words):
                call.options.append((word, words[index]))
                index += 1
            else:
                raise Unmodelled(f"{tool} {word} without its argument", label="(missing argument)")
        elif name in file_values and eq:
            call.file_options.append((name, value, "="))
        elif len(word) > 2 and not word.startswith("--") and word[:2] in values:
            call.options.append((word,))  # joined short option: -Rsection
        elif len(word) > 2 and not word.startswith("--") and all(f"-{c}" in flags for c in word[1:]):
            call.options.append((word,))  # bundled short flags: -gx
        else:
            raise Unmodelled(f"{tool} option {word}", label=name)
    if not call.files:
        raise Unmodelled(f"{tool} without input files", label="(no input)")
    return call
