"""Subcommands of `aios`, one module per area.

Each module defines `register(sub, client_args)`: `sub` is the argparse
subparsers object, `client_args(parser)` adds --kernel/--token/--timeout.
A command's function receives the parsed args and returns the exit status.
"""
