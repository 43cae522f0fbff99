"""The one way a service opens a channel to another: the caller's service
credential and request context on every call (the shared client
interceptors), room for large messages, and a fast reconnect, so a
restarted service is found again within a fraction of a second rather than
after gRPC's default backoff of up to two minutes."""

from __future__ import annotations

import grpc

from services.runtime.interceptors import client_interceptors

MAX_MESSAGE = 8 * 1024 * 1024
OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


def channel(address: str, service_token: str = "") -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(address, interceptors=client_interceptors(service_token), options=OPTIONS)
