# -*- test-case-name: tests.test_configerrors -*-
"""
Listeners of L{SMTPServer.addEndpoint} that fail with one line saying why
(L{ListenFailed}): the address in use, a privileged port, an address the
host does not have; and the layers (PROXY header, implicit TLS, with the
server's certificates or keys of its own) that twisted-smtpd adds to an
endpoint string (L{splitDescription}).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import socket
import stat

from attrs import frozen
from twisted.application.internet import StreamServerEndpointService
from twisted.internet.address import UNIXAddress
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort

__all__ = [
    "PRIVILEGED_PORT_HINT",
    "PROXY_TWICE",
    "SSL_ARGUMENTS",
    "TLS_ENDPOINT_REFUSED",
    "ListenFailed",
    "OwnKeys",
    "_Listener",
    "abandonPort",
    "behindProxy",
    "endpointKind",
    "listenReason",
    "releaseOwnLock",
    "servesServerTLS",
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


#: Why a listener cannot bind its port (C{EACCES} without a path), and
#: what to do.
PRIVILEGED_PORT_HINT = (
    "permission denied: ports below 1024 need root; use authbind, the"
    " CAP_NET_BIND_SERVICE capability (setcap, or AmbientCapabilities= in systemd), or"
    " systemd socket activation (systemd:domain=INET:index=0)"
)


def listenReason(error: BaseException) -> str:
    """
    One line saying why a listener could not start.
    """
    # A UNIX socket's CannotListenError carries its path as the port.
    port = getattr(error, "port", None)
    path = os.fsdecode(port) if isinstance(port, str | bytes) else None
    socketError = getattr(error, "socketError", None)
    if socketError == "Cannot acquire lock" and path is not None:
        return _locked(path)
    if isinstance(socketError, BaseException):
        error = socketError
    if isinstance(error, OverflowError):
        # bind() says "port must be 0-65535"; listen() that its C int
        # overflows ("signed integer is greater than maximum").
        if "signed integer" in str(error):
            return "backlog out of range"
        return "port out of range (0-65535)"
    if isinstance(error, OSError):
        # The lock file of a UNIX socket is made with symlink(PID, LOCK):
        # the path is then filename2, filename being the process id.
        named = error.filename2 if error.filename2 is not None else error.filename
        if named is not None:
            path = os.fsdecode(named) if isinstance(named, (str, bytes)) else str(named)
        if error.errno == errno.EADDRINUSE:
            return _inUse(path)
        if error.errno == errno.EACCES and path is None:
            return PRIVILEGED_PORT_HINT
        if error.errno == errno.EADDRNOTAVAIL:
            return "no interface of this host has this address"
        if error.strerror:
            return error.strerror.lower() + (f": {path}" if path else "")
    return " ".join(str(error).split()) or type(error).__name__


#: The largest process id C{kill} takes (a C{pid_t}, a C int).
_MAX_PID = 2**31 - 1


def _lockTarget(path: str) -> str | None:
    """
    What the lock file of the UNIX socket C{path} (C{PATH.lock}, which
    Twisted makes a symbolic link to the process id of the server holding
    the path) points to, or C{None} if there is none.
    """
    try:
        return os.readlink(path + ".lock")
    except OSError:
        return None


def _isProcessId(text: str) -> bool:
    return text.isascii() and text.isdigit() and int(text) <= _MAX_PID


def _locked(path: str) -> str:
    """
    Why a UNIX socket's C{path} is in use when Twisted could not take its
    lock file: the process it names is running, most likely a server on
    that path already.
    """
    lock, holder = path + ".lock", _lockTarget(path)
    if holder is not None and _isProcessId(holder):
        return (
            f"address already in use (its lock file {lock} names process {holder}, still running)"
        )
    return f"address already in use (its lock file {lock} is held)"


def badLock(endpoint: object) -> str | None:
    """
    Why the UNIX socket C{endpoint} listens on cannot be taken when its lock
    file (C{PATH.lock}) is a symbolic link to no process id Twisted can check
    (it raises C{ValueError} or C{OverflowError} reading it), or C{None}
    for another endpoint or lock file.
    """
    path = getattr(endpoint, "_address", None)
    if not isinstance(path, str):
        return None
    holder = _lockTarget(path)
    if holder is None or _isProcessId(holder):
        return None
    return (
        f"its lock file {path}.lock names no process ({holder[:40]!a}); remove it"
        " if no server listens on that path"
    )


def releaseOwnLock(endpoint: object, error: BaseException | None) -> None:
    """
    Remove the lock file (C{PATH.lock}) of the UNIX socket C{endpoint}
    failed to listen on with C{error}, when this attempt took it: Twisted
    takes the lock before binding and keeps it when binding fails (a path
    too long, a file in the way), for the next start to find.  A lock file
    that could not be taken (held by another process, or by another
    listener of this one) is left alone.
    """
    path = getattr(endpoint, "_address", None)
    if not isinstance(path, str) or getattr(error, "socketError", None) == "Cannot acquire lock":
        return
    if _lockTarget(path) == str(os.getpid()):
        with contextlib.suppress(OSError):
            os.remove(path + ".lock")


def abandonPort(port: IListeningPort) -> None:
    """
    Remove the files of the listening C{port} of a start that fails on a
    later listener and ends the process at once, without the reactor
    running to stop it: a UNIX socket's path and its lock file
    (C{PATH.lock}), which Twisted removes only in the reactor's turn after
    C{stopListening}.  Left, they would be taken by the next start for a
    server's; the socket itself closes with the process.
    """
    address = port.getHost()
    name = getattr(address, "name", None)
    if isinstance(address, UNIXAddress) and isinstance(name, str | bytes) and name:
        path = os.fsdecode(name)
        if not path.startswith("\0"):
            with contextlib.suppress(OSError):
                os.remove(path)
    lock = getattr(port, "lockFile", None)
    if lock is not None and getattr(lock, "locked", False):
        with contextlib.suppress(OSError):
            lock.unlock()


def _inUse(path: str | None) -> str:
    """
    Why an address is in use: for a UNIX socket's C{path}, what is in the
    way, a file or a socket nothing listens on any more, if not a server.
    """
    inUse = "address already in use (another program listens on it)"
    if path is None:
        return inUse
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            return f"a file that is not a socket is in the way: {path}"
    except OSError:
        return inUse
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.setblocking(False)
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            return f"a socket nothing listens on is in the way (remove it): {path}"
        except OSError:
            pass
    return inUse


class _Listener(StreamServerEndpointService):
    """
    A listener that fails with L{ListenFailed} instead of a socket error.
    """

    description = ""
    port: IListeningPort | None = None

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except (CannotListenError, OSError, OverflowError, ValueError) as e:
            releaseOwnLock(self.endpoint, e)
            why = badLock(self.endpoint)
            if why is None and isinstance(e, ValueError):
                raise
            raise ListenFailed(self.description, why or listenReason(e)) from None
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


@frozen
class OwnKeys:
    """
    The files of an C{ssl:} endpoint string with keys of its own, served
    with the server's TLS policy (L{splitDescription}).

    @ivar privateKey: The private key file (Twisted's default:
        C{server.pem}).
    @ivar certKey: The certificate file, leaf first and its chain after it;
        C{privateKey} when not given.
    @ivar extraCertChain: A file of more chain certificates, or C{None}.
    @ivar dhParameters: A file of Diffie-Hellman parameters for the C{DHE}
        ciphers of TLS 1.2, or C{None}.
    """

    privateKey: str
    certKey: str
    extraCertChain: str | None = None
    dhParameters: str | None = None


#: The arguments of Twisted's C{ssl:} endpoint string after the port, in
#: the order it takes them positionally.
SSL_ARGUMENTS = (
    "privateKey",
    "certKey",
    "sslmethod",
    "interface",
    "backlog",
    "extraCertChain",
    "dhParameters",
)

#: The values of C{sslmethod=} that leave the version to the server's
#: minimum (any version OpenSSL and the policy allow).
ANY_VERSION_METHODS = ("SSLv23_METHOD", "TLS_METHOD", "TLS_SERVER_METHOD")


#: The values of C{sslmethod=} that pin one protocol version.
PINNING_METHODS = (
    "SSLv2_METHOD",
    "SSLv3_METHOD",
    "TLSv1_METHOD",
    "TLSv1_1_METHOD",
    "TLSv1_2_METHOD",
)


def methodRefused(method: str, pinning: str) -> ValueError:
    """
    The error refusing C{sslmethod=}C{method}, one not in
    L{ANY_VERSION_METHODS}: C{pinning} says why for one of
    L{PINNING_METHODS}, anything else (C{DTLS_METHOD},
    C{TLS_CLIENT_METHOD}, a misspelling) is no TLS server method; either
    way, followed by the values taken.

    @param pinning: Why a version-pinning method is refused.
    """
    other = "it is not one of OpenSSL's TLS server methods"
    why = pinning if method in PINNING_METHODS else other
    allowed = ", ".join(ANY_VERSION_METHODS[:-1]) + " or " + ANY_VERSION_METHODS[-1]
    return ValueError(
        f"sslmethod={method} is refused: {why}; it takes {allowed}"
        " (every version), or may be left out"
    )


def escapeValue(value: str) -> str:
    """
    C{value} as an endpoint string's value: backslash, colon and equals
    sign escaped.
    """
    return re.sub(r"([\\:=])", r"\\\1", value)


def _ownKeys(rest: str) -> tuple[str, OwnKeys | None]:
    """
    The C{tcp:} description and the files of the C{ssl:} endpoint string
    C{"ssl:" + rest}, C{None} for files when it names no key of its own.

    @raise ValueError: An argument Twisted's C{ssl:} parser does not take,
        an C{sslmethod} other than one allowing every version, or a chain
        or Diffie-Hellman parameters for no key of its own.
    """
    from twisted.internet.endpoints import _parse

    args, kwargs = _parse("ssl:" + rest)
    if "port" in kwargs:
        # ssl:port=465:... as Twisted takes it: the port named, not first.
        if len(args) > 1:
            raise ValueError("ssl: port given twice")
        args = [*args, kwargs.pop("port")]
    values: dict[str, str] = dict(zip(SSL_ARGUMENTS, args[2:], strict=False))
    if len(args) > 2 + len(SSL_ARGUMENTS):
        raise ValueError("too many arguments for ssl:")
    for name, value in kwargs.items():
        if name not in SSL_ARGUMENTS:
            raise ValueError(f"ssl: takes no argument {name!r}")
        if name in values:
            raise ValueError(f"ssl: {name} given twice")
        values[name] = value
    method = values.get("sslmethod")
    if method is not None and method not in ANY_VERSION_METHODS:
        raise methodRefused(
            method,
            "the server's minimum TLS version (tlsMinVersion, --tls-min-version)"
            " applies to every listener",
        )
    if len(args) < 2:
        raise ValueError("ssl: needs a port")
    tcp = "tcp:" + escapeValue(args[1])
    for name in ("interface", "backlog"):
        if name in values:
            tcp += f":{name}={escapeValue(values[name])}"
    if "privateKey" not in values and "certKey" not in values:
        for name in ("extraCertChain", "dhParameters"):
            if name in values:
                raise ValueError(f"ssl: {name}= needs a key of its own (privateKey=, certKey=)")
        return tcp, None
    privateKey = values.get("privateKey", "server.pem")
    keys = OwnKeys(
        privateKey,
        values.get("certKey", privateKey),
        values.get("extraCertChain"),
        values.get("dhParameters"),
    )
    return tcp, keys


#: Why Twisted's C{tls:} server endpoint is refused: C{tls:465}, meant as
#: implicit TLS on port 465, would read its certificates from a directory
#: named C{465} and listen on port 443 of every address.
TLS_ENDPOINT_REFUSED = (
    "tls: is not supported (Twisted's tls: server endpoint reads a directory of"
    " certificates first and listens on port 443 of every address by default)"
)


#: Why C{haproxy:} cannot be given twice: each connection would have to
#: send two PROXY headers.
PROXY_TWICE = "haproxy: given twice (one PROXY header per connection)"


def behindProxy(description: str) -> tuple[str, str]:
    """
    The C{haproxy:} layers the endpoint string C{description} starts with
    (each with its colon, as written), and the description they wrap.
    """
    prefix, inner = "", description
    while inner.partition(":")[0].strip().lower() == "haproxy":
        head, _, inner = inner.partition(":")
        prefix += head + ":"
    return prefix, inner


def normaliseKinds(description: str) -> str:
    """
    C{description} with the kind of each layer written as Twisted's parsers
    and the server's layers name it, stripped and in lower case
    (C{" HAProxy :TCP:25"} is C{"haproxy:tcp:25"}); the rest as given.
    Twisted takes C{tcp:} only in lower case and without spaces, and says
    of C{TCP:25} that it knows no endpoint type C{'tcp'}.
    """
    prefix = ""
    while True:
        kind, colon, rest = description.partition(":")
        kind = kind.strip().lower()
        if kind != "haproxy" or not colon:
            return prefix + kind + colon + rest
        prefix += "haproxy:"
        description = rest


def endpointKind(description: str) -> str:
    """
    The kind of the endpoint string C{description} behind any C{haproxy:}
    layers, as the layers are told apart: stripped, in lower case.
    """
    return behindProxy(description)[1].partition(":")[0].strip().lower()


def splitDescription(description: str) -> tuple[str, list[str | OwnKeys]]:
    """
    Take the layers twisted-smtpd adds off an endpoint string.

    C{haproxy:} before any description reads a PROXY header (v1 or v2) first,
    believed only from C{useProxy} networks when they are set.  An C{ssl:}
    endpoint serves implicit TLS (RFC 8314) on a TCP listener with the
    server's TLS policy (ciphers, minimum version, client certificates):
    with the server's certificates, SNI and reloading included, when it
    names no key of its own; with its own (L{OwnKeys}) otherwise.

    @return: The description Twisted listens on, and the layers from the
        outermost (C{"haproxy"}, C{"tls"}, or an L{OwnKeys}).
    @raise ValueError: C{haproxy:} is given twice, Twisted's C{tls:}
        endpoint is named (L{TLS_ENDPOINT_REFUSED}: it would bypass the
        server's TLS settings, and C{tls:465} listens on port 443), an
        C{ssl:} string takes an argument Twisted's C{ssl:} parser does not, an
        C{sslmethod} that would set the protocol version, or
        C{extraCertChain}/C{dhParameters} without a key of its own.
    """
    layers: list[str | OwnKeys] = []
    while True:
        kind, _, rest = description.partition(":")
        kind = kind.strip().lower()
        if kind == "haproxy":
            if "haproxy" in layers:
                raise ValueError(PROXY_TWICE)
            layers.append("haproxy")
            description = rest
        elif kind == "ssl":
            tcp, own = _ownKeys(rest)
            layers.append("tls" if own is None else own)
            return tcp, layers
        elif kind == "tls":
            raise ValueError(
                f"{TLS_ENDPOINT_REFUSED}; use ssl:PORT for implicit TLS (RFC 8314)"
                " with the server's TLS settings"
            )
        else:
            return normaliseKinds(description), layers


def servesServerTLS(description: str, startTLS: bool) -> bool:
    """
    Whether the listener of C{description} can serve the server's own
    certificates: an C{ssl:} listener without keys of its own, or one
    without TLS of its own when STARTTLS is offered (C{startTLS}).  An
    C{ssl:} listener with keys of its own cannot: STARTTLS is not offered
    inside TLS.

    @raise ValueError: The description does not parse (L{splitDescription}).
    """
    layers = splitDescription(description)[1]
    if "tls" in layers:
        return True
    if any(isinstance(layer, OwnKeys) for layer in layers):
        return False
    return startTLS
