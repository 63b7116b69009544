# -*- test-case-name: tests.test_amqpurl -*-
"""
The numbers of an AMQP URL (its port, and the query parameters pika reads
as numbers: C{heartbeat}, C{frame_max}, ...), checked before pika reads
them with C{int()} and C{float()}, which take spellings the rest of the
configuration refuses (C{+5}, C{1_0}, C{" 5"}, other digits than ASCII)
and values no deadline comes after (C{inf}, C{nan}).
"""

from __future__ import annotations

import math
from urllib.parse import parse_qsl, urlsplit

from twisted_smtpd._core.optionvalues import DECIMAL, WHOLE

__all__ = ["SECONDS_PARAMETERS", "WHOLE_PARAMETERS", "checkURLNumbers", "checkVirtualHost"]

#: The query parameters C{pika.URLParameters} reads with C{int()}.
WHOLE_PARAMETERS = frozenset({"channel_max", "connection_attempts", "frame_max", "heartbeat"})

#: Those it reads with C{float()}: seconds.
SECONDS_PARAMETERS = frozenset(
    {"blocked_connection_timeout", "retry_delay", "socket_timeout", "stack_timeout"}
)


def _shown(value: str) -> str:
    text = ascii(value)
    return text if len(text) <= 40 else text[:37] + "..."


def checkURLNumbers(url: str) -> None:
    """
    Refuse an AMQP URL whose port or numeric query parameters are not
    written in ASCII digits (L{WHOLE}; L{DECIMAL} for seconds, which must
    be finite too), or whose port is 0 (pika refuses one above 65535).
    The port is not quoted: a URL missing its C{@HOST}
    (C{amqp://user:password/vhost}) has the password there.

    @raise ValueError: Saying which part is wrong.
    """
    parts = urlsplit(url)
    authority = parts.netloc.rpartition("@")[2]
    if not authority.endswith("]") and ":" in authority:
        port = authority.rpartition(":")[2]
        if port and not (port.isascii() and port.isdigit()):
            raise ValueError("the port is not ASCII digits (is @HOST missing?)")
        if port and int(port) == 0:
            # pika keeps it: every connection attempt would fail.
            raise ValueError(f"the port must be from 1 to 65535, got {port}")
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in WHOLE_PARAMETERS:
            if not (value.isascii() and WHOLE.fullmatch(value)):
                raise ValueError(
                    f"the query's {name} must be a whole number in ASCII digits,"
                    f" got {_shown(value)}"
                )
        elif name in SECONDS_PARAMETERS:
            if not (value.isascii() and DECIMAL.fullmatch(value)):
                raise ValueError(
                    f"the query's {name} must be a number of seconds in ASCII digits,"
                    f" got {_shown(value)}"
                )
            if not math.isfinite(float(value)):
                raise ValueError(f"the query's {name} must be finite, got {_shown(value)}")


def checkVirtualHost(url: str) -> None:
    """
    Refuse an AMQP URL whose path is more than one segment
    (C{amqp://broker/mail/in}): pika takes the first alone as the virtual
    host (C{mail}), silently.  The AMQP URI specification writes a slash
    of the virtual host as C{%2F}.

    @raise ValueError: Naming the virtual host as written.
    """
    vhost = urlsplit(url).path[1:]
    if "/" in vhost:
        raise ValueError(f"the virtual host {_shown(vhost)} holds a '/': write it as %2F")
