"""The thunk model, its canonical serialization and its validation.

A thunk file is ``MAGIC`` followed by the deterministic protobuf encoding of a
``gg.protobuf.Thunk``. Input lists are sorted before encoding, so the same thunk
assembled in any order has the same bytes and therefore the same ID. Parsing checks
everything the executor later relies on and fails with one specific line, because a
malformed thunk found deep inside a forced graph must be reported, not crash a run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from sys import intern

from google.protobuf.message import DecodeError

from . import thunk_pb2
from .ids import MAGIC, InvalidId, Kind, Ref, id_of_bytes, parse_id, parse_ref, validate_tag
from .input_lists import inputs_certainly_valid, tags_certainly_valid

_UINT32 = 1 << 32
_UINT64 = 1 << 64


class MalformedThunk(ValueError):
    """A thunk that cannot be parsed or would not be safe to execute."""


def validate_input_name(name: str) -> str:
    """Input names become paths inside the work directory: they may not leave it."""
    if not name:
        raise MalformedThunk("empty input name")
    if "\0" in name:
        raise MalformedThunk(f"input name {name!r} contains a NUL byte")
    # Plain string tests (not PurePosixPath): this runs for every input of every thunk.
    if name.startswith("/"):
        raise MalformedThunk(f"input name {name!r} is absolute")
    if ".." in name.split("/"):
        raise MalformedThunk(f"input name {name!r} escapes the work directory")
    return name


@dataclass(frozen=True, order=True)
class Input:
    """One input: a reference (``ID`` or ``THUNK#tag``) laid out under ``name``."""

    ref: str
    name: str = ""

    def __str__(self) -> str:
        return f"{self.ref}={self.name}" if self.name else self.ref

    @property
    def parsed(self) -> Ref:
        return parse_ref(self.ref)

    @property
    def id(self) -> str:
        return self.ref.partition("#")[0]

    @classmethod
    def parse(cls, text: str) -> Input:
        ref, sep, name = text.partition("=")
        try:
            parse_ref(ref)
        except InvalidId as exc:
            raise MalformedThunk(str(exc)) from None
        if sep:
            validate_input_name(name)
        return cls(ref, name)


@dataclass(frozen=True, order=True)
class Link:
    name: str
    target: str


@dataclass(frozen=True)
class Resources:
    """What the function asks of the machine; 0 means no claim."""

    memory_mib: int = 0
    cpus: int = 0
    disk_mib: int = 0

    def __bool__(self) -> bool:
        return bool(self.memory_mib or self.cpus or self.disk_mib)


@dataclass(frozen=True)
class Thunk:
    """A function application waiting to happen. Immutable: rewriting makes a new one."""

    function_hash: str
    args: tuple[str, ...]
    outputs: tuple[str, ...]
    envars: tuple[str, ...] = ()
    values: tuple[Input, ...] = ()
    thunks: tuple[Input, ...] = ()
    executables: tuple[Input, ...] = ()
    timeout_ms: int = 0
    links: tuple[Link, ...] = ()
    resources: Resources = field(default_factory=Resources)

    def canonical(self) -> Thunk:
        """The same thunk with every order-free list in its canonical order."""
        return replace(
            self,
            args=tuple(self.args),
            outputs=tuple(self.outputs),
            envars=tuple(self.envars),
            values=_canonical_inputs(self.values),
            thunks=_canonical_inputs(self.thunks),
            executables=_canonical_inputs(self.executables),
            links=tuple(sorted(set(self.links))),
        )

    def serialize(self) -> bytes:
        """Validated, canonical thunk-file bytes (``MAGIC`` + protobuf).

        Remembered on the instance (a thunk is immutable): the Lambda engine asks twice
        per job, and ``id`` asks again. The message is checked by the same whole-list
        checks as a loaded thunk; only a thunk they do not vouch for pays for
        :meth:`validate`, which then names the problem.
        """
        encoded = self.__dict__.get("_encoded")
        if encoded is not None:
            return encoded
        values, thunks, executables = (_encode_inputs(self.values), _encode_inputs(self.thunks),
                                       _encode_inputs(self.executables))
        if self.links or not _certainly_valid(self.function_hash, bool(self.args), self.envars, self.outputs,
                                              values, thunks, executables):
            self.canonical().validate()
        else:
            self._validate_numbers()  # the encoder would fail on these with a bare ValueError
        msg = self._message(values, thunks, executables, sorted(set(self.links)))
        encoded = MAGIC + msg.SerializeToString(deterministic=True)
        self.__dict__["_encoded"] = encoded
        return encoded

    @property
    def id(self) -> str:
        return id_of_bytes(self.serialize(), Kind.THUNK)

    def to_proto(self) -> thunk_pb2.Thunk:
        """The message of this thunk's lists as they are (:meth:`serialize` canonicalizes)."""
        return self._message([str(i) for i in self.values], [str(i) for i in self.thunks],
                             [str(i) for i in self.executables], self.links)

    def _message(
        self, values: list[str], thunks: list[str], executables: list[str], links: Iterable[Link]
    ) -> thunk_pb2.Thunk:
        """The message with these encoded input lists and links (the other fields as they are)."""
        msg = thunk_pb2.Thunk()
        function = msg.function
        function.hash = self.function_hash
        function.args.extend(self.args)
        function.envars.extend(self.envars)
        msg.values.extend(values)
        msg.thunks.extend(thunks)
        msg.executables.extend(executables)
        msg.outputs.extend(self.outputs)
        msg.timeout = self.timeout_ms
        for link in links:
            msg.links.add(name=link.name, target=link.target)
        resources = self.resources
        if resources:
            msg.resources.memory_mib = resources.memory_mib
            msg.resources.cpus = resources.cpus
            msg.resources.disk_mib = resources.disk_mib
        return msg

    @classmethod
    def from_proto(cls, msg: thunk_pb2.Thunk) -> Thunk:
        return cls(
            function_hash=msg.function.hash,
            args=tuple(msg.function.args),
            envars=tuple(msg.function.envars),
            values=_parse_inputs("values", msg.values),
            thunks=_parse_inputs("thunks", msg.thunks),
            executables=_parse_inputs("executables", msg.executables),
            outputs=tuple(msg.outputs),
            timeout_ms=msg.timeout,
            links=tuple(Link(link.name, link.target) for link in msg.links),
            resources=Resources(
                msg.resources.memory_mib, msg.resources.cpus, msg.resources.disk_mib
            ),
        )

    def validate(self) -> None:
        """Raise :class:`MalformedThunk` with the first problem found."""
        if not self.function_hash:
            raise MalformedThunk("thunk has no function")
        try:
            function = parse_id(self.function_hash)
        except InvalidId as exc:
            raise MalformedThunk(f"function: {exc}") from None
        if function.is_thunk:
            raise MalformedThunk("function hash names a thunk, not an executable value")
        if not self.args:
            raise MalformedThunk("thunk has no args (args[0] is argv0)")
        if not self.outputs:
            raise MalformedThunk("thunk has no outputs")
        if not self.executables:
            raise MalformedThunk("thunk has no executables")
        self._validate_numbers()
        seen: set[str] = set()
        for tag in self.outputs:
            try:
                validate_tag(tag)
            except InvalidId as exc:
                raise MalformedThunk(str(exc)) from None
            if tag in seen:
                raise MalformedThunk(f"duplicate output tag {tag!r}")
            seen.add(tag)
        for envar in self.envars:
            if "=" not in envar or envar.startswith("="):
                raise MalformedThunk(f"environment entry {envar!r} is not NAME=VALUE")
        self._validate_inputs()
        if self.function_hash not in {i.id for i in self.executables}:
            raise MalformedThunk(f"function {self.function_hash} is not among the executables")
        validate_links(self)

    def _validate_numbers(self) -> None:
        """Range checks the protobuf encoder would otherwise fail with a bare ValueError."""
        limits = (
            ("timeout", self.timeout_ms, _UINT64),
            ("memory hint", self.resources.memory_mib, _UINT32),
            ("cpus hint", self.resources.cpus, _UINT32),
            ("disk hint", self.resources.disk_mib, _UINT64),
        )
        for what, number, limit in limits:
            if not isinstance(number, int) or isinstance(number, bool):
                raise MalformedThunk(f"{what} {number!r} is not an integer")
            if not 0 <= number < limit:
                raise MalformedThunk(f"{what} {number} is out of range (0 to {limit - 1})")

    def _validate_inputs(self) -> None:
        names: dict[str, str] = {}
        for field_name, group, want_thunk in (
            ("values", self.values, False),
            ("executables", self.executables, False),
            ("thunks", self.thunks, True),
        ):
            for item in group:
                # The parts of Input.parse, without formatting and splitting the text again
                # (parse_ref is interned: this runs for every input of every thunk loaded).
                try:
                    ref = parse_ref(item.ref)
                    if item.name:
                        validate_input_name(item.name)
                except (InvalidId, MalformedThunk) as exc:
                    raise MalformedThunk(f"{field_name}: {exc}") from None
                if ref.is_thunk != want_thunk:
                    kind = "thunk" if want_thunk else "value"
                    raise MalformedThunk(f"input {item} is listed as a {kind} but is not one")
                if item.name:
                    other = names.setdefault(item.name, item.ref)
                    if other != item.ref:
                        raise MalformedThunk(
                            f"input name {item.name!r} is given to both {other} and {item.ref}"
                        )

def validate_links(thunk: Thunk) -> None:
    """Links are symbolic links the executor makes in the work directory. They may only
    name what is laid out there: an input, a directory of inputs, or another link —
    never an absolute path or a path out of the work directory. No input, output or link
    may lie *behind* a link (``--link d=x --output d/y``): the executor would have to
    follow the link to reach it. Called on every validation and again before execution.
    """
    if not thunk.links:
        return
    links = {_plain(link.name) for link in thunk.links}
    inputs = {_plain(item.name) for item in (*thunk.values, *thunk.thunks, *thunk.executables) if item.name}
    directories = {name[:i] for name in inputs for i, char in enumerate(name) if char == "/"}

    def behind_a_link(path: str) -> str | None:
        return next((path[:i] for i, char in enumerate(path) if char == "/" and path[:i] in links), None)

    for what, paths in (("input", inputs), ("output", thunk.outputs), ("link", links)):
        for path in paths:
            through = behind_a_link(path)
            if through is not None:
                raise MalformedThunk(f"{what} {path!r} lies behind link {through!r}")
            if what != "link" and path in links:
                raise MalformedThunk(f"{what} {path!r} is also a link")
    for link in thunk.links:
        validate_input_name(link.name)
        target = _link_destination(link, links)
        if target not in inputs and target not in directories and target not in links:
            raise MalformedThunk(f"link {link.name!r} -> {link.target!r} names no input")


def _plain(name: str) -> str:
    """``name`` without ``.`` and empty components (``./a//b`` is laid out at ``a/b``)."""
    return "/".join(part for part in name.split("/") if part not in ("", "."))


def _link_destination(link: Link, links: set[str]) -> str:
    """Where ``link.target`` points, as a work-directory path (resolved lexically)."""
    where = f"link {link.name!r} -> {link.target!r}"
    if not link.target or "\0" in link.target:
        raise MalformedThunk(f"{where}: empty or NUL in target")
    if link.target.startswith("/"):
        raise MalformedThunk(f"{where}: absolute target")
    stack = _plain(link.name).split("/")[:-1]
    parts = [part for part in link.target.split("/") if part not in ("", ".")]
    for index, part in enumerate(parts):
        if part == "..":
            if not stack:
                raise MalformedThunk(f"{where}: target leaves the work directory")
            stack.pop()
            continue
        stack.append(part)
        if index < len(parts) - 1 and "/".join(stack) in links:
            raise MalformedThunk(f"{where}: target goes through link {'/'.join(stack)!r}")
    if not stack:
        raise MalformedThunk(f"{where}: target is the work directory itself")
    return "/".join(stack)


def _parse_inputs(field_name: str, texts: Iterable[str]) -> tuple[Input, ...]:
    """Parse one input list, naming the field in any error."""
    try:
        return tuple(Input.parse(text) for text in texts)
    except MalformedThunk as exc:
        raise MalformedThunk(f"{field_name}: {exc}") from None


def _canonical_inputs(items: Iterable[Input]) -> tuple[Input, ...]:
    """``tuple(sorted(set(items)))``, compared as (ref, name) tuples in C rather than by
    the dataclass's generated methods (the same order and the same equality)."""
    unique = {(item.ref, item.name): item for item in items}
    return tuple(unique[key] for key in sorted(unique))


def _encode_inputs(items: Iterable[Input]) -> list[str]:
    """The canonical list of ``REF`` / ``REF=NAME`` strings for one input list."""
    return [ref + "=" + name if name else ref for ref, name in sorted({(i.ref, i.name) for i in items})]


def _input(text: str) -> Input:
    """An already validated ``REF`` / ``REF=NAME`` string as an :class:`Input`."""
    ref, _, name = text.partition("=")
    return Input(ref, name)


def _certainly_valid(
    function_hash: str,
    has_args: bool,
    envars: Sequence[str],
    outputs: Sequence[str],
    values: Sequence[str],
    thunks: Sequence[str],
    executables: Sequence[str],
) -> bool:
    """True if a thunk without links made of these (encoded) lists passes every check
    of :meth:`Thunk.validate` but the numeric ranges; False if only those checks can tell
    (an unusual list, or a real problem, which they then name)."""
    if not has_args or not tags_certainly_valid(outputs):
        return False
    for envar in envars:
        if "=" not in envar or envar[0] == "=":
            return False
    return inputs_certainly_valid(function_hash, values, thunks, executables)


def _lazy_thunk(msg: thunk_pb2.Thunk, data: bytes) -> Thunk | None:
    """A :class:`Thunk` of file ``data`` (parsed as ``msg``) with the fields every user
    reads decoded, if the whole-list checks vouch for it; None if the full checks must
    run. Fields are read with one ``ListFields`` (each attribute read of a upb message
    builds a wrapper object: about a microsecond per field)."""
    present = {field.number: value for field, value in msg.ListFields()}
    if _LINKS in present or _FUNCTION not in present:
        return None
    function = {field.number: value for field, value in present[_FUNCTION].ListFields()}
    function_hash = function.get(_HASH, "")
    outputs = tuple(present.get(_OUTPUTS, ()))
    thunks = present.get(_THUNKS, ())
    if not _certainly_valid(function_hash, _ARGS in function, function.get(_ENVARS, ()), outputs,
                            present.get(_VALUES, ()), thunks, present.get(_EXECUTABLES, ())):
        return None
    thunk = object.__new__(Thunk)
    fields = thunk.__dict__
    # Interned: a graph has few functions and output tags, and a scheduler may hold a
    # hundred thousand loaded thunks at once.
    fields["function_hash"] = intern(function_hash)
    fields["outputs"] = tuple(map(intern, outputs))
    fields["timeout_ms"] = present.get(_TIMEOUT, 0)
    fields["thunks"] = tuple(map(_input, thunks))
    fields["_data"] = data
    return thunk


# Field numbers of gg.protobuf.Thunk and Function (ir/thunk.proto), for ListFields.
_FUNCTION, _VALUES, _THUNKS, _EXECUTABLES, _OUTPUTS, _TIMEOUT, _LINKS = 1, 2, 3, 4, 5, 6, 7
_HASH, _ARGS, _ENVARS = 1, 2, 3


class _Decoded:
    """A field of a thunk made by :func:`parse_thunk` that is decoded only when read.

    Loading a thunk is most of what a scheduler does per node, and it reads only a few
    fields of most thunks (outputs, dependencies, the function); those are decoded on
    load. The file's bytes are kept instead of the rest (a fraction of the memory of a
    decoded message or of the fields), and the first read of any other field decodes
    them all into the instance. A non-data descriptor, so a thunk made by the
    constructor (every field in its ``__dict__``) never reaches it, and
    ``dataclasses.replace``, equality and hashing see plain fields either way.
    """

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __get__(self, thunk: Thunk | None, owner: type | None = None) -> object:
        if thunk is None:
            return self
        fields = thunk.__dict__
        data = fields.get("_data")
        if data is None:  # another thread decoded them between the lookup and here
            return fields[self.name]
        msg = thunk_pb2.Thunk()
        msg.ParseFromString(data[len(MAGIC) :])  # parsed once already: cannot fail
        for name, decode in _DECODERS.items():
            fields.setdefault(name, decode(msg))  # a frozen dataclass: set like cached_property does
        fields.pop("_data", None)
        return fields[self.name]


_NO_RESOURCES = Resources()
_DECODERS: dict[str, Callable[[thunk_pb2.Thunk], object]] = {
    "args": lambda msg: tuple(msg.function.args),
    "envars": lambda msg: tuple(msg.function.envars),
    "values": lambda msg: tuple(map(_input, msg.values)),
    "executables": lambda msg: tuple(map(_input, msg.executables)),
    "links": lambda msg: tuple(Link(link.name, link.target) for link in msg.links),
    "resources": lambda msg: (
        Resources(msg.resources.memory_mib, msg.resources.cpus, msg.resources.disk_mib)
        if msg.HasField("resources") else _NO_RESOURCES
    ),
}
for _name in _DECODERS:
    setattr(Thunk, _name, _Decoded(_name))


def parse_thunk(data: bytes, where: str = "thunk", expected_id: str | None = None) -> Thunk:
    """Parse thunk-file bytes; every problem becomes one :class:`MalformedThunk` line.

    A file cut exactly at a field boundary can still decode as a (different, valid
    looking) protobuf message, so pass ``expected_id`` whenever the thunk's ID is known
    (the store always does): its size and digest catch any truncation or corruption.

    A thunk the whole-list checks vouch for is decoded lazily (see :class:`_Decoded`);
    any other goes through :meth:`Thunk.from_proto` and :meth:`Thunk.validate`, which
    accept it or say what is wrong.
    """
    if not data.startswith(MAGIC):
        if MAGIC.startswith(data):
            raise MalformedThunk(f"{where}: truncated thunk file ({len(data)} bytes, inside the header)")
        raise MalformedThunk(f"{where}: not a thunk file (no {MAGIC.decode()} header)")
    if expected_id is not None:
        _check_against_id(data, where, expected_id)
    msg = thunk_pb2.Thunk()
    try:
        msg.ParseFromString(data[len(MAGIC) :])
    except DecodeError:
        raise MalformedThunk(f"{where}: truncated or corrupt thunk encoding") from None
    thunk = _lazy_thunk(msg, data)
    if thunk is not None:
        return thunk
    try:
        thunk = Thunk.from_proto(msg)
        thunk.validate()
    except MalformedThunk as exc:
        raise MalformedThunk(f"{where}: {exc}") from None
    return thunk


def _check_against_id(data: bytes, where: str, expected_id: str) -> None:
    try:
        expected = parse_id(expected_id)
    except InvalidId as exc:
        raise MalformedThunk(f"{where}: {exc}") from None
    if not expected.is_thunk:
        raise MalformedThunk(f"{where}: {expected_id} is a value ID, not a thunk ID")
    if len(data) < expected.size:
        raise MalformedThunk(f"{where}: truncated thunk file ({len(data)} of {expected.size} bytes)")
    actual = id_of_bytes(data, Kind.THUNK, expected.algorithm)
    if actual != expected_id:
        raise MalformedThunk(f"{where}: content hashes to {actual}, not {expected_id}")
