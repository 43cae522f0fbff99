"""The friendly Python client of the AIOS kernel."""

from aios.sdk.client import AsyncClient, ChatResult, Client, ToolCall, chat_result
from aios.sdk.errors import (
    AbortedError, AiosError, AlreadyExistsError, CancelledError, DeadlineExceededError,
    FailedPreconditionError, InternalError, InvalidArgumentError, NotFoundError,
    PermissionDeniedError, ResourceExhaustedError, UnauthenticatedError, UnavailableError,
    UnimplementedError,
)

__all__ = [
    "AbortedError", "AiosError", "AlreadyExistsError", "AsyncClient", "CancelledError", "ChatResult",
    "Client", "DeadlineExceededError", "FailedPreconditionError", "InternalError",
    "InvalidArgumentError", "NotFoundError", "PermissionDeniedError", "ResourceExhaustedError",
    "ToolCall", "UnauthenticatedError", "UnavailableError", "UnimplementedError", "chat_result",
]
