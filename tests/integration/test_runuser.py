"""
C{twistd --uid/--gid smtpd} started as root: what the start makes belongs to
the user the server runs as, and what it checks is checked as that user.
These tests need root (they fail instead of skipping when C{CI} is set).
"""

from __future__ import annotations

import os
import pwd
import signal

from tests.certs import CertificateAuthority
from tests.integration.helpers import (
    RECIPIENT,
    SENDER,
    ServerTestCase,
    message,
    twistdCommand,
    unverifiedContext,
)
from tests.integration.nexthops import requireRoot

#: The user and group the server runs as: nobody, nogroup.
NOBODY = 65534

#: What runs C{twistd} as root, told to switch to L{NOBODY}.
AS_NOBODY = twistdCommand("--uid", str(NOBODY), "--gid", str(NOBODY))


class RunUserTests(ServerTestCase):
    """
    C{twistd --uid 65534 --gid 65534 smtpd} on 127.0.0.1.
    """

    def setUp(self) -> None:
        requireRoot(self, "switching to another user")

    def openDirectory(self) -> str:
        """
        A new directory anyone can write in, in a path anyone can walk (the
        test's own directories, private, made searchable).
        """
        directory = self.makeDirectory()
        os.chmod(directory, 0o1777)
        ours = os.path.join(os.getcwd(), "")
        path = directory
        while path != os.path.dirname(path):
            path = os.path.dirname(path)
            if path.startswith(ours):
                os.chmod(path, os.stat(path).st_mode | 0o111)
            self.assertTrue(os.stat(path).st_mode & 0o001, f"{path} is not searchable")
        return directory

    def deliver(self, *args: str, logfile: str | None = None) -> bytes:
        """
        Start the server as nobody with C{args} (and C{twistd --logfile
        logfile}), deliver one message, which must be accepted, and stop
        it.

        @return: The message sent.
        """
        server = self.spawn(*args, maildir=False, command=AS_NOBODY, logfile=logfile)
        body = message(1)
        client = self.smtp(server.port)
        self.assertEqual(client.sendmail(SENDER, [RECIPIENT], body), {})
        client.quit()
        self.stopServer(server)
        self.assertIn(f"set uid/gid {NOBODY}/{NOBODY}", server.output)
        return body

    def assertOwned(self, path: str) -> None:
        """
        C{path} belongs to nobody and nogroup.
        """
        status = os.lstat(path)
        self.assertEqual((status.st_uid, status.st_gid), (NOBODY, NOBODY), path)

    def test_maildir(self) -> None:
        """
        The Maildir the start makes is the run user's: a message is
        accepted with 250 and lands in C{new/}, in a file of that user.
        """
        maildir = os.path.join(self.openDirectory(), "Maildir")
        body = self.deliver("--maildir", maildir)
        for sub in ("", "tmp", "new", "cur"):
            self.assertOwned(os.path.join(maildir, sub))
        (name,) = os.listdir(os.path.join(maildir, "new"))
        path = os.path.join(maildir, "new", name)
        self.assertOwned(path)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), body)

    def test_maildirPerRecipient(self) -> None:
        """
        With C{--maildir-per-recipient}, the recipient's Maildir, made at
        its first message, is the run user's too.
        """
        maildir = os.path.join(self.openDirectory(), "Maildir")
        self.deliver("--maildir", maildir, "--maildir-per-recipient")
        found = []
        for root, _, files in os.walk(maildir):
            self.assertOwned(root)
            found += [os.path.join(root, name) for name in files]
        self.assertEqual(len(found), 1, found)
        self.assertOwned(found[0])

    def test_mbox(self) -> None:
        """
        The mbox file the start makes is the run user's, and a message is
        appended to it.
        """
        mbox = os.path.join(self.openDirectory(), "mbox")
        body = self.deliver("--mbox", mbox)
        self.assertOwned(mbox)
        with open(mbox, "rb") as f:
            self.assertIn(body.replace(b"\r\n", b"\n"), f.read())

    def test_rootsCertificate(self) -> None:
        """
        The certificate and key files are read before the switch, as root
        (the key readable by root only, as Postfix advises): the server
        starts and STARTTLS works.
        """
        ca = CertificateAuthority(os.path.abspath(self.mktemp()))
        issued = ca.server("mail.example.com")
        os.chmod(issued.keyPath, 0o600)
        maildir = os.path.join(self.openDirectory(), "Maildir")
        server = self.spawn(
            "--maildir",
            maildir,
            "--tls-cert",
            issued.certificatePath,
            "--tls-key",
            issued.keyPath,
            maildir=False,
            command=AS_NOBODY,
        )
        client = self.smtp(server.port)
        self.assertEqual(client.starttls(context=unverifiedContext())[0], 220)
        self.assertEqual(client.sendmail(SENDER, [RECIPIENT], message(1)), {})
        client.quit()
        # A reload, as the user, cannot read them: one line, the old ones
        # stay in use.
        server.signal(signal.SIGHUP)
        server.waitForLog("Reloading TLS certificates failed, the old ones stay in use")
        client = self.smtp(server.port)
        self.assertEqual(client.starttls(context=unverifiedContext())[0], 220)
        client.quit()
        self.stopServer(server)
        self.assertEqual(len(os.listdir(os.path.join(maildir, "new"))), 1)

    def assertStartFails(self, args: list[str], expected: str) -> None:
        """
        Started as nobody with C{args}, C{twistd smtpd} ends with status 1
        and one line on standard error holding C{expected}.
        """
        line, both = self.assertFailedStart(
            [*AS_NOBODY, "--nodaemon", "--pidfile=", "--logfile=-", "smtpd", *args],
            self.openDirectory(),
        )
        self.assertNotIn("listening: ", both)
        self.assertIn(expected, line)

    def rootsDirectory(self) -> str:
        """
        A directory only root can write in (mode 0755).
        """
        directory = os.path.join(self.openDirectory(), "root")
        os.mkdir(directory, 0o755)
        return directory

    def test_maildirNotWritable(self) -> None:
        """
        A Maildir the run user cannot write fails the start in one line,
        though root could write it.
        """
        maildir = os.path.join(self.rootsDirectory(), "Maildir")
        self.assertStartFails(
            ["--listen", "tcp:0:interface=127.0.0.1", "--maildir", maildir],
            f"Cannot create Maildir directory '{maildir}/tmp': Permission denied",
        )
        self.assertFalse(os.path.exists(maildir))

    def test_maildirExistingNotWritable(self) -> None:
        """
        An existing Maildir of root's fails the start in one line.
        """
        maildir = os.path.join(self.rootsDirectory(), "Maildir")
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(maildir, sub), 0o755)
        self.assertStartFails(
            ["--listen", "tcp:0:interface=127.0.0.1", "--maildir", maildir],
            f"Maildir directory '{maildir}/tmp' is not writable",
        )

    def test_mboxNotWritable(self) -> None:
        """
        An mbox in a directory the run user cannot write fails the start in
        one line, and no file is made.
        """
        mbox = os.path.join(self.rootsDirectory(), "mbox")
        self.assertStartFails(
            ["--listen", "tcp:0:interface=127.0.0.1", "--mbox", mbox],
            "Permission denied",
        )
        self.assertFalse(os.path.exists(mbox))

    def test_pipeSpoolNotWritable(self) -> None:
        """
        A C{--pipe-spool} the run user cannot write fails the start in one
        line.
        """
        spool = self.rootsDirectory()
        self.assertStartFails(
            ["--listen", "tcp:0:interface=127.0.0.1", "--pipe", "cat", "--pipe-spool", spool],
            f"--pipe-spool {spool!r}: Permission denied",
        )

    def test_logFile(self) -> None:
        """
        The log file the start makes is the run user's, who rotates it at
        1 MB and opens it again on SIGUSR1.
        """
        path = os.path.join(self.openDirectory(), "smtpd.log")
        self.deliver("--sink", logfile=path)
        self.assertOwned(path)

    def test_logFileNotWritable(self) -> None:
        """
        A log file the run user cannot create fails the start in one line.
        """
        path = os.path.join(self.rootsDirectory(), "smtpd.log")
        line, _ = self.assertFailedStart(
            [
                *AS_NOBODY,
                "--nodaemon",
                "--pidfile=",
                f"--logfile={path}",
                "smtpd",
                "--sink",
                "--listen",
                "tcp:0:interface=127.0.0.1",
            ],
            self.openDirectory(),
        )
        self.assertIn(f"--logfile {path!r}: Permission denied", line)
        self.assertFalse(os.path.exists(path))

    def test_authFileNotReadable(self) -> None:
        """
        An C{--auth file:} the run user cannot read, which is read again at
        each login, fails the start in one line instead of failing every
        login.
        """
        path = os.path.join(self.openDirectory(), "passwd")
        with open(path, "w") as f:
            f.write("user:secret\n")
        os.chmod(path, 0o600)
        self.assertStartFails(
            [
                "--listen",
                "tcp:0:interface=127.0.0.1",
                "--sink",
                "--allow-insecure-auth",
                "--auth",
                f"file:{path}",
            ],
            f"--auth 'file:{path}': Permission denied",
        )

    def test_unknownUid(self) -> None:
        """
        A C{--uid} no user has fails the start in one line, whatever the
        delivery (C{twistd} would end with a traceback looking up the
        user's groups once the ports are bound).
        """
        uid = 54321
        while True:
            try:
                pwd.getpwuid(uid)
            except KeyError:
                break
            uid += 1
        line, _ = self.assertFailedStart(
            twistdCommand(
                "--uid",
                str(uid),
                "--nodaemon",
                "--pidfile=",
                "--logfile=-",
                "smtpd",
                "--sink",
                "--listen",
                "tcp:0:interface=127.0.0.1",
            ),
            self.openDirectory(),
        )
        self.assertIn(f"--uid {uid}: no user has this uid", line)


class LogFileTests(ServerTestCase):
    """
    The log file C{twistd smtpd} opens itself (C{twistd --logfile}).
    """

    def test_cannotOpen(self) -> None:
        """
        A log file that cannot be opened fails the start in one line.
        """
        path = os.path.join(self.makeDirectory(), "missing", "smtpd.log")
        line, _ = self.assertFailedStart(
            twistdCommand(
                "--nodaemon",
                "--pidfile=",
                f"--logfile={path}",
                "smtpd",
                "--sink",
                "--listen",
                "tcp:0:interface=127.0.0.1",
            ),
            self.makeDirectory(),
        )
        self.assertIn(f"--logfile {path!r}: No such file or directory", line)
