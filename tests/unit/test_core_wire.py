"""The shared codec error and the stream transport interface the wire adapters declare."""

from __future__ import annotations

from twisted.internet import tcp
from twisted.internet.interfaces import IConsumer, IPushProducer, ITCPTransport

from kraken.core.wire import WireError
from kraken.pubsub import wire as pubsub_wire
from kraken.state import sync_wire


def test_codec_errors_share_the_base_and_carry_their_reason() -> None:
    error = pubsub_wire.MalformedCommand(b"ERROR\r\n", "unknown command b'stats'")
    assert isinstance(error, WireError) and error.reason == str(error) == "unknown command b'stats'"
    assert error.reply == b"ERROR\r\n"
    assert issubclass(sync_wire.WireError, WireError) and issubclass(pubsub_wire.WireError, WireError)


def test_twisted_tcp_transports_provide_what_istreamtransport_joins() -> None:
    for interface in (ITCPTransport, IConsumer, IPushProducer):
        assert interface.implementedBy(tcp.Server) and interface.implementedBy(tcp.Client)
