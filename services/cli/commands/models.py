"""`aios models`: the models llm_core serves and whether each endpoint is up.

An operator command: it asks llm_core itself (ListModels), since agents
never call llm_core and the kernel has no call that lists endpoints.
"""

from __future__ import annotations

import os
import sys

DEFAULT_LLM_ADDR = "127.0.0.1:50052"


def register(sub, client_args) -> None:
    p = sub.add_parser("models", help="list the configured models and whether each endpoint is up")
    p.add_argument("--llm-addr", default=os.environ.get("AIOS_LLM_ADDR", DEFAULT_LLM_ADDR),
                   help=f"llm_core address (default $AIOS_LLM_ADDR or {DEFAULT_LLM_ADDR})")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds before giving up")
    p.set_defaults(func=cmd_models)


def cmd_models(args) -> int:
    """Exit 0 when every endpoint is up, 1 when one is down or llm_core is unreachable."""
    import grpc

    from aios.llm.v1 import llm_service_pb2 as pb
    from aios.llm.v1 import llm_service_pb2_grpc as pb_grpc

    try:
        with grpc.insecure_channel(args.llm_addr) as channel:
            resp = pb_grpc.LlmServiceStub(channel).ListModels(pb.ListModelsRequest(), timeout=args.timeout)
    except grpc.RpcError as exc:
        print(f"error: llm_core at {args.llm_addr}: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    rows = [("MODEL", "KIND", "ENDPOINT", "LOAD", "URL", "STATUS")]
    all_up = True
    for model in resp.models:
        kind = pb.ModelKind.Name(model.kind).removeprefix("MODEL_KIND_").lower()
        if not model.endpoints:
            rows.append((model.name, kind, "(in process)", "", "", "up"))
        for ep in model.endpoints:
            all_up = all_up and ep.healthy
            status = "up" if ep.healthy else f"DOWN: {ep.last_error or 'unreachable'}"
            rows.append((model.name, kind, ep.name, f"{ep.in_flight}/{ep.max_concurrency}", ep.base_url, status))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
    return 0 if all_up else 1
