"""A syscall's lifecycle as typed events, free of any transport: what the
intake and the kernel publish to a call's subscribers, in order. The gRPC
door turns them into aios.kernel.v1.SyscallEvent, the HTTP door into
server-sent chunks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Event:
    syscall_id: str
    time: float  # wall clock, seconds


@dataclass(frozen=True)
class Queued(Event):
    position: int  # calls ahead of it in its queue


@dataclass(frozen=True)
class Started(Event):
    endpoint: str


@dataclass(frozen=True)
class Resumed(Event):
    """Started again after a preemption, from its snapshot."""

    endpoint: str


@dataclass(frozen=True)
class Delta(Event):
    text: str


@dataclass(frozen=True)
class Preempted(Event):
    snapshot_tokens: int


@dataclass(frozen=True)
class AwaitingConfirmation(Event):
    confirmation_id: str


@dataclass(frozen=True)
class Finished(Event):
    """The last event; `entry` is the finished process-table entry."""

    entry: Any
