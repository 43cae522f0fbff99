"""The test suite. Imported before its conftest and any test module, so
what is set here holds before grpc is first imported.

gRPC's fork handlers can crash the child of a fork made while its threads
poll (grpc/grpc#43055: "active gRPC channels crash forked subprocesses"),
and the fixtures fork and exec PostgreSQL's tools as another user, which
rules out vfork. Nothing here uses gRPC in a forked child, which is all the
handlers are for."""

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
