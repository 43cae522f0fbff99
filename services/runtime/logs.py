"""structlog configured once for every service: JSON lines on stderr, each
carrying the request id and agent of the call being served."""

from __future__ import annotations

import logging
import sys

import structlog

from services.runtime import context


def _add_request_facts(_, __, event_dict):
    rid, who = context.request_id.get(), context.agent.get()
    if rid:
        event_dict.setdefault("request_id", rid)
    if who:
        event_dict.setdefault("agent", who)
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
