"""MemoryService over the domain: proto in, domain call, proto out."""

from __future__ import annotations

from google.protobuf import timestamp_pb2

from aios.memory.v1 import memory_service_pb2 as pb
from aios.memory.v1 import memory_service_pb2_grpc as pb_grpc
from services.memory.memory import Memory
from services.memory.records import LONG_TERM, WORKING, MemoryInput, Namespace, Record
from services.runtime import errors

_TIERS = {WORKING: pb.MEMORY_TIER_WORKING, LONG_TERM: pb.MEMORY_TIER_LONG_TERM}
_TIER_NAMES = {v: k for k, v in _TIERS.items()}


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def to_proto(rec: Record) -> pb.MemoryRecord:
    return pb.MemoryRecord(
        id=rec.id, owner=rec.owner, tenant=rec.tenant, content=rec.content,
        metadata=rec.metadata, tags=rec.tags, create_time=_timestamp(rec.create_time),
        update_time=_timestamp(rec.update_time), last_access_time=_timestamp(rec.last_access_time),
        access_count=rec.access_count, tier=_TIERS.get(rec.tier, pb.MEMORY_TIER_UNSPECIFIED),
    )


def _input(msg: pb.MemoryInput) -> MemoryInput:
    return MemoryInput(content=msg.content, metadata=dict(msg.metadata), tags=tuple(msg.tags))


def _ns(request) -> Namespace:
    return Namespace.of(request.owner, request.tenant)


class MemoryServicer(pb_grpc.MemoryServiceServicer):
    def __init__(self, memory: Memory) -> None:
        self.memory = memory

    async def AddMemory(self, request, context):
        rec = await self.memory.add(_ns(request), _input(request.memory), request.request_id)
        return pb.AddMemoryResponse(memory=to_proto(rec))

    async def BatchAddMemories(self, request, context):
        recs = await self.memory.batch_add(_ns(request), [_input(m) for m in request.memories],
                                           request.request_id)
        return pb.BatchAddMemoriesResponse(memories=[to_proto(r) for r in recs])

    async def GetMemory(self, request, context):
        return pb.GetMemoryResponse(memory=to_proto(await self.memory.get(_ns(request), request.id)))

    async def UpdateMemory(self, request, context):
        rec = await self.memory.update(_ns(request), request.id, _input(request.memory),
                                       list(request.update_mask.paths), request.request_id)
        return pb.UpdateMemoryResponse(memory=to_proto(rec))

    async def DeleteMemory(self, request, context):
        await self.memory.delete(_ns(request), request.id, request.request_id)
        return pb.DeleteMemoryResponse()

    async def ListMemories(self, request, context):
        if request.tier not in _TIER_NAMES and request.tier != pb.MEMORY_TIER_UNSPECIFIED:
            raise errors.InvalidArgument(f"unknown tier {request.tier}", field="tier")
        recs, token = await self.memory.list(
            _ns(request), filter=request.filter, tier=_TIER_NAMES.get(request.tier, ""),
            page_size=request.page_size, page_token=request.page_token)
        return pb.ListMemoriesResponse(memories=[to_proto(r) for r in recs], next_page_token=token)

    async def SearchMemories(self, request, context):
        threshold = request.score_threshold if request.HasField("score_threshold") else None
        hits = await self.memory.search(_ns(request), request.query, top_k=request.top_k,
                                        filter=request.filter, score_threshold=threshold)
        return pb.SearchMemoriesResponse(
            results=[pb.ScoredMemory(memory=to_proto(rec), score=score) for rec, score in hits])

    async def CountMemories(self, request, context):
        return pb.CountMemoriesResponse(count=await self.memory.count(_ns(request)))
