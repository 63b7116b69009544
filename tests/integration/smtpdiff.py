# -*- test-case-name: tests.integration.test_smtpdiff -*-
"""
Differential testing on the wire: the same scripted client sessions sent to
Postfix's C{smtpd} and to C{twistd smtpd}, every reply recorded (code,
enhanced code, or the connection closed), and the two compared by class
(2xx, 3xx, 4xx, 5xx, closed).

A session is a list of steps; each step sends some octets and reads one
reply.  A C{BODY} step is sent only when the reply before it was 354 (what a
client does after DATA); a C{WAIT} step expects no reply within a short
time (the server is still reading a message); a C{PIPELINED} step sends
several commands in one write and reads a reply to each.  Raw sockets, every
read bounded.  The sessions are in L{tests.integration.smtpdiffcorpus}.

    python -m tests.integration.smtpdiff [--verbose] [NAME-PART ...]

runs the whole corpus, or the sessions whose names hold a NAME-PART (root
and Postfix needed), prints each difference and writes them to
C{/tmp/smtpdiff-report.json}.
"""

from __future__ import annotations

import enum
import json
import re
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import attrs

# How long one reply may take; how long a WAIT step listens for none.
REPLY_TIMEOUT = 10.0
QUIET_TIMEOUT = 0.5

# Postfix main.cf settings as close as possible to twisted-smtpd's
# defaults: every recipient accepted, nothing delivered (discard), no
# error delays, HELO required, SMTPUTF8 and CHUNKING on, bare newlines
# refused, the same size limit and error limit.
POSTFIX_SETTINGS = {
    "relayhost": "",
    "default_transport": "discard",
    "relay_transport": "discard",
    "mydestination": "",
    "relay_domains": "",
    "smtpd_relay_restrictions": "permit_mynetworks, reject",
    "smtpd_recipient_restrictions": "permit_mynetworks, reject",
    "smtpd_helo_required": "yes",
    "smtpd_error_sleep_time": "0",
    "smtpd_soft_error_limit": "100",
    "smtpd_hard_error_limit": "20",
    "smtpd_junk_command_limit": "100",
    "smtputf8_enable": "yes",
    "message_size_limit": "10240000",
    "smtpd_forbid_bare_newline": "reject",
    "smtpd_forbid_bare_newline_exclusions": "",
    "smtpd_peername_lookup": "no",
    "smtpd_client_connection_rate_limit": "0",
    "smtpd_client_connection_count_limit": "0",
    "smtpd_client_message_rate_limit": "0",
    "smtpd_client_recipient_rate_limit": "0",
    "smtpd_client_event_limit_exceptions": "127.0.0.0/8",
    "strict_rfc821_envelopes": "yes",
    "smtpd_timeout": "30s",
}

# twistd smtpd options besides --listen and --maildir; no error delays, as
# Postfix's smtpd_error_sleep_time above.
TWISTD_ARGUMENTS = ("--no-reverse-lookup", "--hostname", "twisted.test", "--error-sleep", "0")


class Kind(enum.Enum):
    """
    How a step is sent and what is read after it.
    """

    PIPELINED = "pipelined"  # send, read C{count} replies
    COMMAND = "command"  # send, read one reply
    BODY = "body"  # only after a 354: send, read one reply
    WAIT = "wait"  # send, expect no reply within QUIET_TIMEOUT


@attrs.frozen
class Step:
    kind: Kind
    data: bytes
    count: int = 1


@attrs.frozen
class Session:
    name: str
    steps: tuple[Step, ...]


@attrs.frozen
class Outcome:
    """
    What one step got: C{code} (0 when none), C{enhanced}, and C{what}:
    C{"reply"}, C{"closed"} (the connection ended first), C{"quiet"} (no
    reply within the time), C{"skipped"} (a BODY step after no 354).
    """

    what: str
    code: int = 0
    enhanced: str = ""
    text: str = ""

    @property
    def klass(self) -> str:
        """
        The class compared: C{"2"}, C{"3"}, C{"4"}, C{"5"} or C{what}.
        """
        return str(self.code)[0] if self.what == "reply" else self.what

    def __str__(self) -> str:
        if self.what == "reply":
            return f"{self.code} {self.enhanced}".rstrip()
        return self.what.upper()


def command(line: bytes | str) -> Step:
    """
    A command line, CRLF added.
    """
    data = line.encode("utf-8") if isinstance(line, str) else line
    return Step(Kind.COMMAND, data + b"\r\n")


def raw(data: bytes) -> Step:
    """
    Octets sent as they are, one reply read.
    """
    return Step(Kind.COMMAND, data)


def body(data: bytes) -> Step:
    """
    A message body with its end, sent only after a 354.
    """
    return Step(Kind.BODY, data)


def pipelined(*lines: bytes | str) -> Step:
    """
    Command lines sent in one write, one reply read for each.
    """
    data = b"".join((x.encode() if isinstance(x, str) else x) + b"\r\n" for x in lines)
    return Step(Kind.PIPELINED, data, len(lines))


def wait(data: bytes) -> Step:
    """
    Octets after which no reply is expected yet.
    """
    return Step(Kind.WAIT, data)


_ENHANCED = re.compile(rb"^[245]\.\d{1,3}\.\d{1,3}\b")


class Client:
    """
    One raw connection and its reply reader.
    """

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=REPLY_TIMEOUT)
        self.buffer = b""
        self.closed = False

    def _fill(self, timeout: float) -> bool:
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            return False
        except OSError:
            chunk = b""
        if not chunk:
            self.closed = True
            return False
        self.buffer += chunk
        return True

    def reply(self, timeout: float = REPLY_TIMEOUT) -> Outcome:
        """
        Read one (possibly multi-line) reply.
        """
        deadline = time.monotonic() + timeout
        first: bytes | None = None
        while True:
            index = self.buffer.find(b"\n")
            if index >= 0:
                line, self.buffer = self.buffer[: index + 1], self.buffer[index + 1 :]
                line = line.rstrip(b"\r\n")
                if first is None:
                    first = line
                if line[3:4] != b"-":
                    code = int(first[:3]) if first[:3].isdigit() else 999
                    text = first[4:]
                    match = _ENHANCED.match(text)
                    enhanced = match.group(0).decode() if match else ""
                    return Outcome("reply", code, enhanced, text.decode("utf-8", "replace"))
                continue
            if self.closed:
                return Outcome("closed")
            left = deadline - time.monotonic()
            if left <= 0:
                return Outcome("quiet")
            if not self._fill(left) and not self.closed:
                return Outcome("quiet")

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError:
            self.closed = True

    def close(self) -> None:
        self.sock.close()


def run(port: int, session: Session) -> list[Outcome]:
    """
    Play C{session} against 127.0.0.1 C{port}: the banner, then each step,
    then QUIT.
    """
    client = Client(port)
    try:
        outcomes = [client.reply()]
        last = outcomes[0]
        for step in session.steps:
            if step.kind is Kind.BODY and last.code != 354:
                outcomes.append(Outcome("skipped"))
                continue
            if client.closed:
                outcomes.append(Outcome("closed"))
                continue
            client.send(step.data)
            if step.kind is Kind.WAIT:
                last = client.reply(QUIET_TIMEOUT)
            elif step.kind is Kind.PIPELINED:
                for _ in range(step.count - 1):
                    outcomes.append(client.reply())
                last = client.reply()
            else:
                last = client.reply()
            outcomes.append(last)
        client.send(b"QUIT\r\n")
        outcomes.append(client.reply() if not client.closed else Outcome("closed"))
        return outcomes
    finally:
        client.close()


def compare(
    postfix: Sequence[Outcome], ours: Sequence[Outcome]
) -> list[tuple[int, Outcome, Outcome]]:
    """
    The steps (index, Postfix's, ours) whose classes differ.
    """
    return [
        (i, p, o) for i, (p, o) in enumerate(zip(postfix, ours, strict=True)) if p.klass != o.klass
    ]


# Steps most sessions share.
EHLO = command("EHLO client.example")
MAIL = command("MAIL FROM:<sender@example.com>")
RCPT = command("RCPT TO:<rcpt@example.com>")
DATA = command("DATA")
MESSAGE = b"Subject: test\r\n\r\nHello.\r\n.\r\n"


def session(name: str, *steps: Step) -> Session:
    """
    A session named C{name} of C{steps}.
    """
    return Session(name, tuple(steps))


def runBoth(
    postfixPort: int, ourPort: int, sessions: Sequence[Session], workers: int = 6
) -> list[tuple[Session, list[Outcome], list[Outcome]]]:
    """
    Play every session against both servers, a few at a time.
    """

    def one(session: Session) -> tuple[Session, list[Outcome], list[Outcome]]:
        return session, run(postfixPort, session), run(ourPort, session)

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, sessions))


class _Cleanups:
    """
    Where L{Postfix.start} registers its stop, outside a test.
    """

    def __init__(self) -> None:
        self.calls: list[Callable[[], object]] = []

    def addCleanup(self, f: Callable[[], object], /) -> None:
        self.calls.append(f)


def _stop(number: int, frame: object) -> None:
    raise SystemExit(1)


def main(argv: list[str]) -> int:  # pragma: no cover - a tool
    """
    Play the corpus (or the sessions whose names hold an argument) against
    a new Postfix and a new C{twistd smtpd}, print the differences.
    """
    from tests.integration.helpers import TwistdServer
    from tests.integration.nexthops import Postfix
    from tests.integration.smtpdiffcorpus import DOCUMENTED, corpus

    verbose = "--verbose" in argv
    only = [a for a in argv if not a.startswith("--")]
    sessions = corpus()
    if only:
        sessions = [s for s in sessions if any(o in s.name for o in only)]
    # SIGTERM stops both servers as an exception does.
    signal.signal(signal.SIGTERM, _stop)
    cleanups = _Cleanups()
    postfix = Postfix(relayhost=1, settings=POSTFIX_SETTINGS)
    directory = tempfile.mkdtemp(prefix="smtpdiff-")
    ours = TwistdServer(["--maildir", f"{directory}/Maildir", *TWISTD_ARGUMENTS], directory)
    try:
        postfix.start(cleanups)
        ours.start()
        results = runBoth(postfix.port, ours.port, sessions)
    finally:
        ours.stop()
        for f in reversed(cleanups.calls):
            f()
        shutil.rmtree(directory, ignore_errors=True)
    same = documented = 0
    report = []
    for session, p, o in results:
        differences = compare(p, o)
        if not differences:
            same += 1
            if verbose:
                print(f"SAME {session.name}: {' | '.join(map(str, o))}")
            continue
        if session.name in DOCUMENTED:
            documented += 1
            if not verbose:
                continue
        report.append(
            {
                "name": session.name,
                "postfix": [str(x) + " " + x.text[:60] for x in p],
                "ours": [str(x) + " " + x.text[:60] for x in o],
                "steps": [i for i, _, _ in differences],
            }
        )
        print(f"DIFF {session.name} ({DOCUMENTED.get(session.name, 'UNDOCUMENTED')})")
        for i, a, b in differences:
            print(f"    step {i}: postfix {a} {a.text[:70]!r}  ours {b} {b.text[:70]!r}")
    print(
        f"sessions {len(results)} same {same} different {len(results) - same}"
        f" documented {documented} undocumented {len(results) - same - documented}"
    )
    with open("/tmp/smtpdiff-report.json", "w") as f:
        json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":  # pragma: no cover
    # Run the module the corpus imports, not this copy of it as __main__,
    # whose Kind members the corpus's steps are not.
    from tests.integration import smtpdiff

    sys.exit(smtpdiff.main(sys.argv[1:]))
