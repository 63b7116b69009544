# -*- test-case-name: tests.integration.test_relaying -*-
"""
Throwaway instances of real next hops for the relaying tests: a Postfix with
its own configuration, queue and log directories, and a Dovecot LMTP server
with its own configuration file, both on 127.0.0.1 only.

Both need root (Postfix's master and Dovecot's lmtp change user); their
unprivileged processes run as the users the Debian packages create
(C{postfix}) or as C{nobody}.  Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO, Protocol
from unittest import SkipTest

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.helpers import (
    CLIENT_TIMEOUT,
    START_TIMEOUT,
    STOP_TIMEOUT,
    freePort,
    requireProgram,
)

# How long mail may take to pass through a queue.
DELIVERY_TIMEOUT = 60.0


class Cleanups(Protocol):
    """
    What L{Postfix.start} needs of a test case: somewhere to register the
    stop (a L{SynchronousTestCase}, or a benchmark's own list of cleanups).
    """

    def addCleanup(self, f: Callable[[], object], /) -> None:
        """
        Call C{f} when the test, or the benchmark, ends.
        """


def requireRoot(testCase: SynchronousTestCase, what: str) -> None:
    """
    Skip unless running as root; in CI (C{CI} set, running as root) fail
    instead.
    """
    if os.geteuid() == 0:
        return
    if os.environ.get("CI"):
        testCase.fail(f"{what} needs root; CI runs as root")
    raise SkipTest(f"{what} needs root")


def waitUntil(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """
    Poll C{condition} until it holds.

    @raise AssertionError: It did not hold within C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def waitForExit(pidFile: Path, name: str) -> None:
    """
    Wait until the daemon whose id is in C{pidFile} has exited, then kill
    what is left of its process group (children that have not yet noticed).

    A daemon's parent is init, which may take a second or more to reap it:
    a zombie has exited.
    """
    try:
        pid = int(pidFile.read_text().strip())
    except (OSError, ValueError):
        return
    zombie = False

    def gone() -> bool:
        nonlocal zombie
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except FileNotFoundError:
            return True
        zombie = stat[stat.rindex(b")") + 2 :].startswith(b"Z")
        return zombie

    waitUntil(gone, STOP_TIMEOUT, f"{name} to stop")
    if zombie:
        # Not yet reaped, so the group is still the daemon's.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def shortDirectory(prefix: str) -> Path:
    """
    A new directory with a short path below C{/tmp}: the UNIX sockets of
    Postfix and Dovecot live inside, and their paths must stay short.
    Removed by L{Postfix.stop} and L{Dovecot.stop}.
    """
    return Path(tempfile.mkdtemp(prefix=f"tsmtpd-{prefix}-", dir="/tmp"))


def _script(command: list[str]) -> subprocess.CompletedProcess[bytes]:
    """
    Run a Postfix administration command; it reports errors on a terminal
    only, so give it one with C{script}.
    """
    line = " ".join(command)
    return subprocess.run(
        ["script", "-qec", line, "/dev/null"],
        capture_output=True,
        timeout=START_TIMEOUT,
        check=False,
    )


class Postfix:
    """
    A Postfix instance in C{directory}: configuration in C{etc/}, queue in
    C{queue/}, its log in C{maillog}.

    @ivar port: The port its smtpd listens on (127.0.0.1).
    """

    def __init__(
        self,
        *,
        relayhost: int,
        access: Iterable[tuple[str, str]] = (),
        certificate: tuple[str, str] | None = None,
        settings: dict[str, str] | None = None,
    ) -> None:
        """
        @param relayhost: The port on 127.0.0.1 every message is sent on to.
        @param access: C{(recipient, action)} lines of the
            C{check_recipient_access} map.
        @param certificate: C{(certificate, key)} files for STARTTLS; none
            offered without.
        @param settings: More C{main.cf} settings.
        """
        self.directory = shortDirectory("pf")
        self.port = freePort()
        etc = self.directory / "etc"
        etc.mkdir(parents=True)
        (self.directory / "queue").mkdir()
        data = self.directory / "data"
        data.mkdir()
        os.chown(data, pwd.getpwnam("postfix").pw_uid, -1)
        # Postfix's processes must reach the queue.
        self.directory.chmod(0o711)
        (etc / "access").write_text("".join(f"{a} {b}\n" for a, b in access))
        main = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.directory / "queue"),
            "data_directory": str(data),
            "meta_directory": "/etc/postfix",
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "myhostname": "postfix.test",
            "mydomain": "postfix.test",
            "myorigin": "postfix.test",
            "mydestination": "",
            "mynetworks": "127.0.0.0/8",
            "relayhost": f"[127.0.0.1]:{relayhost}",
            "maillog_file": str(self.directory / "maillog"),
            "maillog_file_prefixes": str(self.directory),
            "alias_maps": "",
            "alias_database": "",
            "local_transport": "error:no local delivery",
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "smtpd_recipient_restrictions": (
                f"check_recipient_access texthash:{etc / 'access'}, permit_mynetworks, reject"
            ),
            "smtpd_forbid_bare_newline": "reject",
            "smtpd_forbid_bare_newline_exclusions": "",
            "smtp_tls_security_level": "none",
            "biff": "no",
            "smtpd_banner": "$myhostname ESMTP",
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
        }
        if certificate is not None:
            main["smtpd_tls_cert_file"], main["smtpd_tls_key_file"] = certificate
            main["smtpd_tls_security_level"] = "may"
        else:
            main["smtpd_tls_security_level"] = "none"
        main.update(settings or {})
        (etc / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in main.items()))
        services = [
            f"127.0.0.1:{self.port} inet n - n - - smtpd",
            "cleanup unix n - n - 0 cleanup",
            "qmgr unix n - n 300 1 qmgr",
            "tlsmgr unix - - n 1000? 1 tlsmgr",
            "rewrite unix - - n - - trivial-rewrite",
            "bounce unix - - n - 0 bounce",
            "defer unix - - n - 0 bounce",
            "trace unix - - n - 0 bounce",
            "verify unix - - n - 1 verify",
            "flush unix n - n 1000? 0 flush",
            "proxymap unix - - n - - proxymap",
            "smtp unix - - n - - smtp",
            "relay unix - - n - - smtp",
            "lmtp unix - - n - - lmtp",
            "showq unix n - n - - showq",
            "error unix - - n - - error",
            "retry unix - - n - - error",
            "discard unix - - n - - discard",
            "anvil unix - - n - 1 anvil",
            "scache unix - - n - 1 scache",
            "postlog unix-dgram n - n - 1 postlogd",
        ]
        (etc / "master.cf").write_text("\n".join(services) + "\n")
        self._config = str(etc)
        self._started = False

    @staticmethod
    def require(testCase: SynchronousTestCase) -> None:
        """
        Skip (fail in CI) unless Postfix is installed and usable.
        """
        requireProgram(testCase, "postfix", "postfix")
        requireProgram(testCase, "script", "bsdutils")
        requireRoot(testCase, "Postfix")

    def start(self, testCase: Cleanups) -> None:
        """
        Start it, stopped after the test; wait until it accepts connections.
        """
        result = _script(["postfix", "-c", self._config, "start"])
        testCase.addCleanup(self.stop)
        self._started = True
        if result.returncode != 0:
            raise AssertionError(
                f"postfix did not start: {result.stdout.decode(errors='replace')}\n{self.log}"
            )
        waitUntil(self._listening, START_TIMEOUT, "postfix to listen")

    def _listening(self) -> bool:
        import socket

        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        """
        Stop it (C{postfix abort}: nothing in its queue matters any more).
        """
        if self._started:
            self._started = False
            _script(["postfix", "-c", self._config, "abort"])
            waitForExit(self.directory / "queue" / "pid" / "master.pid", "postfix")
        shutil.rmtree(self.directory, ignore_errors=True)

    @property
    def log(self) -> str:
        """
        Its log so far.
        """
        path = self.directory / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""

    def count(self, text: str) -> int:
        """
        How many log lines hold C{text}.
        """
        return sum(text in line for line in self.log.splitlines())


class Dovecot:
    """
    A Dovecot LMTP server in C{directory}, users from a passwd-file,
    mailboxes in C{mail/<user>/Maildir}.

    @ivar port: The port its LMTP service listens on (127.0.0.1).
    """

    def __init__(self, users: dict[str, str], passwords: dict[str, str] | None = None) -> None:
        """
        @param users: User name to extra userdb fields (C{""} for none),
            such as C{"userdb_quota_rule=*:storage=1B"}.
        @param passwords: Passwords of users who may authenticate, through
            the SASL socket L{authSocket} (for Postfix).
        """
        passwords = passwords or {}
        self.directory = shortDirectory("dc")
        self.port = freePort()
        nobody = pwd.getpwnam("nobody")
        mail = self.directory / "mail"
        for name in ("run", "state", "mail"):
            (self.directory / name).mkdir(parents=True)
        os.chown(mail, nobody.pw_uid, nobody.pw_gid)
        self.directory.chmod(0o711)
        lines = [
            f"{user}:{'{PLAIN}' + passwords[user] if user in passwords else ''}:"
            f"{nobody.pw_uid}:{nobody.pw_gid}::{mail / user}::{extra}\n"
            for user, extra in users.items()
        ]
        #: The SASL server socket Postfix's C{smtpd_sasl_path} can use.
        self.authSocket = self.directory / "run" / "auth-postfix"
        (self.directory / "passwd").write_text("".join(lines))
        self.config = self.directory / "dovecot.conf"
        self.config.write_text(
            f"""
base_dir = {self.directory / "run"}
state_dir = {self.directory / "state"}
log_path = {self.directory / "dovecot.log"}
protocols = lmtp
listen = 127.0.0.1
ssl = no
default_internal_user = nobody
default_internal_group = nogroup
default_login_user = nobody
first_valid_uid = 1
mail_location = maildir:~/Maildir
auth_username_format = %Ln
mail_plugins = quota
quota_full_tempfail = yes
passdb {{
  driver = passwd-file
  args = {self.directory / "passwd"}
}}
userdb {{
  driver = passwd-file
  args = {self.directory / "passwd"}
}}
plugin {{
  quota = maildir:User quota
}}
auth_mechanisms = plain login
disable_plaintext_auth = no
service auth {{
  unix_listener auth-postfix {{
    mode = 0666
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {self.port}
  }}
  unix_listener lmtp {{
    mode = 0600
  }}
}}
"""
        )
        self._started = False

    @staticmethod
    def require(testCase: SynchronousTestCase) -> None:
        """
        Skip (fail in CI) unless Dovecot's LMTP server is installed.
        """
        requireProgram(testCase, "dovecot", "dovecot-core")
        if not os.path.exists("/usr/lib/dovecot/lmtp"):
            if os.environ.get("CI"):
                testCase.fail("CI must install the Debian package dovecot-lmtpd")
            raise SkipTest("dovecot-lmtpd is not installed")
        requireRoot(testCase, "Dovecot")

    def start(self, testCase: SynchronousTestCase) -> None:
        """
        Start it, stopped after the test.
        """
        dovecot = shutil.which("dovecot") or "dovecot"
        # It forks into the background: no pipes it would keep open.
        errors = self.directory / "start.err"
        with open(errors, "wb") as err:
            result = subprocess.run(
                [dovecot, "-c", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                timeout=START_TIMEOUT,
            )
        testCase.addCleanup(self.stop)
        self._started = True
        if result.returncode != 0:
            raise AssertionError(f"dovecot did not start: {errors.read_text()[-2000:]}")
        import socket

        def listening() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return True
            except OSError:
                return False

        waitUntil(listening, START_TIMEOUT, "dovecot to listen")

    def stop(self) -> None:
        """
        Kill it with all its processes: nothing it holds matters any more,
        and its orderly stop takes over a second (6 s on a SIGTERM of our own).
        """
        if self._started:
            self._started = False
            pidFile = self.directory / "run" / "master.pid"
            with contextlib.suppress(OSError, ValueError):
                pid = int(pidFile.read_text().strip())
                # The master leads the group of its processes; never
                # another group, should the pid have been reused.
                if Path(f"/proc/{pid}/comm").read_text().strip() == "dovecot":
                    os.killpg(pid, signal.SIGKILL)
            waitForExit(pidFile, "dovecot")
        shutil.rmtree(self.directory, ignore_errors=True)

    def mailbox(self, user: str) -> list[bytes]:
        """
        The messages stored for C{user}, in name order.
        """
        new = self.directory / "mail" / user / "Maildir" / "new"
        if not new.exists():
            return []
        return [path.read_bytes() for path in sorted(new.iterdir())]

    @property
    def log(self) -> str:
        """
        Its log so far.
        """
        path = self.directory / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""


class ThreadedNextHop:
    """
    A scripted SMTP server in a thread of the test, on an ephemeral port of
    127.0.0.1, one session at a time, every wait bounded by
    L{CLIENT_TIMEOUT}: subclasses answer a session in L{_session}.

    @ivar port: The port it listens on.
    """

    #: The most command lines read in one session.
    MAX_SESSION_LINES = 50

    def __init__(self) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(8)
        self._listener.settimeout(CLIENT_TIMEOUT)
        self.port: int = self._listener.getsockname()[1]
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """
        Stop listening and wait for the thread (bounded).
        """
        self._stopped.set()
        # Wakes the accept() of the thread (a close alone does not).
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(CLIENT_TIMEOUT)

    def _serve(self) -> None:
        while not self._stopped.is_set():
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            with connection:
                connection.settimeout(CLIENT_TIMEOUT)
                with contextlib.suppress(OSError):
                    self._session(connection)

    def _session(self, connection: socket.socket) -> None:
        # The greeting, then at most MAX_SESSION_LINES command lines of at
        # most 1,024 octets, each answered by _command.
        reader = connection.makefile("rb")
        connection.sendall(b"220 nexthop.example ESMTP\r\n")
        for _ in range(self.MAX_SESSION_LINES):
            line = reader.readline(1024)
            if not line or not self._command(connection, reader, line):
                return

    def _command(self, connection: socket.socket, reader: BinaryIO, line: bytes) -> bool:
        """
        Answer the command C{line} (CRLF included) on C{connection}, reading
        any more it needs (a message's text) from C{reader}.

        @return: Whether the session goes on.
        """
        raise NotImplementedError
