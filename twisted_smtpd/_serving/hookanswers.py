# -*- test-case-name: tests.test_hostileanswers -*-
"""
What a hook's plain answer says when it reads as a reply: an aiosmtpd-style
text (C{"550 no such user"}), a reply code (C{550}, C{b"550 no"}, C{(550,
"no such user")}).  Here any value a hook answers with accepts and only an
L{SMTPError <twisted_smtpd._core.errors.SMTPError>} refuses, so such an
answer with a 4xx or 5xx code was meant to refuse: it is the handler's bug,
logged and answered 451, never a 250 (a login at AUTH, a recipient kept).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_smtpd._core import replies as catalogue
from twisted_smtpd._core.answercodes import answerCode, startsWithCode
from twisted_smtpd._core.printable import printable
from twisted_smtpd._core.replies import Reply

_log = Logger()


#: The hooks already warned of answering with a positive reply's text: one
#: line per hook of a handler class, for at most this many.
_warnedText: set[str] = set()
_MAX_WARNED_TEXT = 256


def replyTextRefusal(
    hookName: str, hook: object, text: str, log: Callable[[Failure], None]
) -> Reply | None:
    """
    Check a text a hook answered with.  An aiosmtpd hook answers with its
    reply's text (C{"550 no such user"}, C{"250 OK"}); here a hook's value
    accepts, and only an L{SMTPError} refuses.  A text starting with a
    4xx or 5xx code was meant to refuse: it is the handler's bug, given to
    C{log} as a L{TypeError}, and refused 451 rather than accepted.  One
    starting with another code accepts, as any value does, with one
    warning per hook of a handler class.

    @param hookName: The hook's name, for the log.
    @param hook: The hook, whose handler's class the warning names.
    @return: The reply refusing, or C{None} when C{text} stands.
    """
    # A str subclass's own methods never decide what is logged.
    text = str.__str__(text)
    if not startsWithCode(text):
        return None
    shown = printable(text[:80])
    if text[0] in "45":
        try:
            raise TypeError(
                f"{hookName} returned {shown!r}: a string is not a reply; raise"
                " SMTPError(code, text, enhanced) to refuse"
            )
        except TypeError:
            log(Failure())
        return catalogue.LOCAL_ERROR
    owner = type(getattr(hook, "__self__", hook)).__qualname__
    key = f"{owner}.{hookName}"
    if key not in _warnedText and len(_warnedText) < _MAX_WARNED_TEXT:
        _warnedText.add(key)
        _log.warn(
            "{hook} of {handler} returned {text}: a string is not a reply, and any"
            " value accepts (raise SMTPError to refuse); logged once",
            hook=hookName,
            handler=owner,
            text=repr(shown),
        )
    return None


def resetReplyTextWarnings() -> None:
    """
    Forget which hooks were warned of answering with a reply's text.
    """
    _warnedText.clear()


def codeRefusal(hookName: str, answer: object, log: Callable[[Failure], None]) -> Reply | None:
    """
    Check an answer that is not a C{str} for a reply code
    (L{answerCode}).  One of 4xx or 5xx was meant to refuse: it is the
    handler's bug, given to C{log} as a L{TypeError} naming the hook, the
    answer's type and the code (never the answer's own text), and answered
    451.  Any other answer accepts, as every value does.

    @return: The reply refusing, or C{None} when C{answer} stands.
    """
    code = answerCode(answer)
    if code is None or code < 400:
        return None
    try:
        raise TypeError(
            f"{hookName} answered a {type(answer).__name__} holding the reply code {code}:"
            " only an SMTPError refuses; raise SMTPError(code, text, enhanced)"
        )
    except TypeError:
        log(Failure())
    return catalogue.LOCAL_ERROR
