"""Kernel errors as Python exceptions, one class per gRPC status code.

Each carries the code, the kernel's message, the machine-readable reason
(google.rpc.ErrorInfo) and, for RESOURCE_EXHAUSTED, how long to wait
(google.rpc.RetryInfo) and which quota limits the call would pass
(google.rpc.QuotaFailure).
"""

from __future__ import annotations

import grpc


class AiosError(Exception):
    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, *, code: grpc.StatusCode | None = None, reason: str = "",
                 retry_after: float | None = None, field: str = "",
                 metadata: dict[str, str] | None = None,
                 quota: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message
        self.reason = reason
        self.retry_after = retry_after
        self.field = field
        # google.rpc.ErrorInfo metadata, e.g. {"confirmation_id": ...}.
        self.metadata = metadata or {}
        # (subject, description) per quota limit refused, e.g.
        # ("agent:alice", "llm_requests: 10 per 1m, 10 used").
        self.quota = quota or []

    def __str__(self) -> str:
        extra = f" [{self.reason}]" if self.reason else ""
        return f"{self.code.name}: {self.message}{extra}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, reason={self.reason!r})"


class InvalidArgumentError(AiosError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFoundError(AiosError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExistsError(AiosError):
    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDeniedError(AiosError):
    code = grpc.StatusCode.PERMISSION_DENIED


class UnauthenticatedError(AiosError):
    code = grpc.StatusCode.UNAUTHENTICATED


class ResourceExhaustedError(AiosError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPreconditionError(AiosError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class AbortedError(AiosError):
    code = grpc.StatusCode.ABORTED


class UnavailableError(AiosError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceededError(AiosError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class ConfirmationTimeoutError(DeadlineExceededError):
    """The syscall waited for a person's confirmation that nobody gave in
    time; `.confirmation_id` names it (`aios confirm approve ID`)."""

    @property
    def confirmation_id(self) -> str:
        return self.metadata.get("confirmation_id", "")

    @property
    def syscall_id(self) -> str:
        return self.metadata.get("syscall_id", "")


class CancelledError(AiosError):
    code = grpc.StatusCode.CANCELLED


class UnimplementedError(AiosError):
    code = grpc.StatusCode.UNIMPLEMENTED


class InternalError(AiosError):
    code = grpc.StatusCode.INTERNAL


class OutOfRangeError(AiosError):
    code = grpc.StatusCode.OUT_OF_RANGE


class DataLossError(AiosError):
    code = grpc.StatusCode.DATA_LOSS


_BY_CODE = {cls.code: cls for cls in AiosError.__subclasses__()}
# Reasons with an exception class of their own.
_BY_REASON = {"CONFIRMATION_TIMEOUT": ConfirmationTimeoutError}


def from_rpc_error(exc: grpc.RpcError) -> AiosError:
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    message = (exc.details() if hasattr(exc, "details") else "") or code.name
    err = _BY_CODE.get(code, AiosError)(message, code=code)
    _read_details(exc, err)
    special = _BY_REASON.get(err.reason)
    if special is not None and issubclass(special, type(err)):
        err = special(err.message, code=code, reason=err.reason, retry_after=err.retry_after,
                      field=err.field, metadata=err.metadata, quota=err.quota)
    return err


def _read_details(exc: grpc.RpcError, err: AiosError) -> None:
    try:
        from google.rpc import error_details_pb2, status_pb2
    except ImportError:  # details are optional
        return
    try:
        trailers = exc.trailing_metadata() or ()
    except Exception:  # noqa: BLE001 - a call-less error has none
        return
    for key, value in trailers:
        if key != "grpc-status-details-bin":
            continue
        status = status_pb2.Status()
        status.ParseFromString(value)
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                err.reason = info.reason
                err.metadata = dict(info.metadata)
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
                err.retry_after = retry.retry_delay.ToMilliseconds() / 1000
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                if bad.field_violations:
                    err.field = bad.field_violations[0].field
            elif detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
                quota = error_details_pb2.QuotaFailure()
                detail.Unpack(quota)
                err.quota = [(v.subject, v.description) for v in quota.violations]
