"""The kernel with one proposed change applied at start-up, to measure a fix
before it is made in services/ (benchmark tool; the kernel's code is not
edited). Run as `python -m bench.kernel_variant` with the kernel's usual
environment plus AIOS_BENCH_KERNEL_VARIANT:

- `pending_requests`: the kernel's gRPC server accepts any number of calls
  arriving at once. gRPC core cancels calls once more than
  `grpc.server.max_pending_requests` (default 1000) wait to be picked up by
  the application, which a burst of ~2000 agents exceeds;
- `plain_channels`: the kernel's channels to llm_core, memory and storage
  without grpc.aio client interceptors; the same metadata (request id,
  agent, service credential) is passed with each call instead. grpc.aio
  runs every intercepted call through an extra task and wrapper call object.
"""

from __future__ import annotations

import os

import grpc

from services.runtime.interceptors import outgoing_metadata


class _WithMetadata:
    """A multi-callable that adds the current request's metadata."""

    def __init__(self, callable_, token: str) -> None:
        self._callable = callable_
        self._token = token

    def __call__(self, request, *, timeout=None, metadata=None, **kwargs):
        md = list(metadata or ())
        present = {k for k, _ in md}
        md.extend((k, v) for k, v in outgoing_metadata(self._token) if k not in present)
        return self._callable(request, timeout=timeout, metadata=md, **kwargs)


class PlainChannel:
    """A grpc.aio channel whose calls carry the outgoing metadata explicitly."""

    def __init__(self, address: str, token: str) -> None:
        self._channel = grpc.aio.insecure_channel(
            address, options=[("grpc.max_receive_message_length", 8 * 1024 * 1024)])
        self._token = token

    def _wrap(self, kind: str):
        def make(method, *args, **kwargs):
            return _WithMetadata(getattr(self._channel, kind)(method, *args, **kwargs), self._token)
        return make

    def __getattr__(self, name):
        if name in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
            return self._wrap(name)
        return getattr(self._channel, name)

    async def close(self, grace=None):
        await self._channel.close(grace)


PENDING_LIMIT = 65536


def _raise_pending_limit() -> None:
    original = grpc.aio.server

    def server(*args, options=None, **kwargs):
        options = [*(options or ()), ("grpc.server.max_pending_requests", PENDING_LIMIT),
                   ("grpc.server.max_pending_requests_hard_limit", PENDING_LIMIT)]
        return original(*args, options=options, **kwargs)

    grpc.aio.server = server


def main() -> None:
    from services.scheduler import app

    for variant in filter(None, os.environ.get("AIOS_BENCH_KERNEL_VARIANT", "").split("+")):
        if variant == "plain_channels":
            app.channel = lambda address, service_token="": PlainChannel(address, service_token)
        elif variant == "pending_requests":
            _raise_pending_limit()
        else:
            raise SystemExit(f"unknown AIOS_BENCH_KERNEL_VARIANT={variant!r}")
    from services.runtime.server import run
    from services.scheduler.config import Config

    run("scheduler", Config.from_env, app.build)


if __name__ == "__main__":
    main()
