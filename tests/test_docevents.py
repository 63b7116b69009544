# -*- test-case-name: tests.test_docevents -*-
"""
The session events that C{README.md} and the operator's guide list for
C{SMTPServer.addObserver} are the events its docstring describes, which
are those the server emits.
"""

from __future__ import annotations

import re
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from twisted_smtpd import SMTPServer

PROJECT = Path(__file__).resolve().parents[1]

#: Each page, and the words just before its list of events.
LISTS = {
    PROJECT / "README.md": "of every session event (",
    PROJECT / "docs" / "operator.md": "is\ncalled for ",
}


def documentedEvents() -> set[str]:
    """
    The events C{SMTPServer.addObserver}'s docstring describes, one
    C{- C{name}:} item each.
    """
    return set(re.findall(r"^\s*- C\{(\w+)\}:", SMTPServer.addObserver.__doc__ or "", re.M))


def listedEvents(page: Path, before: str) -> set[str]:
    """
    The events in backquotes that C{page} lists after C{before}, up to the
    end of the sentence or of the brackets.
    """
    text = page.read_text(encoding="utf-8")
    start = text.index(before) + len(before)
    end = min(i for i in (text.find(")", start), text.find(" (", start)) if i >= 0)
    return set(re.findall(r"`(\w+)`", text[start:end]))


class ObserverEventsTests(SynchronousTestCase):
    def test_docstringEvents(self) -> None:
        """
        The docstring describes the events the metrics and the log lines
        are built on, C{tlsfailed} among them.
        """
        self.assertTrue({"connect", "message", "tlsfailed", "close"} <= documentedEvents())

    def test_pagesListEveryEvent(self) -> None:
        """
        Each page's list of events is the docstring's.
        """
        expected = documentedEvents()
        for page, before in LISTS.items():
            self.assertEqual(listedEvents(page, before), expected, page.name)
