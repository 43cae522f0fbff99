import datetime

from aios.access.v1 import access_service_pb2 as _access_service_pb2
from aios.common.v1 import llm_pb2 as _llm_pb2
from aios.memory.v1 import memory_service_pb2 as _memory_service_pb2
from aios.storage.v1 import storage_service_pb2 as _storage_service_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SyscallKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SYSCALL_KIND_UNSPECIFIED: _ClassVar[SyscallKind]
    SYSCALL_KIND_LLM: _ClassVar[SyscallKind]
    SYSCALL_KIND_MEMORY: _ClassVar[SyscallKind]
    SYSCALL_KIND_STORAGE: _ClassVar[SyscallKind]
    SYSCALL_KIND_TOOL: _ClassVar[SyscallKind]
    SYSCALL_KIND_EMBED: _ClassVar[SyscallKind]

class SyscallState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SYSCALL_STATE_UNSPECIFIED: _ClassVar[SyscallState]
    SYSCALL_STATE_QUEUED: _ClassVar[SyscallState]
    SYSCALL_STATE_RUNNING: _ClassVar[SyscallState]
    SYSCALL_STATE_PREEMPTED: _ClassVar[SyscallState]
    SYSCALL_STATE_AWAITING_CONFIRMATION: _ClassVar[SyscallState]
    SYSCALL_STATE_SUCCEEDED: _ClassVar[SyscallState]
    SYSCALL_STATE_FAILED: _ClassVar[SyscallState]
    SYSCALL_STATE_CANCELLED: _ClassVar[SyscallState]
SYSCALL_KIND_UNSPECIFIED: SyscallKind
SYSCALL_KIND_LLM: SyscallKind
SYSCALL_KIND_MEMORY: SyscallKind
SYSCALL_KIND_STORAGE: SyscallKind
SYSCALL_KIND_TOOL: SyscallKind
SYSCALL_KIND_EMBED: SyscallKind
SYSCALL_STATE_UNSPECIFIED: SyscallState
SYSCALL_STATE_QUEUED: SyscallState
SYSCALL_STATE_RUNNING: SyscallState
SYSCALL_STATE_PREEMPTED: SyscallState
SYSCALL_STATE_AWAITING_CONFIRMATION: SyscallState
SYSCALL_STATE_SUCCEEDED: SyscallState
SYSCALL_STATE_FAILED: SyscallState
SYSCALL_STATE_CANCELLED: SyscallState

class Syscall(_message.Message):
    __slots__ = ("request_id", "session_id", "priority", "deadline", "llm", "memory", "storage", "tool", "embed")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    LLM_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    STORAGE_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    EMBED_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    session_id: str
    priority: int
    deadline: _timestamp_pb2.Timestamp
    llm: _llm_pb2.LlmCall
    memory: MemoryCall
    storage: StorageCall
    tool: ToolCall
    embed: EmbedCall
    def __init__(self, request_id: _Optional[str] = ..., session_id: _Optional[str] = ..., priority: _Optional[int] = ..., deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., llm: _Optional[_Union[_llm_pb2.LlmCall, _Mapping]] = ..., memory: _Optional[_Union[MemoryCall, _Mapping]] = ..., storage: _Optional[_Union[StorageCall, _Mapping]] = ..., tool: _Optional[_Union[ToolCall, _Mapping]] = ..., embed: _Optional[_Union[EmbedCall, _Mapping]] = ...) -> None: ...

class MemoryCall(_message.Message):
    __slots__ = ("add", "batch_add", "get", "update", "delete", "list", "search")
    ADD_FIELD_NUMBER: _ClassVar[int]
    BATCH_ADD_FIELD_NUMBER: _ClassVar[int]
    GET_FIELD_NUMBER: _ClassVar[int]
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    LIST_FIELD_NUMBER: _ClassVar[int]
    SEARCH_FIELD_NUMBER: _ClassVar[int]
    add: _memory_service_pb2.AddMemoryRequest
    batch_add: _memory_service_pb2.BatchAddMemoriesRequest
    get: _memory_service_pb2.GetMemoryRequest
    update: _memory_service_pb2.UpdateMemoryRequest
    delete: _memory_service_pb2.DeleteMemoryRequest
    list: _memory_service_pb2.ListMemoriesRequest
    search: _memory_service_pb2.SearchMemoriesRequest
    def __init__(self, add: _Optional[_Union[_memory_service_pb2.AddMemoryRequest, _Mapping]] = ..., batch_add: _Optional[_Union[_memory_service_pb2.BatchAddMemoriesRequest, _Mapping]] = ..., get: _Optional[_Union[_memory_service_pb2.GetMemoryRequest, _Mapping]] = ..., update: _Optional[_Union[_memory_service_pb2.UpdateMemoryRequest, _Mapping]] = ..., delete: _Optional[_Union[_memory_service_pb2.DeleteMemoryRequest, _Mapping]] = ..., list: _Optional[_Union[_memory_service_pb2.ListMemoriesRequest, _Mapping]] = ..., search: _Optional[_Union[_memory_service_pb2.SearchMemoriesRequest, _Mapping]] = ...) -> None: ...

class MemoryResult(_message.Message):
    __slots__ = ("add", "batch_add", "get", "update", "delete", "list", "search")
    ADD_FIELD_NUMBER: _ClassVar[int]
    BATCH_ADD_FIELD_NUMBER: _ClassVar[int]
    GET_FIELD_NUMBER: _ClassVar[int]
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    LIST_FIELD_NUMBER: _ClassVar[int]
    SEARCH_FIELD_NUMBER: _ClassVar[int]
    add: _memory_service_pb2.AddMemoryResponse
    batch_add: _memory_service_pb2.BatchAddMemoriesResponse
    get: _memory_service_pb2.GetMemoryResponse
    update: _memory_service_pb2.UpdateMemoryResponse
    delete: _memory_service_pb2.DeleteMemoryResponse
    list: _memory_service_pb2.ListMemoriesResponse
    search: _memory_service_pb2.SearchMemoriesResponse
    def __init__(self, add: _Optional[_Union[_memory_service_pb2.AddMemoryResponse, _Mapping]] = ..., batch_add: _Optional[_Union[_memory_service_pb2.BatchAddMemoriesResponse, _Mapping]] = ..., get: _Optional[_Union[_memory_service_pb2.GetMemoryResponse, _Mapping]] = ..., update: _Optional[_Union[_memory_service_pb2.UpdateMemoryResponse, _Mapping]] = ..., delete: _Optional[_Union[_memory_service_pb2.DeleteMemoryResponse, _Mapping]] = ..., list: _Optional[_Union[_memory_service_pb2.ListMemoriesResponse, _Mapping]] = ..., search: _Optional[_Union[_memory_service_pb2.SearchMemoriesResponse, _Mapping]] = ...) -> None: ...

class WriteFileInline(_message.Message):
    __slots__ = ("owner", "path", "content", "content_type", "if_version_id")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    IF_VERSION_ID_FIELD_NUMBER: _ClassVar[int]
    owner: str
    path: str
    content: bytes
    content_type: str
    if_version_id: str
    def __init__(self, owner: _Optional[str] = ..., path: _Optional[str] = ..., content: _Optional[bytes] = ..., content_type: _Optional[str] = ..., if_version_id: _Optional[str] = ...) -> None: ...

class ShareFileRequest(_message.Message):
    __slots__ = ("path", "grantee", "permission", "ttl")
    PATH_FIELD_NUMBER: _ClassVar[int]
    GRANTEE_FIELD_NUMBER: _ClassVar[int]
    PERMISSION_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    path: str
    grantee: str
    permission: _access_service_pb2.Permission
    ttl: _duration_pb2.Duration
    def __init__(self, path: _Optional[str] = ..., grantee: _Optional[str] = ..., permission: _Optional[_Union[_access_service_pb2.Permission, str]] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class StorageCall(_message.Message):
    __slots__ = ("write", "read", "stat", "list", "delete", "list_versions", "rollback", "retrieve", "presign", "share")
    WRITE_FIELD_NUMBER: _ClassVar[int]
    READ_FIELD_NUMBER: _ClassVar[int]
    STAT_FIELD_NUMBER: _ClassVar[int]
    LIST_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    LIST_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    ROLLBACK_FIELD_NUMBER: _ClassVar[int]
    RETRIEVE_FIELD_NUMBER: _ClassVar[int]
    PRESIGN_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    write: WriteFileInline
    read: _storage_service_pb2.ReadFileRequest
    stat: _storage_service_pb2.StatFileRequest
    list: _storage_service_pb2.ListFilesRequest
    delete: _storage_service_pb2.DeleteFileRequest
    list_versions: _storage_service_pb2.ListFileVersionsRequest
    rollback: _storage_service_pb2.RollbackFileRequest
    retrieve: _storage_service_pb2.RetrieveFilesRequest
    presign: _storage_service_pb2.PresignFileRequest
    share: ShareFileRequest
    def __init__(self, write: _Optional[_Union[WriteFileInline, _Mapping]] = ..., read: _Optional[_Union[_storage_service_pb2.ReadFileRequest, _Mapping]] = ..., stat: _Optional[_Union[_storage_service_pb2.StatFileRequest, _Mapping]] = ..., list: _Optional[_Union[_storage_service_pb2.ListFilesRequest, _Mapping]] = ..., delete: _Optional[_Union[_storage_service_pb2.DeleteFileRequest, _Mapping]] = ..., list_versions: _Optional[_Union[_storage_service_pb2.ListFileVersionsRequest, _Mapping]] = ..., rollback: _Optional[_Union[_storage_service_pb2.RollbackFileRequest, _Mapping]] = ..., retrieve: _Optional[_Union[_storage_service_pb2.RetrieveFilesRequest, _Mapping]] = ..., presign: _Optional[_Union[_storage_service_pb2.PresignFileRequest, _Mapping]] = ..., share: _Optional[_Union[ShareFileRequest, _Mapping]] = ...) -> None: ...

class ReadFileResult(_message.Message):
    __slots__ = ("info", "content")
    INFO_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    info: _storage_service_pb2.FileInfo
    content: bytes
    def __init__(self, info: _Optional[_Union[_storage_service_pb2.FileInfo, _Mapping]] = ..., content: _Optional[bytes] = ...) -> None: ...

class StorageResult(_message.Message):
    __slots__ = ("write", "read", "stat", "list", "delete", "list_versions", "rollback", "retrieve", "presign", "share")
    WRITE_FIELD_NUMBER: _ClassVar[int]
    READ_FIELD_NUMBER: _ClassVar[int]
    STAT_FIELD_NUMBER: _ClassVar[int]
    LIST_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    LIST_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    ROLLBACK_FIELD_NUMBER: _ClassVar[int]
    RETRIEVE_FIELD_NUMBER: _ClassVar[int]
    PRESIGN_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    write: _storage_service_pb2.WriteFileResponse
    read: ReadFileResult
    stat: _storage_service_pb2.StatFileResponse
    list: _storage_service_pb2.ListFilesResponse
    delete: _storage_service_pb2.DeleteFileResponse
    list_versions: _storage_service_pb2.ListFileVersionsResponse
    rollback: _storage_service_pb2.RollbackFileResponse
    retrieve: _storage_service_pb2.RetrieveFilesResponse
    presign: _storage_service_pb2.PresignFileResponse
    share: _access_service_pb2.Grant
    def __init__(self, write: _Optional[_Union[_storage_service_pb2.WriteFileResponse, _Mapping]] = ..., read: _Optional[_Union[ReadFileResult, _Mapping]] = ..., stat: _Optional[_Union[_storage_service_pb2.StatFileResponse, _Mapping]] = ..., list: _Optional[_Union[_storage_service_pb2.ListFilesResponse, _Mapping]] = ..., delete: _Optional[_Union[_storage_service_pb2.DeleteFileResponse, _Mapping]] = ..., list_versions: _Optional[_Union[_storage_service_pb2.ListFileVersionsResponse, _Mapping]] = ..., rollback: _Optional[_Union[_storage_service_pb2.RollbackFileResponse, _Mapping]] = ..., retrieve: _Optional[_Union[_storage_service_pb2.RetrieveFilesResponse, _Mapping]] = ..., presign: _Optional[_Union[_storage_service_pb2.PresignFileResponse, _Mapping]] = ..., share: _Optional[_Union[_access_service_pb2.Grant, _Mapping]] = ...) -> None: ...

class EmbedCall(_message.Message):
    __slots__ = ("model", "inputs")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    model: str
    inputs: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model: _Optional[str] = ..., inputs: _Optional[_Iterable[str]] = ...) -> None: ...

class Vector(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class EmbedResult(_message.Message):
    __slots__ = ("embeddings", "dimensions", "model")
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    embeddings: _containers.RepeatedCompositeFieldContainer[Vector]
    dimensions: int
    model: str
    def __init__(self, embeddings: _Optional[_Iterable[_Union[Vector, _Mapping]]] = ..., dimensions: _Optional[int] = ..., model: _Optional[str] = ...) -> None: ...

class ToolCall(_message.Message):
    __slots__ = ("name", "arguments", "tool_call_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    arguments: _struct_pb2.Struct
    tool_call_id: str
    def __init__(self, name: _Optional[str] = ..., arguments: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., tool_call_id: _Optional[str] = ...) -> None: ...

class ToolResult(_message.Message):
    __slots__ = ("output", "tool_call_id")
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_ID_FIELD_NUMBER: _ClassVar[int]
    output: str
    tool_call_id: str
    def __init__(self, output: _Optional[str] = ..., tool_call_id: _Optional[str] = ...) -> None: ...

class SyscallError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class SyscallRecord(_message.Message):
    __slots__ = ("id", "request_id", "agent", "session_id", "kind", "resource", "state", "priority", "create_time", "queue_time", "start_time", "finish_time", "deadline", "waiting", "turnaround", "preemptions", "usage", "error", "confirmation_id", "parent_id", "cost", "trace_id", "llm", "memory", "storage", "tool", "embed")
    ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    QUEUE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    FINISH_TIME_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    WAITING_FIELD_NUMBER: _ClassVar[int]
    TURNAROUND_FIELD_NUMBER: _ClassVar[int]
    PREEMPTIONS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CONFIRMATION_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_ID_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    LLM_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    STORAGE_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    EMBED_FIELD_NUMBER: _ClassVar[int]
    id: str
    request_id: str
    agent: str
    session_id: str
    kind: SyscallKind
    resource: str
    state: SyscallState
    priority: int
    create_time: _timestamp_pb2.Timestamp
    queue_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    finish_time: _timestamp_pb2.Timestamp
    deadline: _timestamp_pb2.Timestamp
    waiting: _duration_pb2.Duration
    turnaround: _duration_pb2.Duration
    preemptions: int
    usage: _llm_pb2.Usage
    error: SyscallError
    confirmation_id: str
    parent_id: str
    cost: float
    trace_id: str
    llm: _llm_pb2.Completion
    memory: MemoryResult
    storage: StorageResult
    tool: ToolResult
    embed: EmbedResult
    def __init__(self, id: _Optional[str] = ..., request_id: _Optional[str] = ..., agent: _Optional[str] = ..., session_id: _Optional[str] = ..., kind: _Optional[_Union[SyscallKind, str]] = ..., resource: _Optional[str] = ..., state: _Optional[_Union[SyscallState, str]] = ..., priority: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., queue_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., waiting: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., turnaround: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., preemptions: _Optional[int] = ..., usage: _Optional[_Union[_llm_pb2.Usage, _Mapping]] = ..., error: _Optional[_Union[SyscallError, _Mapping]] = ..., confirmation_id: _Optional[str] = ..., parent_id: _Optional[str] = ..., cost: _Optional[float] = ..., trace_id: _Optional[str] = ..., llm: _Optional[_Union[_llm_pb2.Completion, _Mapping]] = ..., memory: _Optional[_Union[MemoryResult, _Mapping]] = ..., storage: _Optional[_Union[StorageResult, _Mapping]] = ..., tool: _Optional[_Union[ToolResult, _Mapping]] = ..., embed: _Optional[_Union[EmbedResult, _Mapping]] = ...) -> None: ...

class SyscallEvent(_message.Message):
    __slots__ = ("syscall_id", "time", "queued", "started", "delta", "preempted", "resumed", "awaiting_confirmation", "finished")
    SYSCALL_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    PREEMPTED_FIELD_NUMBER: _ClassVar[int]
    RESUMED_FIELD_NUMBER: _ClassVar[int]
    AWAITING_CONFIRMATION_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    syscall_id: str
    time: _timestamp_pb2.Timestamp
    queued: Queued
    started: Started
    delta: TokenDelta
    preempted: Preempted
    resumed: Resumed
    awaiting_confirmation: AwaitingConfirmation
    finished: SyscallRecord
    def __init__(self, syscall_id: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., queued: _Optional[_Union[Queued, _Mapping]] = ..., started: _Optional[_Union[Started, _Mapping]] = ..., delta: _Optional[_Union[TokenDelta, _Mapping]] = ..., preempted: _Optional[_Union[Preempted, _Mapping]] = ..., resumed: _Optional[_Union[Resumed, _Mapping]] = ..., awaiting_confirmation: _Optional[_Union[AwaitingConfirmation, _Mapping]] = ..., finished: _Optional[_Union[SyscallRecord, _Mapping]] = ...) -> None: ...

class Queued(_message.Message):
    __slots__ = ("position",)
    POSITION_FIELD_NUMBER: _ClassVar[int]
    position: int
    def __init__(self, position: _Optional[int] = ...) -> None: ...

class Started(_message.Message):
    __slots__ = ("endpoint",)
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    def __init__(self, endpoint: _Optional[str] = ...) -> None: ...

class TokenDelta(_message.Message):
    __slots__ = ("text",)
    TEXT_FIELD_NUMBER: _ClassVar[int]
    text: str
    def __init__(self, text: _Optional[str] = ...) -> None: ...

class Preempted(_message.Message):
    __slots__ = ("snapshot_tokens",)
    SNAPSHOT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    snapshot_tokens: int
    def __init__(self, snapshot_tokens: _Optional[int] = ...) -> None: ...

class Resumed(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AwaitingConfirmation(_message.Message):
    __slots__ = ("confirmation_id",)
    CONFIRMATION_ID_FIELD_NUMBER: _ClassVar[int]
    confirmation_id: str
    def __init__(self, confirmation_id: _Optional[str] = ...) -> None: ...
