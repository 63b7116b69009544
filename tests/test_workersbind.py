# -*- test-case-name: tests.test_workersbind -*-
"""
The parent of C{--workers} refuses an address something listens on
already, as one process does: its sockets share their port with
C{SO_REUSEPORT}, which another server's sockets may have set too.
"""

from __future__ import annotations

import errno
import socket

from twisted.internet import reactor
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from twisted_smtpd._twistd.tap import Options
from twisted_smtpd._twistd.workerlisteners import bindListener


def reusePortListener(testCase: SynchronousTestCase) -> int:
    """
    Listen on a port of 127.0.0.1 as another C{--workers} parent would
    (with C{SO_REUSEPORT}), until the test ends.

    @return: The port.
    """
    other = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    testCase.addCleanup(other.close)
    other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    other.bind(("127.0.0.1", 0))
    other.listen(5)
    port: int = other.getsockname()[1]
    return port


class InUseTests(SynchronousTestCase):
    def test_bindRefusesSharedPort(self) -> None:
        """
        L{bindListener} raises C{EADDRINUSE} for a port another socket
        with C{SO_REUSEPORT} listens on, instead of sharing it.
        """
        port = reusePortListener(self)
        e = self.assertRaises(OSError, bindListener, reactor, f"tcp:{port}:interface=127.0.0.1", 2)
        self.assertEqual(e.errno, errno.EADDRINUSE)

    def test_optionsNameListener(self) -> None:
        """
        C{twistd smtpd --workers 2} refuses it with one line naming the
        C{--listen} endpoint, as one process would.
        """
        port = reusePortListener(self)
        description = f"tcp:{port}:interface=127.0.0.1"
        e = self.assertRaises(
            usage.UsageError,
            Options().parseOptions,
            ["--sink", "--workers", "2", "--listen", description],
        )
        self.assertEqual(
            str(e),
            f"--listen {description!r}: address already in use (another program listens on it)",
        )
