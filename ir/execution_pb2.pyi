from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    status_unspecified: _ClassVar[Status]
    ok: _ClassVar[Status]
    execution_failed: _ClassVar[Status]
    resource_exhausted: _ClassVar[Status]
    config_error: _ClassVar[Status]
    missing_input: _ClassVar[Status]
    infrastructure_error: _ClassVar[Status]
status_unspecified: Status
ok: Status
execution_failed: Status
resource_exhausted: Status
config_error: Status
missing_input: Status
infrastructure_error: Status

class Blob(_message.Message):
    __slots__ = ("id", "data")
    ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    id: str
    data: bytes
    def __init__(self, id: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class ExecutionRequest(_message.Message):
    __slots__ = ("version", "storage", "thunks", "blobs", "inline_values")
    class Thunk(_message.Message):
        __slots__ = ("id", "data", "timeout")
        ID_FIELD_NUMBER: _ClassVar[int]
        DATA_FIELD_NUMBER: _ClassVar[int]
        TIMEOUT_FIELD_NUMBER: _ClassVar[int]
        id: str
        data: bytes
        timeout: float
        def __init__(self, id: _Optional[str] = ..., data: _Optional[bytes] = ..., timeout: _Optional[float] = ...) -> None: ...
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STORAGE_FIELD_NUMBER: _ClassVar[int]
    THUNKS_FIELD_NUMBER: _ClassVar[int]
    BLOBS_FIELD_NUMBER: _ClassVar[int]
    INLINE_VALUES_FIELD_NUMBER: _ClassVar[int]
    version: int
    storage: str
    thunks: _containers.RepeatedCompositeFieldContainer[ExecutionRequest.Thunk]
    blobs: _containers.RepeatedCompositeFieldContainer[Blob]
    inline_values: int
    def __init__(self, version: _Optional[int] = ..., storage: _Optional[str] = ..., thunks: _Optional[_Iterable[_Union[ExecutionRequest.Thunk, _Mapping]]] = ..., blobs: _Optional[_Iterable[_Union[Blob, _Mapping]]] = ..., inline_values: _Optional[int] = ...) -> None: ...

class ExecutionResponse(_message.Message):
    __slots__ = ("version", "error", "results")
    class Output(_message.Message):
        __slots__ = ("tag", "id", "executable", "data")
        TAG_FIELD_NUMBER: _ClassVar[int]
        ID_FIELD_NUMBER: _ClassVar[int]
        EXECUTABLE_FIELD_NUMBER: _ClassVar[int]
        DATA_FIELD_NUMBER: _ClassVar[int]
        tag: str
        id: str
        executable: bool
        data: bytes
        def __init__(self, tag: _Optional[str] = ..., id: _Optional[str] = ..., executable: _Optional[bool] = ..., data: _Optional[bytes] = ...) -> None: ...
    class Created(_message.Message):
        __slots__ = ("id", "data")
        ID_FIELD_NUMBER: _ClassVar[int]
        DATA_FIELD_NUMBER: _ClassVar[int]
        id: str
        data: bytes
        def __init__(self, id: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...
    class Result(_message.Message):
        __slots__ = ("id", "status", "outputs", "created", "error", "stderr_tail", "duration", "missing")
        ID_FIELD_NUMBER: _ClassVar[int]
        STATUS_FIELD_NUMBER: _ClassVar[int]
        OUTPUTS_FIELD_NUMBER: _ClassVar[int]
        CREATED_FIELD_NUMBER: _ClassVar[int]
        ERROR_FIELD_NUMBER: _ClassVar[int]
        STDERR_TAIL_FIELD_NUMBER: _ClassVar[int]
        DURATION_FIELD_NUMBER: _ClassVar[int]
        MISSING_FIELD_NUMBER: _ClassVar[int]
        id: str
        status: Status
        outputs: _containers.RepeatedCompositeFieldContainer[ExecutionResponse.Output]
        created: _containers.RepeatedCompositeFieldContainer[ExecutionResponse.Created]
        error: str
        stderr_tail: str
        duration: float
        missing: _containers.RepeatedScalarFieldContainer[str]
        def __init__(self, id: _Optional[str] = ..., status: _Optional[_Union[Status, str]] = ..., outputs: _Optional[_Iterable[_Union[ExecutionResponse.Output, _Mapping]]] = ..., created: _Optional[_Iterable[_Union[ExecutionResponse.Created, _Mapping]]] = ..., error: _Optional[str] = ..., stderr_tail: _Optional[str] = ..., duration: _Optional[float] = ..., missing: _Optional[_Iterable[str]] = ...) -> None: ...
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    version: int
    error: str
    results: _containers.RepeatedCompositeFieldContainer[ExecutionResponse.Result]
    def __init__(self, version: _Optional[int] = ..., error: _Optional[str] = ..., results: _Optional[_Iterable[_Union[ExecutionResponse.Result, _Mapping]]] = ...) -> None: ...
