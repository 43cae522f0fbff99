"""Per-agent memory: records with semantic search and a bounded working set.

Every operation addresses one namespace (owner, tenant). Get, Update and
appearing in Search results are accesses: the record joins the agent's
working set, and when that set is over its limit the LRU-K victims move to
long-term memory (a tier flag; they stay searchable and are never deleted).

Operations that touch the working set of a namespace run one at a time under
that namespace's lock, so the read of the set and the write of the new tiers
agree. Embedding happens before taking the lock.

A mutation with a request id applies once, so that a caller may retry one
that was applied but not answered. An add stores its records under ids
derived from the key (a retry finds them and returns them as they are now);
updates and deletes write their key, in the same Qdrant request as the
change, into the namespace's record of its last APPLIED_KEYS keyed updates
and deletes, and a retry found there applies nothing. The record is read and
rewritten under the namespace's lock, like the working set: one service
process per Qdrant collection, as for that.
"""

from __future__ import annotations

import asyncio
import base64
import json
import weakref
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

from services.memory import working
from services.memory.records import (
    LONG_TERM, WORKING, Filter, Limits, MemoryInput, Namespace, Record, check_content, check_id,
    check_input, check_metadata, check_request_id, check_tags, keyed_id, new_id, parse_filter,
)
from services.runtime import errors

if TYPE_CHECKING:
    from services.memory.store import QdrantStore

DEFAULT_TOP_K = 5
MAX_TOP_K = 100
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
UPDATABLE = ("content", "metadata", "tags")
# Keyed updates and deletes remembered per namespace (about 50 KiB at most): a
# retry comes soon after its first try, not hundreds of mutations later.
APPLIED_KEYS = 256


class Embedder(Protocol):
    async def embed(self, texts: list[str]) -> list[list[float]]: ...


@dataclass(frozen=True)
class WorkingPolicy:
    limit: int
    k: int


class Memory:
    def __init__(self, store: QdrantStore, embedder: Embedder, limits: Limits,
                 policy: WorkingPolicy, clock: working.Clock | None = None) -> None:
        self.store = store
        self.embedder = embedder
        self.limits = limits
        self.policy = policy
        self.clock = clock or working.Clock()
        self._locks: weakref.WeakValueDictionary[Namespace, asyncio.Lock] = weakref.WeakValueDictionary()

    def _lock(self, ns: Namespace) -> asyncio.Lock:
        lock = self._locks.get(ns)
        if lock is None:
            lock = self._locks[ns] = asyncio.Lock()
        return lock

    def _accessed(self, rec: Record, now: float) -> Record:
        rec.accesses = working.record_access(rec.accesses, now, self.policy.k)
        rec.access_count += 1
        rec.tier = WORKING
        return rec

    async def _commit(self, ns: Namespace, used: list[Record],
                      vectors: dict[str, list[float]] | None = None, fields: tuple[str, ...] = (),
                      applied: tuple[Namespace, list[list[str]]] | None = None) -> None:
        """Write the records of one call as just used, evicting what the working
        set no longer holds, in one request. `vectors` holds (re)embedded records
        to write whole; the others get their access fields and `fields` set;
        `applied` replaces ns's remembered keys. The caller holds ns's lock."""
        vectors = vectors or {}
        histories = await self.store.working_histories(ns, WORKING)
        for rec in used:
            histories[rec.id] = rec.accesses
        victims = working.choose_victims(histories, {r.id for r in used}, self.policy.limit, self.policy.k)
        demoted = set(victims)
        for rec in used:
            if rec.id in demoted:
                rec.tier = LONG_TERM
        used_ids = {r.id for r in used}
        changes = [([v for v in victims if v not in used_ids], {"tier": LONG_TERM})]
        changes += [([r.id], {"accesses": r.accesses, "access_count": r.access_count, "tier": r.tier,
                              **{name: getattr(r, name) for name in fields}})
                    for r in used if r.id not in vectors]
        await self.store.write(upserts=[(r, vectors[r.id]) for r in used if r.id in vectors],
                               changes=changes, applied=applied)

    def _new(self, ns: Namespace, item: MemoryInput, record_id: str = "") -> Record:
        now = self.clock.now()
        return Record(id=record_id or new_id(), owner=ns.owner, tenant=ns.tenant, content=item.content,
                      metadata=dict(item.metadata), tags=list(dict.fromkeys(item.tags)),
                      create_time=now, update_time=now, accesses=[now], access_count=1, tier=WORKING)

    # --- operations ---------------------------------------------------------------

    async def add(self, ns: Namespace, item: MemoryInput, request_id: str = "") -> Record:
        check_input(item, self.limits, "memory")
        keyed = [keyed_id(ns, request_id)] if check_request_id(request_id) else None
        return (await self._add_all(ns, [item], keyed))[0]

    async def batch_add(self, ns: Namespace, items: list[MemoryInput], request_id: str = "") -> list[Record]:
        if not items:
            raise errors.InvalidArgument("memories must not be empty", field="memories")
        if len(items) > self.limits.max_batch:
            raise errors.InvalidArgument(
                f"{len(items)} memories in one batch, over the limit of {self.limits.max_batch}",
                field="memories", reason="BATCH_TOO_LARGE")
        for i, item in enumerate(items):
            check_input(item, self.limits, f"memories[{i}]")
        keyed = ([keyed_id(ns, request_id, i) for i in range(len(items))]
                 if check_request_id(request_id) else None)
        return await self._add_all(ns, items, keyed)

    async def _add_all(self, ns: Namespace, items: list[MemoryInput], keyed: list[str] | None) -> list[Record]:
        """Store items as new records; with `keyed` ids (derived from a request
        id), those already stored are a retry's and are returned as they are."""
        # All vectors first, then one write: a batch is stored whole or not at all.
        vectors = await self.embedder.embed([item.content for item in items])
        async with self._lock(ns):
            stored = await self.store.get_many(ns, keyed) if keyed else {}
            ids = keyed or [new_id() for _ in items]
            records = [stored.get(rid) or self._new(ns, item, rid) for rid, item in zip(ids, items)]
            fresh = {r.id: v for r, v in zip(records, vectors) if r.id not in stored}
            if fresh:
                await self._commit(ns, [r for r in records if r.id in fresh], fresh)
        return records

    async def get(self, ns: Namespace, record_id: str) -> Record:
        record_id = check_id(record_id)
        async with self._lock(ns):
            rec = await self._existing(ns, record_id)
            self._accessed(rec, self.clock.now())
            await self._commit(ns, [rec])
        return rec

    async def _existing(self, ns: Namespace, record_id: str) -> Record:
        rec = await self.store.get(ns, record_id)
        if rec is None:
            raise errors.NotFound(f"no memory {record_id!r} for {ns.owner!r}", reason="MEMORY_NOT_FOUND")
        return rec

    async def update(self, ns: Namespace, record_id: str, item: MemoryInput, fields: list[str],
                     request_id: str = "") -> Record:
        record_id = check_id(record_id)
        check_request_id(request_id)
        chosen = self._update_fields(item, fields)
        if "content" in chosen:
            check_content(item.content, self.limits, "memory.content")
        if "tags" in chosen:
            check_tags(item.tags, "memory.tags")
        if "metadata" in chosen:
            check_metadata(item.metadata, "memory.metadata")
        vector = (await self.embedder.embed([item.content]))[0] if "content" in chosen else None
        async with self._lock(ns):
            done, applied = await self._keys(ns, "update", request_id, record_id)
            if done:
                # Not again: a later update since would be undone.
                return await self._existing(ns, record_id)
            rec = await self._existing(ns, record_id)
            now = self.clock.now()
            rec = replace(
                rec, update_time=now,
                content=item.content if "content" in chosen else rec.content,
                metadata=dict(item.metadata) if "metadata" in chosen else rec.metadata,
                tags=list(dict.fromkeys(item.tags)) if "tags" in chosen else rec.tags,
            )
            self._accessed(rec, now)
            if vector is not None:
                await self._commit(ns, [rec], {rec.id: vector}, applied=applied)
            else:
                await self._commit(ns, [rec], fields=("metadata", "tags", "update_time"), applied=applied)
        return rec

    async def _keys(self, ns: Namespace, op: str, request_id: str, record_id: str
                    ) -> tuple[bool, tuple[Namespace, list[list[str]]] | None]:
        """For a keyed update or delete: whether this key applied it already,
        and ns's remembered keys with this one added, for the store to write
        with the change (None without a key). The caller holds ns's lock."""
        if not request_id:
            return False, None
        entry = [op, request_id, record_id]
        remembered = await self.store.applied(ns)
        return entry in remembered, (ns, (remembered + [entry])[-APPLIED_KEYS:])

    @staticmethod
    def _update_fields(item: MemoryInput, fields: list[str]) -> set[str]:
        unknown = [f for f in fields if f not in UPDATABLE]
        if unknown:
            raise errors.InvalidArgument(
                f"update_mask names {unknown}; it may name {', '.join(UPDATABLE)}", field="update_mask")
        if fields:
            return set(fields)
        # An empty mask means every field the request gives.
        given = {name for name, value in (("content", item.content), ("metadata", item.metadata),
                                          ("tags", item.tags)) if value}
        if not given:
            raise errors.InvalidArgument("nothing to update: memory has no content, metadata or tags",
                                         field="memory")
        return given

    async def delete(self, ns: Namespace, record_id: str, request_id: str = "") -> None:
        record_id = check_id(record_id)
        check_request_id(request_id)
        async with self._lock(ns):
            done, applied = await self._keys(ns, "delete", request_id, record_id)
            if done:
                return  # deleted by this key's first try
            await self._existing(ns, record_id)
            await self.store.write(deletes=[record_id], applied=applied)

    async def list(self, ns: Namespace, *, filter: str = "", tier: str = "", page_size: int = 0,
                   page_token: str = "") -> tuple[list[Record], str]:
        """A page in a stable order (by id); listing is not an access."""
        flt = parse_filter(filter)
        if page_size < 0:
            raise errors.InvalidArgument("page_size must not be negative", field="page_size")
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        query = {"f": filter, "t": tier}
        after = _decode_token(page_token, query) if page_token else None
        records, next_id = await self.store.scroll(ns, flt, tier, size, after)
        return records, (_encode_token(next_id, query) if next_id else "")

    async def count(self, ns: Namespace) -> int:
        """How many records ns holds, both tiers; counting is not an access."""
        return await self.store.count(ns)

    async def search(self, ns: Namespace, query: str, *, top_k: int = 0, filter: str = "",
                     score_threshold: float | None = None) -> list[tuple[Record, float]]:
        check_content(query, self.limits, "query")
        flt: Filter = parse_filter(filter)
        if top_k < 0 or top_k > MAX_TOP_K:
            raise errors.InvalidArgument(f"top_k must be between 0 and {MAX_TOP_K}", field="top_k")
        vector = (await self.embedder.embed([query]))[0]
        async with self._lock(ns):
            hits = await self.store.search(ns, vector, flt, top_k or DEFAULT_TOP_K, score_threshold)
            # The best match gets the latest access time.
            for rec, _ in reversed(hits):
                self._accessed(rec, self.clock.now())
            if hits:
                await self._commit(ns, [rec for rec, _ in hits])
        return hits


def _encode_token(after: str, query: dict) -> str:
    raw = json.dumps({"after": after, **query}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str, query: dict) -> str:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        after = check_id(data["after"])
    except (ValueError, KeyError, TypeError, errors.InvalidArgument):
        raise errors.InvalidArgument("page_token is not one this service issued",
                                     field="page_token") from None
    if any(data.get(k) != v for k, v in query.items()):
        raise errors.InvalidArgument("page_token belongs to a different filter or tier",
                                     field="page_token")
    return after
