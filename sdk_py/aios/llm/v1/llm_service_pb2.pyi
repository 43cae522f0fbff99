from aios.common.v1 import llm_pb2 as _llm_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_KIND_UNSPECIFIED: _ClassVar[ModelKind]
    MODEL_KIND_CHAT: _ClassVar[ModelKind]
    MODEL_KIND_EMBEDDING: _ClassVar[ModelKind]
MODEL_KIND_UNSPECIFIED: ModelKind
MODEL_KIND_CHAT: ModelKind
MODEL_KIND_EMBEDDING: ModelKind

class ResumeSnapshot(_message.Message):
    __slots__ = ("text", "completion_tokens")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    text: str
    completion_tokens: int
    def __init__(self, text: _Optional[str] = ..., completion_tokens: _Optional[int] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("call", "resume", "session_id", "slice_tokens")
    CALL_FIELD_NUMBER: _ClassVar[int]
    RESUME_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SLICE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    call: _llm_pb2.LlmCall
    resume: ResumeSnapshot
    session_id: str
    slice_tokens: int
    def __init__(self, call: _Optional[_Union[_llm_pb2.LlmCall, _Mapping]] = ..., resume: _Optional[_Union[ResumeSnapshot, _Mapping]] = ..., session_id: _Optional[str] = ..., slice_tokens: _Optional[int] = ...) -> None: ...

class GenerateStreamResponse(_message.Message):
    __slots__ = ("delta", "tool_calls", "finish_reason", "usage", "model", "endpoint")
    DELTA_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    delta: str
    tool_calls: _containers.RepeatedCompositeFieldContainer[_llm_pb2.ToolCall]
    finish_reason: _llm_pb2.FinishReason
    usage: _llm_pb2.Usage
    model: str
    endpoint: str
    def __init__(self, delta: _Optional[str] = ..., tool_calls: _Optional[_Iterable[_Union[_llm_pb2.ToolCall, _Mapping]]] = ..., finish_reason: _Optional[_Union[_llm_pb2.FinishReason, str]] = ..., usage: _Optional[_Union[_llm_pb2.Usage, _Mapping]] = ..., model: _Optional[str] = ..., endpoint: _Optional[str] = ...) -> None: ...

class EmbedRequest(_message.Message):
    __slots__ = ("model", "inputs")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    model: str
    inputs: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model: _Optional[str] = ..., inputs: _Optional[_Iterable[str]] = ...) -> None: ...

class Embedding(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("embeddings", "dimensions", "model", "usage")
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    embeddings: _containers.RepeatedCompositeFieldContainer[Embedding]
    dimensions: int
    model: str
    usage: _llm_pb2.Usage
    def __init__(self, embeddings: _Optional[_Iterable[_Union[Embedding, _Mapping]]] = ..., dimensions: _Optional[int] = ..., model: _Optional[str] = ..., usage: _Optional[_Union[_llm_pb2.Usage, _Mapping]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Endpoint(_message.Message):
    __slots__ = ("name", "base_url", "model_id", "healthy", "max_concurrency", "in_flight", "native_tools", "last_error", "prices", "cache_tokens")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BASE_URL_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    NATIVE_TOOLS_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    PRICES_FIELD_NUMBER: _ClassVar[int]
    CACHE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    name: str
    base_url: str
    model_id: str
    healthy: bool
    max_concurrency: int
    in_flight: int
    native_tools: bool
    last_error: str
    prices: Prices
    cache_tokens: int
    def __init__(self, name: _Optional[str] = ..., base_url: _Optional[str] = ..., model_id: _Optional[str] = ..., healthy: _Optional[bool] = ..., max_concurrency: _Optional[int] = ..., in_flight: _Optional[int] = ..., native_tools: _Optional[bool] = ..., last_error: _Optional[str] = ..., prices: _Optional[_Union[Prices, _Mapping]] = ..., cache_tokens: _Optional[int] = ...) -> None: ...

class Prices(_message.Message):
    __slots__ = ("prompt", "completion", "cached_prompt")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_FIELD_NUMBER: _ClassVar[int]
    CACHED_PROMPT_FIELD_NUMBER: _ClassVar[int]
    prompt: float
    completion: float
    cached_prompt: float
    def __init__(self, prompt: _Optional[float] = ..., completion: _Optional[float] = ..., cached_prompt: _Optional[float] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("name", "kind", "endpoints", "available")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: ModelKind
    endpoints: _containers.RepeatedCompositeFieldContainer[Endpoint]
    available: bool
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[ModelKind, str]] = ..., endpoints: _Optional[_Iterable[_Union[Endpoint, _Mapping]]] = ..., available: _Optional[bool] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[Model]
    def __init__(self, models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ...) -> None: ...
