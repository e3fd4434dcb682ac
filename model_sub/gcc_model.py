"""The gcc/g++ model: one compile or link call becomes a chain of portable thunks.

For each source, the driver arguments are mapped into thunk names (see ``paths``),
the real driver is asked with ``-###`` what it would run, and every stage command
(cc1/cc1plus -> as) becomes one thunk whose intermediate files are its outputs and the
next thunk's inputs. A link becomes one ld thunk (collect2's command without the LTO
plugin, run as ld) with every library and crt file it uses laid out under ``a/``,
which is also ld's ``--sysroot`` so the absolute paths in linker scripts resolve.
Only the last thunk of a chain gets a placeholder on disk.
"""

from __future__ import annotations

import os
import re

from ir.thunk import Input

from . import gcc_args
from .context import Inputs, ModelContext, thunk_env
from .driver import TEMP_PREFIX
from .gcc_args import GccCall, Item, Unmodelled, default_depfile, default_output, source_lang
from .libsearch import LibrarySearch
from .paths import ABS_PREFIX, ROOT_PREFIX
from .spelling import USER_MAP_OPTIONS, Spelling, with_user_maps

ENV_UNMODELLED = ("CPATH", "C_INCLUDE_PATH", "CPLUS_INCLUDE_PATH", "OBJC_INCLUDE_PATH", "LIBRARY_PATH",
                  "GCC_EXEC_PREFIX", "COMPILER_PATH", "DEPENDENCIES_OUTPUT", "SUNPRO_DEPENDENCIES")
_LD_VALUE_OPTIONS = {"-o", "-dynamic-linker", "-m", "-z", "-rpath", "-rpath-link", "-soname", "-h", "-e",
                     "--entry", "-a", "-A", "-y", "-Y", "-assert", "-F", "-f", "-G", "-u", "--undefined"}
_LD_FILE_OPTIONS = {"-T", "--script", "--version-script", "--dynamic-list", "--retain-symbols-file"}


def _is_cxx_lang(lang: str | None) -> bool:
    return lang is not None and lang.startswith("c++")


class GccModel:
    def __init__(self, ctx: ModelContext, argv: list[str], cwd: str, env: dict[str, str],
                 program: str | None = None):
        """``program``: the absolute path of the driver the build executed (``/usr/bin/c++``),
        when the preload library named it; else the driver is ``argv[0]``'s name on the
        real PATH (a PATH shim was called)."""
        self.ctx = ctx
        self.program = program
        self.argv = argv
        self.cwd = cwd
        self.env = env
        self.known: dict[str, str] = {}  # thunk name -> host path, for user-given files
        self.spelled: dict[str, str] = {}  # a name spelled as the build wrote it -> its thunk name
        self.dated_compiles = 0  # compiles whose files name a date macro, no SOURCE_DATE_EPOCH

    # -- entry --------------------------------------------------------------------

    def run(self) -> None:
        """Write thunks and placeholders, or raise :class:`Unmodelled`."""
        for name in ENV_UNMODELLED:
            if self.env.get(name):
                raise Unmodelled(f"${name} is set", label=f"(${name})")
        call = gcc_args.parse(self.argv, self.cwd)
        for item in call.items:
            if item.words[0].startswith("--sysroot") or item.option == "-isysroot":
                raise Unmodelled("--sysroot/-isysroot")
        for item in call.items:
            if item.kind == "input" and not self.ctx.isfile(os.path.join(self.cwd, item.path or "")):
                raise Unmodelled(f"input {item.path} does not exist", label="(missing input)")
            if item.option in ("-include", "-imacros") and item.path and \
                    not self.ctx.isfile(os.path.join(self.cwd, item.path)):
                # gcc then looks for it along the "..." include chain; the thunk would
                # name it by the call's directory and fail to find it
                raise Unmodelled(f"{item.option} {item.path} is not in the working directory",
                                 label=f"({item.option} found through the include path)")
        self.driver = self.ctx.toolchain.which(self.program or os.path.basename(self.argv[0]))
        if call.mode == "link":
            self._link(call)
        else:
            for source in call.sources:
                output = default_output(call, source)
                ref = self._compile(call, source, os.path.basename(output), output)
                self.ctx.place(os.path.join(self.cwd, output), ref, executable=False)
        if call.sources and call.debug_info():  # modelled: every source became a thunk
            self.ctx.note_relative_debug_dirs(len(call.sources))
        if self.dated_compiles:
            self.ctx.note_dated(self.dated_compiles)

    # -- mapping ------------------------------------------------------------------

    def _map(self, path: str) -> str:
        name = self.ctx.paths.to_thunk(path, self.cwd)
        self.known[name] = self.ctx.paths.absolute(path, self.cwd)
        return name

    def _mapped_item(self, item: Item, spelling: Spelling | None = None) -> list[str]:
        if item.path is None or item.path.startswith(("=", "$SYSROOT")):
            return list(item.words)
        mapped = self._map(item.path)
        if spelling is not None:
            mapped = self._spell(spelling, item.path, mapped, kind=item.option)
        if item.joined:
            return [item.words[0][: len(item.words[0]) - len(item.path)] + mapped]
        return [item.words[0], mapped]

    def _spell(self, spelling: Spelling, path: str, name: str, kind: str) -> str:
        """``name`` as ``spelling`` gives it for ``path``; ``kind``: ``source`` or the option."""
        if kind == "source":
            spelled = spelling.file(path, name)
        elif kind in ("-include", "-imacros"):
            spelled = spelling.forced_include(path, name)
        else:
            spelled = spelling.directory(path, name)
        if spelled != name:
            self.spelled[spelled] = name
        return spelled

    def _compile_flags(self, call: GccCall, mapped: bool, spelling: Spelling | None = None) -> list[str]:
        flags: list[str] = []
        for item in call.items:
            if item.kind != "opt" or item.words[0].startswith("-x"):
                continue
            flags += self._mapped_item(item, spelling) if mapped else list(item.words)
        return flags

    # -- compile ------------------------------------------------------------------

    def _compile(self, call: GccCall, source: Item, out_tag: str, host_output: str | None) -> str:
        """Thunks for one source; returns the ref of the object (or assembly) file."""
        lang = source_lang(source)
        family = "c++" if _is_cxx_lang(lang) else "c"
        src_name = self._map(source.path or "")
        forced = ["-x", source.lang] if source.lang and source.lang != "none" else []
        # 1. headers, from the real preprocessor with the user's own flags
        dep_args: list[str] = []
        depfile = None
        if host_output is not None and call.wants_depfile():
            depfile = default_depfile(call, host_output, source)
            dep_args = list(call.dep_flags)
            for option, target in call.dep_targets:
                dep_args += [option, target]
            if not call.dep_targets and call.output and not call.preprocessor_depfile:
                dep_args += ["-MQ", host_output]
        scan = self.ctx.scanner.scan(
            [self.driver, *self._compile_flags(call, mapped=False), *forced], self.cwd, source.path or "",
            self.env, depfile, dep_args, full_deps_in_user_file="-MD" in call.dep_flags,
        )
        # 2. the stage commands, asked of the driver with checkout-independent arguments,
        # every path spelled so that the compiler prints it as the build wrote it
        if scan.asm_reads:
            raise Unmodelled("an .include/.incbin directive: the assembler reads a file the header scan does not list",
                             label="(assembler .include/.incbin)")
        header_inputs = {Input(ident, self.ctx.paths.to_thunk(path, "/")) for path, ident in scan.files}
        if scan.dated and not self.env.get("SOURCE_DATE_EPOCH"):
            self.dated_compiles += 1
        maps = self.ctx.paths.prefix_maps(self.cwd, absolute=self._absolute_style(call, source))
        spelling = Spelling(self.ctx.paths, self.cwd, maps, {i.name for i in header_inputs} | {src_name})
        src_word = self._spell(spelling, source.path or "", src_name, kind="source")
        args = self._compile_flags(call, mapped=True, spelling=spelling)
        if not call.nostdinc:
            mflags = [w for w in args if w.startswith("-m") or w.startswith("-std=")]
            dirs = self.ctx.driver.include_dirs(self.driver, family, mflags, self.env)
            args += ["-nostdinc"]
            for directory in dirs:
                args += ["-isystem", self.ctx.paths.to_thunk(directory, "/")]
        user_maps = [w for w in args if w.startswith(USER_MAP_OPTIONS)]
        args += with_user_maps(maps + spelling.extra_maps, user_maps, os.path.normpath(self.cwd))
        args += [*_seed_args(args, src_name), "-S" if call.mode == "assemble" else "-c", *forced, src_word,
                 "-o", out_tag]
        stages = self.ctx.driver.compile_stages(self.driver, args, src_word, out_tag, self.env)
        return self._chain(stages, out_tag, header_inputs)

    def _absolute_style(self, call: GccCall, source: Item) -> bool:
        """Whether the compile names its files under the root by absolute paths.

        The compiler prints a file (``__FILE__``, ``.file``, debug names) as it found
        it: through the source's path or the ``-I``/``-include`` path that led to it.
        A thunk can print all of them relative (make) or all absolute (CMake), so a
        call that mixes the two, or names a file outside the root by a relative path
        (printed as ``../x`` by gcc, as ``/abs/x`` by the thunk), runs locally."""
        paths = [source.path or ""] + [i.path for i in call.items
                                       if i.kind == "opt" and i.path and not i.path.startswith(("=", "$SYSROOT"))
                                       and not i.words[0].startswith("--sysroot")]
        absolute = os.path.isabs(source.path or "")
        for path in paths:
            inside = self.ctx.paths.under_root(path, self.cwd)
            if not inside and not os.path.isabs(path):
                raise Unmodelled(f"relative path {path} outside the build root {self.ctx.paths.root}",
                                 label="(relative path outside the build root; see gg-infer --root)")
            if inside and os.path.isabs(path) != absolute:
                raise Unmodelled(f"absolute and relative paths mixed ({source.path}, {path})",
                                 label="(absolute and relative paths mixed)")
        return absolute

    def _chain(self, stages, out_tag: str, header_inputs: set[Input]) -> str:
        produced: dict[str, str] = {}
        for stage in stages:
            program = os.path.basename(stage.program)
            if program == "collect2" or stage.output is None:
                raise Unmodelled(f"unexpected compile stage {program}")
            portable = self.ctx.toolchain.program(stage.program)
            inputs = Inputs()
            for word in stage.argv[1:]:
                name = self.spelled.get(word, word)  # the input keeps its normalized name
                if word in produced:
                    inputs.thunks.add(Input(produced[word], word))
                elif name in self.known and self.ctx.isfile(self.known[name]):
                    self.ctx.add_file(inputs, self.known[name], name)
            if program.startswith("cc1"):
                inputs.values |= header_inputs
            ref = self.ctx.put(portable.function_hash, [*portable.argv_prefix, *stage.argv[1:]], [stage.output],
                               inputs, portable.executables, thunk_env(self.env))
            produced[stage.output] = ref
        if out_tag not in produced:
            raise Unmodelled("the driver's stages do not produce the output")
        return produced[out_tag]

    # -- link ---------------------------------------------------------------------

    def _link(self, call: GccCall) -> None:
        output = call.output or "a.out"
        out_tag = os.path.basename(output)
        objects: dict[str, str] = {}
        args: list[str] = []
        for index, item in enumerate(call.items):
            if item.kind == "input":
                if source_lang(item) is not None:
                    stem = re.sub(r"[^A-Za-z0-9_.+-]", "_", os.path.splitext(os.path.basename(item.path or ""))[0])
                    tag = f"{TEMP_PREFIX}-obj{index}-{stem}.o"
                    objects[tag] = self._compile(call, item, tag, call.output)
                    args.append(tag)
                else:
                    args.append(self._map(item.path or ""))
            elif item.words[0].startswith("-x"):
                continue
            else:
                args += self._mapped_item(item)
        args += ["-o", out_tag]
        stages = self.ctx.driver.stages(self.driver, args, self.env)
        if len(stages) != 1 or os.path.basename(stages[0].program) not in ("collect2", "ld"):
            raise Unmodelled("link stages other than one collect2")
        ld = self.ctx.toolchain.which("ld")
        ld_args, inputs = self._ld_arguments(list(stages[0].argv[1:]), ld, objects)
        portable = self.ctx.toolchain.program(ld)
        ref = self.ctx.put(portable.function_hash, [*portable.argv_prefix, *ld_args, f"--sysroot={ABS_PREFIX}"],
                           [out_tag], inputs, portable.executables, thunk_env(self.env))
        self.ctx.place(os.path.join(self.cwd, output), ref, executable=True)

    def _host_file(self, word: str) -> str | None:
        """The host file an ld argument names (absolute, or a mapped name), if any."""
        if word.startswith("/"):
            return word if self.ctx.isfile(word) else None
        if word.startswith((ROOT_PREFIX + "/", ABS_PREFIX + "/")):
            host = self.ctx.paths.to_host(word)
            return host if self.ctx.isfile(host) else None
        if word and not word.startswith("-"):
            # a relative file passed through -Wl,/-Xlinker (a version script, an archive
            # inside --whole-archive): relative to the call's directory
            host = os.path.normpath(os.path.join(self.cwd, word))
            return host if self.ctx.isfile(host) else None
        return None

    def _ld_arguments(self, words: list[str], ld: str, objects: dict[str, str]) -> tuple[list[str], Inputs]:
        inputs = Inputs()
        for tag, ref in objects.items():
            inputs.thunks.add(Input(ref, tag))
        # drop the LTO plugin: it needs gcc's lto-wrapper, and no object here is LTO
        kept: list[str] = []
        skip = False
        for word in words:
            if skip:
                skip = False
                continue
            if word == "-plugin":
                skip = True
                continue
            if word.startswith("-plugin-opt"):
                continue
            kept.append(word)
        search = LibrarySearch(self.ctx, self.driver_dirs(kept) + self.ctx.driver.linker_search_dirs(ld))
        out: list[str] = []
        static = False
        index = 0
        while index < len(kept):
            word = kept[index]
            index += 1
            if word in _LD_VALUE_OPTIONS and index < len(kept):
                out += [word, kept[index]]
                index += 1
                continue
            if word in _LD_FILE_OPTIONS and index < len(kept):
                word, value = word, kept[index]
                index += 1
                out += [word, self._ld_file(value, inputs)]
                continue
            if word.startswith("--") and "=" in word:
                option, _, value = word.partition("=")
                if option in _LD_FILE_OPTIONS:
                    out.append(f"{option}={self._ld_file(value, inputs)}")
                    continue
            if word in ("-static", "-Bstatic", "-dn", "-non_shared"):
                static = True
            elif word in ("-Bdynamic", "-dy", "-call_shared"):
                static = False
            if word == "-L" and index < len(kept):
                word = "-L" + kept[index]
                index += 1
            if word.startswith("-L"):
                directory = word[2:]
                host_dir = self.ctx.paths.to_host(directory) if not directory.startswith("/") else directory
                out.append("-L" + self.ctx.paths.to_thunk(host_dir, "/"))
                continue
            if word.startswith("-l"):
                name = word[2:] if len(word) > 2 else kept[index]
                if len(word) == 2:
                    index += 1
                found = search.find(name, static)
                if found is None:
                    raise Unmodelled(f"library -l{name} not found", label="(library not found)")
                search.add(inputs, found)
                out.append("-l" + name)
                continue
            if word in objects:
                out.append(word)
                continue
            host = self._host_file(word)
            if host is not None:
                name = self.ctx.paths.to_thunk(host, "/")
                if self.ctx.is_placeholder(host):
                    self.ctx.add_file(inputs, host, name)
                else:
                    search.add(inputs, host)
                out.append(name)
                continue
            out.append(word)
        return out, inputs

    def driver_dirs(self, words: list[str]) -> list[str]:
        dirs = []
        for index, word in enumerate(words):
            directory = None
            if word == "-L" and index + 1 < len(words):
                directory = words[index + 1]
            elif word.startswith("-L") and len(word) > 2:
                directory = word[2:]
            if directory is not None:
                dirs.append(os.path.normpath(self.ctx.paths.to_host(directory) if not directory.startswith("/")
                                             else directory))
        return dirs

    def _ld_file(self, value: str, inputs: Inputs) -> str:
        host = self._host_file(value)
        if host is None:
            return value
        name = self.ctx.paths.to_thunk(host, "/")
        self.ctx.add_file(inputs, host, name)
        return name


def _seed_args(args: list[str], src_name: str) -> list[str]:
    """``-frandom-seed=<source>`` for a thunk, so gcc's randomness is the same on every run.

    Not when the call sets its own seed: the last one counts, so ours would override the
    build's choice. Not when the call records its switches in the object
    (``-frecord-gcc-switches``, the ``.GCC.command.line`` section): ours would be recorded
    too, and every object would differ from a plain build's (found by hand, silently).
    """
    if any(w.startswith("-frandom-seed") for w in args):
        return []
    records = [w for w in args if w in ("-frecord-gcc-switches", "-fno-record-gcc-switches")]
    if records and records[-1] == "-frecord-gcc-switches":
        return []
    return [f"-frandom-seed={src_name}"]

