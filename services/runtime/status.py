"""gRPC statuses with typed details, and back.

Servers turn an AiosError into a `grpc.Status` carrying google.rpc details;
clients (the kernel calling a service) turn a received status back into the
same AiosError so it can pass through to the agent unchanged.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from services.runtime import errors

DOMAIN = "aios.dev"

_BY_CODE: dict[str, type[errors.AiosError]] = {
    cls.code: cls
    for cls in errors.AiosError.__subclasses__()
}


def to_grpc_status(err: errors.AiosError) -> grpc.Status:
    details: list[any_pb2.Any] = []
    info = error_details_pb2.ErrorInfo(
        reason=err.reason or err.code, domain=DOMAIN, metadata=err.metadata
    )
    details.append(_pack(info))
    if err.retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(int(err.retry_after * 1000))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    if err.field:
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=err.field, description=err.message
        )
        details.append(_pack(error_details_pb2.BadRequest(field_violations=[violation])))
    if err.quota:
        details.append(_pack(error_details_pb2.QuotaFailure(violations=[
            error_details_pb2.QuotaFailure.Violation(subject=subject, description=description)
            for subject, description in err.quota])))
    status = status_pb2.Status(
        code=getattr(code_pb2, err.code), message=err.message, details=details
    )
    return rpc_status.to_status(status)


def _pack(msg) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(msg)
    return out


def from_rpc_error(exc: grpc.RpcError) -> errors.AiosError:
    """Rebuild the AiosError a downstream service raised, details included."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    message = exc.details() if hasattr(exc, "details") else str(exc)
    cls = _BY_CODE.get(code.name, errors.Internal if code.name == "UNKNOWN" else errors.AiosError)
    err = cls(message or code.name)
    if cls is errors.AiosError:
        err.code = code.name
    status = _status_of(exc)
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                err.reason, err.metadata = info.reason, dict(info.metadata)
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
    return err


def _status_of(exc: grpc.RpcError) -> status_pb2.Status | None:
    try:
        metadata = exc.trailing_metadata() or ()
    except Exception:  # noqa: BLE001 - some errors carry no call
        return None
    for key, value in metadata:
        if key == "grpc-status-details-bin":
            status = status_pb2.Status()
            status.ParseFromString(value)
            return status
    return None


def rich_status(exc: grpc.RpcError) -> status_pb2.Status | None:
    """The google.rpc.Status of a received error, for clients that branch on details."""
    return _status_of(exc)
