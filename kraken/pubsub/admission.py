"""Who holds the memcached connection slots: a cap per client address, and room made for a
newcomer by closing an idle connection instead of refusing it (no I/O, time passed in).

When every slot is taken, a newcomer gets the slot of

1. the oldest connection that never completed a command, once it is ``SILENT_GRACE`` seconds
   old (a real client's first command follows its connect within a round trip), else
2. the connection whose last complete command is oldest, once that is at least
   ``evict_idle_after`` seconds ago (0: never evict a connection that sent a command);

and only when there is neither is it refused. A client that polls or publishes more often than
``evict_idle_after`` keeps its slot however many idle connections others open.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

from twisted.logger import Logger

log = Logger(namespace="kraken.pubsub.admission")

Conn = TypeVar("Conn")

SILENT_GRACE = 2.0


class Refused(Exception):
    """No slot for the newcomer; ``per_address`` tells which limit refused it."""

    def __init__(self, per_address: bool) -> None:
        super().__init__("too many clients from this address" if per_address else "too many clients")
        self.per_address = per_address


class Admission(Generic[Conn]):
    def __init__(
        self,
        max_clients: int,
        max_per_address: int = 0,
        evict_idle_after: float = 60.0,
        kind: str = "memcached",
    ) -> None:
        self.kind = kind  # names the listener in log lines
        self.max_clients = max_clients
        self.max_per_address = max_per_address
        self.evict_idle_after = evict_idle_after
        self.address: dict[Conn, str | None] = {}
        self.per_address: dict[str, int] = {}
        self.silent: dict[Conn, float] = {}  # no complete command yet: connect time, oldest first
        self.active: OrderedDict[Conn, float] = OrderedDict()  # time of the last command, oldest first
        self.logged_addresses: set[str] = set()
        self.logged_full = False

    def __len__(self) -> int:
        return len(self.address)

    def admit(self, conn: Conn, address: str | None, now: float) -> Conn | None:
        """Take *conn* in; the connection it displaces (the caller closes it), if any.

        Raises :class:`Refused` when there is no slot for it.
        """
        if address is not None and self.max_per_address > 0:
            held = self.per_address.get(address, 0)
            if held >= self.max_per_address:
                if address not in self.logged_addresses:
                    self.logged_addresses.add(address)
                    log.warn(
                        "{address} holds {held} {kind} connections, the limit per address: refusing "
                        "more (logged once while it stays there)",
                        address=address,
                        held=held,
                        kind=self.kind,
                    )
                raise Refused(per_address=True)
        victim = None
        if len(self.address) >= self.max_clients:
            victim = self._victim(now)
            if victim is None:
                if not self.logged_full:
                    self.logged_full = True
                    log.info("Server reached max clients ({kind}). Rejecting connection.", kind=self.kind)
                raise Refused(per_address=False)
            if not self.logged_full:
                self.logged_full = True
                log.info(
                    "Server reached max clients ({kind}): closing idle connections to admit new ones.",
                    kind=self.kind,
                )
            self._remove(victim)
        self.address[conn] = address
        self.silent[conn] = now
        if address is not None:
            self.per_address[address] = self.per_address.get(address, 0) + 1
        return victim

    def _victim(self, now: float) -> Conn | None:
        for conn, connected in self.silent.items():
            if now - connected >= SILENT_GRACE:
                return conn
            break
        if self.active and self.evict_idle_after > 0:
            conn, last = next(iter(self.active.items()))
            if now - last >= self.evict_idle_after:
                return conn
        return None

    def commanded(self, conn: Conn, now: float) -> None:
        """*conn* completed a command at *now*: it is the last to be displaced."""
        active = self.active
        if conn in active:
            active[conn] = now
            active.move_to_end(conn)
        elif self.silent.pop(conn, None) is not None:
            active[conn] = now

    def leave(self, conn: Conn) -> None:
        """*conn* is gone; a no-op for one that was never admitted or was displaced."""
        if conn in self.address:
            self._remove(conn)
            self.logged_full = False

    def _remove(self, conn: Conn) -> None:
        address = self.address.pop(conn)
        self.silent.pop(conn, None)
        self.active.pop(conn, None)
        if address is not None:
            left = self.per_address[address] - 1
            if left:
                self.per_address[address] = left
            else:
                del self.per_address[address]
                self.logged_addresses.discard(address)
