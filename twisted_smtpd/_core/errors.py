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
    answer the client with a specific reply.

    Its attributes are checked when set: a code that is not an C{int} from
    200 to 599, a text that is not a C{str}, or an enhanced status code that
    is neither a C{str} nor C{None} raises where the handler made the error
    (L{TypeError} or L{ValueError}), and that hook is answered 451 as for
    any other exception.  A subclass of C{int} or C{str} is kept as the plain
    value of the same number or characters, so that its own C{__str__} or
    C{__format__} never writes the reply.
    """

    def __init__(self, code: int, message: str, enhanced: str | None = None) -> None:
        super().__init__(code, message, enhanced)
        self.code = code
        self.message = message
        self.enhanced = enhanced
        # What the attributes hold once checked, for the repr and traceback.
        self.args = (self.code, self.message, self.enhanced)

    @property
    def code(self) -> int:
        """
        The reply code, 400 to 599 to reject.  A 2xx code is allowed only
        where C{onData} (or an entry of its LMTP list) wants to choose its
        own positive text; from any other hook it would tell the client yes
        while the server refuses, so it is taken as the handler's error,
        logged and answered 451, and so is a 3xx code from any hook.
        """
        return self._code

    @code.setter
    def code(self, code: int) -> None:
        if not isinstance(code, int) or isinstance(code, bool):
            raise TypeError(f"SMTP reply code must be an int, not {type(code).__name__}")
        # An int subclass becomes a plain int: its own __str__ or __format__
        # never writes the reply's code.
        code = int.__int__(code)
        if not 200 <= code <= 599:
            raise ValueError(f"SMTP reply code out of range: {code!r}")
        self._code = code

    @property
    def message(self) -> str:
        """
        The reply text; line breaks make a multi-line reply, any other
        control character is replaced, so the text can never inject a line
        into the dialogue.
        """
        return self._message

    @message.setter
    def message(self, message: str) -> None:
        if not isinstance(message, str):
            raise TypeError(f"SMTP reply text must be a str, not {type(message).__name__}")
        self._message = str.__str__(message)

    @property
    def enhanced(self) -> str | None:
        """
        The RFC 3463 enhanced status code, or C{None} for the generic one
        of the code's class (C{"5.0.0"}).  A malformed one, or one of
        another class than C{code}, is sent as the generic one too, and
        the server logs it once.
        """
        return self._enhanced

    @enhanced.setter
    def enhanced(self, enhanced: str | None) -> None:
        if enhanced is not None:
            if not isinstance(enhanced, str):
                kind = type(enhanced).__name__
                raise TypeError(f"SMTP enhanced status code must be a str or None, not {kind}")
            enhanced = str.__str__(enhanced)
        self._enhanced = enhanced

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
