"""What every kraken wire codec shares: the error its decoder raises on malformed input.

Each codec (``pubsub/wire.py``, ``p2p/wire.py``, ``state/sync_wire.py``) subclasses
:class:`WireError`, so an adapter or a fuzz test can catch any of them alike; the subclass may
carry what its protocol's error reply needs. The convention is described in ``docs/core.md``
("Wire codecs").
"""

from __future__ import annotations


class WireError(Exception):
    """Bytes from a peer that break the protocol; :attr:`reason` says how, for logs and replies."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
