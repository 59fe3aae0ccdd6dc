"""The transport a stream protocol writes to, typed by what TCP and TLS transports provide."""

from __future__ import annotations

from twisted.internet.interfaces import IConsumer, IPushProducer, ITCPTransport


class IStreamTransport(ITCPTransport, IConsumer, IPushProducer):
    """A connected TCP or TLS stream as its protocol uses it: write and close (``ITCPTransport``),
    a producer registered on it (``IConsumer``), reading paused and resumed (``IPushProducer``).

    Twisted's TCP and TLS transports provide each of these interfaces; a protocol declares
    ``transport: IStreamTransport`` to use them without a check per call.
    """
