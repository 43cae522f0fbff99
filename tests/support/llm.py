"""llm_core's request for tests that call llm_core directly, as the kernel
builds it: the agent's call plus the kernel's own fields."""

from __future__ import annotations

from aios.common.v1 import llm_pb2 as lc
from aios.llm.v1 import llm_service_pb2 as pb

KERNEL_FIELDS = ("resume", "session_id", "slice_tokens")


def generate(**fields) -> pb.GenerateRequest:
    own = {k: fields.pop(k) for k in KERNEL_FIELDS if k in fields}
    return pb.GenerateRequest(call=lc.LlmCall(**fields), **own)
