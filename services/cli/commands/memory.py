"""`aios memory add|search|ls|get|rm`: an agent's memory through the kernel."""

from __future__ import annotations

import sys

from services.cli import common

_TIER_NAMES = {1: "working", 2: "long_term"}


def _short(text: str, width: int = 72) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[:width - 1] + "…"


def _metadata(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"aios memory: --meta expects KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


def _add(kernel, args) -> None:
    rec = kernel.memory.add(args.text, tags=args.tag, metadata=_metadata(args.meta), owner=args.agent)
    print(rec.id)


def _search(kernel, args) -> None:
    results = kernel.memory.search(args.query, k=args.k, filter=args.filter, owner=args.agent,
                                   score_threshold=args.min_score)
    common.table(("SCORE", "ID", "CONTENT"), [(f"{h.score:.3f}", h.memory.id, _short(h.memory.content))
                                             for h in results], empty="no matching memories")


def _ls(kernel, args) -> None:
    token, rows = "", []
    while len(rows) < args.limit:
        page = kernel.memory.list(filter=args.filter, tier=args.tier, owner=args.agent,
                                  page_size=min(100, args.limit - len(rows)), page_token=token)
        rows += [(rec.id, _TIER_NAMES.get(rec.tier, "?"), ",".join(rec.tags) or "-", _short(rec.content, 56))
                 for rec in page.memories]
        token = page.next_page_token
        if not token:
            break
    common.table(("ID", "TIER", "TAGS", "CONTENT"), rows, empty="no memories")


def _get(kernel, args) -> None:
    rec = kernel.memory.get(args.id, owner=args.agent)
    print(rec.content)
    print(f"-- id {rec.id}, tier {_TIER_NAMES.get(rec.tier, '?')}, tags {list(rec.tags)}, "
          f"metadata {dict(rec.metadata)}, accesses {rec.access_count}", file=sys.stderr)


def _rm(kernel, args) -> None:
    kernel.memory.delete(args.id, owner=args.agent)
    print(f"deleted {args.id}")


def register(sub, client_args) -> None:
    memory = sub.add_parser("memory", help="an agent's memory: add, search, ls, get, rm")
    verbs = memory.add_subparsers(dest="memory_command", required=True)

    def verb(name: str, fn, help: str):
        p = verbs.add_parser(name, help=help)
        p.add_argument("--agent", default="", help="whose memory (default: the calling agent's own)")
        client_args(p)
        p.set_defaults(func=common.command(fn))
        return p

    add = verb("add", _add, "store a memory; prints its id")
    add.add_argument("text", help="what to remember")
    add.add_argument("--tag", action="append", default=[], help="a tag (repeatable)")
    add.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE",
                     help="a metadata entry (repeatable)")

    search = verb("search", _search, "the memories closest in meaning to a query")
    search.add_argument("query", help="what to look for, in plain words")
    search.add_argument("-k", type=int, default=5, help="how many results (default 5)")
    search.add_argument("--filter", default="", help='e.g. tag:work AND metadata.kind="note"')
    search.add_argument("--min-score", type=float, default=None, help="drop results scoring lower")

    ls = verb("ls", _ls, "list memories")
    ls.add_argument("--filter", default="", help='e.g. tag:work AND metadata.kind="note"')
    ls.add_argument("--tier", choices=["working", "long_term"], default="",
                    help="only working or long-term memory (default both)")
    ls.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")

    get = verb("get", _get, "print one memory")
    get.add_argument("id", help="the memory's id")

    rm = verb("rm", _rm, "delete a memory")
    rm.add_argument("id", help="the memory's id (a person confirms the delete)")

