# -*- test-case-name: tests.test_renegotiationlog -*-
"""
Seeing a TLS 1.2 client's renegotiation refused: OpenSSL refuses it
(C{OP_NO_RENEGOTIATION}, L{TLSPolicy.newContext
<twisted_smtpd._serving.sni.TLSPolicy.newContext>}) with a no_renegotiation
alert and says nothing else; the info callback of every server context
sees that alert written, and the session it belongs to logs one line.

The callback runs for each step of a TLS handshake (a few dozen calls per
handshake, a test of two integers each) and for alerts, never for the data
of a session; plain sessions have no TLS connection and no calls.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, TypeVar
from weakref import WeakKeyDictionary

from OpenSSL import SSL
from twisted.logger import Logger

__all__ = ["infoCallback", "watchRenegotiation"]

_log = Logger()

_Owner = TypeVar("_Owner")

#: The alert description of no_renegotiation (RFC 5246 section 7.2.2).
NO_RENEGOTIATION_ALERT = 100

_WRITE_ALERT: int = SSL.SSL_CB_WRITE_ALERT

#: For each TLS connection of a session, a weak reference to its owner
#: (the session's protocol) and what to call with it once its client's
#: renegotiation is refused (weak: the connection is reached from the
#: owner through its transport, and must not be kept alive by this entry).
_watchers: WeakKeyDictionary[SSL.Connection, tuple[weakref.ref[Any], Callable[[Any], None]]] = (
    WeakKeyDictionary()
)


def watchRenegotiation(
    connection: SSL.Connection, owner: _Owner, refused: Callable[[_Owner], None]
) -> None:
    """
    Call C{refused(owner)} the first time a renegotiation of the client of
    C{connection} is refused (after its handshake completed), unless
    C{owner} is gone by then.

    @param owner: Held weakly.
    """
    _watchers[connection] = (weakref.ref(owner), refused)


def infoCallback(connection: SSL.Connection, where: int, ret: int) -> None:
    """
    The info callback of every server context (C{set_info_callback}):
    a no_renegotiation alert written calls the connection's watcher, once.
    """
    if where & _WRITE_ALERT != _WRITE_ALERT or ret & 0xFF != NO_RENEGOTIATION_ALERT:
        return
    watcher = _watchers.pop(connection, None)
    if watcher is None:
        return
    reference, refused = watcher
    owner = reference()
    if owner is None:
        return
    try:
        refused(owner)
    except Exception:
        # Raised through OpenSSL's callback, it would only be printed.
        _log.failure("reporting a refused TLS renegotiation")
