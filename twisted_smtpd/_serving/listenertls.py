# -*- test-case-name: tests.test_tlslisteners -*-
"""
The TLS of an C{ssl:} listener with keys of its own
(C{ssl:465:privateKey=...:certKey=...}): its key, certificate and chain,
with the server's TLS policy (ciphers and their C{@SECLEVEL}, minimum
version, client certificates, session tickets), read and checked as the
server's own certificates are, and reloaded with them.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable

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
from twisted_smtpd._serving.tlsgeneration import _Generation

__all__ = ["ListenerTLS", "loadParameters", "readChain", "readParameters"]


def readChain(path: str) -> tuple[x509.Certificate, ...]:
    """
    The certificates of an C{extraCertChain} file.

    @raise ValueError: It cannot be read or holds no PEM certificate.
    """
    return tuple(_loadCertificates(_read(path, "extraCertChain"), "extraCertChain", path))


def loadParameters(context: SSL.Context, path: str, data: bytes | None = None) -> None:
    """
    Give C{context} the Diffie-Hellman parameters of the C{dhParameters}
    file C{path}.

    @param data: The file's contents, read before (L{readParameters});
        read now when C{None}.
    @raise ValueError: The file cannot be read or holds none.
    """
    if data is None:
        data = _read(path, "dhParameters")
    try:
        _loadParametersFrom(context, data)
    except SSL.Error as e:
        # The first reason says why ("no start line"); OpenSSL adds "passed
        # a null parameter" for the parameters it then did not have.
        why = _why(e).partition("; ")[0]
        raise ValueError(f"cannot use dhParameters {path}: {why}") from None
    except OSError as e:
        raise ValueError(f"cannot use dhParameters {path}: {e.strerror or e}") from None


def _loadParametersFrom(context: SSL.Context, data: bytes) -> None:
    """
    Give C{context} the Diffie-Hellman parameters in C{data}.  OpenSSL
    (C{SSL.Context.load_tmp_dh}) takes them from a file only, opened by
    path: this process's own anonymous copy, in memory
    (C{memfd_create}, opened through C{/proc/self/fd}) where the system
    has it, else a temporary file removed at once; never the configured
    file, which a worker of C{twistd smtpd --workers}, running as another
    user, may not be able to read (it reads the copy its parent read at
    start instead: see L{twisted_smtpd._core.files}).

    @raise SSL.Error: C{data} holds no parameters OpenSSL takes.
    @raise OSError: The copy cannot be made.
    """
    try:
        fd = os.memfd_create("twisted-smtpd-dh-parameters", os.MFD_CLOEXEC)
    except (AttributeError, OSError):
        fd = -1
    if fd >= 0 and not os.path.isdir("/proc/self/fd"):
        os.close(fd)
        fd = -1
    if fd >= 0:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            context.load_tmp_dh(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        return
    with tempfile.NamedTemporaryFile(prefix="twisted-smtpd-dh-") as copy:
        copy.write(data)
        copy.flush()
        context.load_tmp_dh(copy.name)


def readParameters(path: str) -> Callable[[SSL.Context], None]:
    """
    Read the C{dhParameters} file C{path} once (through the copy the
    parent of C{twistd smtpd --workers} read at start, in a worker that
    cannot open it itself); OpenSSL checks them as each context is made.

    @return: What gives a context those parameters, from what was read
        (the contexts made afresh for new session ticket keys read no
        file).
    @raise ValueError: The file cannot be read or holds no parameters.
    """
    data = _read(path, "dhParameters")

    def prepare(context: SSL.Context) -> None:
        loadParameters(context, path, data)

    return prepare


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

    def _build(self) -> _Generation:
        """
        Read the listener's files, its Diffie-Hellman parameters too (kept
        with the contexts they give, so that renewing their ticket keys
        reads no file), and make its contexts.
        """
        path = self._keys.dhParameters
        if path is not None:
            self._prepare = readParameters(path)
        return super()._build()

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
