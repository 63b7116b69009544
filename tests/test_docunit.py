# -*- test-case-name: tests.test_docunit -*-
"""
The systemd service unit of C{docs/operator.md} gives the server the time
its graceful stop may take before systemd kills it.
"""

from __future__ import annotations

import re
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from twisted_smtpd import ServerOptions
from twisted_smtpd._serving.deadlines import CLOSE_GRACE
from twisted_smtpd._twistd.daemon import HANDLER_CLOSE_TIMEOUT
from twisted_smtpd._twistd.tapservice import workerStopTimeout

OPERATOR = Path(__file__).resolve().parents[1] / "docs" / "operator.md"


def serviceUnit() -> str:
    """
    The C{smtpd.service} unit the operator's guide shows.
    """
    text = OPERATOR.read_text(encoding="utf-8")
    start = text.index("# /etc/systemd/system/smtpd.service")
    return text[start : text.index("```", start)]


class ServiceUnitTests(SynchronousTestCase):
    def test_stopTimeoutLongerThanTheStop(self) -> None:
        """
        C{TimeoutStopSec=} is longer than the longest graceful stop with
        the default C{--close-timeout}: the close timeout, the grace after
        its 421, and the time the delivery gets to close its connections;
        systemd's SIGKILL at that moment would lose the last buffered log
        lines.
        """
        found = re.search(r"^TimeoutStopSec=(\d+)$", serviceUnit(), re.M)
        assert found is not None
        longest = ServerOptions().closeTimeout + CLOSE_GRACE + HANDLER_CLOSE_TIMEOUT
        self.assertGreater(int(found.group(1)), longest)

    def test_stopTimeoutLongerThanWorkersStop(self) -> None:
        """
        With C{--workers}, C{TimeoutStopSec=} is longer than the time the
        parent lets its workers stop before it kills them.
        """
        found = re.search(r"^TimeoutStopSec=(\d+)$", serviceUnit(), re.M)
        assert found is not None
        self.assertGreater(int(found.group(1)), workerStopTimeout(ServerOptions().closeTimeout))

    def test_networkWanted(self) -> None:
        """
        The unit that starts after C{network-online.target} also wants it:
        C{After=} alone orders, it pulls nothing in, and the target is
        reached without waiting for the network unless a unit wants it.
        """
        unit = serviceUnit()
        after = re.search(r"^After=(.*)$", unit, re.M)
        assert after is not None
        wanted = " ".join(re.findall(r"^Wants=(.*)$", unit, re.M)).split()
        for target in after.group(1).split():
            if target.endswith("-online.target"):
                self.assertIn(target, wanted)

    def test_writableTemporaryFiles(self) -> None:
        """
        Under C{ProtectSystem=strict}, where C{/tmp} is read-only, the unit
        gives the server a C{/tmp} of its own (C{PrivateTmp=true}) for the
        spool files of C{--pipe} and C{--webhook}.
        """
        unit = serviceUnit()
        if re.search(r"^ProtectSystem=strict$", unit, re.M):
            self.assertRegex(unit, r"(?m)^PrivateTmp=(true|yes)$")
