# -*- test-case-name: tests.integration.test_workerspipes -*-
"""
A handler for C{twistd smtpd --workers N --handler
tests.integration.pipeholdinghandler:make --handler-option pids=PATH} whose
making, in each worker, starts a process that runs two minutes and inherits
everything the worker lets it (as C{os.system} or a fork would): its
standard input and output, and any other descriptor not closed on exec.
Its pid is added to C{PATH}, one a line, for the test to kill.
"""

from __future__ import annotations

import os
import subprocess
import sys

from twisted_smtpd.handlers import SinkHandler

#: How long the process started runs, in seconds: longer than any wait of
#: the tests.
HELD = 120


def make(pids: str) -> SinkHandler:
    """
    The C{--handler} callable: in a worker (not in the parent, which makes
    the handler too, to check it), start the process.
    """
    if "TWISTED_SMTPD_PARENT_PIPE" in os.environ:
        held = subprocess.Popen(
            [sys.executable, "-c", f"import time; time.sleep({HELD})"],
            stderr=subprocess.DEVNULL,
            close_fds=False,
        )
        with open(pids, "a") as f:
            f.write(f"{held.pid}\n")
    return SinkHandler()
