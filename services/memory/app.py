"""Wires the memory service onto the shared runtime.

Its RPCs answer UNIMPLEMENTED until the service is built; health and
reflection already work, so the stack and its tooling can rely on it.
"""

from __future__ import annotations

from dataclasses import dataclass

from aios.memory.v1 import memory_service_pb2 as pb
from aios.memory.v1 import memory_service_pb2_grpc as pb_grpc
from services.runtime.config import Env, server_address
from services.runtime.server import Service

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["MemoryService"].full_name
DEFAULT_PORT = 50053


@dataclass(frozen=True)
class Config:
    host: str
    port: int

    @classmethod
    def from_env(cls, environ=None) -> "Config":
        host, port = server_address(Env("AIOS_MEMORY_", environ), DEFAULT_PORT)
        return cls(host=host, port=port)


async def build(config: Config) -> Service:
    servicer = pb_grpc.MemoryServiceServicer()
    return Service(
        names=[SERVICE_NAME],
        register=lambda server: pb_grpc.add_MemoryServiceServicer_to_server(servicer, server),
    )
