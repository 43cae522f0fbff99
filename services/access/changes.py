"""What other access replicas changed, heard through PostgreSQL LISTEN/NOTIFY.

A replica keeps a little in memory: the group rules, the administrators'
token hashes, and the waiters of its confirmations. A change to one of them
is sent with pg_notify on CHANNEL inside the transaction that makes it, so
it is heard only once committed, by every replica (the sender included).

pg8000 reads notifications only while it reads a reply, so the listener asks
`SELECT 1` every POLL seconds (ten trivial queries a second per replica): a
change is heard within POLL plus a round trip. After its connection was lost, or when more notifications came than
pg8000 keeps between two polls, it tells ANY: whatever is cached may be stale.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from services.runtime import logs, sql

CHANNEL = "aios_access"
GROUPS = "groups"
ADMINS = "admins"
CONFIRMATION = "confirmation "  # + the confirmation's id
ANY = "*"
POLL = 0.1
RETRY = 1.0
START_WAIT = 5.0  # how long a store waits at start for the listener

log = logs.get("access")


class Listener:
    """A thread with its own connection, calling heard(what) for each change."""

    def __init__(self, url: str, heard: Callable[[str], None], *, poll: float = POLL) -> None:
        self.url, self.heard, self.poll = url, heard, poll
        self.listening = threading.Event()  # LISTEN is in force (the tests wait on it)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="access-listen", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = sql.connect_postgres(self.url)
                    conn.autocommit = True
                    conn.cursor().execute(f"LISTEN {CHANNEL}")
                    self.heard(ANY)  # what changed while nobody listened
                    self.listening.set()
                else:
                    conn.cursor().execute("SELECT 1")
                queue = conn.notifications
                if len(queue) == queue.maxlen:  # some were dropped
                    queue.clear()
                    self.heard(ANY)
                for what in dict.fromkeys(payload for _, _, payload in queue):
                    self.heard(what)
                queue.clear()
            except Exception as exc:  # the database is unreachable: try again
                self.listening.clear()
                log.warning("not hearing other replicas' changes", error=str(exc), retry_seconds=RETRY)
                conn = _close(conn)
                self._stop.wait(RETRY)
                continue
            self._stop.wait(self.poll)
        self.listening.clear()
        _close(conn)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _close(conn) -> None:
    if conn is not None:
        try:
            conn.close()
        except Exception:  # already broken
            pass
