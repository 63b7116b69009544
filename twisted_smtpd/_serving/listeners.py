# -*- test-case-name: tests.test_configerrors -*-
"""
Listeners of L{SMTPServer.addEndpoint} that fail with one line saying why
(L{ListenFailed}): the address in use, a privileged port, an address the
host does not have; and the layers (PROXY header, implicit TLS) that
twisted-smtpd adds to an endpoint string (L{splitDescription}).
"""

from __future__ import annotations

import contextlib
import errno
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort

from twisted_smtpd._core.files import readRegular

__all__ = [
    "ListenFailed",
    "_Listener",
    "checkOwnTLS",
    "checkOwnTLSFiles",
    "listenReason",
    "splitDescription",
]


class ListenFailed(Exception):
    """
    A listener of L{SMTPServer.addEndpoint} could not start.

    @ivar description: The endpoint string.
    @ivar why: One line saying why, with a hint where one helps.
    """

    def __init__(self, description: str, why: str) -> None:
        super().__init__(description, why)
        self.description = description
        self.why = why

    def __str__(self) -> str:
        return f"cannot listen on {self.description!r}: {self.why}"


_PRIVILEGED_PORT_HINT = (
    "permission denied: ports below 1024 need root; use authbind, the"
    " CAP_NET_BIND_SERVICE capability (setcap, or AmbientCapabilities= in systemd), or"
    " systemd socket activation (systemd:domain=INET:index=0)"
)


def listenReason(error: BaseException) -> str:
    """
    One line saying why a listener could not start.
    """
    socketError = getattr(error, "socketError", None)
    if isinstance(socketError, BaseException):
        error = socketError
    if isinstance(error, OverflowError):
        return "port out of range (0-65535)"
    if isinstance(error, OSError):
        if error.errno == errno.EADDRINUSE:
            return "address already in use (another program listens on it)"
        if error.errno == errno.EACCES:
            return _PRIVILEGED_PORT_HINT
        if error.errno == errno.EADDRNOTAVAIL:
            return "no interface of this host has this address"
        if error.strerror:
            return error.strerror.lower() + (f": {error.filename}" if error.filename else "")
    return " ".join(str(error).split()) or type(error).__name__


class _Listener(StreamServerEndpointService):
    """
    A listener that fails with L{ListenFailed} instead of a socket error.
    """

    description = ""
    port: IListeningPort | None = None

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except (CannotListenError, OSError, OverflowError) as e:
            raise ListenFailed(self.description, listenReason(e)) from None
        waiting: Deferred[IListeningPort] | None = self._waitingForPort
        if waiting is not None:
            waiting.addCallback(self._listening)

    def _listening(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        return port

    def stopService(self) -> Deferred[None]:
        self.port = None
        d: Deferred[None] = super().stopService()
        return d


def splitDescription(description: str) -> tuple[str, list[str]]:
    """
    Take the layers twisted-smtpd adds off an endpoint string.

    C{haproxy:} before any description reads a PROXY header (v1 or v2) first,
    believed only from C{useProxy} networks when they are set.  An C{ssl:}
    endpoint that names no key of its own serves implicit TLS (RFC 8314) with
    the server's TLS configuration, SNI and reloading included.

    @return: The description Twisted listens on, and the layers from the
        outermost (C{"haproxy"}, C{"tls"}).
    """
    layers: list[str] = []
    while True:
        kind, _, rest = description.partition(":")
        kind = kind.strip().lower()
        if kind == "haproxy":
            layers.append("haproxy")
            description = rest
        elif kind == "ssl" and not any(
            part.split("=", 1)[0].strip() in ("privateKey", "certKey") for part in rest.split(":")
        ):
            layers.append("tls")
            description = "tcp:" + rest
        else:
            return description, layers


def checkOwnTLS(endpoint: object) -> None:
    """
    Make the TLS context of an C{ssl:} endpoint with keys of its own now.
    Twisted's parser reads its key and certificate files at once, but a
    C{dhParameters} file only for the first connection: a file missing or
    unusable would fail every connection with a traceback.  Other endpoints
    pass.

    @param endpoint: What C{serverFromString} gave.
    @raise ValueError: One line saying why the context cannot be made.
    """
    factory: Any = getattr(endpoint, "_sslContextFactory", None)
    if factory is None:
        return
    from OpenSSL import SSL

    try:
        factory.getContext()
    except SSL.Error as e:
        reasons = e.args[0] if e.args and isinstance(e.args[0], list) else []
        why = "; ".join(str(entry[-1]) for entry in reasons if entry and entry[-1]) or str(e)
        dhFile = getattr(getattr(factory, "dhParameters", None), "_dhFile", None)
        path = getattr(dhFile, "path", None)
        what = f"dhParameters {path}" if path else "its TLS settings"
        raise ValueError(f"cannot use {what}: {why}") from None


#: The files an C{ssl:} endpoint string names, in the order of Twisted's
#: positional arguments after the port.
_TLS_FILES = ("privateKey", "certKey", "extraCertChain", "dhParameters")


def checkOwnTLSFiles(description: str) -> None:
    """
    Refuse an C{ssl:} endpoint string whose key, certificate, chain or
    C{dhParameters} file is not a regular file or is larger than the
    server's own TLS files may be (L{readRegular
    <twisted_smtpd._core.files.readRegular>}): Twisted's parser reads each
    whole, so that a path such as C{/dev/zero} would fill the memory, and a
    named pipe would block the start.  A file that cannot be read is left
    for the parser to report; other endpoints pass.

    @param description: An endpoint string without C{haproxy:} layers.
    @raise ValueError: Naming the argument and its path.
    """
    if description.partition(":")[0].strip().lower() != "ssl":
        return
    from twisted.internet.endpoints import _parse

    args, kwargs = _parse(description)
    paths = dict(zip(_TLS_FILES[:2], args[2:4], strict=False))
    paths.update((name, kwargs[name]) for name in _TLS_FILES if name in kwargs)
    for name, path in paths.items():
        with contextlib.suppress(OSError):
            readRegular(path, name)
