"""The reactor a kraken server is given, typed by the interfaces servers use of it.

Domain objects take the narrowest interface they need (``IReactorTime`` for a clock,
``IReactorTCP`` to dial...); a server's root service holds an :class:`IServerReactor`, which
extends them all, so it can be handed to each. Tests pass ``MemoryReactorClock`` or ``Clock``.
"""

from __future__ import annotations

from typing import cast

from twisted.internet.interfaces import (
    IReactorCore,
    IReactorFDSet,
    IReactorPluggableNameResolver,
    IReactorSSL,
    IReactorTCP,
    IReactorThreads,
    IReactorTime,
    IReactorUNIX,
)


class IServerReactor(
    IReactorCore,
    IReactorFDSet,
    IReactorTime,
    IReactorTCP,
    IReactorUNIX,
    IReactorSSL,
    IReactorThreads,
    IReactorPluggableNameResolver,
):
    """Everything a kraken server asks of its reactor: time, TCP/UNIX/TLS, threads, names, writers."""


def default_reactor() -> IServerReactor:
    """The global reactor (installed on first import), as the interfaces it provides."""
    from twisted.internet import reactor

    return cast(IServerReactor, reactor)
