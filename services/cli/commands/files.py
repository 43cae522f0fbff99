"""`aios files put|get|ls|rm|versions|rollback|search|presign`: an agent's
files through the kernel.

Remote paths are relative to the agent's own space ("notes/a.txt"); files
travel inline in one syscall, so at most 4 MiB each.
"""

from __future__ import annotations

import mimetypes
import sys
from datetime import datetime, timezone
from pathlib import Path

INLINE_LIMIT = 4 * 1024 * 1024


def _when(ts) -> str:
    if not ts.seconds and not ts.nanos:
        return "-"
    return ts.ToDatetime(tzinfo=timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _short(text: str, width: int = 96) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[:width - 1] + "…"


def _put(kernel, args) -> None:
    local = Path(args.local)
    size = local.stat().st_size
    if size > INLINE_LIMIT:
        raise OSError(f"{local} is {size} bytes; files travel inline, at most {INLINE_LIMIT} bytes")
    content_type = args.content_type or mimetypes.guess_type(local.name)[0] or ""
    info = kernel.files.write(args.remote, local.read_bytes(), content_type=content_type, owner=args.agent)
    print(f"wrote {info.path} ({info.size} bytes, version {info.version_id}, sha256 {info.sha256})")


def _get(kernel, args) -> None:
    data = kernel.files.read(args.remote, version_id=args.version, owner=args.agent)
    if args.local in (None, "-"):
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        Path(args.local).write_bytes(data)
        print(f"read {args.remote} -> {args.local} ({len(data)} bytes)", file=sys.stderr)


def _ls(kernel, args) -> None:
    token, shown = "", 0
    while True:
        page = kernel.files.list(args.prefix, recursive=args.recursive, page_token=token, owner=args.agent)
        for f in page.files:
            if f.is_folder:
                print(f"{'-':>12}  {'-':<19}  {f.path}/")
            else:
                print(f"{f.size:>12}  {_when(f.update_time):<19}  {f.path}")
        shown += len(page.files)
        token = page.next_page_token
        if not token:
            break
    if not shown:
        print("no files", file=sys.stderr)


def _rm(kernel, args) -> None:
    count = kernel.files.delete(args.path, recursive=args.recursive, owner=args.agent)
    print(f"deleted {count} file{'s' if count != 1 else ''}")


def _versions(kernel, args) -> None:
    for v in kernel.files.versions(args.path, owner=args.agent):
        flags = ",".join(f for f, on in (("current", v.is_latest), ("deleted", v.is_delete_marker)) if on)
        size = "-" if v.is_delete_marker else str(v.size)
        print(f"{v.version_id}  {_when(v.update_time):<19}  {size:>12}  {v.sha256[:12] or '-':<12}  {flags}")


def _rollback(kernel, args) -> None:
    if args.time:
        try:
            when = datetime.fromisoformat(args.time)
        except ValueError:
            raise SystemExit(f"aios files rollback: --time {args.time!r} is not an ISO 8601 time") from None
        if when.tzinfo is None:
            when = when.astimezone()  # a time without zone is local time
        info = kernel.files.rollback(args.path, at=when.timestamp(), owner=args.agent)
    else:
        info = kernel.files.rollback(args.path, version_id=args.version, owner=args.agent)
    print(f"rolled back {info.path}: now version {info.version_id} ({info.size} bytes, sha256 {info.sha256})")


def _search(kernel, args) -> None:
    passages = kernel.files.search(args.query, k=args.k, prefix=args.prefix)
    for p in passages:
        print(f"{p.score:6.3f}  {p.path}#{p.chunk_index}  {_short(p.text)}")
    if not passages:
        print("no matching passages", file=sys.stderr)


def _presign(kernel, args) -> None:
    resp = kernel.files.presign(args.path, expires_in=args.expires, owner=args.agent)
    print(resp.url)
    print(f"-- valid until {_when(resp.expire_time)}", file=sys.stderr)


def register(sub, client_args) -> None:
    files = sub.add_parser("files", help="an agent's files: put, get, ls, rm, versions, rollback, search")
    fsub = files.add_subparsers(dest="files_command", required=True)

    def command(name: str, fn, help: str, owner: bool = True):
        p = fsub.add_parser(name, help=help)
        client_args(p)
        if owner:
            p.add_argument("--agent", default="", help="another agent's space (needs a grant)")
        p.set_defaults(func=lambda args, fn=fn: _with_client(fn, args))
        return p

    p = command("put", _put, "upload a local file (at most 4 MiB) to REMOTE")
    p.add_argument("local")
    p.add_argument("remote")
    p.add_argument("--content-type", default="", help="default: guessed from the file name")

    p = command("get", _get, "download REMOTE to LOCAL (default: stdout)")
    p.add_argument("remote")
    p.add_argument("local", nargs="?", default=None)
    p.add_argument("--version", default="", help="a version id (default: the current version)")

    p = command("ls", _ls, "list files; a PREFIX ending in / lists that folder")
    p.add_argument("prefix", nargs="?", default="")
    p.add_argument("-r", "--recursive", action="store_true", help="everything below, not one level")

    p = command("rm", _rm, "delete a file (versions stay for rollback)")
    p.add_argument("path")
    p.add_argument("-r", "--recursive", action="store_true", help="delete a folder and all below it")

    p = command("versions", _versions, "list a file's versions, newest first")
    p.add_argument("path")

    p = command("rollback", _rollback, "make an earlier version current again (as a new version)")
    p.add_argument("path")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--version", help="the version id to restore")
    target.add_argument("--time", help="restore the version current at this ISO 8601 time")

    p = command("search", _search, "passages of your text files closest in meaning to QUERY", owner=False)
    p.add_argument("query")
    p.add_argument("-k", type=int, default=5, help="passages to show (default 5)")
    p.add_argument("--prefix", default="", help="only files under this path prefix")

    p = command("presign", _presign, "a time-limited URL reading a file from the object store")
    p.add_argument("path")
    p.add_argument("--expires", type=float, default=3600, help="seconds the URL is valid (max 7 days)")


def _with_client(fn, args) -> int:
    from services.cli.main import with_client  # late: main imports this package

    return with_client(fn, args)
