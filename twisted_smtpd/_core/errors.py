# -*- test-case-name: tests.test_replies -*-
"""
The one public exception: L{SMTPError}, raised by handlers to reject.
"""

from __future__ import annotations

from twisted_smtpd._core.printable import printable
from twisted_smtpd._core.replies import Reply, defaultEnhanced, sanitiseText


class SMTPError(Exception):
    """
    Raise (or fail a L{Deferred <twisted.internet.defer.Deferred>} with) this from a handler hook to
    answer the
    client with a specific reply.

    @ivar code: The reply code, 400 to 599 to reject.  A 2xx code is
        allowed only where C{onData} (or an entry of its LMTP list) wants
        to choose its own positive text; from any other hook it would tell
        the client yes while the server refuses, so it is taken as the
        handler's error, logged and answered 451, and so is a 3xx code
        from any hook.
    @ivar message: The reply text; line breaks make a multi-line reply, any
        other control character is replaced, so the text can never inject a
        line into the dialogue.
    @ivar enhanced: The RFC 3463 enhanced status code, or C{None} for the
        generic one of the code's class (C{"5.0.0"}).  A malformed one, or
        one of another class than C{code}, is sent as the generic one too,
        and the server logs it once.
    """

    def __init__(self, code: int, message: str, enhanced: str | None = None) -> None:
        if not 200 <= code <= 599:
            raise ValueError(f"SMTP reply code out of range: {code!r}")
        super().__init__(code, message, enhanced)
        self.code = code
        self.message = message
        self.enhanced = enhanced

    def toReply(self) -> Reply:
        """
        The L{Reply} this error stands for, its text sanitised.
        """
        enhanced = self.enhanced
        if enhanced is None or not _validEnhanced(enhanced, self.code):
            enhanced = defaultEnhanced(self.code)
        return Reply(self.code, enhanced, sanitiseText(self.message))


#: The most of an L{SMTPError}'s text L{logText} gives.
_MAX_LOGGED_TEXT = 200


def logText(error: SMTPError) -> str:
    """
    C{error} as one log line shows it where no reply carries it (a refusal
    from C{onClose}): its code, the enhanced code it would be sent with,
    and its text made printable, cut at 200 characters.
    """
    text = str(error.message)
    cut = "..." if len(text) > _MAX_LOGGED_TEXT else ""
    shown = printable(text[:_MAX_LOGGED_TEXT]) + cut
    return f"{error.code} {error.toReply().enhanced} {shown}"


def _validEnhanced(enhanced: str, code: int) -> bool:
    parts = enhanced.split(".")
    return (
        len(parts) == 3
        and all(p.isascii() and p.isdigit() and len(p) <= 3 for p in parts)
        and parts[0] == str(code // 100)
    )
