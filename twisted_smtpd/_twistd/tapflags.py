# -*- test-case-name: tests.test_tap -*-
"""
The tables behind the C{twistd smtpd} flags: which L{ServerOptions} field
each flag sets, which flags choose the delivery and which only modify one,
and the coercers that check a flag's value as it is parsed (a bad value is
one L{usage.UsageError} line naming the flag).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import attrs
from twisted.python import usage

from twisted_smtpd._core.optionchecks import HIDEABLE
from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd._core.optionvalues import DECIMAL, MIN_RATE_WINDOW, WHOLE

DEFAULT_LISTEN = "tcp:2525:interface=127.0.0.1"
DEFAULT_MAILDIR = "./Maildir"
LOG_FORMATS = ("text", "json")
#: How many rotated log files C{--logfile} keeps (C{PATH.1} to
#: C{PATH.10}) unless C{--log-rotate-keep} says otherwise.
DEFAULT_ROTATED_LOGS = 10
#: The size in bytes at which C{--logfile} is rotated unless
#: C{--log-rotate-length} says otherwise: with L{DEFAULT_ROTATED_LOGS},
#: at most 110 MB of log on disk (C{twistd}'s own 1 MB kept 11 MB, a few
#: hours of a busy server's lines).
DEFAULT_ROTATE_LENGTH = 10_000_000

_DEFAULTS: dict[str, Any] = {f.name: f.default for f in attrs.fields(ServerOptions)}

# --hide EXT -> the ServerOptions attribute it sets.
_HIDE_ATTRIBUTES = {ext: "hideSize" if ext == "SIZE" else "hide" + ext for ext in HIDEABLE}

# Numeric flags and the ServerOptions attribute each one sets.
_NUMBERS = {
    "size": "size",
    "max-clients": "maxClients",
    "socket-timeout": "socketTimeout",
    "close-timeout": "closeTimeout",
    "tls-handshake-timeout": "tlsHandshakeTimeout",
    "handler-timeout": "handlerTimeout",
    "max-clients-per-ip": "maxClientsPerIp",
    "client-ipv6-prefix-length": "clientIpv6PrefixLength",
    "max-recipients": "maxRecipients",
    "max-junk-commands": "maxJunkCommands",
    "soft-error-limit": "softErrorLimit",
    "error-sleep": "errorSleep",
}

# COUNT/SECONDS flags and the ServerOptions attribute each one sets.
_RATES = {
    "max-connection-rate": "maxConnectionRate",
    "max-auth-rate": "maxAuthRate",
    "min-data-rate": "minDataRate",
}

# Boolean flags and the ServerOptions attribute each one sets.
_SWITCHES = {
    "lmtp": "lmtp",
    "request-cert": "requestCert",
    "allow-insecure-auth": "allowInsecureAuth",
    "auth-optional": "authOptional",
    "no-reverse-lookup": "disableReverseLookup",
}

# Trusted-network flags and the ServerOptions attribute each one sets.
_NETWORKS = {
    "proxy-trusted": "useProxy",
    "xclient": "useXClient",
    "xforward": "useXForward",
    "limit-exempt": "limitExemptions",
}

# The ServerOptions fields set by flags of their own, with the flag: an error
# ServerOptions gives about a field ("banner must not contain CR, LF or NUL")
# names the flag instead.
FIELD_FLAGS = {
    **{attribute: flag for flag, attribute in _NUMBERS.items()},
    **{attribute: flag for flag, attribute in _RATES.items()},
    **{attribute: flag for flag, attribute in _SWITCHES.items()},
    **{attribute: flag for flag, attribute in _NETWORKS.items()},
    "name": "hostname",
    "banner": "banner",
    "certificate": "tls-cert",
    "privateKey": "tls-key",
    "caCertificates": "tls-ca",
    "sniOptions": "sni",
    "tlsCiphers": "tls-ciphers",
    "tlsMinVersion": "tls-min-version",
    "bareNewline": "bare-newline",
    "ignoredHosts": "ignored-hosts",
    "disabledCommands": "disable",
    "authMethods": "auth-methods",
}

# The flags choosing where messages go, and the flags that only make sense
# with one of them.
DELIVERIES = (
    "maildir",
    "mbox",
    "relay",
    "lmtp-to",
    "pipe",
    "webhook",
    "amqp",
    "debug",
    "sink",
    "handler",
)
_PARAMETER_DELIVERIES = ("mbox", "relay", "lmtp-to", "pipe", "webhook", "amqp", "handler")
_MODIFIERS = {
    "maildir-per-recipient": "maildir",
    "maildir-existing-only": "maildir",
    "maildir-trace": "maildir",
    "relay-ca": "relay",
    "relay-insecure": "relay",
    "relay-user": "relay",
    "relay-password": "relay",
    "relay-auth": "relay",
    "relay-require-tls": "relay",
    "relay-sessions": "relay",
    "relay-idle": "relay",
    "handler-option": "handler",
    "pipe-spool": "pipe",
    "pipe-concurrency": "pipe",
    "webhook-secret": "webhook",
    "webhook-format": "webhook",
    "webhook-ca": "webhook",
    "webhook-concurrency": "webhook",
    "amqp-exchange": "amqp",
    "amqp-routing-key": "amqp",
    "amqp-queue": "amqp",
    "amqp-ca": "amqp",
}

# Options that may be given several times (a list in a configuration file).
_REPEATABLE = frozenset({"listen", "sni", "disable", "hide", "auth", "handler-option", *_NETWORKS})
# Options that cannot appear in a configuration file.
_NOT_IN_FILE = frozenset(
    {"config", "check-config", "help", "version", "help-auth", "help-auth-type"}
)


def _number(
    flag: str, kind: Callable[[str], float], *, positive: bool, minimum: float | None = None
) -> Callable[[str], float]:
    """
    A coercer for a numeric flag that rejects anything but a finite number in
    range, written in ASCII digits (L{WHOLE}, L{DECIMAL}), with a
    L{usage.UsageError} naming the flag.

    @param flag: The flag's name, without the dashes.
    @param kind: L{int} or L{float}.
    @param positive: Whether zero is refused too (otherwise only negative
        numbers are).
    @param minimum: The least value taken, if above 0.
    """
    what = "a whole number" if kind is int else "a number"
    bound = "greater than 0" if positive else "0 or more"
    least = 0.0
    if minimum is not None:
        bound, least = f"at least {minimum:g}", minimum

    grammar = WHOLE if kind is int else DECIMAL

    def coerce(text: str) -> float:
        try:
            if not (text.isascii() and grammar.fullmatch(text)):
                raise ValueError(text)
            value = kind(text)
        except ValueError:
            raise usage.UsageError(f"--{flag}: expected {what}, got {text!a}") from None
        if not math.isfinite(value):
            raise usage.UsageError(f"--{flag}: expected a finite number, got {text!r}")
        if value < least or (positive and value == 0):
            raise usage.UsageError(f"--{flag}: must be {bound}, got {text!r}")
        return value

    return coerce


def _timeout(flag: str, minimum: float) -> Callable[[str], float]:
    """
    A coercer for seconds that are 0 (never) or at least C{minimum}: less
    than that (C{0.001}) leaves nothing the time to start.
    """
    number = _number(flag, float, positive=False)

    def coerce(text: str) -> float:
        value = number(text)
        if 0 < value < minimum:
            raise usage.UsageError(
                f"--{flag}: must be 0 (never) or at least {minimum:g}, got {text!r}"
            )
        return value

    return coerce


def _rate(flag: str, what: str) -> Callable[[str], str]:
    """
    A coercer for a C{COUNT/SECONDS} flag: a whole number above 0, a slash,
    a finite number of seconds above 0, in ASCII digits without spaces;
    the seconds at least L{MIN_RATE_WINDOW}.
    """

    def coerce(text: str) -> str:
        count, slash, seconds = text.partition("/")
        try:
            written = text.isascii() and WHOLE.fullmatch(count) and DECIMAL.fullmatch(seconds)
            good = written and slash and int(count) > 0 and 0 < float(seconds) < math.inf
        except ValueError:
            good = False
        if not good:
            raise usage.UsageError(f"--{flag}: expected {what}/SECONDS, got {text!a}")
        if float(seconds) < MIN_RATE_WINDOW:
            raise usage.UsageError(
                f"--{flag}: SECONDS of {what}/SECONDS must be at least {MIN_RATE_WINDOW:g},"
                f" got {text!a}"
            )
        return text

    return coerce


def _choice(flag: str, choices: Sequence[str]) -> Callable[[str], str]:
    """
    A coercer accepting only one of C{choices}.
    """

    def coerce(text: str) -> str:
        if text not in choices:
            allowed = ", ".join(sorted(choices))
            raise usage.UsageError(f"--{flag}: expected one of {allowed}, got {text!r}")
        return text

    return coerce


def _numeric(
    flag: str, kind: Callable[[str], float], positive: bool, doc: str, minimum: float | None = None
) -> list[Any]:
    attribute = _NUMBERS[flag]
    coerce = _number(flag, kind, positive=positive, minimum=minimum)
    return [flag, None, _DEFAULTS[attribute], doc, coerce]
