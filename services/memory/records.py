"""Memory records, the inputs that create them, and the List/Search filter.

Plain data and validation; no gRPC and no Qdrant here.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field

from services.runtime import errors

WORKING = "working"
LONG_TERM = "long_term"
TIERS = (WORKING, LONG_TERM)

MAX_TAGS = 64
MAX_TAG_CHARS = 256
MAX_METADATA_ENTRIES = 64
MAX_METADATA_KEY_CHARS = 256
MAX_METADATA_VALUE_CHARS = 4096
MAX_REQUEST_ID_CHARS = 128
_REQUEST_ID = re.compile(r"[!-~]{1,%d}" % MAX_REQUEST_ID_CHARS)
# Names the ids derived from request ids (uuid5), so they never meet another scheme's.
_KEYED = uuid.uuid5(uuid.NAMESPACE_URL, "urn:aios:memory:request-id")


@dataclass(frozen=True)
class Namespace:
    """Whose memory: the owning agent within a tenant ("" = no tenant)."""

    owner: str
    tenant: str = ""

    @classmethod
    def of(cls, owner: str, tenant: str) -> "Namespace":
        if not owner:
            raise errors.InvalidArgument("owner is required", field="owner")
        return cls(owner, tenant)


@dataclass(frozen=True)
class MemoryInput:
    content: str
    metadata: dict[str, str] = field(default_factory=dict)
    tags: tuple[str, ...] = ()


@dataclass
class Record:
    id: str
    owner: str
    tenant: str
    content: str
    metadata: dict[str, str]
    tags: list[str]
    create_time: float
    update_time: float
    # Times of the last K accesses, oldest first (the LRU-K history).
    accesses: list[float]
    access_count: int
    tier: str

    @property
    def last_access_time(self) -> float:
        return self.accesses[-1] if self.accesses else self.create_time


@dataclass(frozen=True)
class Limits:
    max_content_bytes: int
    max_batch: int


def check_content(content: str, limits: Limits, where: str) -> None:
    if not content.strip():
        raise errors.InvalidArgument(f"{where} must not be empty", field=where, reason="EMPTY_CONTENT")
    size = len(content.encode("utf-8"))
    if size > limits.max_content_bytes:
        raise errors.InvalidArgument(
            f"{where} is {size} bytes, over the limit of {limits.max_content_bytes}",
            field=where, reason="CONTENT_TOO_LARGE")


def check_tags(tags, where: str) -> None:
    if len(tags) > MAX_TAGS:
        raise errors.InvalidArgument(f"at most {MAX_TAGS} tags", field=where)
    for tag in tags:
        if not tag or len(tag) > MAX_TAG_CHARS:
            raise errors.InvalidArgument(
                f"tags must be 1 to {MAX_TAG_CHARS} characters", field=where)


def check_metadata(metadata: dict[str, str], where: str) -> None:
    if len(metadata) > MAX_METADATA_ENTRIES:
        raise errors.InvalidArgument(f"at most {MAX_METADATA_ENTRIES} metadata entries", field=where)
    for key, value in metadata.items():
        if not key or len(key) > MAX_METADATA_KEY_CHARS:
            raise errors.InvalidArgument(
                f"metadata keys must be 1 to {MAX_METADATA_KEY_CHARS} characters", field=where)
        if len(value) > MAX_METADATA_VALUE_CHARS:
            raise errors.InvalidArgument(
                f"metadata value of {key!r} is over {MAX_METADATA_VALUE_CHARS} characters", field=where)


def check_input(item: MemoryInput, limits: Limits, where: str) -> None:
    check_content(item.content, limits, f"{where}.content")
    check_tags(item.tags, f"{where}.tags")
    check_metadata(item.metadata, f"{where}.metadata")


def check_id(record_id: str) -> str:
    if not record_id:
        raise errors.InvalidArgument("id is required", field="id")
    try:
        return str(uuid.UUID(record_id))
    except ValueError:
        raise errors.InvalidArgument(f"id {record_id!r} is not a memory id", field="id") from None


def new_id() -> str:
    return str(uuid.uuid4())


def check_request_id(value: str, where: str = "request_id") -> str:
    if value and not _REQUEST_ID.fullmatch(value):
        raise errors.InvalidArgument(
            f"{where} must be at most {MAX_REQUEST_ID_CHARS} printable ASCII characters without spaces",
            field=where, reason="INVALID_REQUEST_ID")
    return value


def keyed_id(ns: Namespace, request_id: str, index: int | None = None) -> str:
    """The id of the record an add with this key stores (item `index` of a
    batch): the same on every retry, so the retry finds it."""
    return str(uuid.uuid5(_KEYED, json.dumps([ns.tenant, ns.owner, request_id, index])))


def applied_id(ns: Namespace) -> str:
    """The id of the point that remembers ns's last keyed updates and deletes."""
    return str(uuid.uuid5(_KEYED, json.dumps(["applied", ns.tenant, ns.owner])))


# --- filters -----------------------------------------------------------------

@dataclass(frozen=True)
class Filter:
    """Conditions that all hold: the record has every tag and metadata pair."""

    tags: tuple[str, ...] = ()
    metadata: tuple[tuple[str, str], ...] = ()


_VALUE = r'(?:"(?P<{0}q>(?:[^"\\]|\\.)*)"|(?P<{0}b>[^\s"]+))'
_CLAUSE = re.compile(
    r"\s*(?:tag:" + _VALUE.format("t")
    + r"|metadata\.(?P<key>[A-Za-z0-9_\-]+)\s*=\s*" + _VALUE.format("m") + r")\s*"
)
_AND = re.compile(r"AND\s+|AND$")
_ESCAPE = re.compile(r"\\(.)")


def _value(match: re.Match, prefix: str) -> str:
    quoted = match.group(f"{prefix}q")
    return _ESCAPE.sub(r"\1", quoted) if quoted is not None else match.group(f"{prefix}b")


def parse_filter(text: str, where: str = "filter") -> Filter:
    """Parse `tag:NAME AND metadata.KEY="VALUE" AND ...` (see the proto)."""
    if not text.strip():
        return Filter()
    tags: list[str] = []
    metadata: list[tuple[str, str]] = []
    pos = 0
    while True:
        match = _CLAUSE.match(text, pos)
        if match is None:
            raise errors.InvalidArgument(
                f"cannot parse filter at {text[pos:pos + 30]!r}: expected tag:NAME or "
                'metadata.KEY="VALUE" clauses joined by AND', field=where, reason="BAD_FILTER")
        if match.group("key") is not None:
            metadata.append((match.group("key"), _value(match, "m")))
        else:
            tags.append(_value(match, "t"))
        pos = match.end()
        if pos == len(text):
            return Filter(tuple(tags), tuple(metadata))
        joiner = _AND.match(text, pos)
        if joiner is None or joiner.end() == len(text):
            raise errors.InvalidArgument(
                f"cannot parse filter at {text[pos:pos + 30]!r}: clauses are joined by AND",
                field=where, reason="BAD_FILTER")
        pos = joiner.end()
