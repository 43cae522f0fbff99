"""Paths inside an agent's space and the object keys they map to.

A path is relative to its owner's space, "/"-separated. Normalising drops
empty and "." segments ("a//./b" -> "a/b"); everything that could leave the
space or confuse a reader is refused: ".." segments, absolute paths (a
leading "/"), backslashes, control characters (NUL included), and paths or
segments longer than S3 keys allow. Refusal raises InvalidArgument naming
the request field, before anything is read or written.

Object key = "<owner>/<path>"; an owner never contains "/", so one owner's
keys can never reach another's.
"""

from __future__ import annotations

import base64
import binascii
import json
import unicodedata

from services.runtime import errors

MAX_OWNER_CHARS = 128
MAX_PATH_BYTES = 880  # S3 keys are at most 1024 bytes; room for the owner prefix
MAX_SEGMENT_BYTES = 255
MAX_VERSION_ID_CHARS = 1024
_REASON = "INVALID_PATH"


def _has_control(text: str) -> bool:
    return any(unicodedata.category(ch) == "Cc" for ch in text)


def owner(value: str, field: str = "owner") -> str:
    if not value:
        raise errors.InvalidArgument("owner is required", field=field, reason="INVALID_OWNER")
    if (len(value) > MAX_OWNER_CHARS or "/" in value or "\\" in value or value in (".", "..")
            or _has_control(value)):
        raise errors.InvalidArgument(f"owner {value!r} is not a valid agent name", field=field,
                                     reason="INVALID_OWNER")
    return value


def _normalise(value: str, field: str, *, allow_empty: bool) -> str:
    if _has_control(value):
        raise errors.InvalidArgument(f"{field} contains control characters", field=field, reason=_REASON)
    if "\\" in value:
        raise errors.InvalidArgument(f"{field} contains a backslash; use '/'", field=field, reason=_REASON)
    if value.startswith("/"):
        raise errors.InvalidArgument(
            f"{field} {value!r} is absolute; paths are relative to the agent's own space",
            field=field, reason=_REASON)
    segments = [s for s in value.split("/") if s not in ("", ".")]
    if ".." in segments:
        raise errors.InvalidArgument(f"{field} {value!r} contains '..'", field=field, reason=_REASON)
    if not segments and not allow_empty:
        raise errors.InvalidArgument(f"{field} is required", field=field, reason=_REASON)
    for seg in segments:
        if len(seg.encode()) > MAX_SEGMENT_BYTES:
            raise errors.InvalidArgument(f"a segment of {field} is over {MAX_SEGMENT_BYTES} bytes",
                                         field=field, reason=_REASON)
    normal = "/".join(segments)
    if len(normal.encode()) > MAX_PATH_BYTES:
        raise errors.InvalidArgument(f"{field} is over {MAX_PATH_BYTES} bytes", field=field, reason=_REASON)
    return normal


def path(value: str, field: str = "path") -> str:
    """A file path, normalised; never empty."""
    return _normalise(value, field, allow_empty=False)


def prefix(value: str, field: str = "prefix") -> str:
    """A listing prefix: "" is the whole space; a trailing "/" names a folder's inside."""
    normal = _normalise(value, field, allow_empty=True)
    if normal and value.endswith("/"):
        normal += "/"
    return normal


def version_id(value: str, field: str = "version_id") -> str:
    if len(value) > MAX_VERSION_ID_CHARS or _has_control(value) or "/" in value:
        raise errors.InvalidArgument("version_id is not valid", field=field, reason="INVALID_VERSION_ID")
    return value


def key(owner_name: str, relative: str) -> str:
    return f"{owner_name}/{relative}"


def space(owner_name: str) -> str:
    """The key prefix of an owner's whole space."""
    return f"{owner_name}/"


def relative(owner_name: str, object_key: str) -> str:
    return object_key[len(space(owner_name)):]


def folders(relative_path: str) -> list[str]:
    """The folders holding a path: "a/b/c.txt" -> ["a/", "a/b/"]."""
    parts = relative_path.split("/")[:-1]
    return ["/".join(parts[:i]) + "/" for i in range(1, len(parts) + 1)]


def encode_token(listing: str, cursor: str) -> str:
    """A page token: the store's cursor, tied to the listing it continues."""
    raw = json.dumps([listing, cursor], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, listing: str, field: str = "page_token") -> str:
    """The store's cursor in a page token of this listing."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        made_for, cursor = json.loads(raw)
    except (binascii.Error, ValueError, TypeError):
        raise errors.InvalidArgument("page_token is not valid", field=field) from None
    if made_for != listing or not isinstance(cursor, str) or not cursor:
        raise errors.InvalidArgument("page_token belongs to another listing", field=field)
    return cursor
