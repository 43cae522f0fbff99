"""The friendly Python client of the AIOS kernel."""

from aios.sdk.client import (
    AsyncClient, ChatResult, Client, PendingConfirmation, ToolCall, channel_credentials, chat_result,
    tool_schemas,
)
from aios.sdk.errors import (
    AbortedError, AiosError, AlreadyExistsError, CancelledError, ConfirmationTimeoutError, DataLossError,
    DeadlineExceededError,
    FailedPreconditionError, InternalError, InvalidArgumentError, NotFoundError, OutOfRangeError,
    PermissionDeniedError, ResourceExhaustedError, UnauthenticatedError, UnavailableError,
    UnimplementedError,
)
from aios.sdk.quota import format_limit, parse_limit

__all__ = [
    "AbortedError", "AiosError", "AlreadyExistsError", "AsyncClient", "CancelledError", "ChatResult",
    "Client", "ConfirmationTimeoutError", "DataLossError", "DeadlineExceededError",
    "FailedPreconditionError", "InternalError", "InvalidArgumentError", "NotFoundError", "OutOfRangeError",
    "PendingConfirmation", "PermissionDeniedError", "ResourceExhaustedError", "ToolCall",
    "UnauthenticatedError", "UnavailableError", "UnimplementedError", "channel_credentials", "chat_result",
    "format_limit", "parse_limit", "tool_schemas",
]
