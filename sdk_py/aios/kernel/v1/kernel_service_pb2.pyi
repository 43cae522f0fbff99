import datetime

from aios.kernel.v1 import syscall_pb2 as _syscall_pb2
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

class PolicyKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POLICY_KIND_UNSPECIFIED: _ClassVar[PolicyKind]
    POLICY_KIND_FIFO: _ClassVar[PolicyKind]
    POLICY_KIND_ROUND_ROBIN: _ClassVar[PolicyKind]
    POLICY_KIND_PRIORITY: _ClassVar[PolicyKind]
    POLICY_KIND_FAIR_SHARE: _ClassVar[PolicyKind]
    POLICY_KIND_AGENT_AWARE: _ClassVar[PolicyKind]

class QuotaMetric(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    QUOTA_METRIC_UNSPECIFIED: _ClassVar[QuotaMetric]
    QUOTA_METRIC_LLM_REQUESTS: _ClassVar[QuotaMetric]
    QUOTA_METRIC_PROMPT_TOKENS: _ClassVar[QuotaMetric]
    QUOTA_METRIC_COMPLETION_TOKENS: _ClassVar[QuotaMetric]
    QUOTA_METRIC_TOKENS: _ClassVar[QuotaMetric]
    QUOTA_METRIC_TOOL_CALLS: _ClassVar[QuotaMetric]
    QUOTA_METRIC_COST: _ClassVar[QuotaMetric]
    QUOTA_METRIC_PARALLEL_LLM_CALLS: _ClassVar[QuotaMetric]
    QUOTA_METRIC_MEMORY_RECORDS: _ClassVar[QuotaMetric]
POLICY_KIND_UNSPECIFIED: PolicyKind
POLICY_KIND_FIFO: PolicyKind
POLICY_KIND_ROUND_ROBIN: PolicyKind
POLICY_KIND_PRIORITY: PolicyKind
POLICY_KIND_FAIR_SHARE: PolicyKind
POLICY_KIND_AGENT_AWARE: PolicyKind
QUOTA_METRIC_UNSPECIFIED: QuotaMetric
QUOTA_METRIC_LLM_REQUESTS: QuotaMetric
QUOTA_METRIC_PROMPT_TOKENS: QuotaMetric
QUOTA_METRIC_COMPLETION_TOKENS: QuotaMetric
QUOTA_METRIC_TOKENS: QuotaMetric
QUOTA_METRIC_TOOL_CALLS: QuotaMetric
QUOTA_METRIC_COST: QuotaMetric
QUOTA_METRIC_PARALLEL_LLM_CALLS: QuotaMetric
QUOTA_METRIC_MEMORY_RECORDS: QuotaMetric

class SubmitRequest(_message.Message):
    __slots__ = ("syscall",)
    SYSCALL_FIELD_NUMBER: _ClassVar[int]
    syscall: _syscall_pb2.Syscall
    def __init__(self, syscall: _Optional[_Union[_syscall_pb2.Syscall, _Mapping]] = ...) -> None: ...

class SubmitResponse(_message.Message):
    __slots__ = ("syscall",)
    SYSCALL_FIELD_NUMBER: _ClassVar[int]
    syscall: _syscall_pb2.SyscallRecord
    def __init__(self, syscall: _Optional[_Union[_syscall_pb2.SyscallRecord, _Mapping]] = ...) -> None: ...

class CancelRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class CancelResponse(_message.Message):
    __slots__ = ("syscall",)
    SYSCALL_FIELD_NUMBER: _ClassVar[int]
    syscall: _syscall_pb2.SyscallRecord
    def __init__(self, syscall: _Optional[_Union[_syscall_pb2.SyscallRecord, _Mapping]] = ...) -> None: ...

class GetSyscallRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetSyscallResponse(_message.Message):
    __slots__ = ("syscall",)
    SYSCALL_FIELD_NUMBER: _ClassVar[int]
    syscall: _syscall_pb2.SyscallRecord
    def __init__(self, syscall: _Optional[_Union[_syscall_pb2.SyscallRecord, _Mapping]] = ...) -> None: ...

class ListSyscallsRequest(_message.Message):
    __slots__ = ("agent", "state", "session_id", "page_size", "page_token")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    agent: str
    state: _syscall_pb2.SyscallState
    session_id: str
    page_size: int
    page_token: str
    def __init__(self, agent: _Optional[str] = ..., state: _Optional[_Union[_syscall_pb2.SyscallState, str]] = ..., session_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListSyscallsResponse(_message.Message):
    __slots__ = ("syscalls", "next_page_token")
    SYSCALLS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    syscalls: _containers.RepeatedCompositeFieldContainer[_syscall_pb2.SyscallRecord]
    next_page_token: str
    def __init__(self, syscalls: _Optional[_Iterable[_Union[_syscall_pb2.SyscallRecord, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListAgentsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AgentStats(_message.Message):
    __slots__ = ("agent", "running", "queued", "completed", "failed", "prompt_tokens", "completion_tokens", "total_waiting", "mean_waiting", "last_seen_time", "cost", "quota")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_WAITING_FIELD_NUMBER: _ClassVar[int]
    MEAN_WAITING_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_TIME_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    QUOTA_FIELD_NUMBER: _ClassVar[int]
    agent: str
    running: int
    queued: int
    completed: int
    failed: int
    prompt_tokens: int
    completion_tokens: int
    total_waiting: _duration_pb2.Duration
    mean_waiting: _duration_pb2.Duration
    last_seen_time: _timestamp_pb2.Timestamp
    cost: float
    quota: _containers.RepeatedCompositeFieldContainer[QuotaUsage]
    def __init__(self, agent: _Optional[str] = ..., running: _Optional[int] = ..., queued: _Optional[int] = ..., completed: _Optional[int] = ..., failed: _Optional[int] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., total_waiting: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., mean_waiting: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., last_seen_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cost: _Optional[float] = ..., quota: _Optional[_Iterable[_Union[QuotaUsage, _Mapping]]] = ...) -> None: ...

class ListAgentsResponse(_message.Message):
    __slots__ = ("agents",)
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    agents: _containers.RepeatedCompositeFieldContainer[AgentStats]
    def __init__(self, agents: _Optional[_Iterable[_Union[AgentStats, _Mapping]]] = ...) -> None: ...

class UploadFileHeader(_message.Message):
    __slots__ = ("request_id", "session_id", "priority", "owner", "path", "content_type", "if_version_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    IF_VERSION_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    session_id: str
    priority: int
    owner: str
    path: str
    content_type: str
    if_version_id: str
    def __init__(self, request_id: _Optional[str] = ..., session_id: _Optional[str] = ..., priority: _Optional[int] = ..., owner: _Optional[str] = ..., path: _Optional[str] = ..., content_type: _Optional[str] = ..., if_version_id: _Optional[str] = ...) -> None: ...

class UploadFileRequest(_message.Message):
    __slots__ = ("header", "chunk", "end")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    header: UploadFileHeader
    chunk: bytes
    end: _storage_service_pb2.WriteFileEnd
    def __init__(self, header: _Optional[_Union[UploadFileHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ..., end: _Optional[_Union[_storage_service_pb2.WriteFileEnd, _Mapping]] = ...) -> None: ...

class UploadFileResponse(_message.Message):
    __slots__ = ("syscall",)
    SYSCALL_FIELD_NUMBER: _ClassVar[int]
    syscall: _syscall_pb2.SyscallRecord
    def __init__(self, syscall: _Optional[_Union[_syscall_pb2.SyscallRecord, _Mapping]] = ...) -> None: ...

class DownloadFileRequest(_message.Message):
    __slots__ = ("request_id", "session_id", "priority", "owner", "path", "version_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    VERSION_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    session_id: str
    priority: int
    owner: str
    path: str
    version_id: str
    def __init__(self, request_id: _Optional[str] = ..., session_id: _Optional[str] = ..., priority: _Optional[int] = ..., owner: _Optional[str] = ..., path: _Optional[str] = ..., version_id: _Optional[str] = ...) -> None: ...

class DownloadFileResponse(_message.Message):
    __slots__ = ("info", "chunk")
    INFO_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    info: _storage_service_pb2.FileInfo
    chunk: bytes
    def __init__(self, info: _Optional[_Union[_storage_service_pb2.FileInfo, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class ToolSpec(_message.Message):
    __slots__ = ("name", "description", "parameters", "irreversible", "max_concurrency", "conflicts_with", "timeout", "source")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    IRREVERSIBLE_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    CONFLICTS_WITH_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    parameters: _struct_pb2.Struct
    irreversible: bool
    max_concurrency: int
    conflicts_with: _containers.RepeatedScalarFieldContainer[str]
    timeout: _duration_pb2.Duration
    source: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., parameters: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., irreversible: _Optional[bool] = ..., max_concurrency: _Optional[int] = ..., conflicts_with: _Optional[_Iterable[str]] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., source: _Optional[str] = ...) -> None: ...

class ListToolsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListToolsResponse(_message.Message):
    __slots__ = ("tools",)
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    tools: _containers.RepeatedCompositeFieldContainer[ToolSpec]
    def __init__(self, tools: _Optional[_Iterable[_Union[ToolSpec, _Mapping]]] = ...) -> None: ...

class Policy(_message.Message):
    __slots__ = ("kind", "slice_tokens", "slice_duration", "aging_interval")
    KIND_FIELD_NUMBER: _ClassVar[int]
    SLICE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SLICE_DURATION_FIELD_NUMBER: _ClassVar[int]
    AGING_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    kind: PolicyKind
    slice_tokens: int
    slice_duration: _duration_pb2.Duration
    aging_interval: _duration_pb2.Duration
    def __init__(self, kind: _Optional[_Union[PolicyKind, str]] = ..., slice_tokens: _Optional[int] = ..., slice_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., aging_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class GetPolicyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetPolicyResponse(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: Policy
    def __init__(self, policy: _Optional[_Union[Policy, _Mapping]] = ...) -> None: ...

class SetPolicyRequest(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: Policy
    def __init__(self, policy: _Optional[_Union[Policy, _Mapping]] = ...) -> None: ...

class SetPolicyResponse(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: Policy
    def __init__(self, policy: _Optional[_Union[Policy, _Mapping]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelEndpoint(_message.Message):
    __slots__ = ("name", "healthy", "last_error", "in_flight", "max_concurrency", "base_url")
    NAME_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    BASE_URL_FIELD_NUMBER: _ClassVar[int]
    name: str
    healthy: bool
    last_error: str
    in_flight: int
    max_concurrency: int
    base_url: str
    def __init__(self, name: _Optional[str] = ..., healthy: _Optional[bool] = ..., last_error: _Optional[str] = ..., in_flight: _Optional[int] = ..., max_concurrency: _Optional[int] = ..., base_url: _Optional[str] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "is_default", "endpoints")
    NAME_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    is_default: bool
    endpoints: _containers.RepeatedCompositeFieldContainer[ModelEndpoint]
    def __init__(self, name: _Optional[str] = ..., is_default: _Optional[bool] = ..., endpoints: _Optional[_Iterable[_Union[ModelEndpoint, _Mapping]]] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "default_model")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_MODEL_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    default_model: str
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., default_model: _Optional[str] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServiceHealth(_message.Message):
    __slots__ = ("name", "address", "status", "detail")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    name: str
    address: str
    status: str
    detail: str
    def __init__(self, name: _Optional[str] = ..., address: _Optional[str] = ..., status: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class GetStatusResponse(_message.Message):
    __slots__ = ("services", "default_model", "policy", "auth", "queues", "replicas")
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_MODEL_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    AUTH_FIELD_NUMBER: _ClassVar[int]
    QUEUES_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    services: _containers.RepeatedCompositeFieldContainer[ServiceHealth]
    default_model: str
    policy: Policy
    auth: str
    queues: _containers.RepeatedCompositeFieldContainer[ResourceQueue]
    replicas: _containers.RepeatedCompositeFieldContainer[KernelReplica]
    def __init__(self, services: _Optional[_Iterable[_Union[ServiceHealth, _Mapping]]] = ..., default_model: _Optional[str] = ..., policy: _Optional[_Union[Policy, _Mapping]] = ..., auth: _Optional[str] = ..., queues: _Optional[_Iterable[_Union[ResourceQueue, _Mapping]]] = ..., replicas: _Optional[_Iterable[_Union[KernelReplica, _Mapping]]] = ...) -> None: ...

class KernelReplica(_message.Message):
    __slots__ = ("id", "address", "answering")
    ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ANSWERING_FIELD_NUMBER: _ClassVar[int]
    id: str
    address: str
    answering: bool
    def __init__(self, id: _Optional[str] = ..., address: _Optional[str] = ..., answering: _Optional[bool] = ...) -> None: ...

class ResourceQueue(_message.Message):
    __slots__ = ("resource", "capacity", "running", "queued", "held")
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    resource: str
    capacity: int
    running: int
    queued: int
    held: int
    def __init__(self, resource: _Optional[str] = ..., capacity: _Optional[int] = ..., running: _Optional[int] = ..., queued: _Optional[int] = ..., held: _Optional[int] = ...) -> None: ...

class QuotaLimit(_message.Message):
    __slots__ = ("metric", "window", "max", "soft")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    SOFT_FIELD_NUMBER: _ClassVar[int]
    metric: QuotaMetric
    window: _duration_pb2.Duration
    max: float
    soft: bool
    def __init__(self, metric: _Optional[_Union[QuotaMetric, str]] = ..., window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max: _Optional[float] = ..., soft: _Optional[bool] = ...) -> None: ...

class Quota(_message.Message):
    __slots__ = ("subject", "limits")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    subject: str
    limits: _containers.RepeatedCompositeFieldContainer[QuotaLimit]
    def __init__(self, subject: _Optional[str] = ..., limits: _Optional[_Iterable[_Union[QuotaLimit, _Mapping]]] = ...) -> None: ...

class QuotaUsage(_message.Message):
    __slots__ = ("subject", "limit", "used", "remaining", "reset_time")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    USED_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    RESET_TIME_FIELD_NUMBER: _ClassVar[int]
    subject: str
    limit: QuotaLimit
    used: float
    remaining: float
    reset_time: _timestamp_pb2.Timestamp
    def __init__(self, subject: _Optional[str] = ..., limit: _Optional[_Union[QuotaLimit, _Mapping]] = ..., used: _Optional[float] = ..., remaining: _Optional[float] = ..., reset_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SetQuotaRequest(_message.Message):
    __slots__ = ("quota",)
    QUOTA_FIELD_NUMBER: _ClassVar[int]
    quota: Quota
    def __init__(self, quota: _Optional[_Union[Quota, _Mapping]] = ...) -> None: ...

class SetQuotaResponse(_message.Message):
    __slots__ = ("quota",)
    QUOTA_FIELD_NUMBER: _ClassVar[int]
    quota: Quota
    def __init__(self, quota: _Optional[_Union[Quota, _Mapping]] = ...) -> None: ...

class GetQuotaRequest(_message.Message):
    __slots__ = ("agent", "group")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    agent: str
    group: str
    def __init__(self, agent: _Optional[str] = ..., group: _Optional[str] = ...) -> None: ...

class GetQuotaResponse(_message.Message):
    __slots__ = ("quotas", "usage", "currency")
    QUOTAS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    quotas: _containers.RepeatedCompositeFieldContainer[Quota]
    usage: _containers.RepeatedCompositeFieldContainer[QuotaUsage]
    currency: str
    def __init__(self, quotas: _Optional[_Iterable[_Union[Quota, _Mapping]]] = ..., usage: _Optional[_Iterable[_Union[QuotaUsage, _Mapping]]] = ..., currency: _Optional[str] = ...) -> None: ...
