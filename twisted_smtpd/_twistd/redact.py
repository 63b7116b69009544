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
    URL is read the same way.
    """
    if text is None:
        text = value
    match = _SCHEME.match(value)
    if match is None:
        return text
    userinfo, at, _ = value[match.end() :].rpartition("@")
    user, colon, password = userinfo.partition(":")
    if not at or not colon or not password or any(c in user for c in "/?#"):
        return text
    beforePath = re.split(r"[/?#]", password, maxsplit=1)
    if len(beforePath) == 2 and beforePath[0].isdigit():
        # host:PORT/path?...@...: an "@" after the host, no password.
        return text
    text = text.replace(f"{user}:{password}@", f"{user}:***@")
    # Quoted bare in an error's reason too, unless too short to tell.
    return text.replace(password, "***") if len(password) >= 4 else text


# scheme:// at the start of a URL.
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
