"""`aios files put|get|ls|rm|versions|rollback|search|presign`: an agent's
files through the kernel.

Remote paths are relative to the agent's own space ("notes/a.txt"); put
and get stream files of any size in 1 MiB chunks.
"""

from __future__ import annotations

import mimetypes
import sys
from datetime import datetime, timezone
from pathlib import Path

from services.cli import common


def _when(ts) -> str:
    if not ts.seconds and not ts.nanos:
        return "-"
    return ts.ToDatetime(tzinfo=timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _short(text: str, width: int = 96) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[:width - 1] + "…"


def _put(kernel, args) -> None:
    local = Path(args.local)
    content_type = args.content_type or mimetypes.guess_type(local.name)[0] or ""
    info = kernel.files.upload(args.remote, local, content_type=content_type, owner=args.agent)
    print(f"wrote {info.path} ({info.size} bytes, version {info.version_id}, sha256 {info.sha256})")


def _get(kernel, args) -> None:
    if args.local in (None, "-"):
        kernel.files.download(args.remote, sys.stdout.buffer, version_id=args.version, owner=args.agent)
        sys.stdout.buffer.flush()
    else:
        info = kernel.files.download(args.remote, args.local, version_id=args.version, owner=args.agent)
        print(f"read {args.remote} -> {args.local} ({info.size} bytes)", file=sys.stderr)


def _ls(kernel, args) -> None:
    token, rows = "", []
    while True:
        page = kernel.files.list(args.prefix, recursive=args.recursive, page_token=token, owner=args.agent)
        rows += [("-", "-", f"{f.path}/") if f.is_folder else (f.size, _when(f.update_time), f.path)
                 for f in page.files]
        token = page.next_page_token
        if not token:
            break
    common.table(("SIZE", "UPDATED", "PATH"), rows, right=(0,), empty="no files")


def _rm(kernel, args) -> None:
    count = kernel.files.delete(args.path, recursive=args.recursive, owner=args.agent)
    print(f"deleted {count} file{'s' if count != 1 else ''}")


def _versions(kernel, args) -> None:
    rows = []
    for v in kernel.files.versions(args.path, owner=args.agent):
        flags = ",".join(f for f, on in (("current", v.is_latest), ("deleted", v.is_delete_marker)) if on)
        rows.append((v.version_id, _when(v.update_time), "-" if v.is_delete_marker else v.size,
                     v.sha256[:12] or "-", flags))
    common.table(("VERSION", "UPDATED", "SIZE", "SHA256", "FLAGS"), rows, right=(2,), empty="no versions")


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
    common.table(("SCORE", "PASSAGE", "TEXT"), [(f"{p.score:.3f}", f"{p.path}#{p.chunk_index}", _short(p.text))
                                              for p in passages], empty="no matching passages")


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
        p.set_defaults(func=common.command(fn))
        return p

    p = command("put", _put, "upload a local file of any size to REMOTE")
    p.add_argument("local", help="the local file")
    p.add_argument("remote", help="its path in the agent's space, e.g. notes/today.txt")
    p.add_argument("--content-type", default="", help="default: guessed from the file name")

    p = command("get", _get, "download REMOTE to LOCAL (omitted or -: stdout)")
    p.add_argument("remote", help="the file's path in the agent's space")
    p.add_argument("local", nargs="?", default=None, help="where to write it (default: stdout)")
    p.add_argument("--version", default="", help="a version id (default: the current version)")

    p = command("ls", _ls, "list files; a PREFIX ending in / lists that folder")
    p.add_argument("prefix", nargs="?", default="", help="a folder (ending in /) or path prefix (default: all)")
    p.add_argument("-r", "--recursive", action="store_true", help="everything below, not one level")

    p = command("rm", _rm, "delete a file (versions stay for rollback)")
    p.add_argument("path", help="the file (or folder, with -r)")
    p.add_argument("-r", "--recursive", action="store_true", help="delete a folder and all below it")

    p = command("versions", _versions, "list a file's versions, newest first")
    p.add_argument("path", help="the file's path in the agent's space")

    p = command("rollback", _rollback, "make an earlier version current again (as a new version)")
    p.add_argument("path", help="the file's path in the agent's space")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--version", help="the version id to restore")
    target.add_argument("--time", help="restore the version current at this ISO 8601 time")

    p = command("search", _search, "passages of your text files closest in meaning to QUERY", owner=False)
    p.add_argument("query", help="what to look for, in plain words")
    p.add_argument("-k", type=int, default=5, help="passages to show (default 5)")
    p.add_argument("--prefix", default="", help="only files under this path prefix")

    p = command("presign", _presign, "a time-limited URL reading a file from the object store")
    p.add_argument("path", help="the file's path in the agent's space")
    p.add_argument("--expires", type=float, default=3600, help="seconds the URL is valid (max 7 days)")

