# -*- test-case-name: tests.test_tap -*-
"""
Secrets kept out of what C{twistd smtpd} writes: the password of a delivery
URL, hidden in the ready line and in configuration errors.
"""

from __future__ import annotations

import re

__all__ = ["withoutPassword"]


def withoutPassword(value: str, text: str | None = None) -> str:
    """
    C{text} (by default C{value}) for a log line or an error: the password
    of the URL C{value} (C{amqp://user:pw@host/}, C{https://user:pw@host/})
    replaced by C{***}, wherever it appears.  The password runs to the last
    C{@}, as URL parsers read it (a password may hold an C{@}); a malformed
    URL is read the same way; one missing its C{@HOST}
    (C{amqp://user:pw/vhost}) has the "port" hidden when it is no number.
    """
    if text is None:
        text = value
    match = _SCHEME.match(value)
    if match is None:
        return text
    userinfo, at, _ = value[match.end() :].rpartition("@")
    if not at:
        return _withoutMissingHost(value[match.end() :], text)
    user, colon, password = userinfo.partition(":")
    if not colon or not password or any(c in user for c in "/?#"):
        return text
    beforePath = re.split(r"[/?#]", password, maxsplit=1)
    if len(beforePath) == 2 and beforePath[0].isdigit():
        # host:PORT/path?...@...: an "@" after the host, no password.
        return text
    text = text.replace(f"{user}:{password}@", f"{user}:***@")
    # Quoted bare in an error's reason too, unless too short to tell.
    return text.replace(password, "***") if len(password) >= 4 else text


def _withoutMissingHost(rest: str, text: str) -> str:
    """
    C{text} with the "port" of the URL whose part after C{scheme://} is
    C{rest} replaced by C{***} when it is no port (not digits): the URL
    misses its C{@HOST} (C{amqp://user:password/vhost}), and that is the
    password.
    """
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if authority.endswith("]"):
        return text
    host, colon, port = authority.rpartition(":")
    if not colon or not port or (port.isascii() and port.isdigit()):
        return text
    text = text.replace(f"{host}:{port}", f"{host}:***")
    return text.replace(port, "***") if len(port) >= 4 else text


# scheme:// at the start of a URL.
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
