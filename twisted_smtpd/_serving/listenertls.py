# -*- test-case-name: tests.test_tlslisteners -*-
"""
The TLS of an C{ssl:} listener with keys of its own
(C{ssl:465:privateKey=...:certKey=...}): its key, certificate and chain,
with the server's TLS policy (ciphers and their C{@SECLEVEL}, minimum
version, client certificates, session tickets), read and checked as the
server's own certificates are, and reloaded with them.
"""

from __future__ import annotations

from cryptography import x509
from OpenSSL import SSL
from twisted.internet.interfaces import IReactorTime

from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd._core.printable import printable
from twisted_smtpd._serving.listeners import OwnKeys
from twisted_smtpd._serving.sni import TLSPolicy, _why, ownCertificateKinds
from twisted_smtpd._serving.tls import ServerTLS
from twisted_smtpd._serving.tlsfiles import (
    _Credentials,
    _loadCertificates,
    _read,
    _readCredentials,
)

__all__ = ["ListenerTLS", "loadParameters", "readChain"]


def readChain(path: str) -> tuple[x509.Certificate, ...]:
    """
    The certificates of an C{extraCertChain} file.

    @raise ValueError: It cannot be read or holds no PEM certificate.
    """
    return tuple(_loadCertificates(_read(path, "extraCertChain"), "extraCertChain", path))


def loadParameters(context: SSL.Context, path: str) -> None:
    """
    Give C{context} the Diffie-Hellman parameters of the C{dhParameters}
    file C{path}.

    @raise ValueError: The file cannot be read or holds none.
    """
    _read(path, "dhParameters")
    try:
        context.load_tmp_dh(path)
    except SSL.Error as e:
        # The first reason says why ("no start line"); OpenSSL adds "passed
        # a null parameter" for the parameters it then did not have.
        why = _why(e).partition("; ")[0]
        raise ValueError(f"cannot use dhParameters {path}: {why}") from None


class ListenerTLS(ServerTLS):
    """
    The TLS configuration of one C{ssl:} listener with keys of its own: the
    server's policy from C{ServerOptions}, this listener's certificate
    alone (no SNI certificates).  Its files are read at once, and again by
    L{reload}.
    """

    def __init__(
        self,
        options: ServerOptions,
        keys: OwnKeys,
        description: str = "",
        clock: IReactorTime | None = None,
    ) -> None:
        """
        @param options: The server's options, for its TLS policy.
        @param keys: The listener's files.
        @param description: The listener's endpoint string, for the log.
        @param clock: What tells the age of the session ticket keys (see
            L{ServerTLS.ticketKeyLifetime}).
        @raise ValueError: One line naming the file that cannot be read or
            used, or the cipher string that leaves its key no TLS 1.2
            cipher (C{"tlsCiphers: ..."}).
        """
        self._keys = keys
        self._description = description
        #: How the start summary, the log and the metrics name it: its
        #: endpoint string (its certificate file without one).
        self.label = description or keys.certKey
        if keys.dhParameters is not None:
            self._prepare = self._loadParameters
        if options.tlsCiphers is not None:
            policy = TLSPolicy(options.tlsCiphers, options.tlsMinVersion)
            try:
                policy.checkCiphers(ownCertificateKinds([keys]))
            except ValueError as e:
                raise ValueError(f"tlsCiphers: {e}") from None
        super().__init__(
            keys.certKey,
            keys.privateKey,
            options.caCertificates,
            requestCert=options.requestCert,
            rejectUnauthorized=options.rejectUnauthorized,
            hostname=options.name,
            ciphers=options.tlsCiphers,
            minVersion=options.tlsMinVersion,
            clock=clock,
        )

    def _defaultCredentials(self) -> _Credentials:
        keys = self._keys
        credentials = _readCredentials(keys.certKey, keys.privateKey, ("certKey", "privateKey"))
        if self._keys.extraCertChain is None:
            return credentials
        chain = credentials.chain + readChain(self._keys.extraCertChain)
        return _Credentials(credentials.certificate, chain, credentials.key, credentials.name)

    def _loadParameters(self, context: SSL.Context) -> None:
        """
        Give C{context} the listener's Diffie-Hellman parameters, read from
        their file each time: OpenSSL takes them from a file only (as the
        contexts made afresh for new session ticket keys do too).

        @raise ValueError: The file cannot be read or holds none.
        """
        path = self._keys.dhParameters
        assert path is not None
        loadParameters(context, path)

    def reload(self) -> None:
        """
        Read the listener's files again (see L{ServerTLS.reload}).

        @raise ValueError: Naming the listener and the file that cannot be
            read or used; the previous configuration stays in use.
        """
        try:
            super().reload()
        except ValueError as e:
            raise ValueError(f"{self._description or 'ssl: listener'}: {e}") from None

    def _logReloaded(self) -> None:
        self._log.info(
            "TLS certificates of {listener} reloaded",
            listener=printable(self.label),
        )

    def _logRenewalFailed(self, error: str) -> None:
        self._log.error(
            "Renewing the TLS session ticket keys of {listener} failed, the old ones are"
            " kept: {error}",
            listener=printable(self.label),
            error=error,
        )
