# -*- test-case-name: tests.test_tap -*-
"""
The C{twistd smtpd} command line: L{Options} and L{makeService}.

Every setting is checked while the options are parsed, so that a mistake
becomes one L{usage.UsageError} line from C{twistd} rather than a traceback
from a half-started server.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import attrs
from twisted.application.service import IService
from twisted.python import usage

from twisted_smtpd._options import (
    BARE_NEWLINE_POLICIES,
    HIDEABLE,
    KNOWN_COMMANDS,
    ServerOptions,
)
from twisted_smtpd._server import SMTPServer
from twisted_smtpd.handlers import DebuggingHandler, MaildirHandler, SinkHandler
from twisted_smtpd.interfaces import ISMTPHandler

DEFAULT_LISTEN = "tcp:2525:interface=127.0.0.1"
DEFAULT_MAILDIR = "./Maildir"

_DEFAULTS: dict[str, Any] = {f.name: f.default for f in attrs.fields(ServerOptions)}

# --hide EXT -> the ServerOptions attribute it sets.
_HIDE_ATTRIBUTES = {ext: "hideSize" if ext == "SIZE" else "hide" + ext for ext in HIDEABLE}

# Numeric flags and the ServerOptions attribute each one sets.
_NUMBERS = {
    "size": "size",
    "max-clients": "maxClients",
    "socket-timeout": "socketTimeout",
    "close-timeout": "closeTimeout",
    "max-recipients": "maxRecipients",
}


def _oneLine(text: str) -> str:
    """
    Collapse C{text} onto a single line.
    """
    return " ".join(text.split())


def _number(flag: str, kind: Callable[[str], float], *, positive: bool) -> Callable[[str], float]:
    """
    A coercer for a numeric flag that rejects anything but a finite number in
    range with a L{usage.UsageError} naming the flag.

    @param flag: The flag's name, without the dashes.
    @param kind: L{int} or L{float}.
    @param positive: Whether zero is refused too (otherwise only negative
        numbers are).
    """
    what = "a whole number" if kind is int else "a number"
    bound = "greater than 0" if positive else "0 or more"

    def coerce(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise usage.UsageError(f"--{flag}: expected {what}, got {text!r}") from None
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            raise usage.UsageError(f"--{flag}: must be {bound}, got {text!r}")
        return value

    return coerce


def _bareNewline(text: str) -> str:
    """
    Check a C{--bare-newline} policy name.
    """
    if text not in BARE_NEWLINE_POLICIES:
        choices = ", ".join(sorted(BARE_NEWLINE_POLICIES))
        raise usage.UsageError(f"--bare-newline: expected one of {choices}, got {text!r}")
    return text


class Options(usage.Options):
    """
    Options of C{twistd smtpd}.

    After L{parseOptions}, C{self["listen"]} holds the endpoint strings,
    C{self["handler"]} the L{ISMTPHandler} chosen by C{--maildir}, C{--sink}
    or C{--debug}, and C{self["serverOptions"]} the L{ServerOptions}.
    """

    synopsis = "[options]"
    longdesc = (
        "Run an SMTP (or, with --lmtp, LMTP) server. Without a delivery option "
        "every accepted message is stored in the Maildir ./Maildir. ENDPOINT is "
        "any Twisted server endpoint string: tcp:PORT, ssl:PORT:privateKey=..., "
        "unix:PATH, systemd:domain=INET:index=0, haproxy:tcp:PORT. --hide takes "
        "STARTTLS, SIZE, PIPELINING, 8BITMIME, SMTPUTF8, ENHANCEDSTATUSCODES, DSN, "
        "REQUIRETLS or CHUNKING; a hidden SIZE limit still applies."
    )

    optFlags = [
        ["lmtp", None, "Speak LMTP (RFC 2033) instead of SMTP."],
    ]

    optParameters = [
        [
            "hostname",
            None,
            None,
            "The server's name in the greeting and replies [default: this host's FQDN].",
        ],
        ["banner", None, None, "Extra text for the 220 greeting."],
        [
            "size",
            None,
            _DEFAULTS["size"],
            "Largest message accepted, in bytes; 0 for no limit.",
            _number("size", int, positive=False),
        ],
        [
            "max-clients",
            None,
            _DEFAULTS["maxClients"],
            "Concurrent connections; 0 for no limit.",
            _number("max-clients", int, positive=False),
        ],
        [
            "socket-timeout",
            None,
            _DEFAULTS["socketTimeout"],
            "Seconds of client silence before 421 and close.",
            _number("socket-timeout", float, positive=True),
        ],
        [
            "close-timeout",
            None,
            _DEFAULTS["closeTimeout"],
            "Seconds a stopping server waits for transactions to finish.",
            _number("close-timeout", float, positive=False),
        ],
        [
            "max-recipients",
            None,
            _DEFAULTS["maxRecipients"],
            "Recipients per transaction.",
            _number("max-recipients", int, positive=True),
        ],
        [
            "bare-newline",
            None,
            _DEFAULTS["bareNewline"],
            "What a bare CR or LF in message text does: reject the message, "
            "normalize it to CRLF, or keep it (legacy). It never ends a message.",
            _bareNewline,
        ],
    ]

    compData = usage.Completions(
        optActions={
            "maildir": usage.CompleteDirs(descr="Maildir directory"),
            "bare-newline": usage.CompleteList(sorted(BARE_NEWLINE_POLICIES)),
            "hide": usage.CompleteList(sorted(HIDEABLE)),
            "disable": usage.CompleteList(sorted(KNOWN_COMMANDS)),
        },
        mutuallyExclusive=[("maildir", "sink", "debug")],
    )

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["maildir"] = DEFAULT_MAILDIR
        self["delivery"] = []
        self["disable"] = []
        self["hide"] = []

    def opt_listen(self, description: str) -> None:
        """Listen on this endpoint; repeatable [default: tcp:2525:interface=127.0.0.1]"""
        self["listen"].append(description)

    def opt_maildir(self, path: str) -> None:
        """Store every message in this Maildir, fsynced before the 250 [default: ./Maildir]"""
        self["maildir"] = path
        self["delivery"].append("maildir")

    def opt_sink(self) -> None:
        """Accept and discard every message."""
        self["delivery"].append("sink")

    def opt_debug(self) -> None:
        """Accept every message and print it to the log."""
        self["delivery"].append("debug")

    def opt_disable(self, command: str) -> None:
        """Answer this command with 502 (repeatable)."""
        name = command.strip().upper()
        if name not in KNOWN_COMMANDS:
            choices = " ".join(sorted(KNOWN_COMMANDS))
            raise usage.UsageError(f"--disable: unknown command {command!r}; one of: {choices}")
        self["disable"].append(name)

    def opt_hide(self, extension: str) -> None:
        """Do not advertise this EHLO extension (repeatable; see below)."""
        name = extension.strip().upper()
        if name not in HIDEABLE:
            choices = " ".join(sorted(HIDEABLE))
            raise usage.UsageError(f"--hide: unknown extension {extension!r}; one of: {choices}")
        self["hide"].append(name)

    def postOptions(self) -> None:
        """
        Check the endpoints, build the handler and the L{ServerOptions}.

        @raise usage.UsageError: With one line saying what is wrong.
        """
        from twisted.internet import reactor
        from twisted.internet.endpoints import serverFromString

        if not self["listen"]:
            self["listen"] = [DEFAULT_LISTEN]
        for description in self["listen"]:
            try:
                serverFromString(reactor, description)
            except Exception as e:
                reason = _oneLine(str(e)) or type(e).__name__
                raise usage.UsageError(f"--listen {description!r}: {reason}") from None

        chosen = sorted(set(self["delivery"]))
        if len(chosen) > 1:
            raise usage.UsageError(
                "--maildir, --sink and --debug are mutually exclusive; got "
                + ", ".join("--" + c for c in chosen)
            )
        self["serverOptions"] = self._serverOptions()
        self["handler"] = self._handler(chosen[0] if chosen else "maildir")

    def _serverOptions(self) -> ServerOptions:
        """
        The L{ServerOptions} the flags describe.

        @raise usage.UsageError: If L{ServerOptions} refuses a value.
        """
        settings: dict[str, Any] = {attribute: self[flag] for flag, attribute in _NUMBERS.items()}
        settings["lmtp"] = bool(self["lmtp"])
        settings["bareNewline"] = self["bare-newline"]
        settings["disabledCommands"] = tuple(self["disable"])
        for extension in self["hide"]:
            settings[_HIDE_ATTRIBUTES[extension]] = True
        if self["hostname"] is not None:
            settings["name"] = self["hostname"]
        if self["banner"] is not None:
            settings["banner"] = self["banner"]
        try:
            return ServerOptions(**settings)
        except ValueError as e:
            raise usage.UsageError(_oneLine(str(e))) from None

    def _handler(self, delivery: str) -> ISMTPHandler:
        """
        The handler for C{delivery}: C{"maildir"}, C{"sink"} or C{"debug"}.

        @raise usage.UsageError: If the Maildir cannot be created.
        """
        if delivery == "sink":
            return SinkHandler()
        if delivery == "debug":
            return DebuggingHandler()
        path = self["maildir"]
        try:
            return MaildirHandler(path)
        except (OSError, ValueError) as e:
            reason = (e.strerror if isinstance(e, OSError) else None) or str(e)
            raise usage.UsageError(f"--maildir {path!r}: {_oneLine(reason)}") from None


def makeService(config: Options) -> IService:
    """
    Build the server that C{twistd smtpd} runs.

    @param config: Parsed L{Options}.
    @return: An L{SMTPServer} with one listening child service per
        C{--listen} endpoint; they start listening when it starts.
    """
    server = SMTPServer(config["handler"], config["serverOptions"])
    for description in config["listen"]:
        server.addEndpoint(description)
    return server
