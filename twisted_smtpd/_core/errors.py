# -*- test-case-name: tests.test_replies -*-
"""
The one public exception: L{SMTPError}, raised by handlers to reject.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted_smtpd._core.printable import printable
from twisted_smtpd._core.replies import Reply, defaultEnhanced, sanitiseText


def _checkedCode(code: object) -> int:
    """
    C{code} as an L{SMTPError}'s code, an int subclass as a plain C{int}:
    its own C{__str__} or C{__format__} never writes the reply's code.

    @raise TypeError: If it is not an C{int} (or is a C{bool}).
    @raise ValueError: If it is not from 200 to 599.
    """
    if not isinstance(code, int) or isinstance(code, bool):
        raise TypeError(f"SMTP reply code must be an int, not {type(code).__name__}")
    code = int.__int__(code)
    if not 200 <= code <= 599:
        raise ValueError(f"SMTP reply code out of range: {code!r}")
    return code


def _checkedText(message: object) -> str:
    """
    C{message} as an L{SMTPError}'s text, a str subclass as a plain C{str}.

    @raise TypeError: If it is not a C{str}.
    """
    if not isinstance(message, str):
        raise TypeError(f"SMTP reply text must be a str, not {type(message).__name__}")
    return str.__str__(message)


def _checkedEnhanced(enhanced: object) -> str | None:
    """
    C{enhanced} as an L{SMTPError}'s enhanced status code, a str subclass
    as a plain C{str}.

    @raise TypeError: If it is neither a C{str} nor C{None}.
    """
    if enhanced is None:
        return None
    if not isinstance(enhanced, str):
        kind = type(enhanced).__name__
        raise TypeError(f"SMTP enhanced status code must be a str or None, not {kind}")
    return str.__str__(enhanced)


#: The checks of L{SMTPError}'s attributes, by name.
_CHECKS: dict[str, Callable[[object], object]] = {
    "code": _checkedCode,
    "message": _checkedText,
    "enhanced": _checkedEnhanced,
}


class _Defaulted(property):
    """
    An L{SMTPError} property that a subclass gave a default (C{code =
    550}): read on the class, that default, as the class attribute it
    replaces read.
    """

    def __init__(self, base: property, default: object) -> None:
        super().__init__(base.fget, base.fset, base.fdel, base.__doc__)
        self.default = default

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self.default
        return super().__get__(instance, owner)


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
    C{__format__} never writes the reply.  A subclass may give them as
    class attributes (C{code = 550}): each is checked when the class is
    made, as when set, and is the default its instances start from.
    """

    def __init_subclass__(cls, **kwargs: object) -> None:
        """
        Check the C{code}, C{message} and C{enhanced} a subclass gives as
        plain class attributes, which would otherwise hide the checking
        properties: each becomes the checked default of its attribute, read
        on the class as it was given (C{None} for C{code} or C{message}:
        none).  A descriptor of the subclass's own (a property) is left as
        it is.

        @raise TypeError: For a value of the wrong type.
        @raise ValueError: For a code out of range.
        """
        super().__init_subclass__(**kwargs)
        for name, check in _CHECKS.items():
            value = cls.__dict__.get(name)
            if name not in cls.__dict__ or hasattr(type(value), "__get__"):
                continue
            base = getattr(SMTPError, name)
            if value is None and name != "enhanced":
                setattr(cls, name, base)
                continue
            checked = check(value)
            setattr(cls, f"_{name}", checked)
            setattr(cls, name, _Defaulted(base, checked))

    def __init__(self, code: int, message: str, enhanced: str | None = None) -> None:
        super().__init__(code, message, enhanced)
        self.code = code
        self.message = message
        self.enhanced = enhanced

    def _showSet(self) -> None:
        # The repr and a traceback show args: what the attributes hold
        # once checked, kept up to date when one is set again.
        self.args = (
            getattr(self, "_code", None),
            getattr(self, "_message", None),
            getattr(self, "_enhanced", None),
        )

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
        self._code = _checkedCode(code)
        self._showSet()

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
        self._message = _checkedText(message)
        self._showSet()

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
        self._enhanced = _checkedEnhanced(enhanced)
        self._showSet()

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
