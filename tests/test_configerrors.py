# -*- test-case-name: tests.test_configerrors -*-
"""
Configuration errors of C{twistd smtpd} found at parse time, and listeners
that cannot start; the one-line output through a real C{twistd} is in
L{tests.integration.test_twistd.CommandLineTests}.
"""

from __future__ import annotations

import contextlib
import errno
import io
import math
import os
import pwd
import signal
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator
from unittest import SkipTest

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.credentials import IUsernameHashedPassword, IUsernamePassword
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from tests.certs import CertificateAuthority
from tests.test_tap import parse
from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd._serving.listeners import ListenFailed, listenReason
from twisted_smtpd._serving.service import SMTPServer
from twisted_smtpd._twistd import tap as _tap
from twisted_smtpd._twistd.taphost import checkPidFile
from twisted_smtpd.handlers import SinkHandler
from twisted_smtpd.testing import memorySession


class HostnameTests(SynchronousTestCase):
    """
    C{--hostname} takes a domain name or an address literal only.
    """

    def test_refused(self) -> None:
        """
        Spaces, empty labels, bad characters, overlong labels and bad
        literals are refused, naming the flag.
        """
        for name in [
            "two words",
            "",
            "a..b",
            "-a.example",
            "a_b.example",
            "x" * 64,
            "[1.2.3]",
            # RFC 5321 section 4.1.3: IPv6 only with its tag, IPv4 without.
            "[2001:db8::1]",
            "[IPv6:192.0.2.1]",
            # No zone, and a "::" stands for two groups or more.
            "[IPv6:fe80::1%eth0]",
            "[IPv6:1:2:3:4:5:6:7::]",
        ]:
            e = self.assertRaises(usage.UsageError, parse, "--sink", "--hostname", name)
            self.assertIn(f"--hostname {name!r}", str(e))

    def test_accepted(self) -> None:
        """
        Domain names (a trailing dot too) and IPv4 and IPv6 literals pass.
        """
        for name in [
            "mx.example.com",
            "localhost",
            "[192.0.2.1]",
            "[IPv6:2001:db8::1]",
            "1.2.3.example",
            "mx1.example.123a",
        ]:
            self.assertEqual(parse("--sink", "--hostname", name)["serverOptions"].name, name)

    def test_finalDotLeftOut(self) -> None:
        """
        A name written with its final dot (C{mx.example.com.}, as in a zone
        file) is the same name without it, which the greeting, the replies
        and the trace fields give: RFC 5321's domains end with a label
        (section 4.1.2), and Postfix's C{valid_hostname} refuses an empty
        one.
        """
        options = parse("--sink", "--hostname", "mx.example.com.")["serverOptions"]
        self.assertEqual(options.name, "mx.example.com")
        self.assertEqual(parse("--sink", "--hostname", "mx.")["serverOptions"].name, "mx")
        self.assertEqual(ServerOptions(name="mx.example.com.").name, "mx.example.com")
        session = memorySession(SinkHandler(), ServerOptions(name="mx.example.com."))
        self.assertEqual(session.read(), b"220 mx.example.com ESMTP\r\n")
        self.assertTrue(session.send(b"EHLO c\r\n").startswith(b"250-mx.example.com Nice"))

    def test_numericRefused(self) -> None:
        """
        A name whose last label is all digits (an IPv4 address without its
        brackets) is refused, naming the literal to write instead (RFC 1123
        section 2.1, as Postfix's C{valid_hostname}).
        """
        e = self.assertRaises(usage.UsageError, parse, "--sink", "--hostname", "192.0.2.1")
        self.assertEqual(
            str(e),
            "--hostname '192.0.2.1': not a host name (its last label is all digits); an"
            " address is written as an address literal: [192.0.2.1]",
        )
        e = self.assertRaises(usage.UsageError, parse, "--sink", "--hostname", "mx.123.")
        self.assertEqual(
            str(e), "--hostname 'mx.123.': not a host name (its last label is all digits)"
        )


class DisabledCommandsTests(SynchronousTestCase):
    """
    C{--disable} cannot take away what every transaction needs.
    """

    def test_refused(self) -> None:
        """
        The greeting (LHLO under C{--lmtp}; EHLO and HELO both otherwise),
        MAIL, RCPT, or DATA and BDAT both: refused in one line naming the
        flag and what must stay.
        """
        for lmtp, commands, named in [
            (True, ["LHLO"], "LHLO"),
            (False, ["EHLO", "helo"], "EHLO or HELO"),
            (False, ["MAIL"], "MAIL"),
            (False, ["RCPT"], "RCPT"),
            (False, ["DATA", "BDAT"], "DATA or BDAT"),
        ]:
            args = ["--sink", *(["--lmtp"] if lmtp else [])]
            for command in commands:
                args += ["--disable", command]
            e = self.assertRaises(usage.UsageError, parse, *args)
            self.assertEqual(
                str(e),
                f"--disable: disabledCommands must leave {named} enabled:"
                " no transaction could be made without it",
            )

    def test_sessionCommands(self) -> None:
        """
        QUIT and RSET, which RFC 5321 section 4.5.1 requires of every
        server (a client ends the session with QUIT, and drops a
        transaction with RSET), cannot be disabled: refused in one line
        naming the command, through the flag and through L{ServerOptions}.
        """
        for command, why in [
            ("QUIT", "a client could not end its session"),
            ("RSET", "a client could not drop a transaction"),
        ]:
            expected = (
                f"disabledCommands must leave {command} enabled: RFC 5321 section"
                f" 4.5.1 requires it ({why})"
            )
            e = self.assertRaises(usage.UsageError, parse, "--sink", "--disable", command.lower())
            self.assertEqual(str(e), f"--disable: {expected}")
            e2 = self.assertRaises(ValueError, ServerOptions, disabledCommands=(command,))
            self.assertEqual(str(e2), expected)

    def test_dataWithoutChunking(self) -> None:
        """
        DATA disabled where CHUNKING is not offered (hidden, or EHLO
        disabled in SMTP): no client would send BDAT; refused in one line.
        """
        for args, why in [
            (["--disable", "DATA", "--hide", "CHUNKING"], "CHUNKING is hidden"),
            (["--lmtp", "--disable", "DATA", "--hide", "CHUNKING"], "CHUNKING is hidden"),
            (["--disable", "DATA", "--disable", "EHLO"], "EHLO is disabled"),
        ]:
            e = self.assertRaises(usage.UsageError, parse, "--sink", *args)
            self.assertEqual(
                str(e),
                f"--disable: disabledCommands must leave DATA enabled when {why}:"
                " clients send BDAT only where the EHLO or LHLO reply offers CHUNKING",
            )
        # In LMTP, EHLO is not the greeting: CHUNKING is offered in LHLO's reply.
        parse("--sink", "--lmtp", "--disable", "DATA", "--disable", "EHLO")

    def test_accepted(self) -> None:
        """
        One of two ways left is enough; LHLO may be disabled in SMTP and
        EHLO in LMTP, where they are not the greeting.
        """
        for args in [
            ["--disable", "EHLO"],
            ["--disable", "BDAT"],
            ["--disable", "DATA"],
            ["--disable", "LHLO"],
            ["--lmtp", "--disable", "EHLO", "--disable", "HELO"],
        ]:
            parse("--sink", *args)


class AuthTests(SynchronousTestCase):
    """
    C{--auth} descriptions that would let nobody in are refused.
    """

    def test_memoryWithoutUsers(self) -> None:
        """
        C{memory:} with no users, or a user without a password, or a
        password without a user: the line names the flag and the form
        expected, and repeats no password.
        """
        for description in ["memory:", "memory", "memory:alice", "memory::pw"]:
            e = self.assertRaises(usage.UsageError, parse, "--sink", "--auth", description)
            self.assertIn("--auth memory:", str(e))
            self.assertIn("expected memory:USER:PASSWORD", str(e))
            self.assertNotIn("pw", str(e))

    def test_missingFile(self) -> None:
        """
        C{file:} naming a file that does not exist.
        """
        missing = self.mktemp()
        e = self.assertRaises(usage.UsageError, parse, "--sink", "--auth", f"file:{missing}")
        self.assertIn("No such file", str(e))

    def test_memoryUsers(self) -> None:
        """
        Users and passwords pass.
        """
        parse("--sink", "--auth", "memory:alice:secret:bob:pw")

    def test_noMechanismDecidable(self) -> None:
        """
        C{--auth} with C{--auth-methods} naming only mechanisms its checkers
        cannot decide (XOAUTH2 without a handler's C{onAuth}), or none at
        all, is refused: the server would neither offer nor require AUTH
        and take mail from anyone.
        """
        for methods, named in [("XOAUTH2", "--auth-methods XOAUTH2"), ("", "--auth-methods")]:
            e = self.assertRaises(
                usage.UsageError,
                parse,
                "--sink",
                "--auth",
                "memory:alice:secret",
                "--auth-methods",
                methods,
            )
            self.assertIn(named, str(e))
            self.assertNotIn("\n", str(e))

    def test_authDisabled(self) -> None:
        """
        C{--auth} with C{--disable AUTH} is refused for the same reason.
        """
        e = self.assertRaises(
            usage.UsageError,
            parse,
            "--sink",
            "--auth",
            "memory:alice:secret",
            "--disable",
            "AUTH",
        )
        self.assertIn("--disable AUTH", str(e))

    def test_someMechanismDecidable(self) -> None:
        """
        One mechanism the checkers decide is enough: the others are left
        out with a warning when the server starts.  XOAUTH2 alone passes
        when the handler has its own C{onAuth}.
        """
        from twisted_smtpd._twistd.tapauth import checkAuthOffered

        parse("--sink", "--auth", "memory:alice:secret", "--auth-methods", "PLAIN,XOAUTH2")

        class Deciding(SinkHandler):
            def onAuth(self, auth: object, session: object) -> object:
                return None

        checkAuthOffered(
            [InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret")],
            ServerOptions(authMethods=["XOAUTH2"]),
            Deciding(),
        )

    def test_supportedCredentials(self) -> None:
        """
        The checkers C{--auth} takes are those of the credentials AUTH
        gives (a password, a CRAM-MD5 response): C{twisted.cred}'s, found
        when an C{--auth} flag asks for them; one checking none of them
        (C{anonymous}) is refused, as not supported.
        """
        expected = (IUsernamePassword, IUsernameHashedPassword)
        self.assertEqual(tuple(_tap.Options().supportedInterfaces), expected)
        self.assertEqual(tuple(_tap.Options.supportedInterfaces), expected)
        e = self.assertRaises(usage.UsageError, parse, "--sink", "--auth", "anonymous")
        self.assertEqual(
            str(e), "--auth: Auth plugin not supported: twisted.cred.credentials.IAnonymous"
        )


class TwistdOneLineTests(SynchronousTestCase):
    """
    Under C{twistd} (a parent options object), a usage error is one line on
    standard error and exit status 1, not the help text.
    """

    def test_oneLine(self) -> None:
        """
        An unknown flag: one line, C{SystemExit(1)}.
        """
        err = io.StringIO()
        self.patch(sys, "__stderr__", err)
        # Under twistd SIGHUP and SIGUSR1 are kept from now on: not in here.
        from twisted_smtpd._twistd.heldsignals import HeldSignals

        self.patch(_tap, "HELD", HeldSignals())
        for number in HeldSignals.numbers:
            self.addCleanup(signal.signal, number, signal.getsignal(number))
        options = _tap.Options()
        options.parent = object()  # type: ignore[attr-defined]
        exit = self.assertRaises(SystemExit, options.parseOptions, ["--sink", "--bogus"])
        self.assertEqual(exit.code, 1)
        self.assertEqual(
            err.getvalue(), "twistd smtpd: option --bogus not recognized; see --help\n"
        )

    def test_withoutParent(self) -> None:
        """
        Without C{twistd} (no parent), the L{usage.UsageError} is raised.
        """
        self.assertRaises(usage.UsageError, _tap.Options().parseOptions, ["--bogus"])


class ListenFailedTests(SynchronousTestCase):
    """
    A listener that cannot start raises L{ListenFailed} with one line.
    """

    def test_addressInUse(self) -> None:
        """
        A port in use: the endpoint string and "address already in use".
        """
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        server = SMTPServer(SinkHandler())
        description = f"tcp:{port}:interface=127.0.0.1"
        server.addEndpoint(description)
        e = self.assertRaises(ListenFailed, server.privilegedStartService)
        self.assertEqual(e.description, description)
        self.assertIn("address already in use", e.why)

    def test_unixSocketInMissingDirectory(self) -> None:
        """
        A UNIX socket in a directory that does not exist: the reason names
        the path (its lock file's, the first file made), not the process
        id Twisted writes into that lock file.
        """
        directory = os.path.abspath(self.mktemp())
        path = os.path.join(directory, "smtpd.sock")
        server = SMTPServer(SinkHandler())
        server.addEndpoint(f"unix:{path}")
        e = self.assertRaises(ListenFailed, server.privilegedStartService)
        self.assertEqual(e.description, f"unix:{path}")
        self.assertTrue(e.why.startswith("no such file or directory: "), e.why)
        self.assertIn(directory, e.why)
        self.assertNotRegex(e.why, r": \d+$")

    def test_sslContextMadeAtOnce(self) -> None:
        """
        L{SMTPServer.addEndpoint} makes the TLS context of an C{ssl:}
        endpoint with keys of its own at once: a missing C{dhParameters}
        file is a L{ValueError} naming it, not a traceback for every
        connection.
        """
        issued = CertificateAuthority(self.mktemp()).server("mx.example.com")
        missing = os.path.abspath(self.mktemp())
        server = SMTPServer(SinkHandler())
        e = self.assertRaises(
            ValueError,
            server.addEndpoint,
            f"ssl:0:privateKey={issued.keyPath}:certKey={issued.certificatePath}"
            f":dhParameters={missing}",
        )
        self.assertEqual(str(e), f"cannot read dhParameters {missing}: No such file or directory")

    def test_sslFileTooLarge(self) -> None:
        """
        L{SMTPServer.addEndpoint} refuses an C{ssl:} endpoint whose key,
        certificate, chain or C{dhParameters} file is larger than 16 MiB (a
        path naming C{/dev/zero} by mistake) before Twisted reads it whole.
        """
        issued = CertificateAuthority(self.mktemp()).server("mx.example.com")
        big = os.path.abspath(self.mktemp())
        with open(big, "wb") as f:
            f.truncate(16 * 1024 * 1024 + 1)
        key, cert = issued.keyPath, issued.certificatePath
        server = SMTPServer(SinkHandler())
        for name, description in [
            ("privateKey", f"ssl:0:privateKey={big}:certKey={cert}"),
            ("certKey", f"ssl:0:privateKey={key}:certKey={big}"),
            ("extraCertChain", f"ssl:0:privateKey={key}:certKey={cert}:extraCertChain={big}"),
            ("dhParameters", f"haproxy:ssl:0:privateKey={key}:certKey={cert}:dhParameters={big}"),
        ]:
            e = self.assertRaises(ValueError, server.addEndpoint, description)
            self.assertEqual(str(e), f"cannot read {name} {big}: larger than 16777216 bytes")

    def test_reasons(self) -> None:
        """
        Permission denied carries the hint about port 25; a port out of
        range and an unknown address say so.
        """
        denied = CannotListenError("", 25, OSError(errno.EACCES, "Permission denied"))
        self.assertIn("authbind", listenReason(denied))
        self.assertIn("CAP_NET_BIND_SERVICE", listenReason(denied))
        self.assertEqual(listenReason(OverflowError("x")), "port out of range (0-65535)")
        absent = CannotListenError("", 25, OSError(errno.EADDRNOTAVAIL, "Cannot assign"))
        self.assertIn("no interface", listenReason(absent))

    def test_unixSocketPermission(self) -> None:
        """
        Permission denied on a UNIX socket's path names the path; the hint
        about ports below 1024 is for TCP ports only.
        """
        path = "/run/smtpd/smtpd.sock"
        denied = CannotListenError(None, path, OSError(errno.EACCES, "Permission denied"))
        self.assertEqual(listenReason(denied), f"permission denied: {path}")
        lock = PermissionError(errno.EACCES, "Permission denied", "4242", None, f"{path}.lock")
        self.assertEqual(listenReason(lock), f"permission denied: {path}.lock")


class ClosedServerTests(SynchronousTestCase):
    """
    An L{SMTPServer} serves once: after L{SMTPServer.close} it would refuse
    every session with 421, so it refuses to listen again.
    """

    def test_listenAfterClose(self) -> None:
        """
        L{SMTPServer.listen} after L{SMTPServer.close} (whether or not the
        close has finished) raises L{RuntimeError} and listens on nothing.
        """
        reactor = MemoryReactorClock()
        server = SMTPServer(SinkHandler(), reactor=reactor)
        self.successResultOf(server.listen("tcp:0:interface=127.0.0.1"))
        closing = server.close()
        e = self.assertRaises(RuntimeError, server.listen, "tcp:0:interface=127.0.0.1")
        self.assertEqual(
            str(e), "this SMTPServer was closed and cannot listen again; make a new one"
        )
        self.successResultOf(closing)
        self.assertRaises(RuntimeError, server.listen, "tcp:0:interface=127.0.0.1")
        self.assertRaises(RuntimeError, server.addEndpoint, "tcp:0:interface=127.0.0.1")
        self.assertEqual(len(reactor.tcpServers), 1)

    def test_startAfterStop(self) -> None:
        """
        A service stopped (which closes it) refuses to start again with
        L{RuntimeError}, rather than listen and answer every client 421.
        """
        reactor = MemoryReactorClock()
        server = SMTPServer(SinkHandler(), reactor=reactor)
        server.addEndpoint("tcp:0:interface=127.0.0.1")
        server.privilegedStartService()
        server.startService()
        self.successResultOf(server.stopService())
        self.assertRaises(RuntimeError, server.privilegedStartService)
        self.assertRaises(RuntimeError, server.startService)
        self.assertEqual(len(reactor.tcpServers), 1)

    def test_closedWhileListening(self) -> None:
        """
        A port that an endpoint makes only after L{SMTPServer.close} was
        called (an endpoint answering later) is stopped at once, and the
        Deferred of L{SMTPServer.listen} fails with L{RuntimeError}: nothing
        would ever stop it, and it would answer every client 421.
        """
        reactor = MemoryReactorClock()
        server = SMTPServer(SinkHandler(), reactor=reactor)
        later: Deferred[IListeningPort] = Deferred()
        endpoint = _LateEndpoint(later)
        server._endpoint = lambda description: (endpoint, server.factory)  # type: ignore[method-assign]
        listening = server.listen("tcp:0:interface=127.0.0.1")
        self.successResultOf(server.close())
        port = _Port()
        later.callback(port)
        failure = self.failureResultOf(listening, RuntimeError)
        self.assertEqual(
            str(failure.value),
            "this SMTPServer was closed and cannot listen again; make a new one",
        )
        self.assertTrue(port.stopped)
        self.assertEqual(server._ports, [])

    def test_adoptAfterClose(self) -> None:
        """
        L{SMTPServer.adopt} after L{SMTPServer.close} raises
        L{RuntimeError} and closes the descriptor it was given, which would
        otherwise stay open, listening, with nothing to accept from it.
        """
        reactor = MemoryReactorClock()
        server = SMTPServer(SinkHandler(), reactor=reactor)
        self.successResultOf(server.close())
        readEnd, writeEnd = os.pipe()
        self.addCleanup(os.close, writeEnd)
        self.assertRaises(
            RuntimeError, server.adopt, "tcp:0:interface=127.0.0.1", readEnd, socket.AF_INET
        )
        self.assertRaises(OSError, os.fstat, readEnd)
        self.assertEqual(server.listening(), [])


class _LateEndpoint:
    """
    An endpoint whose port comes when the test says.
    """

    def __init__(self, port: Deferred[IListeningPort]) -> None:
        self.port = port

    def listen(self, factory: object) -> Deferred[IListeningPort]:
        return self.port


class _Port:
    """
    A listening port that records being stopped.
    """

    stopped = False

    def stopListening(self) -> None:
        self.stopped = True


class LMTPToTests(SynchronousTestCase):
    """
    C{--lmtp-to} endpoints that parse but can never connect are refused at
    start instead of answering every message 451.
    """

    def test_unusableEndpoint(self) -> None:
        """
        A port out of range and an empty UNIX socket path.
        """
        for description, why in [
            ("tcp:127.0.0.1:99999", "port 99999 is out of range (1-65535)"),
            ("tcp:127.0.0.1:-5", "port -5 is out of range (1-65535)"),
            ("tcp:host=127.0.0.1:port=0", "port 0 is out of range (1-65535)"),
            ("unix:", "the UNIX socket path is empty"),
        ]:
            e = self.assertRaises(usage.UsageError, parse, "--lmtp-to", description)
            self.assertEqual(str(e), f"--lmtp-to {description!r}: {why}")

    def test_usableEndpoint(self) -> None:
        """
        A TCP port in range and a UNIX socket path pass.
        """
        parse("--lmtp-to", "tcp:127.0.0.1:24")
        parse("--lmtp-to", "unix:/run/dovecot/lmtp")

    def test_unverifiedSSLRefused(self) -> None:
        """
        An C{ssl:} endpoint without C{hostname=}, over which Twisted would
        check no certificate of the LMTP server, is refused; with it, or
        with C{tls:}, the certificate is checked and the endpoint taken.
        """
        description = "ssl:127.0.0.1:24"
        e = self.assertRaises(usage.UsageError, parse, "--lmtp-to", description)
        self.assertEqual(
            str(e),
            f"--lmtp-to {description!r}: ssl: without hostname= checks no certificate of the"
            " server: add hostname=NAME (checked against the system's CAs, or"
            " caCertsDir='s), or use tls:NAME:PORT",
        )
        parse("--lmtp-to", "ssl:127.0.0.1:24:hostname=lmtp.example.com")
        parse("--lmtp-to", "tls:lmtp.example.com:24")


class PasswordHiddenTests(SynchronousTestCase):
    """
    A delivery URL's password never shows in the ready line or an error.
    """

    def test_passwordWithAt(self) -> None:
        """
        A password holding C{@} (URL parsers read it to the last C{@}) is
        hidden whole.
        """
        config = parse("--amqp", "amqp://mailer:s3cr@tpass@127.0.0.1:5672/")
        self.assertEqual(config["deliveryDescription"], "amqp amqp://mailer:***@127.0.0.1:5672/")

    def test_passwordWithSlash(self) -> None:
        """
        A password holding C{/} or C{?} is hidden in the error that its
        malformed URL causes.
        """
        for url in ["amqp://mailer:pa/ssword@127.0.0.1/", "amqp://mailer:pa?ssword@127.0.0.1/"]:
            e = self.assertRaises(usage.UsageError, parse, "--amqp", url)
            self.assertNotIn("ssword", str(e))
            self.assertIn("mailer:***@", str(e))

    def test_passwordQuotedInError(self) -> None:
        """
        A password holding a backslash or a quote, which C{repr} escapes in
        the error quoting the URL, is hidden there too.
        """
        for url in [
            "amqp://mailer:pa\\ssword@127.0.0.1:99999/",
            "amqp://mailer:it's\"ssword@127.0.0.1:99999/",
        ]:
            e = self.assertRaises(usage.UsageError, parse, "--amqp", url)
            self.assertNotIn("ssword", str(e))
            self.assertIn("mailer:***@", str(e))

    def test_atWithoutPassword(self) -> None:
        """
        An C{@} in a URL's path or query, after a port, hides nothing.
        """
        url = "https://hooks.example:8443/in?to=a@example.com"
        self.assertEqual(_tap.withoutPassword(url), url)


class ServerOptionsTests(SynchronousTestCase):
    """
    L{ServerOptions} refuses at construction, naming the setting, a limit
    or timeout that would not bound anything.
    """

    def test_notFinite(self) -> None:
        """
        NaN and infinity are refused for timeouts: a session would never
        time out.
        """
        for name in ["socketTimeout", "tlsHandshakeTimeout", "closeTimeout"]:
            for value in [math.nan, math.inf]:
                e = self.assertRaises(ValueError, ServerOptions, **{name: value})
                self.assertEqual(str(e), f"{name} must be finite, got {value!r}")

    def test_countsAreWhole(self) -> None:
        """
        A count that is not an C{int} (NaN, infinity, a fraction, a string,
        C{None}, a C{bool}) is a C{TypeError} naming the setting.
        """
        for name in ["size", "maxClients", "maxRecipients", "maxErrors", "maxLineLength"]:
            for value in [math.nan, math.inf, 1.5, "10", None, True]:
                e = self.assertRaises(TypeError, ServerOptions, **{name: value})
                self.assertEqual(str(e), f"{name} must be a whole number, got {value!r}")

    def test_secondsAreNumbers(self) -> None:
        """
        A timeout that is not a number is a C{TypeError} naming the setting.
        """
        for value in ["60", None, True]:
            e = self.assertRaises(TypeError, ServerOptions, socketTimeout=value)
            self.assertEqual(str(e), f"socketTimeout must be a number of seconds, got {value!r}")

    def test_ranges(self) -> None:
        """
        Negative values, and 0 where a positive value is needed, are still
        refused; whole seconds and 0 counts where allowed pass.
        """
        self.assertRaises(ValueError, ServerOptions, size=-1)
        self.assertRaises(ValueError, ServerOptions, maxRecipients=0)
        self.assertRaises(ValueError, ServerOptions, socketTimeout=0)
        options = ServerOptions(size=0, socketTimeout=5, closeTimeout=0.5)
        self.assertEqual((options.size, options.socketTimeout), (0, 5))


class HandlerSecondsTests(SynchronousTestCase):
    """
    The handlers refuse at construction, naming the argument, a number of
    seconds their timers could not be set with or would never fire:
    before, C{PipeHandler(timeout=math.nan)} was taken, and every message
    then failed with a traceback from Twisted's C{callLater} and 451.
    """

    def test_refused(self) -> None:
        """
        NaN, infinity, a negative number, and 0 where a pause or timeout
        must pass, are refused with one line naming the argument.
        """
        from twisted_smtpd.handlers import LMTPDeliveryHandler, PipeHandler, RelayHandler
        from twisted_smtpd.handlers.amqp import AMQPHandler
        from twisted_smtpd.handlers.webhook import WebhookHandler

        clock = MemoryReactorClock()
        makers = {
            "pipe": lambda **kw: PipeHandler(["cat"], reactor=clock, **kw),
            "relay": lambda **kw: RelayHandler("127.0.0.1", reactor=clock, **kw),
            "lmtp": lambda **kw: LMTPDeliveryHandler("tcp:127.0.0.1:24", reactor=clock, **kw),
            "amqp": lambda **kw: AMQPHandler("amqp://u:p@127.0.0.1/", reactor=clock, **kw),
            "webhook": lambda **kw: WebhookHandler("http://127.0.0.1/in", reactor=clock, **kw),
        }
        for handler, name in [
            ("pipe", "timeout"),
            ("relay", "timeout"),
            ("lmtp", "timeout"),
            ("amqp", "confirmTimeout"),
            ("amqp", "connectTimeout"),
            ("amqp", "firstRetry"),
            ("amqp", "maxRetryDelay"),
            ("webhook", "timeout"),
            ("webhook", "attemptTimeout"),
            ("webhook", "firstRetry"),
            ("webhook", "maxRetryDelay"),
        ]:
            for value in [math.nan, math.inf, -1.0, 0]:
                e = self.assertRaises(ValueError, makers[handler], **{name: value})
                self.assertEqual(str(e), f"{name} must be positive and finite, got {value!r}")
        for handler in ["relay", "lmtp"]:
            for value in [math.nan, math.inf, -1.0]:
                e = self.assertRaises(ValueError, makers[handler], idleTimeout=value)
                self.assertEqual(str(e), f"idleTimeout must be 0 or more and finite, got {value!r}")
            makers[handler](idleTimeout=0, timeout=0.5)
        makers["pipe"](timeout=0.5)
        makers["amqp"](firstRetry=0.05, maxRetryDelay=0.1)
        makers["webhook"](firstRetry=0.05, maxRetryDelay=0.1, timeout=1, attemptTimeout=1)


class PidFileTests(SynchronousTestCase):
    """
    C{twistd}'s C{--pidfile} that could not be written is refused when the
    options of C{smtpd} are parsed, in one line, rather than by C{twistd}
    with a traceback.
    """

    def setUp(self) -> None:
        self.err = io.StringIO()
        self.patch(sys, "__stderr__", self.err)
        # Under twistd SIGHUP and SIGUSR1 are kept from now on: not in here.
        from twisted_smtpd._twistd.heldsignals import HeldSignals

        self.patch(_tap, "HELD", HeldSignals())
        for number in HeldSignals.numbers:
            self.addCleanup(signal.signal, number, signal.getsignal(number))

    def parseUnder(self, pidfile: str) -> None:
        """
        Parse C{--sink} under C{twistd} options holding C{pidfile}.
        """
        config = _tap.Options()
        config.parent = {"pidfile": pidfile}  # type: ignore[attr-defined]
        config.parseOptions(["--sink"])

    def test_refused(self) -> None:
        """
        A pid file in a directory that does not exist, or naming a
        directory: one line, C{SystemExit(1)}.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        missing = os.path.join(directory, "missing", "twistd.pid")
        for path, line in [
            (
                missing,
                f"--pidfile {missing!r}: cannot write the pid file: no directory"
                f" {os.path.dirname(missing)}",
            ),
            (directory, f"--pidfile {directory!r}: cannot write the pid file: a directory"),
        ]:
            self.err.seek(0)
            self.err.truncate()
            exit = self.assertRaises(SystemExit, self.parseUnder, path)
            self.assertEqual(exit.code, 1)
            self.assertEqual(self.err.getvalue(), f"twistd smtpd: {line}; see --help\n")

    def test_directoryNotWritable(self) -> None:
        """
        A pid file in a directory the process cannot write (C{twistd}
        writes it before it switches users) is refused in one line, where
        C{twistd} ended with C{PermissionError}'s traceback.  Run as root,
        it is checked as nobody, whom the directory's mode keeps out.
        """
        # Out of the test's directory, which nobody may not enter.
        directory = tempfile.mkdtemp(prefix="smtpd-")
        self.addCleanup(os.rmdir, directory)
        os.chmod(directory, 0o555)
        path = os.path.join(directory, "twistd.pid")
        with _asNobody():
            e = self.assertRaises(usage.UsageError, checkPidFile, path)
        self.assertEqual(
            str(e),
            f"--pidfile {path!r}: cannot write the pid file: its directory {directory}"
            " cannot be written",
        )

    def test_leftOver(self) -> None:
        """
        A pid file left by an earlier start is refused in one line when it
        holds no process id or is no regular file, and when the process it
        names is running (rather than with C{twistd}'s six lines); one
        naming this very process (a start after a crash in a container,
        where the server always has the same process id) is removed, as
        C{twistd} removes one naming a process gone.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "twistd.pid")
        os.mkfifo(os.path.join(directory, "fifo.pid"))
        for content, line in [
            ("abc\n", f"--pidfile {path!r}: holds no process id ('abc'); remove it"),
            (
                f"{os.getppid()}\n",
                f"--pidfile {path!r}: process {os.getppid()} it names is running (another"
                " server?): stop it, or remove the file if that process is not one",
            ),
        ]:
            with open(path, "w") as f:
                f.write(content)
            self.err.seek(0)
            self.err.truncate()
            exit = self.assertRaises(SystemExit, self.parseUnder, path)
            self.assertEqual(exit.code, 1)
            self.assertEqual(self.err.getvalue(), f"twistd smtpd: {line}; see --help\n")
        fifo = os.path.join(directory, "fifo.pid")
        self.err.seek(0)
        self.err.truncate()
        self.assertRaises(SystemExit, self.parseUnder, fifo)
        self.assertEqual(
            self.err.getvalue(),
            f"twistd smtpd: --pidfile {fifo!r}: cannot read the pid file: a named pipe;"
            " see --help\n",
        )
        with open(path, "w") as f:
            f.write(f"{os.getpid()}\n")
        self.parseUnder(path)
        self.assertFalse(os.path.exists(path))

    def test_runUserCannotRemove(self) -> None:
        """
        Under C{--uid} (started as root), a pid file in a directory the
        run user cannot write would stay at every stop, with C{twistd}'s
        line naming neither the file nor the fix: a warning line at start
        says so; none when the directory is the run user's.
        """
        if os.geteuid() != 0:
            raise SkipTest("needs root, to take another user's identity")
        import pwd
        import shutil
        import tempfile

        nobody = pwd.getpwnam("nobody")
        # Not under the checkout, whose directories that user may not enter.
        directory = tempfile.mkdtemp(prefix="smtpd-")
        self.addCleanup(shutil.rmtree, directory, True)
        os.chmod(directory, 0o755)
        path = os.path.join(directory, "twistd.pid")
        config = _tap.Options()
        config.parent = {"pidfile": path, "uid": nobody.pw_uid, "gid": None}  # type: ignore[attr-defined]
        config.parseOptions(["--sink"])
        self.assertEqual(
            config["unused"],
            [
                f"--pidfile {path!r}: user nobody (--uid) cannot remove it when the server"
                f" stops (it cannot write {directory}), so it stays; put it in a directory"
                " of that user's (RuntimeDirectory= in systemd)"
            ],
        )
        os.chown(directory, nobody.pw_uid, -1)
        config = _tap.Options()
        config.parent = {"pidfile": path, "uid": nobody.pw_uid, "gid": None}  # type: ignore[attr-defined]
        config.parseOptions(["--sink"])
        self.assertEqual(config["unused"], [])

    def test_accepted(self) -> None:
        """
        A pid file in a directory that exists, an existing file, and none
        (C{--pidfile=}) pass.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        existing = os.path.join(directory, "old.pid")
        with open(existing, "w") as f:
            f.write(f"{_deadPid()}\n")
        for path in [os.path.join(directory, "twistd.pid"), existing, ""]:
            self.parseUnder(path)
        self.assertEqual(self.err.getvalue(), "")


@contextlib.contextmanager
def _asNobody() -> Iterator[None]:
    """
    Run the block as the user nobody when this process is root (whom a
    directory's mode does not keep out), as it is otherwise.
    """
    if os.geteuid() != 0:
        yield
        return
    nobody = pwd.getpwnam("nobody")
    os.setegid(nobody.pw_gid)
    os.seteuid(nobody.pw_uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def _deadPid() -> int:
    """
    A process id no process has: that of a child that has ended.
    """
    import subprocess

    with subprocess.Popen(["true"]) as child:
        child.wait()
    return child.pid


class FilesGoneAtStartTests(SynchronousTestCase):
    """
    A listener's C{dhParameters} file removed between the reading of the
    options and the making of the service (C{makeService}) ends C{twistd}
    with one line, as one missing when the options are read does, not
    with a traceback.
    """

    def setUp(self) -> None:
        from tests.test_tlsresume import FFDHE2048

        self.err = io.StringIO()
        self.patch(sys, "__stderr__", self.err)
        directory = os.path.abspath(self.mktemp())
        issued = CertificateAuthority(directory).server("localhost")
        self.parameters = os.path.join(directory, "dh.pem")
        with open(self.parameters, "w") as f:
            f.write(FFDHE2048)
        self.description = (
            f"ssl:0:interface=127.0.0.1:privateKey={issued.keyPath}"
            f":certKey={issued.certificatePath}:dhParameters={self.parameters}"
        )

    def assertOneLine(self, flag: str, build: Callable[[], object]) -> None:
        """
        C{build()} ends with C{SystemExit(1)} and the line naming C{flag},
        the endpoint string and the missing file.
        """
        exit = self.assertRaises(SystemExit, build)
        self.assertEqual(exit.code, 1)
        self.assertEqual(
            self.err.getvalue(),
            f"twistd smtpd: {flag} {self.description!r}: cannot read dhParameters"
            f" {self.parameters}: No such file or directory; see --help\n",
        )

    def test_metrics(self) -> None:
        """
        C{--metrics} over TLS: its context is made as the service is, and
        the line names the flag, the endpoint and the file.
        """
        config = parse("--sink", "--metrics", self.description)
        os.remove(self.parameters)
        self.assertOneLine("--metrics", lambda: _tap.makeService(config))

    def test_listen(self) -> None:
        """
        An C{ssl:} listener with keys of its own: the same line, naming
        C{--listen}.
        """
        config = parse("--sink", "--listen", self.description)
        os.remove(self.parameters)
        self.assertOneLine("--listen", lambda: _tap.makeService(config))

    def test_workersMetrics(self) -> None:
        """
        The metrics listener of the parent of C{--workers}: the same line,
        and the directory made for the workers' metrics is removed, as no
        worker ever writes into it.
        """
        from twisted.application.service import MultiService

        from twisted_smtpd._twistd.metricsservice import WorkerMetrics

        class Pool(MultiService):
            onWorkerEnded: list[object] = []

        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        parse("--sink", "--metrics", self.description)
        os.remove(self.parameters)
        self.assertOneLine("--metrics", lambda: WorkerMetrics(Pool(), self.description, directory))
        self.assertFalse(os.path.exists(directory))
