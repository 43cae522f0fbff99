"""Semantic index of text files: passages cut from a file, their vectors in
Qdrant with the owner and path as payload.

`FileIndex` is synchronous and, in Qdrant's embedded local mode, not
thread-safe: the domain runs every call on one dedicated thread. One
collection per vector size ("files-384"), so a change of embedding model
never mixes vectors of different spaces.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from qdrant_client import QdrantClient, models

from services.storage import paths

COLLECTION_PREFIX = "files-"
PASSAGE_CHARS = 800  # all-MiniLM-L6-v2 reads 256 word pieces; ~800 characters of prose fit
_TEXT_TYPES = ("application/json", "application/xml", "application/yaml", "application/x-yaml",
               "application/toml", "application/javascript", "application/x-sh", "application/sql",
               "application/csv", "application/markdown")
_GENERIC_TYPES = ("", "application/octet-stream", "binary/octet-stream")


@dataclass
class Passage:
    owner: str
    path: str
    text: str
    score: float
    chunk_index: int


def text_of(data: bytes, content_type: str) -> str | None:
    """The text of a file worth indexing, or None for binary content."""
    base = content_type.split(";", 1)[0].strip().lower()
    declared = (base.startswith("text/") or base in _TEXT_TYPES
                or base.endswith(("+json", "+xml", "+yaml")))
    if not declared and base not in _GENERIC_TYPES:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        if not declared:
            return None
        text = data.decode("utf-8", errors="replace")
    if "\x00" in text:
        return None
    return text


def _pieces(paragraph: str, limit: int) -> list[str]:
    """A paragraph cut at sentence ends, then at spaces, into pieces <= limit."""
    if len(paragraph) <= limit:
        return [paragraph]
    out = []
    for sentence in re.split(r"(?<=[.!?])\s+", paragraph):
        while len(sentence) > limit:
            cut = sentence.rfind(" ", 0, limit)
            cut = cut if cut > limit // 2 else limit
            out.append(sentence[:cut].strip())
            sentence = sentence[cut:].strip()
        if sentence:
            out.append(sentence)
    return out


def passages(text: str, limit: int = PASSAGE_CHARS) -> list[str]:
    """Consecutive paragraphs packed into passages of at most `limit` characters."""
    pieces = []
    for para in re.split(r"\n\s*\n", text):
        para = " ".join(para.split())
        if para:
            pieces.extend(_pieces(para, limit))
    out: list[str] = []
    for piece in pieces:
        if out and len(out[-1]) + 1 + len(piece) <= limit:
            out[-1] = f"{out[-1]}\n{piece}"
        else:
            out.append(piece)
    return out


def _point_id(owner: str, path: str, chunk: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"aios-file:{owner}\x00{path}\x00{chunk}"))


def _owner_paths(owner: str, rel_paths: list[str]) -> models.Filter:
    return models.Filter(must=[
        models.FieldCondition(key="owner", match=models.MatchValue(value=owner)),
        models.FieldCondition(key="path", match=models.MatchAny(any=rel_paths)),
    ])


class FileIndex:
    def __init__(self, path: str = "", url: str = "") -> None:
        self.path, self.url = path, url
        self.remote = bool(url)
        self.client: QdrantClient | None = None
        self._known: set[str] = set()

    def connect(self) -> None:
        """Open the index (on the thread that will use it)."""
        self.client = QdrantClient(url=self.url) if self.url else QdrantClient(path=self.path)
        self._known = {c.name for c in self.client.get_collections().collections
                       if c.name.startswith(COLLECTION_PREFIX)}

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def _collection(self, dims: int) -> str:
        name = f"{COLLECTION_PREFIX}{dims}"
        if name not in self._known:
            if not self.client.collection_exists(name):
                self.client.create_collection(name, vectors_config=models.VectorParams(
                    size=dims, distance=models.Distance.COSINE))
                if self.remote:  # payload indexes matter on a server; local mode scans
                    for field in ("owner", "path", "folders"):
                        self.client.create_payload_index(name, field, models.PayloadSchemaType.KEYWORD)
            self._known.add(name)
        return name

    def remove(self, owner: str, rel_paths: list[str]) -> None:
        if not rel_paths:
            return
        for name in self._known:
            self.client.delete(name, points_selector=models.FilterSelector(
                filter=_owner_paths(owner, rel_paths)))

    def replace(self, owner: str, rel_path: str, version_id: str, texts: list[str],
                vectors: list[list[float]]) -> None:
        """The file's passages become exactly these (old ones removed first)."""
        self.remove(owner, [rel_path])
        if not texts:
            return
        name = self._collection(len(vectors[0]))
        folders = paths.folders(rel_path)
        self.client.upsert(name, points=[
            models.PointStruct(id=_point_id(owner, rel_path, i), vector=vec, payload={
                "owner": owner, "path": rel_path, "folders": folders, "chunk_index": i,
                "text": text, "version_id": version_id})
            for i, (text, vec) in enumerate(zip(texts, vectors, strict=True))
        ])

    def search(self, owners: list[str], vector: list[float], k: int, prefix: str = "") -> list[Passage]:
        name = f"{COLLECTION_PREFIX}{len(vector)}"
        if name not in self._known and not self.client.collection_exists(name):
            return []
        must = [models.FieldCondition(key="owner", match=models.MatchAny(any=owners))]
        # Qdrant matches whole values: filter on the folder part of the
        # prefix, then check the rest here (fetching more to leave enough).
        folder = prefix[: prefix.rfind("/") + 1]
        if folder:
            must.append(models.FieldCondition(key="folders", match=models.MatchValue(value=folder)))
        exact = prefix == folder
        hits = self.client.query_points(name, query=vector, query_filter=models.Filter(must=must),
                                        limit=k if exact else k * 5, with_payload=True).points
        out = []
        for hit in hits:
            p = hit.payload or {}
            if not exact and not p.get("path", "").startswith(prefix):
                continue
            out.append(Passage(owner=p.get("owner", ""), path=p.get("path", ""), text=p.get("text", ""),
                               score=float(hit.score), chunk_index=int(p.get("chunk_index", 0))))
        return out[:k]
