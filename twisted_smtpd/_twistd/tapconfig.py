# -*- test-case-name: tests.test_tap -*-
"""
The parts of the C{twistd smtpd} configuration that are not flags of
L{twisted_smtpd._twistd.tap.Options} themselves: the checks of endpoint
strings, and the one-line configuration errors.  Configuration files
(C{--config FILE}) are read by L{twisted_smtpd._twistd.tapfile}; the checks of
C{--auth} are in L{twisted_smtpd._twistd.tapauth}; the delivery handler
each delivery flag names is built by L{twisted_smtpd._twistd.taphandlers};
the checks against the host (the pid file, sockets inherited from systemd,
listeners binding the same address) are in L{twisted_smtpd._twistd.taphost}.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import socket
import sys
from collections.abc import Collection
from typing import Any, NoReturn

from twisted.python import usage

from twisted_smtpd._core.address import literalAddress
from twisted_smtpd._core.hostname import aLabels
from twisted_smtpd._core.printable import printable
from twisted_smtpd._twistd.madefiles import removeMade
from twisted_smtpd._twistd.tapendpoints import checkParameters
from twisted_smtpd._twistd.taphost import inheritedSocketProblem

#: Set in a worker of C{--workers} (L{INHERITED
#: <twisted_smtpd._twistd.workerlisteners.INHERITED>}, which imports this module).
_INHERITED = "TWISTED_SMTPD_INHERITED"


def _oneLine(text: str) -> str:
    """
    Collapse C{text} onto a single line, its control characters escaped
    (L{printable}).
    """
    return printable(" ".join(text.split()))


def reason(error: BaseException) -> str:
    """
    One line saying what C{error} is about.
    """
    try:
        text = str(error)
    except Exception:  # A handler's own exception, its message failing.
        text = ""
    if isinstance(error, OSError) and error.strerror:
        text = error.strerror
        if error.filename is not None and str(error.filename) not in text:
            text += f": {error.filename}"
    return _oneLine(text) or type(error).__name__


def exitWithError(message: str) -> NoReturn:
    """
    End C{twistd smtpd} with status 1 and one line on the process's
    standard error (not the log): C{twistd smtpd: MESSAGE; see --help}.

    A worker of C{--workers} writes the line to its standard output too,
    the pipe to its parent, which logs it naming the worker: the reason a
    worker cannot start (a configuration file changed since the parent
    read it) is in the log beside the parent's line saying it ended.

    The Maildir or mbox file this start made, still empty, is removed
    first (L{removeMade}).
    """
    removeMade()
    line = f"twistd smtpd: {_oneLine(message)}; see --help\n"
    stream = sys.__stderr__ if sys.__stderr__ is not None else sys.stderr
    stream.write(line)
    stream.flush()
    if os.environ.get(_INHERITED) and not _sameFile(sys.__stdout__, stream):
        with contextlib.suppress(OSError, ValueError):
            assert sys.__stdout__ is not None
            sys.__stdout__.write(line)
            sys.__stdout__.flush()
    raise SystemExit(1)


def exitChecked(warnings: Collection[str]) -> NoReturn:
    """
    End C{twistd smtpd --check-config} with status 0: each of C{warnings}
    (the flags that have no effect) on standard error, then
    C{twistd smtpd: configuration OK} on standard output.
    """
    for line in warnings:
        sys.stderr.write(f"twistd smtpd: warning: {_oneLine(line)}\n")
    sys.stderr.flush()
    print("twistd smtpd: configuration OK", flush=True)
    sys.exit(0)


def _sameFile(first: Any, second: Any) -> bool:
    """
    Whether two streams write to the same file (a terminal, the journal):
    C{False} when either has none.
    """
    try:
        a, b = os.fstat(first.fileno()), os.fstat(second.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def checkEndpoint(description: str, rundir: str | None = ".", bindable: bool = False) -> None:
    """
    Parse an endpoint string as L{SMTPServer.addEndpoint} will: C{haproxy:}
    wraps any other description, and an C{ssl:} endpoint is a TCP one
    wrapped in TLS (the files of one with keys of its own are read with
    the server's certificates, once its TLS policy is known); Twisted's
    C{tls:} is refused (L{splitDescription}).  Its
    parameters are checked first (L{checkParameters}): given once, numbers
    in ASCII digits.  A UNIX socket's path must fit and its directory
    exist (L{checkSocketPath}, C{rundir} as there).  With C{bindable}
    (C{--check-config}, which binds nothing), a port this process may not
    bind is refused too (L{checkPortPermission
    <twisted_smtpd._twistd.portpermission.checkPortPermission>}).

    @raise usage.UsageError: If it does not parse.
    """
    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString

    from twisted_smtpd._serving.listeners import endpointKind, splitDescription

    checkParameters("listen", description)
    kind = endpointKind(description)
    parse: Any = serverFromString  # unannotated in Twisted
    try:
        parsed, _ = splitDescription(description)
        endpoint = parse(reactor, parsed)
    except (IndexError, KeyError) as e:
        if kind != "systemd":
            raise usage.UsageError(f"--listen {description!r}: {reason(e)}") from None
        why = "no such socket inherited (LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES)"
        raise usage.UsageError(f"--listen {description!r}: {why}") from None
    except Exception as e:
        raise usage.UsageError(f"--listen {description!r}: {reason(e)}") from None
    checkPortRange("listen", description, endpoint)
    if bindable:
        from twisted_smtpd._twistd.portpermission import checkPortPermission

        checkPortPermission("listen", description, endpoint)
    checkInterface("listen", description, endpoint)
    checkSocketPath("listen", description, endpoint, rundir)
    if kind == "systemd":
        problem = inheritedSocketProblem(endpoint.fileno, endpoint.addressFamily)
        if problem is not None:
            raise usage.UsageError(f"--listen {description!r}: {problem}")


_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def checkHostname(name: str) -> str:
    """
    The C{--hostname} value when it is a domain name (RFC 5321 section
    4.1.2, letters, digits and hyphens in dot-separated labels) or an
    address literal (C{[192.0.2.1]}, C{[IPv6:2001:db8::1]}); a name in
    U-labels (C{b\xfccher.example}) written in A-labels
    (C{xn--bcher-kva.example}) with the rules of the machine's name
    (L{aLabels}).

    @raise usage.UsageError: Otherwise, saying why.
    """
    if not name.isascii():
        try:
            name = aLabels(name)
        except ValueError as e:
            raise usage.UsageError(
                f"--hostname {name!a}: not a domain IDNA can write in A-labels ({e})"
            ) from None
    if name.startswith("[") and name.endswith("]"):
        if literalAddress(name) is None:
            raise usage.UsageError(f"--hostname {name!r}: not an IPv4 or IPv6 address literal")
        return name
    labels = name[:-1].split(".") if name.endswith(".") else name.split(".")
    if not name or len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise usage.UsageError(
            f"--hostname {name!r}: not a host name (letters, digits and hyphens in"
            " dot-separated labels) nor an address literal"
        )
    if labels[-1].isdigit():
        # 192.0.2.1: a domain's last label is never all digits (RFC 1123
        # section 2.1; Postfix's valid_hostname refuses a numeric name): a
        # client would take it for an address, written without brackets.
        hint = ""
        if literalAddress(f"[{name}]") is not None:
            hint = f"; an address is written as an address literal: [{name}]"
        raise usage.UsageError(
            f"--hostname {name!r}: not a host name (its last label is all digits){hint}"
        )
    return name


def checkMetrics(description: str, rundir: str | None = ".", bindable: bool = False) -> None:
    """
    C{--metrics}: an endpoint string (not Twisted's C{tls:}, refused as for
    C{--listen}; a UNIX socket's path must fit and its directory exist,
    L{checkSocketPath} with C{rundir}), and the C{prometheus_client}
    library; with C{bindable}, a port this process may bind, as for
    L{checkEndpoint}.
    Outside a worker of C{--workers}, C{PROMETHEUS_MULTIPROC_DIR} is
    removed from the environment before that library is imported.

    @raise usage.UsageError: Naming the flag and what is wrong.
    """
    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString

    from twisted_smtpd._serving.listeners import (
        PROXY_TWICE,
        TLS_ENDPOINT_REFUSED,
        behindProxy,
        endpointKind,
    )
    from twisted_smtpd._serving.metrics import MULTIPROC_VARIABLES, requirePrometheus
    from twisted_smtpd._twistd.workerlisteners import INHERITED

    if INHERITED not in os.environ:
        # One process, or the parent of --workers (which names its own
        # directory for its workers later): its metrics stay in memory.
        # The variable, set for another program, would have
        # prometheus_client write them into that program's directory, or
        # fail at the first metric when there is none.
        for name in MULTIPROC_VARIABLES:
            os.environ.pop(name, None)
    try:
        requirePrometheus()
    except ImportError as e:
        raise usage.UsageError(str(e)) from None
    checkParameters("metrics", description)
    if behindProxy(description)[0].count(":") > 1:
        raise usage.UsageError(f"--metrics {description!r}: {PROXY_TWICE}")
    if endpointKind(description) == "tls":
        # tls:9101 would serve the metrics on port 443 of every address.
        why = f"{TLS_ENDPOINT_REFUSED}; use ssl:PORT:privateKey=KEY:certKey=CERT for HTTPS"
        raise usage.UsageError(f"--metrics {description!r}: {why}")
    parse: Any = serverFromString
    try:
        if endpointKind(description) == "ssl":
            checkSSLFiles(behindProxy(description)[1])
        endpoint = parse(reactor, metricsDescription(description))
    except Exception as e:
        raise usage.UsageError(f"--metrics {description!r}: {reason(e)}") from None
    checkPortRange("metrics", description, endpoint)
    if bindable:
        from twisted_smtpd._twistd.portpermission import checkPortPermission

        checkPortPermission("metrics", description, endpoint)
    checkInterface("metrics", description, endpoint)
    checkSocketPath("metrics", description, endpoint, rundir)


#: The longest UNIX socket path, in bytes: the size of C{sun_path} less
#: its terminating NUL (108 on Linux, 104 on the BSDs and macOS).
MAX_SOCKET_PATH = 107 if sys.platform.startswith("linux") else 103


def checkSocketPath(flag: str, description: str, endpoint: object, rundir: str | None) -> None:
    """
    Refuse a UNIX socket (C{unix:}, behind C{haproxy:} too) whose path is
    longer than a socket address holds, or whose directory does not exist,
    is no directory or cannot be written by this process: Twisted would
    fail to bind it, or to take its lock file, only once C{twistd} has
    started (and C{--check-config} would call it OK).

    @param flag: The flag's name without the dashes, for the message.
    @param endpoint: What Twisted made of C{description}.
    @param rundir: The directory a relative path is taken from when the
        server listens (C{twistd --rundir}), or C{None} when that cannot be
        told here (C{twistd --chroot}): the directory is not checked then.
    @raise usage.UsageError: Naming the flag, the description and what is
        wrong.
    """
    endpoint = getattr(endpoint, "_wrappedEndpoint", endpoint)
    path = getattr(endpoint, "_address", None)
    if not isinstance(path, str) or not path or path.startswith("\0"):
        return
    size = len(os.fsencode(path))
    if size > MAX_SOCKET_PATH:
        raise usage.UsageError(
            f"--{flag} {description!r}: the UNIX socket path is too long: {size} bytes,"
            f" at most {MAX_SOCKET_PATH}"
        )
    if rundir is None:
        return
    directory = os.path.dirname(os.path.abspath(os.path.join(rundir, path)))
    if os.path.isdir(directory):
        # Bound (its lock file made beside it) before twistd --uid
        # switches users: as the user it starts as.
        effective = os.access in os.supports_effective_ids
        if os.access(directory, os.W_OK | os.X_OK, effective_ids=effective):
            return
        why = "cannot be written"
    else:
        why = "is not a directory" if os.path.lexists(directory) else "does not exist"
    raise usage.UsageError(
        f"--{flag} {description!r}: the directory of the UNIX socket {why}: {directory}"
    )


def checkPortRange(flag: str, description: str, endpoint: object) -> None:
    """
    Refuse the port of a TCP endpoint above 65535, which Twisted takes
    and the kernel refuses only once the server listens; behind
    C{haproxy:} too.

    @param flag: The flag's name without the dashes, for the message.
    @param endpoint: What Twisted made of C{description}.
    @raise usage.UsageError: Naming the flag, the description and the port.
    """
    endpoint = getattr(endpoint, "_wrappedEndpoint", endpoint)
    port = getattr(endpoint, "_port", None)
    if isinstance(port, int) and not 0 <= port <= 65535:
        raise usage.UsageError(f"--{flag} {description!r}: port {port} is out of range (0-65535)")


def checkInterface(flag: str, description: str, endpoint: object) -> None:
    """
    Refuse the C{interface=} of a TCP endpoint (behind C{haproxy:} too)
    that no listener could bind: an address this host does not have, or a
    name that does not resolve.  Twisted finds out only once the server
    listens, and C{--check-config}, which listens on nothing, would call
    the configuration OK.  A socket is bound to the address on a port the
    system picks, then closed: a server running on the port is no
    obstacle.

    @param flag: The flag's name without the dashes, for the message.
    @param endpoint: What Twisted made of C{description}.
    @raise usage.UsageError: Naming the flag, the description and why, in
        the words of a listener that cannot start.
    """
    from twisted.internet.abstract import isIPv6Address

    from twisted_smtpd._serving.listeners import listenReason

    endpoint = getattr(endpoint, "_wrappedEndpoint", endpoint)
    interface = getattr(endpoint, "_interface", None)
    if not isinstance(interface, str) or interface in ("", "0.0.0.0", "::"):  # noqa: S104
        return
    family = socket.AF_INET6 if isIPv6Address(interface) else socket.AF_INET
    # An ASCII name or address goes as bytes, as binding passes it: given
    # text, getaddrinfo() encodes it with the IDNA codec, which would be
    # loaded for good (and refuses an empty or overlong label with a
    # UnicodeError, where the resolver says the name is unknown).
    host: str | bytes = interface.encode("ascii") if interface.isascii() else interface
    try:
        # As Twisted binds it: an IPv6 address with its scope (%eth0).
        address = socket.getaddrinfo(host, 0, family, socket.SOCK_STREAM)[0][4]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind(address)
    except OSError as e:
        raise usage.UsageError(f"--{flag} {description!r}: {listenReason(e)}") from None
    except UnicodeError:
        # A name that is not ASCII, which IDNA cannot encode.
        raise usage.UsageError(f"--{flag} {description!r}: not a valid host name") from None


def metricsDescription(description: str) -> str:
    """
    The endpoint string the C{--metrics} endpoint C{description} is served
    on: itself, its kinds as Twisted's parsers read them
    (L{normaliseKinds}: C{TCP:9101} is C{tcp:9101}), but for an C{ssl:} one
    whose C{sslmethod=} allows every version (C{SSLv23_METHOD},
    C{TLS_METHOD}), left out.  Given to Twisted, any method replaces its
    minimum version (TLS 1.2) by OpenSSL's own.

    @raise ValueError: For an C{sslmethod=} pinning a version
        (C{TLSv1_METHOD}: TLS 1.0 only, which the SMTP listeners refuse),
        refused as on an C{ssl:} listener.
    """
    from twisted.internet import endpoints

    from twisted_smtpd._serving.listeners import (
        ANY_VERSION_METHODS,
        SSL_ARGUMENTS,
        behindProxy,
        escapeValue,
        methodRefused,
        normaliseKinds,
    )

    description = normaliseKinds(description)
    prefix, inner = behindProxy(description)
    parse: Any = endpoints._parse  # unannotated in Twisted
    args, kwargs = parse(inner)
    if str(args[0]) != "ssl":
        return description
    values = {**dict(zip(("port", *SSL_ARGUMENTS), args[1:], strict=False)), **kwargs}
    method = values.pop("sslmethod", None)
    if method is None:
        return description
    if method not in ANY_VERSION_METHODS:
        raise methodRefused(
            method, "it would pin the TLS version (without it, TLS 1.2 and later are spoken)"
        )
    named = ":".join(f"{name}={escapeValue(value)}" for name, value in values.items())
    return f"{prefix}ssl:{named}"


def checkSSLFiles(description: str) -> None:
    """
    Read the files of the C{ssl:} endpoint string C{description} (of
    C{--metrics}, which Twisted serves; without its C{haproxy:} layers)
    as those of an C{ssl:} listener are, before Twisted does: a file that
    cannot be used is named in the server's words, not in OpenSSL's, and
    one that is no regular file (a pipe, C{/dev/zero}) is refused before
    Twisted reads it without end.
    A C{dhParameters} file must hold Diffie-Hellman parameters OpenSSL
    takes.

    @raise ValueError: C{"cannot read <parameter> <path>: <why>"}, or
        C{"cannot use dhParameters <path>: <why>"}.
    """
    from twisted.internet import endpoints

    from twisted_smtpd._serving.listeners import SSL_ARGUMENTS
    from twisted_smtpd._serving.listenertls import loadParameters, readChain
    from twisted_smtpd._serving.sni import TLSPolicy
    from twisted_smtpd._serving.tlsfiles import _readCredentials

    parse: Any = endpoints._parse  # unannotated in Twisted
    args, kwargs = parse(description)
    values = {**dict(zip(SSL_ARGUMENTS, args[2:], strict=False)), **kwargs}
    # Twisted's defaults.
    privateKey = values.get("privateKey", "server.pem")
    _readCredentials(values.get("certKey", privateKey), privateKey, ("certKey", "privateKey"))
    if "extraCertChain" in values:
        readChain(values["extraCertChain"])
    if "dhParameters" in values:
        # Twisted would load them on the first handshake, and fail every
        # one with a traceback on a file that holds none.
        loadParameters(TLSPolicy().newContext(), values["dhParameters"])


def ipList(text: str) -> tuple[str, ...]:
    """
    C{--ignored-hosts}: comma-separated IP addresses, in their normal form.

    @raise usage.UsageError: Naming the first entry that is not one, or
        the value when an entry is empty (a comma too many, a variable
        left unset: no address was meant to be left out).
    """
    found = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            raise usage.UsageError(
                f"--ignored-hosts {text!r}: an empty entry (expected IP addresses, comma-separated)"
            )
        try:
            found.append(str(ipaddress.ip_address(part)))
        except ValueError:
            raise usage.UsageError(f"--ignored-hosts: {part!r} is not an IP address") from None
    return tuple(found)
