"""StorageService over gRPC: proto in, FileStore, proto out. Errors are
AiosErrors the shared runtime turns into statuses."""

from __future__ import annotations

import contextlib

from google.protobuf import timestamp_pb2

from aios.storage.v1 import storage_service_pb2 as pb
from aios.storage.v1 import storage_service_pb2_grpc as pb_grpc
from services.runtime import file_stream
from services.storage.files import FileInfo, FileStore
from services.storage.objects import Version


def _time(seconds: float | None) -> timestamp_pb2.Timestamp | None:
    if seconds is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def file_info(f: FileInfo) -> pb.FileInfo:
    return pb.FileInfo(owner=f.owner, path=f.path, size=f.size, sha256=f.sha256,
                       content_type=f.content_type, update_time=_time(f.modified),
                       version_id=f.version_id, is_folder=f.is_folder)


def file_version(v: Version) -> pb.FileVersion:
    return pb.FileVersion(version_id=v.version_id, size=v.size, sha256=v.sha256,
                          update_time=_time(v.modified), is_latest=v.is_latest,
                          is_delete_marker=v.is_delete_marker)


class StorageServicer(pb_grpc.StorageServiceServicer):
    def __init__(self, files: FileStore) -> None:
        self.files = files

    async def WriteFile(self, request_iterator, context):
        parts = aiter(request_iterator)
        header = await file_stream.header(parts)
        info = await self.files.write(header.owner, header.path, file_stream.chunks(parts),
                                      content_type=header.content_type, if_version_id=header.if_version_id,
                                      if_absent=header.if_absent, request_id=header.request_id)
        return pb.WriteFileResponse(file=file_info(info))

    async def ReadFile(self, request, context):
        info, body = await self.files.read(request.owner, request.path, request.version_id)
        # aclosing: a caller that goes away mid-stream releases the S3 response now.
        async with contextlib.aclosing(body):
            yield pb.ReadFileResponse(info=file_info(info))
            async for chunk in body:
                yield pb.ReadFileResponse(chunk=chunk)

    async def StatFile(self, request, context):
        return pb.StatFileResponse(file=file_info(await self.files.stat(request.owner, request.path)))

    async def ListFiles(self, request, context):
        files, token = await self.files.list(request.owner, request.prefix, page_size=request.page_size,
                                             page_token=request.page_token, recursive=request.recursive)
        return pb.ListFilesResponse(files=[file_info(f) for f in files], next_page_token=token)

    async def DeleteFile(self, request, context):
        count = await self.files.delete(request.owner, request.path, recursive=request.recursive,
                                        request_id=request.request_id)
        return pb.DeleteFileResponse(deleted_count=count)

    async def ListFileVersions(self, request, context):
        versions = await self.files.versions(request.owner, request.path)
        return pb.ListFileVersionsResponse(versions=[file_version(v) for v in versions])

    async def RollbackFile(self, request, context):
        target = request.WhichOneof("target")
        info = await self.files.rollback(
            request.owner, request.path, version_id=request.version_id if target == "version_id" else "",
            at=request.time.ToNanoseconds() / 1e9 if target == "time" else None,
            request_id=request.request_id)
        return pb.RollbackFileResponse(file=file_info(info))

    async def RetrieveFiles(self, request, context):
        found = await self.files.retrieve(list(request.owners), request.query, top_k=request.top_k,
                                          prefix=request.prefix)
        return pb.RetrieveFilesResponse(passages=[
            pb.Passage(owner=p.owner, path=p.path, text=p.text, score=p.score, chunk_index=p.chunk_index)
            for p in found])

    async def PresignFile(self, request, context):
        expires = request.expires_in.ToNanoseconds() / 1e9 if request.HasField("expires_in") else None
        url, expire = await self.files.presign(request.owner, request.path, expires)
        return pb.PresignFileResponse(url=url, expire_time=_time(expire))
