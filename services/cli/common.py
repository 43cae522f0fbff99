"""What every `aios` command shares: one way to address the kernel and find a
credential, one way to report errors, and tables with header rows.

Every command that talks to a running stack takes the same options, each
with the same environment variable behind it:

    --kernel ADDR       $AIOS_KERNEL, else 127.0.0.1:50051
    --data DIR          $AIOS_DATA_DIR, else .aios (where `aios up` keeps admin.token)
    --token TOKEN       $AIOS_TOKEN (admin commands: $AIOS_ADMIN_TOKEN), else DIR/admin.token
    --token-file FILE   read the credential from FILE instead
    --timeout SECONDS
    --tls / --no-tls    $AIOS_TLS: TLS to the kernel (on by itself with --ca or --cert)
    --ca FILE           $AIOS_TLS_CA: the CA bundle that verifies the kernel, else the system's
    --cert, --key FILE  $AIOS_TLS_CERT, $AIOS_TLS_KEY: a client certificate, for a kernel that asks
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

DEFAULT_KERNEL = "127.0.0.1:50051"
DEFAULT_DATA = ".aios"


class CliError(Exception):
    """A failure to report as one `error: ...` line (and exit 1)."""


class Parser(argparse.ArgumentParser):
    """argparse with a "did you mean" for a mistyped subcommand or choice."""

    def error(self, message: str):
        if "invalid choice:" in message:
            import re

            found = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
            if found:
                choices = [c.strip().strip("'") for c in found.group(2).split(",")]
                close = difflib.get_close_matches(found.group(1), choices, n=1, cutoff=0.5)
                if close:
                    message = f"{message}; did you mean '{close[0]}'?"
        super().error(message)


def common_args(p: argparse.ArgumentParser, *, admin: bool = False, timeout: float = 120.0) -> None:
    """The options every command that talks to a stack takes."""
    env_token = "AIOS_ADMIN_TOKEN" if admin else "AIOS_TOKEN"
    p.add_argument("--kernel", default=None, metavar="ADDR",
                   help=f"kernel address (default $AIOS_KERNEL, else {DEFAULT_KERNEL})")
    p.add_argument("--data", default=None, metavar="DIR",
                   help=f"data folder of `aios up`, which holds admin.token (default $AIOS_DATA_DIR, else {DEFAULT_DATA})")
    p.add_argument("--token", default=None,
                   help=f"credential (default ${env_token}, else the admin token in the data folder)")
    p.add_argument("--token-file", "--admin-token-file", dest="token_file", default=None, metavar="FILE",
                   help="read the credential from this file")
    p.add_argument("--timeout", type=float, default=timeout, metavar="SECONDS",
                   help=f"seconds before giving up (default {timeout:g})")
    p.add_argument("--tls", action=argparse.BooleanOptionalAction, default=None,
                   help="TLS to the kernel (default $AIOS_TLS; on with --ca or --cert)")
    p.add_argument("--ca", default=None, metavar="FILE",
                   help="CA bundle (PEM) that verifies the kernel's certificate (default $AIOS_TLS_CA, "
                        "else the system's roots)")
    p.add_argument("--cert", default=None, metavar="FILE",
                   help="client certificate (PEM) for a kernel that asks for one (default $AIOS_TLS_CERT)")
    p.add_argument("--key", default=None, metavar="FILE", help="its private key (default $AIOS_TLS_KEY)")
    p.set_defaults(admin_credential=admin)


def kernel_address(args) -> str:
    return getattr(args, "kernel", None) or os.environ.get("AIOS_KERNEL") or DEFAULT_KERNEL


def data_dir(args) -> Path:
    return Path(getattr(args, "data", None) or os.environ.get("AIOS_DATA_DIR") or DEFAULT_DATA)


def credential(args, *, required: bool = True) -> str:
    """--token, else --token-file, else $AIOS_TOKEN ($AIOS_ADMIN_TOKEN for
    admin commands), else <data>/admin.token. When there is none: CliError
    naming what was looked for, or (not required: a kernel in development
    mode takes calls without one) "" with the reason kept for `explain`."""
    if getattr(args, "token", None):
        return args.token
    env = "AIOS_ADMIN_TOKEN" if getattr(args, "admin_credential", False) else "AIOS_TOKEN"
    explicit = getattr(args, "token_file", None)
    if not explicit and os.environ.get(env, "").strip():
        return os.environ[env].strip()
    path = Path(explicit) if explicit else data_dir(args) / "admin.token"
    try:
        token = path.read_text(encoding="utf-8").strip()
        problem = "" if token else f"{path.resolve()} is empty"
    except OSError as exc:
        where = "" if explicit else (" (`aios up` writes it at first start; pass --data DIR for the data "
                                     "folder of another stack)")
        token, problem = "", f"--token and ${env} are unset and {path.resolve()} cannot be read " \
                             f"({exc.strerror}){where}"
    if problem and required:
        raise CliError(f"no credential: {problem}")
    args.no_credential = problem
    return token


def say_parked(pending) -> None:
    """The CLI's confirmation hook: tell the person at once what to run."""
    print(f"waiting: {pending.resource} call {pending.syscall_id} needs a person's confirmation; "
          f"approve it with `aios confirm approve {pending.confirmation_id}` "
          f"(or `aios confirm deny {pending.confirmation_id}`)", file=sys.stderr, flush=True)


def tls_options(args) -> dict:
    """The SDK's TLS arguments from --tls, --ca, --cert, --key (None: its environment default)."""
    return {"tls": getattr(args, "tls", None), "ca": getattr(args, "ca", None),
            "client_cert": getattr(args, "cert", None), "client_key": getattr(args, "key", None)}


def grpc_channel(args, address: str):
    """A blocking channel to `address` under the TLS options; CliError for unreadable files."""
    import grpc

    from aios.sdk import channel_credentials

    try:
        credentials = channel_credentials(**tls_options(args))
    except ValueError as exc:
        raise CliError(str(exc)) from None
    return grpc.insecure_channel(address) if credentials is None else grpc.secure_channel(address, credentials)


def client(args):
    """An SDK client from the common options."""
    from aios.sdk import Client

    # A person at a terminal hears at once that the kernel is down; agents'
    # clients keep retrying until their deadline.
    try:
        return Client(kernel_address(args), credential(args, required=False), timeout=args.timeout,
                      retries=3, on_confirmation=say_parked, **tls_options(args))
    except ValueError as exc:  # a TLS option names a file that cannot be read
        raise CliError(str(exc)) from None


def explain(err, args) -> str:
    """An SDK error as the line a person reads, with a hint where one helps."""
    import grpc

    if err.code == grpc.StatusCode.UNAVAILABLE and "connect" in err.message.lower():
        return (f"no kernel answers at {kernel_address(args)} ({err.message.splitlines()[0]}); start one "
                "with `aios up`, or point at yours with --kernel or AIOS_KERNEL (one behind TLS: --tls or --ca)")
    if err.code == grpc.StatusCode.UNAUTHENTICATED:
        if getattr(args, "no_credential", ""):
            return f"{err}: no credential was sent, since {args.no_credential}"
        return f"{err} (pass another credential with --token or AIOS_TOKEN)"
    return str(err)


def with_client(fn: Callable, args) -> int:
    """Run fn(kernel, args) with an SDK client; a kernel error, a local file
    error or a CliError is printed as one line and exits 1."""
    from aios.sdk import AiosError

    try:
        with client(args) as kernel:
            fn(kernel, args)
    except AiosError as err:
        print(f"error: {explain(err, args)}", file=sys.stderr)
        return 1
    except (CliError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def command(fn: Callable) -> Callable:
    """A subcommand's function that uses the kernel: fn(kernel, args)."""
    return lambda args: with_client(fn, args)


def table_lines(header: Sequence[str], rows: Sequence[Sequence[object]], *,
                right: Sequence[int] = ()) -> list[str]:
    """Rows under a header as lines, columns aligned (indexes in `right` to the right)."""
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return ["  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()
            for row in cells]


def table(header: Sequence[str], rows: Sequence[Sequence[object]], *, right: Sequence[int] = (),
          empty: str = "") -> None:
    """Rows under a header, columns aligned (indexes in `right` to the right);
    `empty` goes to stderr when there are no rows."""
    for line in table_lines(header, rows, right=right):
        print(line)
    if not rows and empty:
        print(empty, file=sys.stderr)
