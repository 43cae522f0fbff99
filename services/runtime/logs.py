"""structlog configured once for every service: JSON lines on stderr, each
carrying the request id, agent, and trace and span ids of the call being
served (the trace id is the same in every service a syscall passes)."""

from __future__ import annotations

import logging
import sys

import structlog

from services.runtime import context, tracing


def _add_request_facts(_, __, event_dict):
    rid, who = context.request_id.get(), context.agent.get()
    if rid:
        event_dict.setdefault("request_id", rid)
    if who:
        event_dict.setdefault("agent", who)
    ids = tracing.ids()
    if ids is not None:
        event_dict.setdefault("trace_id", ids[0])
        event_dict.setdefault("span_id", ids[1])
    return event_dict


def configure(service: str, level: str = "INFO", json: bool = True) -> None:
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            _add_request_facts,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)


def get(name: str | None = None):
    return structlog.get_logger(name)
