# -*- test-case-name: tests.test_tap -*-
"""
The delivery handler each delivery flag of C{twistd smtpd} names
(C{--maildir}, C{--relay}, C{--pipe}, C{--handler}, ...), built from the
parsed configuration: L{HANDLERS}.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any

from twisted.internet.abstract import isIPv6Address
from twisted.python import usage

from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd._serving.hooks import checkHandler
from twisted_smtpd._twistd.madefiles import absentPaths, remember
from twisted_smtpd._twistd.runuser import asRunUser
from twisted_smtpd._twistd.tapconfig import reason
from twisted_smtpd._twistd.tapendpoints import checkParameters
from twisted_smtpd.interfaces import ISMTPHandler


def _maildir(config: Mapping[str, Any], path: str, options: ServerOptions) -> ISMTPHandler:
    from twisted_smtpd.handlers.maildir import MaildirHandler

    if config["maildir-existing-only"] and not config["maildir-per-recipient"]:
        raise usage.UsageError("--maildir-existing-only needs --maildir-per-recipient")
    # Removed if still empty when the start fails (L{removeMade}).
    made = absentPaths(path, ("tmp", "new", "cur")) if path else []
    # Made and checked as the user twistd --uid runs the server as.
    with asRunUser(config):
        try:
            return MaildirHandler(
                path,
                traceHeaders=bool(config["maildir-trace"]),
                perRecipient=bool(config["maildir-per-recipient"]),
                existingOnly=bool(config["maildir-existing-only"]),
                hostname=options.name,
            )
        finally:
            remember(made)


def _sink(config: Mapping[str, Any], value: None, options: ServerOptions) -> ISMTPHandler:
    from twisted_smtpd.handlers.sink import SinkHandler

    return SinkHandler()


def _debug(config: Mapping[str, Any], value: None, options: ServerOptions) -> ISMTPHandler:
    from twisted_smtpd.handlers.debugging import DebuggingHandler

    return DebuggingHandler()


def _mbox(config: Mapping[str, Any], path: str, options: ServerOptions) -> ISMTPHandler:
    from twisted_smtpd.handlers.mbox import MboxHandler, openMailbox

    handler = MboxHandler(path)
    # Fail now, not at the first message, if the file cannot be written (or
    # is a named pipe, whose opening would wait for a reader, or a symbolic
    # link the handler does not follow) or its directory cannot hold the
    # spool files; as the user twistd --uid runs the server as, who owns
    # the file made.
    with asRunUser(config):
        # Removed if still empty when the start fails (L{removeMade}).
        remember(absentPaths(handler.path))
        os.close(openMailbox(handler.path))
        with contextlib.suppress(FileNotFoundError):
            # A name leaving no room for its dot lock's ".lock" (ENAMETOOLONG)
            # would fail every message.
            os.lstat(handler.path + ".lock")
        tempfile.TemporaryFile(dir=os.path.dirname(handler.path)).close()
    return handler


def splitHostPort(text: str, defaultPort: int) -> tuple[str, int]:
    """
    Split C{HOST[:PORT]}; an IPv6 address with a port is written in
    brackets (C{[::1]:25}).

    @raise ValueError: If the port is not ASCII digits, a bracket is not
        closed or not followed by C{:PORT}, or a host with colons is not an
        IPv6 address (C{host:25:26}).
    """
    host, port = text.strip(), str(defaultPort)
    if host.startswith("["):
        host, bracket, rest = host[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError("expected HOST[:PORT], or [IPV6-ADDRESS][:PORT]")
        if rest:
            port = rest[1:]
    elif host.count(":") == 1:
        host, _, port = host.partition(":")
    if ":" in host and not isIPv6Address(host):
        raise ValueError(f"not an IPv6 address: {host!r} (expected HOST[:PORT])")
    if not (port.isascii() and port.isdigit()):
        # Not int()'s other spellings (Arabic-Indic or full-width digits).
        raise ValueError(f"invalid port {port!a}")
    return host, int(port)


def _checkText(config: Mapping[str, Any], *flags: str) -> None:
    """
    Refuse a value of C{flags} that does not encode as UTF-8: a byte of the
    command line that was not UTF-8 (Python keeps it as a lone surrogate),
    which would fail each time the value is sent (AUTH at the relay, a
    webhook's signature, an AMQP name), not at start.  The value is not
    shown: it may be a password.

    @raise usage.UsageError: C{--FLAG: not UTF-8 text}.
    """
    for flag in flags:
        value = config[flag]
        if value is None:
            continue
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise usage.UsageError(
                f"--{flag}: not UTF-8 text (a byte of it is not UTF-8)"
            ) from None


def _checkCA(flag: str, path: str | None) -> None:
    """
    Read the CA bundle of C{--relay-ca}, C{--webhook-ca} or C{--amqp-ca}
    now, so that what is wrong with it names that flag, not the delivery
    flag it serves.

    @raise usage.UsageError: C{--FLAG: why}.
    """
    from twisted_smtpd.handlers.relay import loadTrustRoot

    if path is None:
        return
    if not path:
        raise usage.UsageError(f"--{flag}: the path is empty")
    try:
        loadTrustRoot(path)
    except (OSError, ValueError) as e:
        raise usage.UsageError(f"--{flag}: {reason(e)}") from None


def _relay(config: Mapping[str, Any], target: str, options: ServerOptions) -> ISMTPHandler:
    from twisted_smtpd.handlers.relay import RelayHandler

    host, port = splitHostPort(target, 25)
    _checkText(config, "relay-user", "relay-password", "relay-auth")
    user, password = config["relay-user"], config["relay-password"]
    if config["relay-auth"] is not None:
        if user is not None or password is not None:
            raise usage.UsageError("--relay-auth excludes --relay-user and --relay-password")
        user, colon, password = config["relay-auth"].partition(":")
        if not colon:
            raise usage.UsageError("--relay-auth: expected USER:PASSWORD")
    elif user is not None and password is None:
        raise usage.UsageError("--relay-user needs --relay-password")
    elif password is not None and user is None:
        raise usage.UsageError("--relay-password needs --relay-user")
    if user == "":
        # AUTH with an empty authentication identity: refused by any relay.
        flag = "relay-auth" if config["relay-auth"] is not None else "relay-user"
        raise usage.UsageError(f"--{flag}: the user name is empty")
    if password == "":
        # AUTH PLAIN, asked first, has no empty password (RFC 4616): every
        # message would fail at the relay.
        flag = "relay-auth" if config["relay-auth"] is not None else "relay-password"
        raise usage.UsageError(f"--{flag}: the password is empty")
    if config["relay-insecure"] and config["relay-ca"] is not None:
        raise usage.UsageError("--relay-insecure excludes --relay-ca")
    _checkCA("relay-ca", config["relay-ca"])
    return RelayHandler(
        host,
        port,
        tls="required" if config.get("relay-require-tls") else "opportunistic",
        caCertificates=config["relay-ca"],
        verify=not config["relay-insecure"],
        username=user,
        password=password,
        heloName=options.name,
        maxSessions=int(config.get("relay-sessions") or 4),
        idleTimeout=30.0 if config.get("relay-idle") is None else float(config["relay-idle"]),
        logMessages=not config.get("quiet"),
    )


def _lmtpTo(config: Mapping[str, Any], endpoint: str, options: ServerOptions) -> ISMTPHandler:
    from twisted_smtpd.handlers.lmtp import LMTPDeliveryHandler

    checkParameters("lmtp-to", endpoint, client=True)
    handler = LMTPDeliveryHandler(
        endpoint,
        heloName=options.name,
        logMessages=not config.get("quiet"),
    )
    checkClientEndpoint(endpoint)
    return handler


def checkClientEndpoint(description: str) -> None:
    """
    Refuse a client endpoint string that parses but can never connect: a
    port out of range, an empty UNIX socket path; and an C{ssl:} one
    without C{hostname=}, over which Twisted checks no certificate of the
    server.

    @raise ValueError: Saying which.
    """
    from twisted.internet import reactor
    from twisted.internet.endpoints import clientFromString
    from twisted.internet.ssl import CertificateOptions

    parse: Any = clientFromString  # unannotated in Twisted
    endpoint = parse(reactor, description)
    endpoint = getattr(endpoint, "_wrappedEndpoint", endpoint)
    port = getattr(endpoint, "_port", None)
    if isinstance(port, int) and not 1 <= port <= 65535:
        raise ValueError(f"port {port} is out of range (1-65535)")
    if getattr(endpoint, "_path", None) == "":
        raise ValueError("the UNIX socket path is empty")
    creator = getattr(endpoint, "_sslContextFactory", None)
    if isinstance(creator, CertificateOptions) and not creator.verify:
        raise ValueError(
            "ssl: without hostname= checks no certificate of the server: add"
            " hostname=NAME (checked against the system's CAs, or caCertsDir='s),"
            " or use tls:NAME:PORT"
        )


def _pipe(config: Mapping[str, Any], command: str, options: ServerOptions) -> ISMTPHandler:
    from twisted_smtpd._twistd.openfiles import startingLimit
    from twisted_smtpd.handlers.pipe import PipeHandler

    spool = config["pipe-spool"]
    if spool is not None and not spool.strip():
        # An empty path would spool into the directory the server runs in,
        # while its log names the default, $TMPDIR.
        raise usage.UsageError(f"--pipe-spool {spool!r}: no directory named")
    if spool is not None:
        # Fail now, not at the first message, if spool files cannot be made
        # (by the user twistd --uid runs the server as).
        try:
            with asRunUser(config):
                tempfile.TemporaryFile(dir=spool).close()
        except OSError as e:
            why = os.strerror(e.errno) if e.errno else reason(e)
            raise usage.UsageError(f"--pipe-spool {spool!r}: {why}") from None
    return PipeHandler(
        command,
        spoolDirectory=spool,
        openFiles=startingLimit(),
        maxConcurrent=int(config.get("pipe-concurrency") or 20),
    )


def _extra(flag: str, extra: str, module: str) -> Any:
    """
    Import C{module}, the handler of an optional delivery.

    @raise usage.UsageError: Naming the extra to install if a package it
        needs is missing.
    """
    try:
        return import_module(module)
    except ImportError as e:
        missing = e.name or "a package"
        raise usage.UsageError(
            f"--{flag} needs the {extra} extra ({missing} is missing): "
            f"pip install 'twisted-smtpd[{extra}]'"
        ) from None


def _webhook(config: Mapping[str, Any], url: str, options: ServerOptions) -> ISMTPHandler:
    from twisted_smtpd.handlers.webhook import WebhookHandler

    _checkText(config, "webhook-secret")
    if config["webhook-secret"] == "":
        # An HMAC keyed with nothing is a signature anyone can make.
        raise usage.UsageError("--webhook-secret: the secret is empty")
    if config["webhook-secret"] is not None and not config["webhook-secret"].strip():
        raise usage.UsageError("--webhook-secret: the secret is only white space")
    if config["webhook-ca"] is not None and url.startswith("http://"):
        raise usage.UsageError("--webhook-ca needs an https:// --webhook URL")
    _checkCA("webhook-ca", config["webhook-ca"])
    handler: ISMTPHandler = WebhookHandler(
        url,
        secret=config["webhook-secret"],
        format=config["webhook-format"] or "raw",
        caCertificates=config["webhook-ca"],
        maxConcurrent=int(config.get("webhook-concurrency") or 20),
    )
    return handler


def _amqp(config: Mapping[str, Any], url: str, options: ServerOptions) -> ISMTPHandler:
    module = _extra("amqp", "amqp", "twisted_smtpd.handlers.amqp")
    if config["amqp-ca"] is not None and url.startswith("amqp://"):
        raise usage.UsageError("--amqp-ca needs an amqps:// --amqp URL")
    _checkText(config, "amqp", "amqp-exchange", "amqp-queue", "amqp-routing-key")
    if config["amqp-queue"] == "":
        # Not the default queue, which an empty value would silently be.
        raise usage.UsageError("--amqp-queue: the queue name is empty")
    for flag, what in [
        ("amqp-exchange", "exchange"),
        ("amqp-queue", "queue"),
        ("amqp-routing-key", "routing key"),
    ]:
        name = config[flag]
        if name is not None and len(name.encode("utf-8", "surrogateescape")) > module.SHORT_STRING:
            raise usage.UsageError(
                f"--{flag}: the {what} name is over {module.SHORT_STRING} octets"
            )
    _checkCA("amqp-ca", config["amqp-ca"])
    handler: ISMTPHandler = module.AMQPHandler(
        url,
        exchange=config["amqp-exchange"] or "",
        routingKey=config["amqp-routing-key"],
        queue=config["amqp-queue"] or "smtpd",
        caCertificates=config["amqp-ca"],
        maxMessageSize=options.size or None,
    )
    return handler


#: What a C{--handler} module or callable may raise that L{_custom}'s caller
#: reports as it is (its message names the problem).
_REPORTED = (OSError, ValueError, TypeError, ImportError, AttributeError)


def _calling(what: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """
    C{call(*args, **kwargs)}, any other exception than L{_REPORTED} (its
    own C{RuntimeError}, a C{SyntaxError}, even C{SystemExit}) turned into
    a C{ValueError} naming C{what} raised it: one line, not a traceback.
    """
    try:
        return call(*args, **kwargs)
    except _REPORTED:
        raise
    except BaseException as e:
        kind, text = type(e).__name__, reason(e)
        raise ValueError(f"{what} raised {kind}" + (f": {text}" * (text != kind))) from None


def _custom(config: Mapping[str, Any], spec: str, options: ServerOptions) -> ISMTPHandler:
    """
    Call C{module:callable} with the C{--handler-option}s as keyword
    arguments.
    """
    module, colon, name = spec.partition(":")
    if not colon or not module or not name:
        raise ValueError("expected MODULE:CALLABLE")
    target: Any = _calling(f"importing {module}", import_module, module)
    for part in name.split("."):
        target = _calling(f"looking up {name}", getattr, target, part)
    if not callable(target):
        raise TypeError(f"{name} is not callable")
    handler = _calling(f"{name}()", target, **config["handler-option"])
    try:
        checked: ISMTPHandler = _calling(f"checking {name}()'s result", checkHandler, handler)
    except TypeError as e:
        kind = type(handler).__name__
        raise TypeError(f"{name} returned {kind}, not an ISMTPHandler: {e}") from None
    return checked


HANDLERS: dict[str, Callable[[Mapping[str, Any], Any, ServerOptions], ISMTPHandler]] = {
    "maildir": _maildir,
    "mbox": _mbox,
    "relay": _relay,
    "lmtp-to": _lmtpTo,
    "pipe": _pipe,
    "webhook": _webhook,
    "amqp": _amqp,
    "sink": _sink,
    "debug": _debug,
    "handler": _custom,
}
