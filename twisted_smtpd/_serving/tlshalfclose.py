# -*- test-case-name: tests.integration.test_tlshalfclose -*-
"""
A client's close_notify read as the end of what it sends, not of the
session: the TLS counterpart of a FIN on plain TCP, and before the end of
the handshake as a close; and all OpenSSL writes sent at once.

Twisted's TLS layer answers a close_notify with its own and closes at once,
dropping whatever the session had still to answer: a client that pipelines
its message's end and QUIT, then its close_notify (a half-close, which TLS
1.3 allows: RFC 8446 section 6.1), lost the 250 of a message its handler
was still delivering, and the 221.  Here the session is told its client's
side is shut (L{IHalfCloseableProtocol.readConnectionLost}), answers what
it read before, then closes with its own close_notify, as after a FIN.
"""

from __future__ import annotations

from typing import Any

from OpenSSL.SSL import Error, WantReadError, ZeroReturnError
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.protocols.policies import ProtocolWrapper
from twisted.protocols.tls import BufferingTLSTransport
from twisted.python.failure import Failure

#: The most read from OpenSSL's buffer at a time (as Twisted reads).
_CHUNK = 2**15


class HalfClosingTLS(BufferingTLSTransport):
    """
    A TLS layer that reads its client's close_notify as a half-close when
    the protocol it wraps takes one, and reads nothing more after it (one
    before the end of the handshake as the connection closed), and that
    sends all OpenSSL wrote at once.
    """

    _readEnded = False

    def dataReceived(self, data: bytes) -> None:
        if self._readEnded:
            # After the client's close_notify nothing it sends counts, nor is
            # kept.
            return
        super().dataReceived(data)  # type: ignore[no-untyped-call]

    def _flushReceiveBIO(self) -> None:
        # Twisted's loop, but for the close_notify of a client whose session
        # is still open (it has not begun its own close).
        while not self._lostTLSConnection and not self._readEnded:
            try:
                data = self._tlsConnection.recv(2**15)
            except WantReadError:
                break
            except ZeroReturnError:
                wrapped: Any = self.wrappedProtocol
                if self.disconnecting or not IHalfCloseableProtocol.providedBy(wrapped):
                    self._shutdownTLS()  # type: ignore[no-untyped-call]
                    self._tlsShutdownFinished(None)
                else:
                    self._readEnded = True
                    wrapped.readConnectionLost()
            except Error:
                self._tlsShutdownFinished(Failure())  # type: ignore[no-untyped-call]
            else:
                if not self._aborted:
                    ProtocolWrapper.dataReceived(self, data)  # type: ignore[no-untyped-call]
        self._flushSendBIO()

    def _tlsShutdownFinished(self, reason: Failure | None) -> None:
        if reason is not None and isinstance(reason.value, ZeroReturnError):
            # The client's close_notify before its handshake finished (RFC
            # 8446 section 6.1: either side may send one at any time):
            # OpenSSL's ZeroReturnError, which carries no reasons, and whose
            # args[0] Twisted (23.10 to 26.10) reads, raising an IndexError
            # out of dataReceived, a traceback and a session ended "by
            # IndexError".  It is the client closing: the reason the session
            # is told (Twisted reads every reason given here as an OpenSSL
            # error, so it is set as the one kept, and none is given).
            if self._reason is None:
                self._reason = Failure(  # type: ignore[no-untyped-call]
                    ConnectionDone("close_notify before the end of the TLS handshake")
                )
            reason = None
        super()._tlsShutdownFinished(reason)  # type: ignore[no-untyped-call]

    def _flushSendBIO(self) -> None:
        # Twisted sends at most 32 KiB of what OpenSSL wrote and leaves the
        # rest until the client sends something (twisted#5095): a first
        # flight larger than that (a certificate request naming many CAs, a
        # long chain) stalled the handshake, each side waiting for the
        # other, until its deadline.
        transport: Any = self.transport
        while True:
            try:
                data = self._tlsConnection.bio_read(_CHUNK)
            except WantReadError:
                return
            transport.write(data)
            if len(data) < _CHUNK:
                # A memory BIO gives all it holds up to the size asked: it
                # is empty (one read and no exception per reply, as before).
                return


def halfClosing(layer: object) -> None:
    """
    Make the TLS layer Twisted's C{startTLS} made (a L{BufferingTLSTransport})
    a L{HalfClosingTLS}, before its handshake.
    """
    if type(layer) is BufferingTLSTransport:
        layer.__class__ = HalfClosingTLS
