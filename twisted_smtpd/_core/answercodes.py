# -*- test-case-name: tests.test_hostileanswers,tests.test_chain -*-
"""
Pure: the reply code a hook's plain answer reads as, when it reads as a
reply (C{"550 no such user"}, C{550}, C{b"550 no"}, C{(550, "no")}): what
the server (L{twisted_smtpd._serving.hookanswers}) and a chain of handlers
(L{twisted_smtpd.handlers.chain}) both take as a refusal meant.
"""

from __future__ import annotations

__all__ = ["answerCode", "startsWithCode"]


def startsWithCode(text: str) -> bool:
    """
    Whether C{text} starts as a reply does: a code of three digits, the
    first 2 to 5, then its end, a space or a hyphen.
    """
    return (
        len(text) >= 3
        and text[0] in "2345"
        and text[1:3].isascii()
        and text[1:3].isdigit()
        and (len(text) == 3 or text[3] in " -")
    )


def answerCode(answer: object) -> int | None:
    """
    The reply code a hook's answer that is not a C{str} reads as: an
    C{int} from 200 to 599 (not a C{bool}), C{bytes} starting as a reply
    does (C{b"550 no"}), or a pair of such a code and its text
    (C{(550, "no such user")}, a C{tuple} or C{list}).

    @return: The code, or C{None} when C{answer} reads as none.
    """
    if isinstance(answer, tuple | list):
        if len(answer) != 2 or not isinstance(answer[0], int):
            return None
        answer = answer[0]
    if isinstance(answer, int):
        if isinstance(answer, bool) or not 200 <= answer <= 599:
            return None
        return int.__int__(answer)
    if isinstance(answer, bytes | bytearray):
        head = bytes(answer[:4])
        if (
            len(head) >= 3
            and head[:1] in (b"2", b"3", b"4", b"5")
            and head[1:3].isdigit()
            and (len(head) == 3 or head[3:4] in (b" ", b"-"))
        ):
            return int(head[:3])
    return None
