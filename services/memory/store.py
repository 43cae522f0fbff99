"""Memory records in a Qdrant collection, through qdrant-client.

The same code drives the embedded local mode (`QdrantClient(path=...)`) and a
Qdrant server (`QdrantClient(url=...)`). The local mode is synchronous and not
thread-safe, so every call runs on this adapter's one worker thread, off the
event loop. One point per record: the id is the record id, the vector its
content's embedding, the payload everything else (the access history too, so
the working set survives a restart).

Besides, one point per namespace remembers its last keyed updates and
deletes (see Memory), so that one request can write a change and its key
together. Its payload has no "owner", so no namespace's filter ever matches it.
"""

from __future__ import annotations

import asyncio
import functools
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from qdrant_client import QdrantClient
from qdrant_client import models as qm
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from services.memory.records import Filter, Namespace, Record, applied_id
from services.runtime import errors, tracing
from services.runtime.metrics import Latencies

T = TypeVar("T")
_SCROLL_PAGE = 256
# Payload fields filtered on; a server indexes them (the local mode ignores indexes).
_KEYWORD_FIELDS = ("owner", "tenant", "tags", "tier")


def _payload(rec: Record) -> dict:
    return {
        "owner": rec.owner, "tenant": rec.tenant, "content": rec.content,
        "metadata": dict(rec.metadata), "tags": list(rec.tags),
        "create_time": rec.create_time, "update_time": rec.update_time,
        "accesses": list(rec.accesses), "access_count": rec.access_count, "tier": rec.tier,
    }


def _record(point_id, payload: dict) -> Record:
    return Record(
        id=str(point_id), owner=payload["owner"], tenant=payload.get("tenant", ""),
        content=payload["content"], metadata=dict(payload.get("metadata") or {}),
        tags=list(payload.get("tags") or []), create_time=payload["create_time"],
        update_time=payload.get("update_time", payload["create_time"]),
        accesses=list(payload.get("accesses") or []), access_count=payload.get("access_count", 0),
        tier=payload.get("tier", "working"),
    )


def _match(key: str, value: str) -> qm.FieldCondition:
    return qm.FieldCondition(key=key, match=qm.MatchValue(value=value))


def query_filter(ns: Namespace, flt: Filter | None = None, tier: str = "") -> qm.Filter:
    """Every query is confined to one namespace: isolation is in this filter."""
    must = [_match("owner", ns.owner), _match("tenant", ns.tenant)]
    if tier:
        must.append(_match("tier", tier))
    if flt is not None:
        must.extend(_match("tags", tag) for tag in flt.tags)
        must.extend(_match(f"metadata.{key}", value) for key, value in flt.metadata)
    return qm.Filter(must=must)


class QdrantStore:
    def __init__(self, client: QdrantClient, collection: str, vector_size: int,
                 latencies: Latencies | None = None) -> None:
        self._client = client
        # Seconds per Qdrant call, as op "qdrant.<client method>".
        self.latencies = latencies or Latencies()
        self.collection = collection
        self.vector_size = vector_size
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qdrant")
        self._closed = False

    @classmethod
    async def open(cls, *, path: str, url: str, api_key: str, collection: str,
                   vector_size: int, latencies: Latencies | None = None) -> "QdrantStore":
        def connect() -> QdrantClient:
            if url:
                return QdrantClient(url=url, api_key=api_key or None, timeout=10)
            return QdrantClient(path=path)

        try:
            client = await asyncio.to_thread(connect)
        except RuntimeError as exc:  # the local mode's folder lock
            raise errors.FailedPrecondition(str(exc), reason="QDRANT_PATH_IN_USE") from None
        store = cls(client, collection, vector_size, latencies)
        try:
            await store._call(store._ensure_collection)
        except BaseException:
            await store.close()
            raise
        return store

    async def _call(self, fn: Callable[..., T], *args, **kwargs) -> T:
        if self._closed:
            raise errors.Unavailable("the memory store is closed", reason="STORE_CLOSED")
        loop = asyncio.get_running_loop()
        try:
            op = fn.__name__.lstrip("_")
            with self.latencies.time("qdrant." + op), \
                    tracing.client_span("qdrant", op, **{"db.collection.name": self.collection}):
                return await loop.run_in_executor(self._worker, functools.partial(fn, *args, **kwargs))
        except ResponseHandlingException as exc:
            raise errors.Unavailable(f"Qdrant is unreachable: {exc}", reason="QDRANT_UNAVAILABLE") from None
        except UnexpectedResponse as exc:
            if exc.status_code in (429, 502, 503, 504):
                raise errors.Unavailable(f"Qdrant answered {exc.status_code}",
                                         reason="QDRANT_UNAVAILABLE", retry_after=1.0) from None
            raise errors.Internal(f"Qdrant answered {exc.status_code}: {exc.content!r}") from None

    # --- runs on the worker thread -------------------------------------------

    def _ensure_collection(self) -> None:
        c = self._client
        if c.collection_exists(self.collection):
            vectors = c.get_collection(self.collection).config.params.vectors
            size = vectors.size if isinstance(vectors, qm.VectorParams) else None
            if size != self.vector_size:
                raise errors.FailedPrecondition(
                    f"collection {self.collection!r} holds {size}-dimension vectors, but "
                    f"AIOS_MEMORY_VECTOR_SIZE is {self.vector_size}", reason="VECTOR_SIZE_MISMATCH")
            return
        try:
            c.create_collection(self.collection, vectors_config=qm.VectorParams(
                size=self.vector_size, distance=qm.Distance.COSINE))
        except UnexpectedResponse as exc:
            if exc.status_code != 409:  # another replica created it first
                raise
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "payload indexes have no effect in local mode"
            for name in _KEYWORD_FIELDS:
                c.create_payload_index(self.collection, name, qm.PayloadSchemaType.KEYWORD)

    # --- the adapter's API -----------------------------------------------------

    async def get(self, ns: Namespace, record_id: str) -> Record | None:
        """The record if it exists in this namespace (another's looks absent)."""
        return (await self.get_many(ns, [record_id])).get(record_id)

    async def get_many(self, ns: Namespace, record_ids: list[str]) -> dict[str, Record]:
        """Those of the records that exist in this namespace, by id."""
        points = await self._call(self._client.retrieve, self.collection, record_ids,
                                  with_payload=True, with_vectors=False)
        found = {}
        for p in points:
            payload = p.payload or {}
            if payload.get("owner") == ns.owner and payload.get("tenant", "") == ns.tenant:
                found[str(p.id)] = _record(p.id, payload)
        return found

    async def applied(self, ns: Namespace) -> list[list[str]]:
        """ns's remembered keyed updates and deletes, oldest first: [op, request id, record id]."""
        points = await self._call(self._client.retrieve, self.collection, [applied_id(ns)],
                                  with_payload=["applied"], with_vectors=False)
        return [list(e) for e in (points[0].payload or {}).get("applied", [])] if points else []

    async def scroll(self, ns: Namespace, flt: Filter, tier: str, limit: int, after: str | None
                     ) -> tuple[list[Record], str | None]:
        """One page in id order, starting at id `after`; returns the next page's start."""
        points, next_id = await self._call(
            self._client.scroll, self.collection, scroll_filter=query_filter(ns, flt, tier),
            limit=limit, offset=after, with_payload=True, with_vectors=False)
        return [_record(p.id, p.payload or {}) for p in points], (None if next_id is None else str(next_id))

    async def search(self, ns: Namespace, vector: list[float], flt: Filter, limit: int,
                     threshold: float | None) -> list[tuple[Record, float]]:
        resp = await self._call(
            self._client.query_points, self.collection, query=vector,
            query_filter=query_filter(ns, flt), limit=limit, score_threshold=threshold,
            with_payload=True, with_vectors=False)
        return [(_record(p.id, p.payload or {}), p.score) for p in resp.points]

    async def count(self, ns: Namespace) -> int:
        """Exact count of ns's records (both tiers; the remembered-keys point has no owner)."""
        result = await self._call(self._client.count, self.collection,
                                  count_filter=query_filter(ns), exact=True)
        return result.count

    async def working_histories(self, ns: Namespace, working_tier: str) -> dict[str, list[float]]:
        """Access histories of every record of `ns` in the working tier."""
        def scan() -> dict[str, list[float]]:
            out: dict[str, list[float]] = {}
            offset = None
            while True:
                points, offset = self._client.scroll(
                    self.collection, scroll_filter=query_filter(ns, tier=working_tier),
                    limit=_SCROLL_PAGE, offset=offset, with_payload=["accesses"], with_vectors=False)
                for p in points:
                    out[str(p.id)] = list((p.payload or {}).get("accesses") or [])
                if offset is None:
                    return out

        return await self._call(scan)

    async def write(self, upserts: Iterable[tuple[Record, list[float]]] = (),
                    changes: Iterable[tuple[list[str], dict]] = (), deletes: Iterable[str] = (),
                    applied: tuple[Namespace, list[list[str]]] | None = None) -> None:
        """In one request: set payload fields of existing points ((ids, fields)
        pairs), insert or replace whole records with their vectors, delete
        records, and replace a namespace's remembered keys (see `applied`)."""
        ops: list = [qm.SetPayloadOperation(set_payload=qm.SetPayload(payload=fields, points=ids))
                     for ids, fields in changes if ids]
        points = [qm.PointStruct(id=rec.id, vector=vector, payload=_payload(rec)) for rec, vector in upserts]
        if applied is not None:
            ns, entries = applied
            # Qdrant wants a vector on every point; a unit one, as cosine cannot
            # normalise zero. No search reaches it (no owner in its payload).
            points.append(qm.PointStruct(
                id=applied_id(ns), vector=[1.0] + [0.0] * (self.vector_size - 1),
                payload={"applied_owner": ns.owner, "applied_tenant": ns.tenant, "applied": entries}))
        if points:
            ops.append(qm.UpsertOperation(upsert=qm.PointsList(points=points)))
        if deletes:
            ops.append(qm.DeleteOperation(delete=qm.PointIdsList(points=list(deletes))))
        if ops:
            await self._call(self._client.batch_update_points, self.collection, ops, wait=True)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._worker, self._client.close)
        self._worker.shutdown(wait=True)
