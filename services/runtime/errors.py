"""Domain errors, named after the gRPC status they become.

Domain modules raise these without importing grpc; the shared server runtime
turns them into a status with typed details (ErrorInfo, RetryInfo, BadRequest,
QuotaFailure).
"""

from __future__ import annotations


class AiosError(Exception):
    """An error a caller should see, with the gRPC code it maps to."""

    code = "UNKNOWN"

    def __init__(
        self,
        message: str,
        *,
        reason: str = "",
        field: str = "",
        retry_after: float | None = None,
        metadata: dict[str, str] | None = None,
        quota: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        # Machine-readable reason (UPPER_SNAKE) for ErrorInfo, e.g. "UNKNOWN_MODEL".
        self.reason = reason
        # The request field at fault, for BadRequest.
        self.field = field
        # Seconds the caller should wait before retrying, for RetryInfo.
        self.retry_after = retry_after
        self.metadata = metadata or {}
        # (subject, description) of each quota limit the call would pass,
        # for QuotaFailure.
        self.quota = quota or []


class InvalidArgument(AiosError):
    code = "INVALID_ARGUMENT"


class NotFound(AiosError):
    code = "NOT_FOUND"


class AlreadyExists(AiosError):
    code = "ALREADY_EXISTS"


class PermissionDenied(AiosError):
    code = "PERMISSION_DENIED"


class Unauthenticated(AiosError):
    code = "UNAUTHENTICATED"


class ResourceExhausted(AiosError):
    code = "RESOURCE_EXHAUSTED"


class FailedPrecondition(AiosError):
    code = "FAILED_PRECONDITION"


class Aborted(AiosError):
    code = "ABORTED"


class Unavailable(AiosError):
    code = "UNAVAILABLE"


class DeadlineExceeded(AiosError):
    code = "DEADLINE_EXCEEDED"


class Cancelled(AiosError):
    code = "CANCELLED"


class Unimplemented(AiosError):
    code = "UNIMPLEMENTED"


class Internal(AiosError):
    code = "INTERNAL"


def of_code(code: str, message: str, **details) -> AiosError:
    """The error of a gRPC code name (as a stored record keeps it)."""
    for cls in AiosError.__subclasses__():
        if cls.code == code:
            return cls(message, **details)
    err = AiosError(message, **details)
    err.code = code
    return err
