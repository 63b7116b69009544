# -*- test-case-name: tests.test_logfile -*-
"""
Where C{twistd smtpd} writes its log: standard output, or C{--logfile}
opened for appending.
"""

from __future__ import annotations

import fcntl
import os
import sys
from typing import Any

from twisted.python.logfile import LogFile


class AppendingLogFile(LogFile):
    """
    C{twistd}'s L{LogFile} (rotated at 1 MB, reopened with L{reopen}),
    written with C{O_APPEND}: every write lands at the end of the file as
    it is then, so a file another program truncated (logrotate's
    C{copytruncate}) goes on from its new end instead of from the old
    offset, which would leave a hole of NUL bytes.
    """

    def _openFile(self) -> None:
        super()._openFile()
        fd = self._file.fileno()
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND)


def logDestination(config: Any) -> Any:
    """
    Where C{twistd} would write text logs: standard output, or its log file.

    @param config: The parsed options of C{smtpd}, whose C{parent} holds
        C{twistd}'s own.
    """
    parent: Any = getattr(config, "parent", None) or {}
    logfile = parent.get("logfile")
    if logfile == "-" or (parent.get("nodaemon", True) and not logfile):
        return sys.stdout
    return AppendingLogFile.fromFullPath(os.path.abspath(logfile or "twistd.log"))
