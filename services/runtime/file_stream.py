"""The content of a file write stream (storage's WriteFile, the kernel's
UploadFile): after the header, chunks, then an end message.

gRPC ends the request stream of a client that died half way exactly as it
ends one the client finished, so only the end message tells a whole file
from a truncated one: a stream without it, or with anything after it,
raises INVALID_ARGUMENT, and the writer that consumes the chunks writes
nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from services.runtime import errors


async def header(parts: AsyncIterator):
    """The stream's first message's header, or INVALID_ARGUMENT."""
    first = await anext(parts, None)
    if first is None or not first.HasField("header"):
        raise errors.InvalidArgument("the first message must be the header", field="header")
    return first.header


async def chunks(parts: AsyncIterator) -> AsyncIterator[bytes]:
    """The chunks of `parts` (the messages after the header, each a oneof
    `part` of header, chunk or end), up to and checked against the end."""
    async for part in parts:
        which = part.WhichOneof("part")
        if which == "end":
            break
        if which == "header":
            raise errors.InvalidArgument("only the first message may be a header; the file was not written",
                                         field="header")
        yield part.chunk
    else:
        raise errors.InvalidArgument("the stream ended without its end message; the file was not written",
                                     field="end")
    if await anext(parts, None) is not None:
        raise errors.InvalidArgument("nothing may follow the end message; the file was not written", field="end")
