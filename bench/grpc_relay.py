"""A bare gRPC hop: a grpc.aio server that passes each llm_core call, as
bytes, to llm_core and its answer back; no interceptors, no parsing.

    python -m bench.grpc_relay UPSTREAM      # prints "LISTENING host:port"

The overhead sweep times calls through it beside calls through the kernel:
what one more gRPC hop costs in Python on this machine, the floor under the
kernel's own added latency (the kernel is one hop in front of llm_core).
"""

from __future__ import annotations

import asyncio
import sys

import grpc

SERVICE = "aios.llm.v1.LlmService"
METHODS = ("Generate", "ListModels")


async def serve(upstream: str) -> None:
    channel = grpc.aio.insecure_channel(upstream)
    server = grpc.aio.server()

    def relay(method: str):
        call = channel.unary_unary(f"/{SERVICE}/{method}")  # bytes in, bytes out

        async def handle(request: bytes, context) -> bytes:
            return await call(request)
        return grpc.unary_unary_rpc_method_handler(handle)

    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        SERVICE, {m: relay(m) for m in METHODS})])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"LISTENING 127.0.0.1:{port}", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1]))
