"""The one way a service opens a channel to another: the caller's service
credential and request context on every call (MetadataChannel), room for large messages, and a fast reconnect, so a
restarted service is found again within a fraction of a second rather than
after gRPC's default backoff of up to two minutes.

Calls are spread round-robin over every address a target resolves to, so
`dns:///llm-core-headless:50052` (a headless Service: one address per pod)
or `ipv4:10.0.0.1:50052,10.0.0.2:50052` balances per call; a target of one
address behaves as before. The channel speaks TLS, presenting this service's
certificate, when services/runtime/tls.py finds one configured."""

from __future__ import annotations

import json

import grpc

from services.runtime.interceptors import MetadataChannel
from services.runtime.tls import TlsConfig

MAX_MESSAGE = 8 * 1024 * 1024
OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
    # gRPC's default, pick_first, sends every call to the first address that answers.
    ("grpc.service_config", json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})),
]


def channel(address: str, service_token: str = "", tls: TlsConfig | None = None,
            server_name: str = "") -> MetadataChannel:
    """A channel to `address`; `tls` None: as the environment says (TlsConfig.from_env).
    With TLS, `server_name` is the name the peer's certificate must carry when
    it is not the address's host (a pod dialled by its IP, e.g. "kernel")."""
    credentials = (TlsConfig.from_env() if tls is None else tls).channel_credentials()
    if credentials is None:
        return MetadataChannel(grpc.aio.insecure_channel(address, options=OPTIONS), service_token)
    options = [*OPTIONS, ("grpc.ssl_target_name_override", server_name)] if server_name else OPTIONS
    return MetadataChannel(grpc.aio.secure_channel(address, credentials, options=options), service_token)
