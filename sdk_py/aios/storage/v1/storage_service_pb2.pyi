import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FileInfo(_message.Message):
    __slots__ = ("owner", "path", "size", "sha256", "content_type", "update_time", "version_id", "is_folder")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    VERSION_ID_FIELD_NUMBER: _ClassVar[int]
    IS_FOLDER_FIELD_NUMBER: _ClassVar[int]
    owner: str
    path: str
    size: int
    sha256: str
    content_type: str
    update_time: _timestamp_pb2.Timestamp
    version_id: str
    is_folder: bool
    def __init__(self, owner: _Optional[str] = ..., path: _Optional[str] = ..., size: _Optional[int] = ..., sha256: _Optional[str] = ..., content_type: _Optional[str] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., version_id: _Optional[str] = ..., is_folder: _Optional[bool] = ...) -> None: ...

class WriteFileHeader(_message.Message):
    __slots__ = ("owner", "path", "content_type", "if_version_id", "if_absent", "request_id")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    IF_VERSION_ID_FIELD_NUMBER: _ClassVar[int]
    IF_ABSENT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    owner: str
    path: str
    content_type: str
    if_version_id: str
    if_absent: bool
    request_id: str
    def __init__(self, owner: _Optional[str] = ..., path: _Optional[str] = ..., content_type: _Optional[str] = ..., if_version_id: _Optional[str] = ..., if_absent: _Optional[bool] = ..., request_id: _Optional[str] = ...) -> None: ...

class WriteFileEnd(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WriteFileRequest(_message.Message):
    __slots__ = ("header", "chunk", "end")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    header: WriteFileHeader
    chunk: bytes
    end: WriteFileEnd
    def __init__(self, header: _Optional[_Union[WriteFileHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ..., end: _Optional[_Union[WriteFileEnd, _Mapping]] = ...) -> None: ...

class WriteFileResponse(_message.Message):
    __slots__ = ("file",)
    FILE_FIELD_NUMBER: _ClassVar[int]
    file: FileInfo
    def __init__(self, file: _Optional[_Union[FileInfo, _Mapping]] = ...) -> None: ...

class ReadFileRequest(_message.Message):
    __slots__ = ("owner", "path", "version_id")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    VERSION_ID_FIELD_NUMBER: _ClassVar[int]
    owner: str
    path: str
    version_id: str
    def __init__(self, owner: _Optional[str] = ..., path: _Optional[str] = ..., version_id: _Optional[str] = ...) -> None: ...

class ReadFileResponse(_message.Message):
    __slots__ = ("info", "chunk")
    INFO_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    info: FileInfo
    chunk: bytes
    def __init__(self, info: _Optional[_Union[FileInfo, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class StatFileRequest(_message.Message):
    __slots__ = ("owner", "path")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    owner: str
    path: str
    def __init__(self, owner: _Optional[str] = ..., path: _Optional[str] = ...) -> None: ...

class StatFileResponse(_message.Message):
    __slots__ = ("file",)
    FILE_FIELD_NUMBER: _ClassVar[int]
    file: FileInfo
    def __init__(self, file: _Optional[_Union[FileInfo, _Mapping]] = ...) -> None: ...

class ListFilesRequest(_message.Message):
    __slots__ = ("owner", "prefix", "page_size", "page_token", "recursive")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    RECURSIVE_FIELD_NUMBER: _ClassVar[int]
    owner: str
    prefix: str
    page_size: int
    page_token: str
    recursive: bool
    def __init__(self, owner: _Optional[str] = ..., prefix: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., recursive: _Optional[bool] = ...) -> None: ...

class ListFilesResponse(_message.Message):
    __slots__ = ("files", "next_page_token")
    FILES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    files: _containers.RepeatedCompositeFieldContainer[FileInfo]
    next_page_token: str
    def __init__(self, files: _Optional[_Iterable[_Union[FileInfo, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteFileRequest(_message.Message):
    __slots__ = ("owner", "path", "recursive", "request_id")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    RECURSIVE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    owner: str
    path: str
    recursive: bool
    request_id: str
    def __init__(self, owner: _Optional[str] = ..., path: _Optional[str] = ..., recursive: _Optional[bool] = ..., request_id: _Optional[str] = ...) -> None: ...

class DeleteFileResponse(_message.Message):
    __slots__ = ("deleted_count",)
    DELETED_COUNT_FIELD_NUMBER: _ClassVar[int]
    deleted_count: int
    def __init__(self, deleted_count: _Optional[int] = ...) -> None: ...

class FileVersion(_message.Message):
    __slots__ = ("version_id", "size", "sha256", "update_time", "is_latest", "is_delete_marker")
    VERSION_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    IS_LATEST_FIELD_NUMBER: _ClassVar[int]
    IS_DELETE_MARKER_FIELD_NUMBER: _ClassVar[int]
    version_id: str
    size: int
    sha256: str
    update_time: _timestamp_pb2.Timestamp
    is_latest: bool
    is_delete_marker: bool
    def __init__(self, version_id: _Optional[str] = ..., size: _Optional[int] = ..., sha256: _Optional[str] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., is_latest: _Optional[bool] = ..., is_delete_marker: _Optional[bool] = ...) -> None: ...

class ListFileVersionsRequest(_message.Message):
    __slots__ = ("owner", "path")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    owner: str
    path: str
    def __init__(self, owner: _Optional[str] = ..., path: _Optional[str] = ...) -> None: ...

class ListFileVersionsResponse(_message.Message):
    __slots__ = ("versions",)
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[FileVersion]
    def __init__(self, versions: _Optional[_Iterable[_Union[FileVersion, _Mapping]]] = ...) -> None: ...

class RollbackFileRequest(_message.Message):
    __slots__ = ("owner", "path", "version_id", "time", "request_id")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    VERSION_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    owner: str
    path: str
    version_id: str
    time: _timestamp_pb2.Timestamp
    request_id: str
    def __init__(self, owner: _Optional[str] = ..., path: _Optional[str] = ..., version_id: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class RollbackFileResponse(_message.Message):
    __slots__ = ("file",)
    FILE_FIELD_NUMBER: _ClassVar[int]
    file: FileInfo
    def __init__(self, file: _Optional[_Union[FileInfo, _Mapping]] = ...) -> None: ...

class RetrieveFilesRequest(_message.Message):
    __slots__ = ("owners", "query", "top_k", "prefix")
    OWNERS_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    owners: _containers.RepeatedScalarFieldContainer[str]
    query: str
    top_k: int
    prefix: str
    def __init__(self, owners: _Optional[_Iterable[str]] = ..., query: _Optional[str] = ..., top_k: _Optional[int] = ..., prefix: _Optional[str] = ...) -> None: ...

class Passage(_message.Message):
    __slots__ = ("owner", "path", "text", "score", "chunk_index")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_INDEX_FIELD_NUMBER: _ClassVar[int]
    owner: str
    path: str
    text: str
    score: float
    chunk_index: int
    def __init__(self, owner: _Optional[str] = ..., path: _Optional[str] = ..., text: _Optional[str] = ..., score: _Optional[float] = ..., chunk_index: _Optional[int] = ...) -> None: ...

class RetrieveFilesResponse(_message.Message):
    __slots__ = ("passages",)
    PASSAGES_FIELD_NUMBER: _ClassVar[int]
    passages: _containers.RepeatedCompositeFieldContainer[Passage]
    def __init__(self, passages: _Optional[_Iterable[_Union[Passage, _Mapping]]] = ...) -> None: ...

class PresignFileRequest(_message.Message):
    __slots__ = ("owner", "path", "expires_in")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_FIELD_NUMBER: _ClassVar[int]
    owner: str
    path: str
    expires_in: _duration_pb2.Duration
    def __init__(self, owner: _Optional[str] = ..., path: _Optional[str] = ..., expires_in: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class PresignFileResponse(_message.Message):
    __slots__ = ("url", "expire_time")
    URL_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    url: str
    expire_time: _timestamp_pb2.Timestamp
    def __init__(self, url: _Optional[str] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
