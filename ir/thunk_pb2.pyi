from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Function(_message.Message):
    __slots__ = ("hash", "args", "envars")
    HASH_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    ENVARS_FIELD_NUMBER: _ClassVar[int]
    hash: str
    args: _containers.RepeatedScalarFieldContainer[str]
    envars: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, hash: _Optional[str] = ..., args: _Optional[_Iterable[str]] = ..., envars: _Optional[_Iterable[str]] = ...) -> None: ...

class Link(_message.Message):
    __slots__ = ("name", "target")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    name: str
    target: str
    def __init__(self, name: _Optional[str] = ..., target: _Optional[str] = ...) -> None: ...

class Resources(_message.Message):
    __slots__ = ("memory_mib", "cpus", "disk_mib")
    MEMORY_MIB_FIELD_NUMBER: _ClassVar[int]
    CPUS_FIELD_NUMBER: _ClassVar[int]
    DISK_MIB_FIELD_NUMBER: _ClassVar[int]
    memory_mib: int
    cpus: int
    disk_mib: int
    def __init__(self, memory_mib: _Optional[int] = ..., cpus: _Optional[int] = ..., disk_mib: _Optional[int] = ...) -> None: ...

class Thunk(_message.Message):
    __slots__ = ("function", "values", "thunks", "executables", "outputs", "timeout", "links", "resources")
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    THUNKS_FIELD_NUMBER: _ClassVar[int]
    EXECUTABLES_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    LINKS_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    function: Function
    values: _containers.RepeatedScalarFieldContainer[str]
    thunks: _containers.RepeatedScalarFieldContainer[str]
    executables: _containers.RepeatedScalarFieldContainer[str]
    outputs: _containers.RepeatedScalarFieldContainer[str]
    timeout: int
    links: _containers.RepeatedCompositeFieldContainer[Link]
    resources: Resources
    def __init__(self, function: _Optional[_Union[Function, _Mapping]] = ..., values: _Optional[_Iterable[str]] = ..., thunks: _Optional[_Iterable[str]] = ..., executables: _Optional[_Iterable[str]] = ..., outputs: _Optional[_Iterable[str]] = ..., timeout: _Optional[int] = ..., links: _Optional[_Iterable[_Union[Link, _Mapping]]] = ..., resources: _Optional[_Union[Resources, _Mapping]] = ...) -> None: ...
