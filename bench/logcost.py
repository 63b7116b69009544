"""
CPU cost of one session log line of twisted-smtpd, per message.

    python bench/logcost.py [--lines 200000] [--dir /tmp]

Logs the same message event (2 recipients, a 250 reply) N times through
L{SessionLogger} into a real C{twisted.python.logfile.LogFile} and prints
the CPU time (C{time.process_time}) per line for:

  - twisted.logger: the path of C{twistd smtpd} before the buffered writer
    (Logger.info, the global publisher, twistd's text observer, a write
    per line);
  - buffered text and buffered JSON: L{BufferedLogWriter} as C{twistd
    smtpd} uses it, with a flush every 0.5 s of simulated time (one per
    1000 lines here: far more often than a real server at 2000 lines/s).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from typing import Any

from twisted.logger import globalLogBeginner, textFileLogObserver
from twisted.python.logfile import LogFile

from twisted_smtpd._core.replies import Reply
from twisted_smtpd._core.session import Address, Envelope, Session
from twisted_smtpd._serving.logging import SessionLogger
from twisted_smtpd._serving.logwriter import BufferedLogWriter


class _RunningReactor:
    """
    A reactor that is running and never fires timers: the benchmark
    flushes itself, as the timer would.
    """

    running = True

    def callLater(self, delay: float, f: Any, *args: Any) -> Any:
        return _Call()


class _Call:
    def active(self) -> bool:
        return False

    def cancel(self) -> None:
        pass


def _event() -> tuple[Session, dict[str, Any]]:
    session = Session(
        id="k3x9q2ab",
        remoteAddress=("192.0.2.7", 51234),
        localAddress=("198.51.100.1", 25),
        clientHostname="mail.example.org",
        envelope=Envelope(
            mailFrom=Address("alice@example.org"),
            rcptTo=[Address("bob@example.com"), Address("carol@example.com")],
        ),
    )
    replies = (Reply(250, "2.0.0", ("OK: queued as 1767348001.M1P42Q7.mx",)),)
    return session, {"size": 5120, "replies": replies}


def measure(logger: SessionLogger, lines: int, flush: Any = None) -> float:
    session, data = _event()
    start = time.process_time()
    for n in range(lines):
        logger("message", session, data)
        if flush is not None and n % 1000 == 999:
            flush()
    if flush is not None:
        flush()
    return (time.process_time() - start) / lines * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=200000)
    parser.add_argument("--dir", default=tempfile.gettempdir())
    args = parser.parse_args()
    directory = tempfile.mkdtemp(dir=args.dir)
    results = {}
    for kind in ("buffered text", "buffered JSON"):
        logfile = LogFile("smtpd.log", directory, rotateLength=10**12)
        # LogFile is the file-like object twistd writes its log to, not an
        # IO: it has the write and flush the writer and observer call.
        writer = BufferedLogWriter(
            logfile,  # type: ignore[arg-type]
            json=kind.endswith("JSON"),
            reactor=_RunningReactor(),
        )
        results[kind] = measure(SessionLogger(writer=writer), args.lines, writer.flush)
        logfile.close()
    logfile = LogFile("twisted.log", directory, rotateLength=10**12)
    globalLogBeginner.beginLoggingTo(
        [textFileLogObserver(logfile)],  # type: ignore[arg-type]
        discardBuffer=True,
        redirectStandardIO=False,
    )
    results["twisted.logger"] = measure(SessionLogger(), args.lines)
    logfile.close()
    for kind, cost in results.items():
        print(f"{kind:15s} {cost:6.2f} µs CPU per line ({args.lines} lines)")
    for name in os.listdir(directory):
        os.remove(os.path.join(directory, name))
    os.rmdir(directory)


if __name__ == "__main__":
    main()
