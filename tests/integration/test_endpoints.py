# -*- test-case-name: tests.integration.test_endpoints -*-
"""
C{twistd smtpd} listening on each kind of endpoint: C{tcp:}, C{ssl:}
(implicit TLS), C{unix:}, C{systemd:} (socket activation) and C{haproxy:}
behind a real HAProxy sending PROXY protocol version 1 and 2.
"""

from __future__ import annotations

import os
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import time

from cryptography import x509

from tests.certs import CertificateAuthority
from tests.integration import recordinghandler
from tests.integration.helpers import (
    _TWISTD,
    CLIENT_TIMEOUT,
    RECIPIENT,
    SENDER,
    START_TIMEOUT,
    STOP_TIMEOUT,
    ImplicitTLSSMTP,
    ServerFailed,
    ServerTestCase,
    UnixSMTP,
    connect,
    freePort,
    message,
    readReply,
    requireProgram,
    twistdEnvironment,
)

HANDLER = "tests.integration.recordinghandler:make"

# Runs twistd with the socket given in SMTPD_TEST_FD as descriptor 3 and the
# variables systemd sets for socket activation, LISTEN_PID being the pid of
# the process that will run twistd: this one, as exec keeps the pid.
_SYSTEMD = (
    "import os, sys\n"
    "fd = int(os.environ.pop('SMTPD_TEST_FD'))\n"
    "if fd != 3:\n"
    "    os.dup2(fd, 3)\n"
    "    os.close(fd)\n"
    "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1', LISTEN_FDNAMES='smtp')\n"
    "os.execv(sys.executable, [sys.executable, '-c', sys.argv[1], *sys.argv[2:]])\n"
)


class TCPTests(ServerTestCase):
    """
    A plain C{tcp:} listener.
    """

    def test_tcp(self) -> None:
        """
        A message sent to a C{tcp:} listener on 127.0.0.1 is stored.
        """
        self.startServer(listen=["tcp:0:interface=127.0.0.1"])
        body = message(1)
        self.assertEqual(self.smtp().sendmail(SENDER, [RECIPIENT], body), {})
        self.assertDelivered([body])
        self.stopServer()


class DualStackTests(ServerTestCase):
    """
    A C{tcp6:} listener taking IPv4 clients as IPv4-mapped addresses (here
    bound to C{::ffff:127.0.0.1}, so that only the loopback is reached).
    """

    def test_mappedClientIsIPv4(self) -> None:
        """
        An IPv4 client of a C{tcp6:} listener arrives as
        C{::ffff:127.0.0.1} and is served as C{127.0.0.1}: C{--xclient
        127.0.0.0/8} trusts it, the EHLO reply and the log name it
        C{127.0.0.1}.
        """
        self.startServer(
            "--sink",
            "--xclient",
            "127.0.0.0/8",
            "--no-reverse-lookup",
            listen=["tcp6:0:interface=\\:\\:ffff\\:127.0.0.1"],
            maildir=False,
        )
        client = smtplib.SMTP("127.0.0.1", self.server.port, timeout=CLIENT_TIMEOUT)
        self.addCleanup(client.close)
        code, text = client.ehlo()
        self.assertEqual(code, 250)
        self.assertIn(b"[127.0.0.1]", text)
        self.assertIn("xclient", client.esmtp_features)
        self.assertEqual(client.docmd("XCLIENT", "ADDR=192.0.2.7")[0], 220)
        client.quit()
        self.server.waitForLog(" close")
        self.stopServer()
        self.assertIn(" connect from 127.0.0.1:", self.server.output)
        self.assertNotIn("ffff", self.server.output.split("listening:")[-1].split("\n", 1)[1])


class ImplicitTLSTests(ServerTestCase):
    """
    An C{ssl:} listener without a key of its own serves implicit TLS (RFC
    8314) with the server's certificate.
    """

    def test_implicitTLS(self) -> None:
        """
        A client verifying the server's certificate against the test CA
        connects to C{ssl:0} and delivers a message; the server presents the
        certificate of C{--tls-cert}.
        """
        ca = CertificateAuthority(os.path.abspath(self.mktemp()))
        issued = ca.server("mail.example.com")
        self.startServer(
            "--tls-cert",
            issued.certificatePath,
            "--tls-key",
            issued.keyPath,
            listen=["ssl:0:interface=127.0.0.1"],
        )
        context = ssl.create_default_context(cafile=ca.certificatePath)
        client = ImplicitTLSSMTP(
            "mail.example.com",
            "127.0.0.1",
            self.server.port,
            context=context,
            timeout=CLIENT_TIMEOUT,
        )
        self.addCleanup(client.close)
        peer = client.sock.getpeercert(binary_form=True)
        assert peer is not None
        self.assertEqual(x509.load_der_x509_certificate(peer), issued.certificate)
        body = message(2)
        self.assertEqual(client.sendmail(SENDER, [RECIPIENT], body), {})
        client.quit()
        self.assertDelivered([body])
        self.stopServer()


class ProxiedOwnTLSTests(ServerTestCase):
    """
    C{haproxy:ssl:...} with keys of its own: the PROXY header arrives in
    plaintext before the TLS handshake the proxy passes through, as HAProxy
    sends it (C{send-proxy} with TLS passthrough).
    """

    def test_proxyHeaderBeforeTLS(self) -> None:
        """
        A PROXY v1 header, then a TLS handshake with the listener's own
        certificate: the session is greeted and names the proxied client.
        """
        ca = CertificateAuthority(os.path.abspath(self.mktemp()))
        issued = ca.server("mail.example.com")
        self.startServer(
            "--proxy-trusted",
            "127.0.0.1/32",
            listen=[
                "haproxy:ssl:0:interface=127.0.0.1"
                f":privateKey={issued.keyPath}:certKey={issued.certificatePath}"
            ],
        )
        raw = connect(self.server.port)
        self.addCleanup(raw.close)
        raw.sendall(b"PROXY TCP4 192.0.2.9 127.0.0.1 40000 25\r\n")
        context = ssl.create_default_context(cafile=ca.certificatePath)
        tls = context.wrap_socket(raw, server_hostname="mail.example.com")
        replies = tls.makefile("rb")
        self.assertEqual(readReply(replies)[0], 220)
        tls.sendall(b"EHLO client.example.com\r\n")
        code, lines = readReply(replies)
        self.assertEqual(code, 250)
        self.assertIn(b"[192.0.2.9]", lines[0])
        tls.sendall(b"QUIT\r\n")
        self.assertEqual(readReply(replies)[0], 221)
        tls.close()
        self.stopServer()


def _implicitTLS(
    port: int, context: ssl.SSLContext, name: str = "submission.example.com"
) -> x509.Certificate:
    """
    Make a TLS handshake with C{context} on C{port} of 127.0.0.1 and read
    the greeting: the certificate the server sent.

    @raise ssl.SSLError: The server refused the handshake.
    """
    with connect(port) as raw, context.wrap_socket(raw, server_hostname=name) as tls:
        peer = tls.getpeercert(binary_form=True)
        assert peer is not None
        replies = tls.makefile("rb")
        assert readReply(replies)[0] == 220
        return x509.load_der_x509_certificate(peer)


class OwnKeysPolicyTests(ServerTestCase):
    """
    An C{ssl:} listener with keys of its own serves its own certificate
    with the server's C{--tls-min-version} and C{--tls-ciphers}, as STARTTLS
    does, and SIGHUP reloads its files.
    """

    def setUp(self) -> None:
        self.ca = CertificateAuthority(os.path.abspath(self.mktemp()))
        self.shared = self.ca.server("mail.example.com")
        self.own = self.ca.server("submission.example.com")

    def startWithOwnKeys(self, *args: str) -> int:
        self.startServer(
            "--tls-cert",
            self.shared.certificatePath,
            "--tls-key",
            self.shared.keyPath,
            *args,
            listen=[
                "ssl:0:interface=127.0.0.1"
                f":privateKey={self.own.keyPath}:certKey={self.own.certificatePath}"
            ],
        )
        port = self.server.port
        assert isinstance(port, int)
        return port

    def test_minimumVersion(self) -> None:
        """
        With C{--tls-min-version 1.3}, a client held to TLS 1.2 is refused;
        a TLS 1.3 client gets the listener's own certificate.
        """
        port = self.startWithOwnKeys("--tls-min-version", "1.3")
        old = ssl.create_default_context(cafile=self.ca.certificatePath)
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        self.assertRaises(ssl.SSLError, _implicitTLS, port, old)
        context = ssl.create_default_context(cafile=self.ca.certificatePath)
        self.assertEqual(_implicitTLS(port, context), self.own.certificate)
        self.stopServer()

    def test_ciphers(self) -> None:
        """
        A TLS 1.2 client offering only a cipher outside C{--tls-ciphers} is
        refused; one offering a cipher inside it gets that cipher.
        """
        port = self.startWithOwnKeys("--tls-ciphers", "ECDHE-ECDSA-AES256-GCM-SHA384")
        outside = ssl.create_default_context(cafile=self.ca.certificatePath)
        outside.maximum_version = ssl.TLSVersion.TLSv1_2
        outside.set_ciphers("ECDHE-ECDSA-AES128-SHA")
        self.assertRaises(ssl.SSLError, _implicitTLS, port, outside)
        inside = ssl.create_default_context(cafile=self.ca.certificatePath)
        inside.maximum_version = ssl.TLSVersion.TLSv1_2
        inside.set_ciphers("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-GCM-SHA384")
        self.assertEqual(_implicitTLS(port, inside), self.own.certificate)
        self.stopServer()

    def test_sighupReload(self) -> None:
        """
        After its files are replaced and SIGHUP, new handshakes get the new
        certificate; a file that cannot be read then keeps the last one,
        with one line naming the listener.
        """
        port = self.startWithOwnKeys()
        context = ssl.create_default_context(cafile=self.ca.certificatePath)
        self.assertEqual(_implicitTLS(port, context), self.own.certificate)
        renewed = self.ca.server("submission.example.com")
        shutil.copy(renewed.certificatePath, self.own.certificatePath)
        shutil.copy(renewed.keyPath, self.own.keyPath)
        self.server.signal(signal.SIGHUP)
        self.server.waitForLog("TLS certificates reloaded")
        self.assertEqual(_implicitTLS(port, context), renewed.certificate)
        self.assertIn("TLS certificates of ssl:0:interface=127.0.0.1", self.server.output)
        with open(self.own.certificatePath, "wb") as f:
            f.write(b"-----BEGIN CERTIFICATE-----\nbroken\n")
        self.server.signal(signal.SIGHUP)
        self.server.waitForLog("Reloading TLS certificates failed")
        self.assertIn(f"cannot read certKey {self.own.certificatePath}", self.server.output)
        self.assertEqual(_implicitTLS(port, context), renewed.certificate)
        self.stopServer()


class UNIXTests(ServerTestCase):
    """
    A C{unix:} listener.
    """

    def test_unix(self) -> None:
        """
        A message sent over a UNIX socket is stored.
        """
        # Socket paths are limited to about 100 bytes: keep it short.
        directory = tempfile.mkdtemp(prefix="smtpd-")
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "smtp.sock")
        self.startServer(listen=[f"unix:{path}"])
        self.assertEqual(self.server.ports, [path])
        client = UnixSMTP(timeout=CLIENT_TIMEOUT)
        self.addCleanup(client.close)
        try:
            code = client.connect(path)[0]
        except OSError as e:
            self.fail(f"cannot connect to {path}: {e}\n{self.server.output}")
        self.assertEqual(code, 220)
        body = message(3)
        self.assertEqual(client.sendmail(SENDER, [RECIPIENT], body), {})
        client.quit()
        self.assertDelivered([body])
        self.stopServer()


class SystemdTests(ServerTestCase):
    """
    Socket activation as systemd does it: the listening socket is inherited
    as descriptor 3, with C{LISTEN_PID}, C{LISTEN_FDS} and
    C{LISTEN_FDNAMES} set.
    """

    def test_socketActivation(self) -> None:
        """
        With C{--listen systemd:domain=INET:index=0} the server accepts
        connections on the socket it inherited, which the test created.
        """
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        self.startServer(
            listen=["systemd:domain=INET:index=0"],
            command=[sys.executable, "-c", _SYSTEMD, _TWISTD],
            env={"SMTPD_TEST_FD": str(listener.fileno())},
            passFds=[listener.fileno()],
        )
        self.assertEqual(self.server.ports, [port])
        # The test's copy is closed: only the server can accept now.
        listener.close()
        body = message(4)
        self.assertEqual(self.smtp(port).sendmail(SENDER, [RECIPIENT], body), {})
        self.assertDelivered([body])
        self.stopServer()

    def test_socketNotServable(self) -> None:
        """
        An inherited socket of another family than C{domain=} names (the
        IPv6 one C{ListenStream=25} makes, a UNIX one), one not listening
        (C{Accept=yes}) or not a stream (C{ListenDatagram=}) stops the start
        with one line saying what to change, rather than a server that says
        it listens and reads every client's address as garbage, or serves
        none.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        ipv6 = socket.socket(socket.AF_INET6)
        unix = socket.socket(socket.AF_UNIX)
        idle = socket.socket()
        datagram = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for s in (ipv6, unix, idle, datagram):
            self.addCleanup(s.close)
        ipv6.bind(("::1", 0))
        ipv6.listen(16)
        short = tempfile.mkdtemp(prefix="smtpd-")  # AF_UNIX paths are short
        self.addCleanup(shutil.rmtree, short, True)
        unix.bind(os.path.join(short, "s"))
        unix.listen(16)
        idle.bind(("127.0.0.1", 0))
        datagram.bind(("127.0.0.1", 0))
        description = "systemd:domain=INET:index=0"
        for inherited, why in [
            (ipv6, "the inherited socket is INET6, not INET: use domain=INET6"),
            (unix, "the inherited socket is UNIX, not INET: use domain=UNIX"),
            (idle, "the inherited socket is not listening (the .socket unit needs Accept=no)"),
            (
                datagram,
                "the inherited socket is not a stream socket (the .socket unit needs"
                " ListenStream=)",
            ),
        ]:
            result = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    _SYSTEMD,
                    _TWISTD,
                    "--nodaemon",
                    "--pidfile=",
                    "--logfile=-",
                    "smtpd",
                    "--sink",
                    "--no-reverse-lookup",
                    "--listen",
                    description,
                ],
                cwd=directory,
                env={**twistdEnvironment(), "SMTPD_TEST_FD": str(inherited.fileno())},
                pass_fds=[inherited.fileno()],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=START_TIMEOUT,
                check=False,
            )
            err = result.stderr.decode("utf-8", "replace")
            both = f"{why}\n{result.stdout.decode('utf-8', 'replace')}\n{err}"
            self.assertEqual(result.returncode, 1, both)
            self.assertEqual(err, f"twistd smtpd: --listen {description!r}: {why}; see --help\n")


class HAProxy:
    """
    A real HAProxy in the foreground, forwarding two frontends on 127.0.0.1
    to one backend port, with PROXY protocol version 1 on the first and
    version 2 on the second (with a CRC32c TLV after the addresses).
    """

    def __init__(self, executable: str, directory: str, backend: int | str) -> None:
        """
        @param backend: The backend's port on 127.0.0.1, or the path of its
            UNIX socket.
        """
        server = f"unix@{backend}" if isinstance(backend, str) else f"127.0.0.1:{backend}"
        self.v1 = freePort()
        self.v2 = freePort()
        self.config = os.path.join(directory, "haproxy.cfg")
        with open(self.config, "w") as f:
            f.write(
                "global\n"
                "    maxconn 64\n"
                "defaults\n"
                "    mode tcp\n"
                "    timeout connect 10s\n"
                "    timeout client 60s\n"
                "    timeout server 60s\n"
                f"frontend v1\n    bind 127.0.0.1:{self.v1}\n    default_backend smtpv1\n"
                f"frontend v2\n    bind 127.0.0.1:{self.v2}\n    default_backend smtpv2\n"
                f"backend smtpv1\n    server s1 {server} send-proxy\n"
                f"backend smtpv2\n    server s2 {server} send-proxy-v2"
                " proxy-v2-options crc32c\n"
            )
        self.process = subprocess.Popen(
            [executable, "-db", "-f", self.config],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def waitListening(self) -> None:
        """
        Wait until both frontends accept connections.

        @raise ServerFailed: If HAProxy exits or is not listening within
            L{START_TIMEOUT} seconds.
        """
        deadline = time.monotonic() + START_TIMEOUT
        for port in (self.v1, self.v2):
            while True:
                if self.process.poll() is not None:
                    raise ServerFailed(f"haproxy exited with {self.process.returncode}")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise ServerFailed("haproxy is not listening") from None
                    time.sleep(0.05)

    def stop(self) -> None:
        """
        Stop HAProxy and wait for it to exit.
        """
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT)


class HAProxyTests(ServerTestCase):
    """
    C{haproxy:} listeners behind a real HAProxy (Debian package C{haproxy});
    required when C{CI} is set.
    """

    def test_haproxyInstalled(self) -> None:
        """
        HAProxy is there to test against (in CI it must be).
        """
        executable = requireProgram(self, "haproxy", "haproxy")
        result = subprocess.run(
            [executable, "-v"], capture_output=True, timeout=START_TIMEOUT, check=False
        )
        self.assertIn(b"HAProxy version", result.stdout)

    def test_untrustedProxyRefused(self) -> None:
        """
        With C{--proxy-trusted} naming other networks, connections through
        HAProxy on 127.0.0.1 are refused with 421 and reach no handler.
        """
        executable = requireProgram(self, "haproxy", "haproxy")
        records = self.startRecording("192.0.2.0/24", "haproxy:tcp:0:interface=127.0.0.1")
        proxy = HAProxy(executable, self.directory, self.server.port)
        self.addCleanup(proxy.stop)
        proxy.waitListening()
        for port in [proxy.v1, proxy.v2]:
            error = self.assertRaises(
                smtplib.SMTPConnectError, smtplib.SMTP, "127.0.0.1", port, timeout=CLIENT_TIMEOUT
            )
            self.assertEqual(error.smtp_code, 421)
        self.assertEqual(recordinghandler.readRecords(records), [])
        proxy.stop()
        self.stopServer()

    def startRecording(self, trusted: str, listen: str) -> str:
        """
        Start a server on C{listen} trusting PROXY headers from C{trusted},
        whose handler records each message.

        @return: The file of its records (L{recordinghandler.readRecords}).
        """
        records = os.path.join(self.makeDirectory(), "records")
        self.startServer(
            "--handler",
            HANDLER,
            "--handler-option",
            f"directory={records}",
            "--proxy-trusted",
            trusted,
            maildir=False,
            listen=[listen],
        )
        return records

    def assertClientsSeen(self, proxy: HAProxy, records: str) -> None:
        """
        Send a message through each of C{proxy}'s frontends; the handler
        recording into C{records} must see each client's own address and
        port, not HAProxy's.  Then stop HAProxy and the server.
        """
        expected = []
        for index, port in enumerate([proxy.v1, proxy.v2]):
            client = self.smtp(port)
            clientAddress = list(client.sock.getsockname())
            body = message(index)
            self.assertEqual(client.sendmail(SENDER, [RECIPIENT], body), {})
            client.quit()
            expected.append((clientAddress, body.decode("ascii")))
        found = sorted(
            (r["remoteAddress"], r["body"]) for r in recordinghandler.readRecords(records)
        )
        self.assertEqual(found, sorted(expected))
        proxy.stop()
        self.stopServer()

    def test_unixBackendWithTrustedNetworks(self) -> None:
        """
        A C{haproxy:unix:} listener takes HAProxy's connections over its
        socket file although C{--proxy-trusted} names only IP networks
        (for the server's C{haproxy:tcp:} listeners): a UNIX socket peer has
        no address to match, and the file's permissions decide who connects.
        """
        executable = requireProgram(self, "haproxy", "haproxy")
        # Socket paths are limited to about 100 bytes: keep it short.
        directory = tempfile.mkdtemp(prefix="smtpd-")
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "smtp.sock")
        records = self.startRecording("192.0.2.0/24", f"haproxy:unix:{path}")
        proxy = HAProxy(executable, self.directory, path)
        self.addCleanup(proxy.stop)
        proxy.waitListening()
        self.assertClientsSeen(proxy, records)

    def test_proxyProtocol(self) -> None:
        """
        Through HAProxy's C{send-proxy} (version 1) and C{send-proxy-v2}, the
        handler sees the real client's address and port, not HAProxy's.
        """
        executable = requireProgram(self, "haproxy", "haproxy")
        records = self.startRecording("127.0.0.1/32", "haproxy:tcp:0:interface=127.0.0.1")
        proxy = HAProxy(executable, self.directory, self.server.port)
        self.addCleanup(proxy.stop)
        proxy.waitListening()
        self.assertClientsSeen(proxy, records)
