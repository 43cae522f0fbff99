"""`aios models`: the models the caller may use, through the kernel, with
each endpoint's health and the kernel's default model."""

from __future__ import annotations

from services.cli import common


def register(sub, client_args) -> None:
    p = sub.add_parser("models", help="the models you may use, each endpoint's health, and the default model")
    client_args(p, timeout=10.0)
    p.set_defaults(func=common.command(_models))


def _models(kernel, args) -> None:
    """Exit 1 (a CliError) when an endpoint is down."""
    reply = kernel.list_models()
    rows, down = [], []
    for model in reply.models:
        name = f"{model.name} (default)" if model.is_default else model.name
        for ep in model.endpoints or [None]:
            if ep is None:
                rows.append((name, "(in process)", "", "", "up"))
                continue
            status = "up" if ep.healthy else f"DOWN: {ep.last_error or 'unreachable'}"
            if not ep.healthy:
                down.append(f"{model.name}/{ep.name}")
            rows.append((name, ep.name, f"{ep.in_flight}/{ep.max_concurrency}", ep.base_url or "-", status))
    common.table(("MODEL", "ENDPOINT", "LOAD", "URL", "STATUS"), rows)
    if not reply.models:
        raise common.CliError("no model you may use: ask an administrator for a group that allows one")
    if down:
        raise common.CliError(f"endpoint{'s' if len(down) > 1 else ''} down: {', '.join(down)}")
