"""Who may do what on the dashboard: a viewer reads, an operator may also act (power, replay).

A browser logs in with a token, or is known by the client certificate it presented on a
``tls:`` listener. With no viewer tokens configured, anyone who reaches the port may view;
operators always need an operator token or a certificate named in ``operator_certs``.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass

from kraken.core.tls import PeerIdentity

VIEWER = "viewer"
OPERATOR = "operator"


class LoginRefused(Exception):
    pass


def _matches(given: str, tokens: Iterable[str]) -> bool:
    found = False
    for token in tokens:  # compare with every token, so the time does not tell which matched
        found |= hmac.compare_digest(given.encode(), token.encode())
    return found


@dataclass(frozen=True)
class Access:
    viewer_tokens: tuple[str, ...] = ()
    operator_tokens: tuple[str, ...] = ()
    operator_certs: tuple[str, ...] = ()

    def login(self, token: object, peer: PeerIdentity | None) -> str:
        """The role of a browser that sent *token* (``None``: none) over a connection from *peer*."""
        if peer is not None and peer.name in self.operator_certs:
            return OPERATOR
        if isinstance(token, str) and token:
            if _matches(token, self.operator_tokens):
                return OPERATOR
            if _matches(token, self.viewer_tokens):
                return VIEWER
            raise LoginRefused("unknown token")
        if token not in (None, ""):
            raise LoginRefused("a token is a string")
        if peer is not None or not self.viewer_tokens:
            return VIEWER
        raise LoginRefused("this dashboard needs a token")
