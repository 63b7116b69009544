# -*- test-case-name: tests.test_configvalues -*-
"""
Values of C{twistd smtpd} flags (and of L{ServerOptions}) written in a
form the server would take differently from what its reader sees: reply
text that is not US-ASCII, numbers in other digits or spellings than
ASCII digits, endpoint parameters given twice.  Each is one line naming
the flag.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import tempfile

from twisted.python import usage
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.certs import CertificateAuthority
from tests.test_deadlines import LogCatcher
from tests.test_tap import parse
from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd._serving import sni
from twisted_smtpd._twistd import tap as _tap
from twisted_smtpd._twistd import tapunused
from twisted_smtpd._twistd.taphandlers import splitHostPort
from twisted_smtpd.handlers._webhookclient import checkURL


class ReplyTextTests(SynchronousTestCase):
    """
    Text the server writes into its replies is printable US-ASCII (RFC 5321
    section 4.2): C{--banner}, and in the library every reply text setting.
    """

    def test_bannerRefused(self) -> None:
        """
        A C{--banner} with a non-ASCII letter, a tab, an escape character
        or a C1 control is refused in one line naming the flag, the
        character shown escaped.
        """
        for banner, shown, position in [
            ("h\xe9llo", "'\\xe9'", 1),
            ("a\tb", "'\\t'", 1),
            ("ab\x1b[2Jb", "'\\x1b'", 2),
            ("a\x85b", "'\\x85'", 1),
            ("\u202eevil", "'\\u202e'", 0),
        ]:
            e = self.assertRaises(usage.UsageError, parse, "--sink", "--banner", banner)
            self.assertEqual(
                str(e),
                "--banner: banner must be printable US-ASCII (RFC 5321 section 4.2),"
                f" got {shown} at position {position}",
            )
            self.assertTrue(str(e).isascii())

    def test_bannerAccepted(self) -> None:
        """
        Printable US-ASCII, spaces and punctuation included, is kept.
        """
        text = "ESMTP ready; see https://example.com/policy (no UCE) ~"
        self.assertEqual(parse("--sink", "--banner", text)["serverOptions"].banner, text)

    def test_greetingLineLength(self) -> None:
        """
        A banner that would make the 220 greeting longer than a reply line
        may be (512 octets with CRLF, RFC 5321 section 4.5.3.1.5) is
        refused naming the flag; one that fits exactly is kept.  In the
        library, a name alone that long is refused too.
        """
        fits = "x" * (512 - len("220 mx.example.com ESMTP \r\n"))
        options = parse("--sink", "--hostname", "mx.example.com", "--banner", fits)
        self.assertEqual(options["serverOptions"].banner, fits)
        e = self.assertRaises(
            usage.UsageError,
            parse,
            "--sink",
            "--hostname",
            "mx.example.com",
            "--banner",
            fits + "x",
        )
        self.assertEqual(
            str(e),
            "--banner: banner makes a 220 greeting of 513 octets, more than the 512 of a"
            " reply line (RFC 5321 section 4.5.3.1.5)",
        )
        e = self.assertRaises(ValueError, ServerOptions, name="a" * 600)
        self.assertTrue(str(e).startswith("name makes a 220 greeting of 612 octets"))

    def test_libraryRefuses(self) -> None:
        """
        L{ServerOptions} refuses with C{ValueError}, naming the setting, any
        reply text that is not printable US-ASCII: the banner, the server's
        name, the HELO reply and the AUTH-required reply.
        """
        for name in ["banner", "name", "heloResponse", "authRequiredMessage"]:
            value = "%s caf\xe9 %s"
            e = self.assertRaises(ValueError, ServerOptions, **{name: value})
            self.assertIn(f"{name} must be printable US-ASCII", str(e))
        ServerOptions(banner="plain ASCII", name="mx.example.com")


class WholeNumberFlagTests(SynchronousTestCase):
    """
    Numeric flags take ASCII digits only: not the other spellings Python's
    C{int()} and C{float()} take.
    """

    def test_countsRefused(self) -> None:
        """
        Arabic-Indic and full-width digits, underscores, spaces and a plus
        sign are refused by every whole-number flag, the value escaped.
        """
        for flag in [
            "size",
            "max-clients",
            "max-clients-per-ip",
            "max-recipients",
            "max-junk-commands",
            "workers",
        ]:
            for value, shown in [
                ("\u0661\u0662\u0663", "'\\u0661\\u0662\\u0663'"),
                ("\uff13", "'\\uff13'"),
                ("1_000", "'1_000'"),
                (" 12 ", "' 12 '"),
                ("+5", "'+5'"),
            ]:
                e = self.assertRaises(usage.UsageError, parse, "--sink", f"--{flag}", value)
                self.assertEqual(str(e), f"--{flag}: expected a whole number, got {shown}")

    def test_relayNumbers(self) -> None:
        """
        C{--relay-sessions} and C{--relay-idle} too.
        """
        for flag, what in [("relay-sessions", "a whole number"), ("relay-idle", "a number")]:
            for value in ["\uff12", "+2", "2_0"]:
                e = self.assertRaises(usage.UsageError, parse, "--relay", "mx", f"--{flag}", value)
                self.assertEqual(str(e), f"--{flag}: expected {what}, got {value!a}")

    def test_secondsRefused(self) -> None:
        """
        Seconds in other digits, with underscores, spaces or a plus sign
        are refused.
        """
        for flag in ["socket-timeout", "close-timeout", "handler-timeout", "worker-timeout"]:
            for value in ["\u0663", "\uff11\uff10", "1_0", " 5", "+1", "0x10"]:
                e = self.assertRaises(usage.UsageError, parse, "--sink", f"--{flag}", value)
                self.assertEqual(str(e), f"--{flag}: expected a number, got {value!a}")

    def test_accepted(self) -> None:
        """
        ASCII digits pass, with a decimal point or an exponent for seconds.
        """
        options = parse(
            "--sink",
            "--size",
            "1000",
            "--max-clients",
            "0",
            "--socket-timeout",
            "2.5",
            "--close-timeout",
            "1e1",
            "--handler-timeout",
            ".5e1",
        )["serverOptions"]
        self.assertEqual(
            (options.size, options.maxClients, options.socketTimeout, options.closeTimeout),
            (1000, 0, 2.5, 10.0),
        )
        self.assertEqual(options.handlerTimeout, 5.0)

    def test_negativeStillSaysBound(self) -> None:
        """
        A negative number is still refused as below the flag's bound.
        """
        e = self.assertRaises(usage.UsageError, parse, "--sink", "--max-clients", "-1")
        self.assertEqual(str(e), "--max-clients: must be 0 or more, got '-1'")

    def test_rates(self) -> None:
        """
        C{COUNT/SECONDS} flags take ASCII digits, no spaces.
        """
        for flag, what in [
            ("max-connection-rate", "COUNT"),
            ("max-auth-rate", "COUNT"),
            ("min-data-rate", "BYTES"),
        ]:
            for value in ["\uff11/\uff16", "1_0/6", " 10/ 6", "+1/6", "1/+6"]:
                e = self.assertRaises(usage.UsageError, parse, "--sink", f"--{flag}", value)
                self.assertEqual(str(e), f"--{flag}: expected {what}/SECONDS, got {value!a}")
            parse("--sink", f"--{flag}", "30/1.5")

    def test_libraryRates(self) -> None:
        """
        L{ServerOptions} takes a C{"COUNT/SECONDS"} rate in ASCII digits
        only, as the flags do.
        """
        for name in ["maxConnectionRate", "maxAuthRate", "minDataRate"]:
            for value in ["\uff13/6", " 3 / 6 ", "3_0/6", "+3/6"]:
                e = self.assertRaises(ValueError, ServerOptions, **{name: value})
                self.assertEqual(
                    str(e), f"{name} must be COUNT/SECONDS in ASCII digits, got {value!a}"
                )
            self.assertEqual(getattr(ServerOptions(**{name: "30/1.5"}), name), (30, 1.5))

    def test_rateWindowTooShort(self) -> None:
        """
        A C{COUNT/SECONDS} window shorter than a second (C{1/0.0000001}) is
        refused in one line naming the flag or setting: the deadline sweeper
        wakes every quarter of the C{minDataRate} window, so it would spin
        while a client is connected.  One second passes.
        """
        for flag, name, what in [
            ("min-data-rate", "minDataRate", "BYTES"),
            ("max-connection-rate", "maxConnectionRate", "COUNT"),
            ("max-auth-rate", "maxAuthRate", "COUNT"),
        ]:
            for value in ["1/0.0000001", "500/0.5", "1/1e-300"]:
                e = self.assertRaises(usage.UsageError, parse, "--sink", f"--{flag}", value)
                self.assertEqual(
                    str(e), f"--{flag}: SECONDS of {what}/SECONDS must be at least 1, got {value!a}"
                )
            for rate in ["1/0.0000001", (1, 1e-7), (500, 0.999)]:
                e = self.assertRaises(ValueError, ServerOptions, **{name: rate})
                seconds = 1e-7 if rate != (500, 0.999) else 0.999
                self.assertEqual(
                    str(e), f"{name} must be per at least 1 second, got per {seconds!r} s"
                )
            self.assertEqual(getattr(ServerOptions(**{name: (1, 1)}), name), (1, 1.0))
            self.assertEqual(
                getattr(parse("--sink", f"--{flag}", "1/1")["serverOptions"], name), (1, 1.0)
            )

    def test_timeoutTooShort(self) -> None:
        """
        C{--socket-timeout}, C{--handler-timeout} and
        C{--tls-handshake-timeout} (C{socketTimeout}, C{handlerTimeout},
        C{tlsHandshakeTimeout}) below 1 second are refused in one line
        naming the flag or setting: the deadline sweeper wakes every
        quarter of the shortest, so C{1e-7} would have it spin while a
        client is connected.  One second passes.
        """
        for flag, name in [
            ("socket-timeout", "socketTimeout"),
            ("handler-timeout", "handlerTimeout"),
            ("tls-handshake-timeout", "tlsHandshakeTimeout"),
        ]:
            for value in ["1e-7", "0.5", "0"]:
                e = self.assertRaises(usage.UsageError, parse, "--sink", f"--{flag}", value)
                self.assertEqual(str(e), f"--{flag}: must be at least 1, got {value!r}")
            for seconds in [1e-7, 0.999, 0, -1]:
                e = self.assertRaises(ValueError, ServerOptions, **{name: seconds})
                self.assertEqual(str(e), f"{name} must be at least 1 second, got {seconds!r}")
            self.assertEqual(getattr(ServerOptions(**{name: 1}), name), 1)
            self.assertEqual(getattr(parse("--sink", f"--{flag}", "1")["serverOptions"], name), 1)

    def test_relayPort(self) -> None:
        """
        The port of C{--relay HOST:PORT} is ASCII digits.
        """
        for target in ["mx:\uff12\uff15", "mx:\u0662\u0665", "[::1]:\uff12\uff15"]:
            e = self.assertRaises(usage.UsageError, parse, "--relay", target)
            self.assertTrue(str(e).endswith(f"invalid port {target.rpartition(':')[2]!a}"))
        self.assertEqual(splitHostPort("mx:2525", 25), ("mx", 2525))

    def test_webhookPort(self) -> None:
        """
        The port of a C{--webhook} URL is ASCII digits: hyperlink would take
        C{+8080} and full-width digits as a port.
        """
        for url in ["http://127.0.0.1:\uff18\uff10\uff18\uff10/in", "http://127.0.0.1:+8080/in"]:
            e = self.assertRaises(usage.UsageError, parse, "--webhook", url)
            self.assertIn("the port is not ASCII digits", str(e))
        self.assertEqual(checkURL("http://[::1]:8080/in?a=b:c"), b"http://[::1]:8080/in?a=b:c")
        self.assertEqual(checkURL("https://h.example/a:b"), b"https://h.example/a:b")


_LISTEN_USE = "use ssl:PORT for implicit TLS (RFC 8314) with the server's TLS settings"
_METRICS_USE = "use ssl:PORT:privateKey=KEY:certKey=CERT for HTTPS"


class EndpointParameterTests(SynchronousTestCase):
    """
    The parameters of C{--listen}, C{--metrics} and C{--lmtp-to} endpoint
    strings, in the server's own words.
    """

    def test_numbers(self) -> None:
        """
        A port, backlog, mode or index that is not ASCII digits is refused
        naming the flag, the kind of endpoint, the parameter and the value,
        escaped; not with Twisted's "invalid literal for int()".
        """
        for args, line in [
            (
                ("--listen", "ssl:port=abc"),
                "--listen 'ssl:port=abc': ssl: port must be ASCII digits, got 'abc'",
            ),
            (
                ("--listen", "tcp:25:backlog=abc"),
                "--listen 'tcp:25:backlog=abc': tcp: backlog must be ASCII digits, got 'abc'",
            ),
            (
                ("--listen", "ssl:465:backlog=x"),
                "--listen 'ssl:465:backlog=x': ssl: backlog must be ASCII digits, got 'x'",
            ),
            (
                ("--listen", "tcp:\uff12\uff15"),
                "--listen 'tcp:\uff12\uff15': tcp: port must be ASCII digits, got '\\uff12\\uff15'",
            ),
            (
                ("--listen", "haproxy:tcp:x"),
                "--listen 'haproxy:tcp:x': tcp: port must be ASCII digits, got 'x'",
            ),
            (
                ("--listen", "tcp:+25"),
                "--listen 'tcp:+25': tcp: port must be ASCII digits, got '+25'",
            ),
            (
                ("--listen", "unix:/tmp/s:mode=9"),
                "--listen 'unix:/tmp/s:mode=9': unix: mode must be octal digits (0-7), got '9'",
            ),
            (
                ("--listen", "systemd:domain=INET:index=x"),
                "--listen 'systemd:domain=INET:index=x': systemd: index must be ASCII digits,"
                " got 'x'",
            ),
            (("--listen", "tcp:"), "--listen 'tcp:': tcp: port is empty"),
            (("--metrics", "tcp:x"), "--metrics 'tcp:x': tcp: port must be ASCII digits, got 'x'"),
        ]:
            e = self.assertRaises(usage.UsageError, parse, "--sink", *args)
            self.assertEqual(str(e), line)

    def test_givenTwice(self) -> None:
        """
        A parameter given twice, by name or by place and by name, is
        refused: Twisted keeps the last one silently.
        """
        for args, line in [
            (
                ("--listen", "ssl:port=1:port=2"),
                "--listen 'ssl:port=1:port=2': ssl: port given twice",
            ),
            (
                ("--listen", "tcp:port=1:port=2"),
                "--listen 'tcp:port=1:port=2': tcp: port given twice",
            ),
            (("--listen", "tcp:1:port=2"), "--listen 'tcp:1:port=2': tcp: port given twice"),
            (
                ("--listen", "haproxy:tcp:25:interface=127.0.0.2:interface=::1"),
                "--listen 'haproxy:tcp:25:interface=127.0.0.2:interface=::1':"
                " tcp: interface given twice",
            ),
            (
                ("--metrics", "tcp:9101:port=9102"),
                "--metrics 'tcp:9101:port=9102': tcp: port given twice",
            ),
        ]:
            e = self.assertRaises(usage.UsageError, parse, "--sink", *args)
            self.assertEqual(str(e), line)

    def test_unescapedIPv6(self) -> None:
        """
        An IPv6 address written with bare colons (C{interface=::1}), which
        Twisted's tokenizer splits into more parameters, is refused saying
        that its colons need escaping, not that the interface is given
        twice or that there are too many values by place.
        """
        hint = "an IPv6 address needs each colon escaped as \\: (interface=\\:\\:1)"
        for description in [
            "tcp:0:interface=::1x",
            "tcp:0:interface=::1",
            "tcp6:25:interface=2001:db8::1",
            "haproxy:tcp6:port=25:interface=fe80::1:backlog=5",
        ]:
            e = self.assertRaises(usage.UsageError, parse, "--sink", "--listen", description)
            kind = description.removeprefix("haproxy:").partition(":")[0]
            self.assertEqual(str(e), f"--listen {description!r}: {kind}: {hint}")
        parse("--sink", "--listen", "tcp6:0:interface=\\:\\:1")
        e = self.assertRaises(usage.UsageError, parse, "--lmtp-to", "tcp:host=::1:port=24")
        self.assertEqual(
            str(e),
            "--lmtp-to 'tcp:host=::1:port=24': tcp: an IPv6 address needs each colon"
            " escaped as \\: (host=\\:\\:1)",
        )
        # A host name and a port by place are no IPv6 address.
        parse("--lmtp-to", "tcp:host=db:24")

    def test_backlogRange(self) -> None:
        """
        A C{backlog=} below 1 (which the kernel takes as the least queue
        it has, silently) or above 65535 is refused in one line naming
        the range, at start rather than when listening.
        """
        for description in [
            "tcp:0:backlog=-1",
            "tcp:0:backlog=0",
            "tcp:0:backlog=99999999999999",
            "unix:/tmp/s.sock:backlog=0",
        ]:
            e = self.assertRaises(usage.UsageError, parse, "--sink", "--listen", description)
            kind = description.partition(":")[0]
            self.assertEqual(
                str(e),
                f"--listen {description!r}: {kind}: backlog must be from 1 to 65535,"
                f" got {description.rpartition('=')[2]!r}",
            )
        parse("--sink", "--listen", "tcp:0:interface=127.0.0.1:backlog=65535")

    def test_unixValues(self) -> None:
        """
        A C{unix:} listener string with an empty path, a C{mode=} beyond the
        permission bits (setuid, setgid or sticky bit, or above C{0o7777}),
        or a C{lockfile=} other than 0 or 1 (Twisted takes any other number
        as 1) is refused in one line naming the value, for C{--listen} and
        C{--metrics}; a C{lockfile=} of C{--lmtp-to} too.
        """
        for args, why in [
            (("--sink", "--listen", "unix:"), "unix: the UNIX socket path is empty"),
            (("--sink", "--listen", "unix:address="), "unix: the UNIX socket path is empty"),
            (("--sink", "--metrics", "unix:"), "unix: the UNIX socket path is empty"),
            (
                ("--sink", "--listen", "unix:/tmp/s.sock:mode=7777"),
                "unix: mode must be at most 777 (no setuid, setgid or sticky bit), got '7777'",
            ),
            (
                ("--sink", "--listen", "unix:/tmp/s.sock:mode=1660"),
                "unix: mode must be at most 777 (no setuid, setgid or sticky bit), got '1660'",
            ),
            (
                ("--sink", "--metrics", "unix:/tmp/s.sock:mode=0o17777"),
                "unix: mode must be at most 777 (no setuid, setgid or sticky bit), got '0o17777'",
            ),
            (
                ("--sink", "--listen", "unix:/tmp/s.sock:lockfile=2"),
                "unix: lockfile must be 0 or 1, got '2'",
            ),
            (
                ("--sink", "--metrics", "unix:/tmp/s.sock:lockfile=-1"),
                "unix: lockfile must be 0 or 1, got '-1'",
            ),
            (
                ("--lmtp-to", "unix:/run/lmtp:lockfile=10"),
                "unix: lockfile must be 0 or 1, got '10'",
            ),
        ]:
            e = self.assertRaises(usage.UsageError, parse, *args)
            self.assertEqual(str(e), f"{args[-2]} {args[-1]!r}: {why}")
        parse("--sink", "--listen", "unix:/tmp/s.sock:mode=0777:lockfile=1")
        parse("--sink", "--listen", "unix:/tmp/s.sock:mode=0o600:lockfile=0")
        parse("--lmtp-to", "unix:/run/lmtp:lockfile=0")

    def test_trailingBackslash(self) -> None:
        """
        An endpoint string ending in a backslash that escapes nothing, which
        Twisted's tokenizer fails on with C{RuntimeError: generator raised
        StopIteration}, is refused in one line, for each flag taking one;
        an escaped backslash at the end is a backslash.
        """
        for args in [
            ("--sink", "--listen", "tcp:0:interface=127.0.0.1\\"),
            ("--sink", "--listen", "haproxy:unix:/tmp/s\\\\\\"),
            ("--sink", "--metrics", "tcp:0\\"),
            ("--lmtp-to", "tcp:h:24\\"),
        ]:
            e = self.assertRaises(usage.UsageError, parse, *args)
            self.assertEqual(
                str(e),
                f"{args[-2]} {args[-1]!r}: a backslash at the end escapes nothing"
                " (write \\\\ for a backslash)",
            )
        parse("--sink", "--listen", "unix:/tmp/s\\\\")

    def test_unknownAndTooMany(self) -> None:
        """
        An unknown parameter, or more values by place than the kind takes,
        is named in the server's words, not as a TypeError of Twisted's
        private function.
        """
        for args, why in [
            (
                ("--sink", "--listen", "tcp:25:foo=1"),
                "tcp: unknown parameter 'foo'; known: port, interface, backlog",
            ),
            (
                ("--sink", "--listen", "tcp:0:127.0.0.1:50:9"),
                "tcp: 4 values by place, at most 3: port, interface, backlog",
            ),
            (
                ("--sink", "--listen", "unix:/tmp/s:bogus=1"),
                "unix: unknown parameter 'bogus'; known: address, mode, backlog, lockfile",
            ),
            (
                ("--lmtp-to", "tcp:h:24:foo=1"),
                "tcp: unknown parameter 'foo'; known: host, port, timeout, bindAddress",
            ),
            (
                ("--lmtp-to", "unix:/x:checkPID=0"),
                "unix: unknown parameter 'checkPID'; known: path, timeout, lockfile",
            ),
        ]:
            e = self.assertRaises(usage.UsageError, parse, *args)
            self.assertEqual(str(e), f"{args[-2]} {args[-1]!r}: {why}")
        parse("--lmtp-to", "tcp:127.0.0.1:24:bindAddress=127.0.0.1")

    def test_lmtpTo(self) -> None:
        """
        C{--lmtp-to}: a missing port, a port or timeout in other digits, a
        parameter given twice.
        """
        for description, why in [
            ("tcp:", "tcp: needs a port"),
            ("tcp:h:x", "tcp: port must be ASCII digits, got 'x'"),
            ("tcp:h:\uff12\uff14", "tcp: port must be ASCII digits, got '\\uff12\\uff14'"),
            ("tcp:h:24:timeout=x", "tcp: timeout must be ASCII digits, got 'x'"),
            ("tcp:h:24:port=25", "tcp: port given twice"),
        ]:
            e = self.assertRaises(usage.UsageError, parse, "--lmtp-to", description)
            self.assertEqual(str(e), f"--lmtp-to {description!r}: {why}")

    def test_lmtpToTimeout(self) -> None:
        """
        A C{timeout=} of C{--lmtp-to} below 1 second is refused at start:
        with 0 every connection fails as timed out, with a negative one
        every connection attempt fails with Twisted's C{AssertionError}, so
        that every message would be refused 451.
        """
        for description in [
            "tcp:127.0.0.1:24:timeout=0",
            "tcp:127.0.0.1:24:timeout=-1",
            "tls:127.0.0.1:24:timeout=0",
            "unix:/run/dovecot/lmtp:timeout=0",
        ]:
            e = self.assertRaises(usage.UsageError, parse, "--lmtp-to", description)
            kind = description.partition(":")[0]
            self.assertEqual(
                str(e),
                f"--lmtp-to {description!r}: {kind}: timeout must be at least 1 (seconds),"
                f" got {description.rpartition('=')[2]!r}",
            )
        parse("--lmtp-to", "tcp:127.0.0.1:24:timeout=1")

    def test_tlsEndpointRefused(self) -> None:
        """
        Twisted's C{tls:} server endpoint (a directory of certificates
        first, port 443 of every address by default, TLS settings of its
        own) is refused in one line pointing to C{ssl:}, behind
        C{haproxy:} and in any case too, for C{--listen} and for
        C{--metrics}: C{tls:465} would listen on port 443.
        """
        refused = (
            "tls: is not supported (Twisted's tls: server endpoint reads a directory of"
            " certificates first and listens on port 443 of every address by default)"
        )
        for flag, description, use in [
            ("--listen", "tls:465", _LISTEN_USE),
            ("--listen", "haproxy:tls:465", _LISTEN_USE),
            ("--listen", "TLS:465:port=465:interface=127.0.0.1", _LISTEN_USE),
            ("--metrics", "tls:9101", _METRICS_USE),
            ("--metrics", "haproxy:tls:/etc/certs:port=9101", _METRICS_USE),
        ]:
            e = self.assertRaises(usage.UsageError, parse, "--sink", flag, description)
            self.assertEqual(str(e), f"{flag} {description!r}: {refused}; {use}")

    def test_accepted(self) -> None:
        """
        Ordinary endpoint strings still parse, keywords in any order.
        """
        parse("--sink", "--listen", "tcp:0:interface=127.0.0.1:backlog=10")
        parse("--sink", "--listen", "tcp:interface=127.0.0.1:port=0")
        parse("--sink", "--listen", "haproxy:tcp:0:interface=127.0.0.1")
        parse("--sink", "--listen", "unix:/tmp/smtpd.sock:mode=660:lockfile=0")
        parse("--lmtp-to", "tcp:host=127.0.0.1:24")
        parse("--lmtp-to", "tcp:127.0.0.1:24:timeout=5")
        parse("--lmtp-to", "unix:path=/run/dovecot/lmtp")


class ProxiedEndpointTests(SynchronousTestCase):
    """
    Every check of a C{--listen} or C{--metrics} endpoint string looks
    through C{haproxy:} as the listener does: what is refused (or taken)
    without it is refused (or taken) with it, in the same words.
    """

    def test_metricsPortRange(self) -> None:
        """
        A C{--metrics} port above 65535 behind C{haproxy:} is refused while
        the options are read, as without it and as for C{--listen}.
        """
        for flag in ("--listen", "--metrics"):
            for description in ("haproxy:tcp:70000", "haproxy:ssl:70000"):
                if flag == "--metrics" and "ssl" in description:
                    continue
                e = self.assertRaises(usage.UsageError, parse, "--sink", flag, description)
                self.assertEqual(
                    str(e), f"{flag} {description!r}: port 70000 is out of range (0-65535)"
                )

    def test_proxyGivenTwice(self) -> None:
        """
        C{haproxy:} given twice (each connection would have to send two
        PROXY headers) is refused for C{--metrics} as for C{--listen}.
        """
        for flag in ("--listen", "--metrics"):
            description = "haproxy:HAPROXY:tcp:0:interface=127.0.0.1"
            e = self.assertRaises(usage.UsageError, parse, "--sink", flag, description)
            self.assertEqual(
                str(e),
                f"{flag} {description!r}: haproxy: given twice (one PROXY header per connection)",
            )

    def test_metricsSSLFiles(self) -> None:
        """
        The files of a C{--metrics haproxy:ssl:} endpoint are read by the
        names Twisted gives them, by place as by name: C{haproxy:} is not
        taken for the kind and the kind for the port, which would read the
        port as the key file and the key file as the certificate.
        """
        issued = CertificateAuthority(self.mktemp()).server("mx.example.com")
        key, cert = issued.keyPath, issued.certificatePath
        missing = os.path.abspath(self.mktemp())
        for description in [
            f"ssl:0:{key}:certKey={cert}",
            f"haproxy:ssl:0:{key}:certKey={cert}",
            f"haproxy:ssl:0:privateKey={key}:certKey={cert}",
        ]:
            parse("--sink", "--metrics", description)
        for description, why in [
            (f"haproxy:ssl:0:{missing}:certKey={cert}", f"cannot read privateKey {missing}"),
            (f"haproxy:ssl:0:{key}:{missing}", f"cannot read certKey {missing}"),
            (f"haproxy:ssl:70000:{key}:{cert}", "port 70000 is out of range (0-65535)"),
            (
                f"haproxy:ssl:0:{key}:{cert}:sslmethod=TLSv1_METHOD",
                "sslmethod=TLSv1_METHOD is refused: it would pin the TLS version",
            ),
        ]:
            e = self.assertRaises(usage.UsageError, parse, "--sink", "--metrics", description)
            self.assertTrue(
                str(e).startswith(f"--metrics {description!r}: {why}"), f"{e} does not say {why}"
            )


class SocketDirectoryTests(SynchronousTestCase):
    """
    A C{unix:} listener (C{--listen}, C{--metrics}) whose socket would be
    made in a directory that does not exist is refused while the options
    are read, before anything listens.
    """

    def shortDirectory(self) -> str:
        """
        A new directory with a short path, which a UNIX socket's fits in.
        """
        import shutil
        import tempfile

        directory = tempfile.mkdtemp(prefix="smtpd-test-", dir="/tmp")
        self.addCleanup(shutil.rmtree, directory, True)
        return directory

    def test_missingDirectory(self) -> None:
        """
        The directory missing, or a file where it should be, is one line
        naming the flag, the endpoint and the directory; behind
        C{haproxy:} too.
        """
        afile = os.path.join(self.shortDirectory(), "f")
        with open(afile, "w"):
            pass
        for flag, description, directory, why in [
            ("--listen", "unix:/no/such/dir/sock", "/no/such/dir", "does not exist"),
            ("--listen", "haproxy:unix:/no/such/dir/sock", "/no/such/dir", "does not exist"),
            (
                "--listen",
                "unix:address=/no/such/dir/sock:mode=660",
                "/no/such/dir",
                "does not exist",
            ),
            ("--metrics", "unix:/no/such/dir/sock", "/no/such/dir", "does not exist"),
            ("--metrics", "haproxy:unix:/no/such/dir/sock", "/no/such/dir", "does not exist"),
            ("--listen", f"unix:{afile}/sock", afile, "is not a directory"),
        ]:
            e = self.assertRaises(usage.UsageError, parse, "--sink", flag, description)
            self.assertEqual(
                str(e),
                f"{flag} {description!r}: the directory of the UNIX socket {why}: {directory}",
            )

    def test_directoryNotWritable(self) -> None:
        """
        A directory this process cannot write (the socket is bound before
        C{twistd --uid} switches users) is one line too: the start would
        fail to take the socket's lock file, and C{--check-config} called
        it OK.  Run as root, it is checked as nobody, whom the directory's
        mode keeps out.
        """
        from twisted.internet.endpoints import serverFromString
        from twisted.internet.testing import MemoryReactor

        from tests.test_configerrors import _asNobody
        from twisted_smtpd._twistd.tapconfig import checkSocketPath

        directory = self.shortDirectory()
        os.chmod(directory, 0o555)
        description = f"unix:{directory}/smtpd.sock"
        endpoint = serverFromString(MemoryReactor(), description)
        with _asNobody():
            e = self.assertRaises(
                usage.UsageError, checkSocketPath, "listen", description, endpoint, "."
            )
        self.assertEqual(
            str(e),
            f"--listen {description!r}: the directory of the UNIX socket cannot be written:"
            f" {directory}",
        )

    def test_existingDirectory(self) -> None:
        """
        A socket in a directory that exists is taken, its path absolute or
        relative to the directory the server runs in.
        """
        directory = self.shortDirectory()
        parse("--sink", "--listen", f"unix:{directory}/smtpd.sock")
        parse("--sink", "--metrics", f"unix:{directory}/metrics.sock")
        parse("--sink", "--listen", "unix:smtpd.sock")

    def test_pathTooLong(self) -> None:
        """
        A socket path longer than a UNIX socket address holds (107 bytes
        on Linux) is refused while the options are read, naming its
        length, not once C{twistd} has started (C{AF_UNIX path too long}).
        """
        from twisted_smtpd._twistd.tapconfig import MAX_SOCKET_PATH

        directory = self.shortDirectory()
        longest = os.path.join(directory, "s" * (MAX_SOCKET_PATH - len(directory) - 1))
        parse("--sink", "--listen", f"unix:{longest}")
        path = longest + "x"
        for flag in ("--listen", "--metrics"):
            description = f"unix:{path}"
            e = self.assertRaises(usage.UsageError, parse, "--sink", flag, description)
            self.assertEqual(
                str(e),
                f"{flag} {description!r}: the UNIX socket path is too long:"
                f" {MAX_SOCKET_PATH + 1} bytes, at most {MAX_SOCKET_PATH}",
            )

    def test_runDirectory(self) -> None:
        """
        A relative path is taken from C{twistd --rundir}, where the server
        listens; under C{twistd --chroot}, and in a worker of C{--workers}
        (whose listeners are its parent's), nothing is checked.
        """
        from twisted_smtpd._twistd.tapconfig import checkEndpoint
        from twisted_smtpd._twistd.taphost import socketDirectory
        from twisted_smtpd._twistd.workerlisteners import INHERITED

        rundir = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(rundir, "run"))
        self.assertEqual(socketDirectory({"rundir": rundir}, 1), rundir)
        self.assertEqual(socketDirectory({"rundir": rundir}, 2), ".")
        self.assertIsNone(socketDirectory({"rundir": rundir, "chroot": "/srv"}, 1))
        self.patch(os, "environ", {**os.environ, INHERITED: "3,1,tcp:25"})
        self.assertIsNone(socketDirectory({}, 1))
        checkEndpoint("unix:run/smtpd.sock", rundir)
        checkEndpoint("unix:/no/such/dir/sock", None)
        e = self.assertRaises(usage.UsageError, checkEndpoint, "unix:run/smtpd.sock", ".")
        self.assertIn(f"does not exist: {os.path.abspath('run')}", str(e))


class IgnoredHostsTests(SynchronousTestCase):
    """
    C{--ignored-hosts}: IP addresses, comma-separated.
    """

    def test_emptyEntryRefused(self) -> None:
        """
        An empty value or an empty entry (a comma too many, a variable
        left unset) is refused in one line, not taken as no address.
        """
        for value in ("", " ", "192.0.2.7,", ",192.0.2.7", "192.0.2.7,,192.0.2.8"):
            e = self.assertRaises(usage.UsageError, parse, "--sink", "--ignored-hosts", value)
            self.assertEqual(
                str(e),
                f"--ignored-hosts {value!r}: an empty entry (expected IP addresses,"
                " comma-separated)",
            )
        options = parse("--sink", "--ignored-hosts", "192.0.2.7, ::ffff:192.0.2.8")
        # In ipaddress's normal form, which Python 3.13 writes otherwise
        # for an IPv4-mapped address (::ffff:192.0.2.8, not ::ffff:c000:208).
        mapped = str(ipaddress.ip_address("::ffff:192.0.2.8"))
        self.assertEqual(options["ignored-hosts"], ("192.0.2.7", mapped))


class NetworkFlagTests(SynchronousTestCase):
    """
    The CIDR networks of C{--proxy-trusted}, C{--xclient}, C{--xforward}
    and C{--limit-exempt}.
    """

    def test_hostBitsRefused(self) -> None:
        """
        A network with host bits set (C{10.0.0.1/8}) is refused in one line
        naming the flag and the value and saying which network and which
        address it could mean, as Postfix's C{mynetworks} and
        C{smtpd_authorized_xclient_hosts} refuse it ("non-null host address
        bits"), rather than taken silently as its whole network.
        """
        for flag in ("proxy-trusted", "xclient", "xforward", "limit-exempt"):
            for value, network, address in [
                ("10.0.0.1/8", "10.0.0.0/8", "10.0.0.1/32"),
                ("192.0.2.0/24, 2001:db8::1/64", "2001:db8::/64", "2001:db8::1/128"),
            ]:
                e = self.assertRaises(usage.UsageError, parse, "--sink", f"--{flag}", value)
                wrong = value.rpartition(",")[2].strip()
                self.assertEqual(
                    str(e),
                    f"--{flag}: {wrong!r} has host bits set: write {network} for the"
                    f" network or {address} for the address",
                )
        options = parse("--sink", "--proxy-trusted", "10.0.0.0/8,192.0.2.7,2001:db8::/32")
        self.assertEqual(options["proxy-trusted"], ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"])

    def test_libraryHostBitsRefused(self) -> None:
        """
        L{ServerOptions} refuses a network string with host bits set, as
        the flags do, with a C{ValueError} naming the setting and the value
        and saying both readings; a network, an address alone, C{True} and
        C{ipaddress} networks are still taken.
        """
        import ipaddress

        for name in ("useProxy", "useXClient", "useXForward", "limitExemptions"):
            for value, wrong, network, address in [
                ("10.0.0.1/8", "10.0.0.1/8", "10.0.0.0/8", "10.0.0.1/32"),
                (["192.0.2.0/24", "2001:db8::1/64"], "2001:db8::1/64", "2001:db8::/64", None),
            ]:
                e = self.assertRaises(ValueError, ServerOptions, **{name: value})
                address = address or "2001:db8::1/128"
                self.assertEqual(
                    str(e),
                    f"{name}: {wrong!r} has host bits set: write {network} for the"
                    f" network or {address} for the address",
                )
            options = ServerOptions(
                **{name: ["10.0.0.0/8", "192.0.2.7", ipaddress.ip_network("2001:db8::/32")]}
            )
            self.assertEqual(
                [str(n) for n in getattr(options, name)],
                ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"],
            )
            self.assertEqual(len(getattr(ServerOptions(**{name: True}), name)), 2)


class SubFlagNamingTests(SynchronousTestCase):
    """
    An error about a flag that only modifies a delivery names that flag,
    not the delivery flag.
    """

    def test_caBundles(self) -> None:
        """
        A missing, empty or non-PEM C{--relay-ca}, C{--webhook-ca} or
        C{--amqp-ca} is named as such.
        """
        missing = os.path.abspath(self.mktemp())
        notPEM = os.path.abspath(self.mktemp())
        with open(notPEM, "w") as f:
            f.write("not a certificate\n")
        for delivery, flag in [
            (("--relay", "mx.example"), "relay-ca"),
            (("--webhook", "https://127.0.0.1/in"), "webhook-ca"),
            (("--amqp", "amqps://u:p@127.0.0.1/%2F"), "amqp-ca"),
        ]:
            for path, why in [
                (missing, f"No such file or directory: {missing}"),
                ("", "the path is empty"),
                (notPEM, f"no PEM certificate in {notPEM!r}"),
            ]:
                e = self.assertRaises(usage.UsageError, parse, *delivery, f"--{flag}", path)
                self.assertEqual(str(e), f"--{flag}: {why}")

    def test_caForPlainURL(self) -> None:
        """
        C{--webhook-ca} with an C{http://} URL and C{--amqp-ca} with an
        C{amqp://} URL name the CA flag.
        """
        ca = CertificateAuthority(self.mktemp()).certificatePath
        e = self.assertRaises(
            usage.UsageError, parse, "--webhook", "http://127.0.0.1/in", "--webhook-ca", ca
        )
        self.assertEqual(str(e), "--webhook-ca needs an https:// --webhook URL")
        e = self.assertRaises(
            usage.UsageError, parse, "--amqp", "amqp://127.0.0.1/%2F", "--amqp-ca", ca
        )
        self.assertEqual(str(e), "--amqp-ca needs an amqps:// --amqp URL")

    def test_relayCredentialsHalf(self) -> None:
        """
        C{--relay-user} without C{--relay-password}, and the other way
        round, name the flag given and the one missing.
        """
        e = self.assertRaises(usage.UsageError, parse, "--relay", "mx", "--relay-user", "u")
        self.assertEqual(str(e), "--relay-user needs --relay-password")
        e = self.assertRaises(usage.UsageError, parse, "--relay", "mx", "--relay-password", "p")
        self.assertEqual(str(e), "--relay-password needs --relay-user")

    def test_relayPasswordEmpty(self) -> None:
        """
        An empty relay password (C{--relay-password ""}, C{--relay-auth
        USER:}) is refused in one line naming the flag: AUTH PLAIN, which
        the relay is asked first, has no empty password (RFC 4616), so every
        message would fail at the relay rather than the start.
        """
        for args, flag in [
            (("--relay-user", "u", "--relay-password", ""), "relay-password"),
            (("--relay-auth", "u:"), "relay-auth"),
        ]:
            e = self.assertRaises(usage.UsageError, parse, "--relay", "mx", *args)
            self.assertEqual(str(e), f"--{flag}: the password is empty")
        parse("--relay", "mx", "--relay-auth", "u:p:w")

    def test_otherModifiers(self) -> None:
        """
        An empty C{--webhook-secret}, an unusable C{--pipe-spool}, an empty
        or too long C{--amqp-queue}, a too long C{--amqp-routing-key} or
        C{--amqp-exchange}, and an empty relay user name each name their
        own flag.
        """
        missing = os.path.abspath(self.mktemp())
        amqp = ("--amqp", "amqp://u:p@127.0.0.1/%2F")
        for args, line in [
            (
                ("--webhook", "https://127.0.0.1/in", "--webhook-secret", ""),
                "--webhook-secret: the secret is empty",
            ),
            (
                ("--pipe", "cat", "--pipe-spool", missing),
                f"--pipe-spool {missing!r}: No such file or directory",
            ),
            ((*amqp, "--amqp-queue", ""), "--amqp-queue: the queue name is empty"),
            ((*amqp, "--amqp-queue", "q" * 256), "--amqp-queue: the queue name is over 255 octets"),
            (
                (*amqp, "--amqp-routing-key", "\xe9" * 128),
                "--amqp-routing-key: the routing key name is over 255 octets",
            ),
            (
                (*amqp, "--amqp-exchange", "x" * 256),
                "--amqp-exchange: the exchange name is over 255 octets",
            ),
            (("--relay", "mx", "--relay-auth", ":pw"), "--relay-auth: the user name is empty"),
            (
                ("--relay", "mx", "--relay-user", "", "--relay-password", "pw"),
                "--relay-user: the user name is empty",
            ),
        ]:
            e = self.assertRaises(usage.UsageError, parse, *args)
            self.assertEqual(str(e), line)
        parse(*amqp, "--amqp-exchange", "fanout", "--amqp-routing-key", "")

    def test_undecodableBytes(self) -> None:
        """
        A text value holding a byte that is not UTF-8 (a lone surrogate in
        Python's C{sys.argv}) is refused naming the flag, without showing
        the value (it may be a password), instead of failing at each use
        or, for C{--auth memory:}, with a traceback.
        """
        amqp = ("--amqp", "amqp://u:p@127.0.0.1/%2F")
        for args, flag in [
            (("--sink", "--auth", "memory:alice:s\udcffcret"), "--auth memory:..."),
            (("--relay", "mx", "--relay-auth", "alice:s\udcffcret"), "--relay-auth"),
            (
                ("--relay", "mx", "--relay-user", "alice", "--relay-password", "s\udcff"),
                "--relay-password",
            ),
            (
                ("--webhook", "https://127.0.0.1/in", "--webhook-secret", "k\udcffey"),
                "--webhook-secret",
            ),
            ((*amqp, "--amqp-queue", "q\udcff"), "--amqp-queue"),
            (("--amqp", "amqp://u:p\udcff@127.0.0.1/%2F"), "--amqp"),
        ]:
            e = self.assertRaises(usage.UsageError, parse, *args)
            self.assertEqual(str(e), f"{flag}: not UTF-8 text (a byte of it is not UTF-8)")


class UnusedFlagTests(SynchronousTestCase):
    """
    A flag given where it changes nothing is accepted, and warned of in one
    line at start.
    """

    def setUp(self) -> None:
        self.ca = CertificateAuthority(self.mktemp())
        self.server = self.ca.server("mx.example.com")

    def test_perAddressAtTotal(self) -> None:
        """
        C{--max-clients-per-ip} at or above C{--max-clients} changes
        nothing; below it, it does.
        """
        line = (
            "--max-clients-per-ip has no effect: --max-clients 10 refuses any connection"
            " past it first"
        )
        for perAddress in ("10", "20"):
            unused = parse("--sink", "--max-clients", "10", "--max-clients-per-ip", perAddress)
            self.assertIn(line, unused["unused"])
        unused = parse("--sink", "--max-clients", "10", "--max-clients-per-ip", "9")["unused"]
        self.assertEqual([u for u in unused if "max-clients-per-ip" in u], [])
        unused = parse("--sink", "--max-clients-per-ip", "9")["unused"]
        self.assertEqual([u for u in unused if "max-clients-per-ip" in u], [])

    def test_sizeBelowMinimum(self) -> None:
        """
        A C{--size} below the 64K octets RFC 5321 asks every server to
        accept is warned of at start; 64K, more, and no limit are not.
        """
        line = (
            "--size 1000 is below the 65536 octets RFC 5321 section 4.5.3.1.7 asks every"
            " server to accept: messages other servers take are refused"
        )
        self.assertIn(line, parse("--sink", "--size", "1000")["unused"])
        for size in ("65536", "0", "10240000"):
            unused = parse("--sink", "--size", size)["unused"]
            self.assertEqual([u for u in unused if u.startswith("--size")], [])

    def test_tlsWithoutTLS(self) -> None:
        """
        With STARTTLS disabled and no C{ssl:} listener, the TLS flags
        change nothing: one line each, logged once at start.
        """
        noTLS = "no listener offers TLS (STARTTLS is disabled and there is no ssl: listener)"
        config = parse(
            "--sink",
            "--disable",
            "STARTTLS",
            "--request-cert",
            "--tls-ciphers",
            "HIGH",
            "--tls-cert",
            self.server.combinedPath,
            "--tls-ca",
            self.ca.certificatePath,
        )
        expected = [
            f"--request-cert has no effect: {noTLS}",
            f"--tls-ciphers has no effect: {noTLS}",
            f"--tls-cert has no effect: {noTLS}",
            f"--tls-ca has no effect: {noTLS}",
        ]
        self.assertEqual(config["unused"], expected)
        log = LogCatcher(self)
        _tap.makeService(config)
        for line in expected:
            self.assertEqual(log.matching(line), [line])

    def test_ownKeysOnly(self) -> None:
        """
        With STARTTLS disabled and only an C{ssl:} listener with keys of
        its own, the server's certificate changes nothing; C{--request-cert}
        applies to that listener and is not warned of.
        """
        own = self.ca.server("own.example.com")
        listen = f"ssl:0:interface=127.0.0.1:privateKey={own.keyPath}:certKey={own.certificatePath}"
        config = parse(
            "--sink",
            "--listen",
            listen,
            "--disable",
            "STARTTLS",
            "--request-cert",
            "--tls-ca",
            self.ca.certificatePath,
            "--tls-cert",
            self.server.combinedPath,
        )
        self.assertEqual(
            config["unused"],
            [
                "--tls-cert has no effect: no listener offers the server's TLS (STARTTLS is"
                " disabled and every ssl: listener has keys of its own)"
            ],
        )

    def test_tlsCAWithoutRequestCert(self) -> None:
        """
        C{--tls-ca} without C{--request-cert}: no client certificate is
        asked for.
        """
        config = parse("--sink", "--tls-ca", self.ca.certificatePath)
        self.assertEqual(
            config["unused"],
            ["--tls-ca has no effect: no client certificate is asked for without --request-cert"],
        )

    def test_authFlagsWithoutAuth(self) -> None:
        """
        C{--allow-insecure-auth} and C{--auth-methods} without AUTH offered.
        """
        why = "AUTH is not offered (no --auth, no --handler whose onAuth decides it)"
        for args in [(), ("--disable", "AUTH")]:
            config = parse("--sink", *args, "--allow-insecure-auth", "--auth-methods", "PLAIN")
            self.assertEqual(
                config["unused"],
                [
                    f"--allow-insecure-auth has no effect: {why}",
                    f"--auth-methods has no effect: {why}",
                ],
            )

    def test_authWithoutTLS(self) -> None:
        """
        C{--auth} where no listener offers TLS (STARTTLS disabled, no
        C{ssl:} listener) and AUTH is not allowed in plain text: no client
        can authenticate, and with AUTH required every MAIL is refused.
        With C{--allow-insecure-auth} or an C{ssl:} listener, no line.
        """
        noTLS = "no listener offers TLS (STARTTLS is disabled and there is no ssl: listener)"
        args = ("--sink", "--disable", "STARTTLS", "--auth", "memory:a:b")
        self.assertEqual(
            parse(*args)["unused"],
            [
                "--auth has no effect: AUTH is offered only over TLS (no --allow-insecure-auth)"
                f" and {noTLS}; AUTH being required (no --auth-optional), all mail is refused"
            ],
        )
        self.assertEqual(
            parse(*args, "--auth-optional")["unused"],
            [
                "--auth has no effect: AUTH is offered only over TLS (no --allow-insecure-auth)"
                f" and {noTLS}"
            ],
        )
        self.assertEqual(parse(*args, "--allow-insecure-auth")["unused"], [])
        tls = ("--tls-cert", self.server.combinedPath)
        self.assertEqual(parse(*args, *tls, "--listen", "ssl:0", "--listen", "tcp:0")["unused"], [])

    def test_hiddenInLMTP(self) -> None:
        """
        C{--hide PIPELINING} and C{--hide ENHANCEDSTATUSCODES} with
        C{--lmtp}: an LMTP server always offers both (RFC 2033 section 5).
        Without C{--lmtp}, no line.
        """
        args = ("--sink", "--hide", "PIPELINING", "--hide", "ENHANCEDSTATUSCODES")
        why = "LMTP always offers it (RFC 2033 section 5)"
        self.assertEqual(
            parse(*args, "--lmtp")["unused"],
            [
                f"--hide PIPELINING has no effect: {why}",
                f"--hide ENHANCEDSTATUSCODES has no effect: {why}",
            ],
        )
        self.assertEqual(parse(*args)["unused"], [])

    def test_hiddenNeverOffered(self) -> None:
        """
        C{--hide CHUNKING} with C{--disable BDAT}, C{--hide REQUIRETLS}
        with no listener offering TLS, and C{--hide STARTTLS} where every
        listener is TLS from the start: the extension is never offered to
        be hidden.  Where it is offered, no line.
        """
        noTLS = "no listener offers TLS (STARTTLS is disabled and there is no ssl: listener)"
        config = parse(
            "--sink",
            "--disable",
            "BDAT",
            "--disable",
            "STARTTLS",
            "--hide",
            "CHUNKING",
            "--hide",
            "REQUIRETLS",
        )
        self.assertEqual(
            config["unused"],
            [
                "--hide CHUNKING has no effect: BDAT is disabled (--disable BDAT)",
                f"--hide REQUIRETLS has no effect: it is offered only over TLS, and {noTLS}",
            ],
        )
        tls = ("--tls-cert", self.server.combinedPath)
        config = parse("--sink", *tls, "--listen", "ssl:0", "--hide", "STARTTLS")
        self.assertEqual(
            config["unused"],
            [
                "--hide STARTTLS has no effect: every listener is TLS from the start (ssl:),"
                " where STARTTLS is never offered"
            ],
        )
        hidden = ("--hide", "CHUNKING", "--hide", "REQUIRETLS", "--hide", "STARTTLS")
        self.assertEqual(parse("--sink", *hidden)["unused"], [])
        listen = ("--listen", "ssl:0", "--listen", "tcp:0")
        self.assertEqual(parse("--sink", *tls, *listen, *hidden)["unused"], [])
        self.assertEqual(
            parse("--sink", *tls, "--listen", "ssl:0", "--disable", "STARTTLS", *hidden[:4])[
                "unused"
            ],
            [],
        )

    def test_hiddenWithoutEHLO(self) -> None:
        """
        C{--hide} with C{--disable EHLO}: HELO advertises no extension, so
        there is none to hide (one line, whatever the extensions).  With
        C{--lmtp}, whose LHLO cannot be disabled, or EHLO enabled, no line.
        """
        args = ("--sink", "--hide", "SIZE", "--hide", "DSN")
        self.assertEqual(
            parse(*args, "--disable", "EHLO")["unused"],
            ["--hide has no effect: EHLO is disabled (--disable EHLO): no extension is advertised"],
        )
        self.assertEqual(parse(*args, "--lmtp", "--disable", "EHLO")["unused"], [])
        self.assertEqual(parse(*args, "--disable", "HELO")["unused"], [])

    def test_tls12CiphersOnlyTLS13(self) -> None:
        """
        C{--tls-ciphers} naming no TLS 1.3 suite (C{TLS_*}) and no
        C{@SECLEVEL} with C{--tls-min-version 1.3}: only TLS 1.2 ciphers,
        which no handshake can use.  With a security level in it (which
        needs TLS 1.2 ciphers beside it, a C{@SECLEVEL} alone selecting no
        cipher), or TLS 1.2 allowed, no line.
        """
        tls = ("--sink", "--tls-cert", self.server.combinedPath)
        config = parse(*tls, "--tls-min-version", "1.3", "--tls-ciphers", "ECDHE+AESGCM")
        self.assertEqual(
            config["unused"],
            [
                "--tls-ciphers has no effect: it names only TLS 1.2 ciphers (no TLS_* suite,"
                " no @SECLEVEL) and --tls-min-version 1.3 allows only TLS 1.3"
            ],
        )
        cases = [
            ("ECDHE+AESGCM:@SECLEVEL=2", "1.3"),
            ("DEFAULT@SECLEVEL=2", "1.3"),
            ("ECDHE+AESGCM", "1.2"),
        ]
        if sni.SETS_TLS13_SUITES:
            # Before pyOpenSSL 25.2 a TLS 1.3 suite is refused at start.
            cases += [
                ("TLS_AES_256_GCM_SHA384", "1.3"),
                ("TLS_AES_256_GCM_SHA384:@SECLEVEL=2", "1.3"),
                ("ECDHE+AESGCM:TLS_AES_256_GCM_SHA384", "1.2"),
            ]
        for ciphers, version in cases:
            args = ("--tls-min-version", version, "--tls-ciphers", ciphers)
            self.assertEqual(parse(*tls, *args)["unused"], [], ciphers)

    def test_tls12CiphersBesideTLS13Suites(self) -> None:
        """
        C{--tls-ciphers} naming TLS 1.2 ciphers beside TLS 1.3 suites
        (C{TLS_*}) under C{--tls-min-version 1.3}: one line naming the TLS
        1.2 part, which OpenSSL drops without a word and the string may
        leave out; its C{@SECLEVEL}, which applies, is not named, even
        inside an element (C{DEFAULT@SECLEVEL=2}).
        """
        if not sni.SETS_TLS13_SUITES:
            raise SkipTest("this pyOpenSSL (before 25.2) cannot set TLS 1.3 suites")
        tls = ("--sink", "--tls-cert", self.server.combinedPath, "--tls-min-version", "1.3")
        for ciphers, ignored in [
            ("ECDHE+AESGCM:TLS_AES_256_GCM_SHA384", "ECDHE+AESGCM"),
            ("TLS_AES_256_GCM_SHA384:DEFAULT@SECLEVEL=2", "DEFAULT"),
            ("TLS_AES_256_GCM_SHA384 ECDHE+AESGCM,!aNULL:@SECLEVEL=2", "ECDHE+AESGCM:!aNULL"),
        ]:
            self.assertEqual(
                parse(*tls, "--tls-ciphers", ciphers)["unused"],
                [
                    f"--tls-ciphers: {ignored!r} has no effect: TLS 1.2 ciphers, and"
                    " --tls-min-version 1.3 allows only TLS 1.3 (only the TLS_* suites"
                    " and any @SECLEVEL of the string apply)"
                ],
                ciphers,
            )

    def test_jsonWithSyslog(self) -> None:
        """
        C{twistd --syslog} with C{--log-format json}: the JSON lines go
        where C{twistd} writes text without C{--syslog}, never to syslog;
        the line says where.  With text, or without C{--syslog}, no line.
        """
        logfile = os.path.abspath(self.mktemp())
        for parent, where in [
            ({"syslog": True, "nodaemon": True}, "standard output"),
            ({"syslog": True, "nodaemon": False, "logfile": logfile}, logfile),
            ({"syslog": True, "nodaemon": False}, os.path.abspath("twistd.log")),
        ]:
            config = _tap.Options()
            config.parent = {"pidfile": None, **parent}  # type: ignore[attr-defined]
            config.parseOptions(["--sink", "--log-format", "json"])
            self.assertEqual(
                config["unused"],
                [
                    f"twistd --syslog has no effect with --log-format json: the JSON lines go"
                    f" to {where}, not to syslog (--log-format text goes to syslog)"
                ],
            )
        for parent, args in [
            ({"syslog": True}, ["--sink"]),
            ({"syslog": False}, ["--sink", "--log-format", "json"]),
        ]:
            config = _tap.Options()
            config.parent = {"pidfile": None, **parent}  # type: ignore[attr-defined]
            config.parseOptions(args)
            self.assertEqual(config["unused"], [])

    def test_limitsOnlyUNIXSockets(self) -> None:
        """
        The per-address limits, their exemptions and the IPv6 prefix
        length where every listener is a UNIX socket that reads no PROXY
        header: its clients have no address to count.  With a C{tcp:} or
        a C{haproxy:unix:} listener beside it, no line.
        """
        limits = (
            "--max-clients-per-ip",
            "2",
            "--max-connection-rate",
            "5/60",
            "--limit-exempt",
            "10.0.0.0/8",
            "--client-ipv6-prefix-length",
            "64",
        )
        unix = ("--listen", "unix:/tmp/x.sock", "--listen", "unix:/tmp/z.sock")
        why = (
            "every listener is a UNIX socket, whose clients have no address to count"
            " (a haproxy:unix: listener counts the PROXY header's)"
        )
        self.assertEqual(
            parse("--sink", *unix, *limits)["unused"],
            [
                f"--max-clients-per-ip has no effect: {why}",
                f"--max-connection-rate has no effect: {why}",
                f"--limit-exempt has no effect: {why}",
                f"--client-ipv6-prefix-length has no effect: {why}",
            ],
        )
        for other in ["tcp:0:interface=127.0.0.1", "haproxy:unix:/tmp/y.sock"]:
            config = parse("--sink", *unix, "--listen", other, *limits)
            self.assertEqual(config["unused"], [], other)

    def test_insecureAuthOnlyTLS(self) -> None:
        """
        C{--allow-insecure-auth} where every listener is C{ssl:}: nothing
        is said before TLS.  With a plain listener beside it, no line.
        """
        args = ("--sink", "--tls-cert", self.server.combinedPath, "--auth", "memory:a:b")
        config = parse(*args, "--listen", "ssl:0", "--allow-insecure-auth")
        self.assertEqual(
            config["unused"],
            ["--allow-insecure-auth has no effect: every listener is TLS from the start (ssl:)"],
        )
        config = parse(*args, "--listen", "ssl:0", "--listen", "tcp:0", "--allow-insecure-auth")
        self.assertEqual(config["unused"], [])

    def test_others(self) -> None:
        """
        C{--proxy-trusted} without a C{haproxy:} listener, C{--xclient}
        with XCLIENT disabled, C{--limit-exempt} and
        C{--client-ipv6-prefix-length} without a per-address limit,
        C{--dns-server} with C{--no-reverse-lookup},
        C{--worker-timeout} without C{--workers}, C{--hide STARTTLS} with
        STARTTLS disabled.
        """
        config = parse(
            "--sink",
            "--proxy-trusted",
            "10.0.0.0/8",
            "--xclient",
            "10.0.0.0/8",
            "--disable",
            "XCLIENT",
            "--limit-exempt",
            "10.0.0.0/8",
            "--client-ipv6-prefix-length",
            "64",
            "--no-reverse-lookup",
            "--dns-server",
            "127.0.0.1",
            "--worker-timeout",
            "5",
            "--disable",
            "STARTTLS",
            "--hide",
            "STARTTLS",
        )
        self.assertEqual(
            config["unused"],
            [
                "--hide STARTTLS has no effect: STARTTLS is disabled",
                "--proxy-trusted has no effect: no haproxy: listener reads PROXY headers",
                "--xclient has no effect: XCLIENT is disabled",
                "--limit-exempt has no effect: no per-address limit (--max-clients-per-ip,"
                " --max-connection-rate, --max-auth-rate)",
                "--client-ipv6-prefix-length has no effect: no per-address limit"
                " (--max-clients-per-ip, --max-connection-rate, --max-auth-rate)",
                "--dns-server has no effect: --no-reverse-lookup: no client name is looked up",
                "--worker-timeout has no effect: no --workers",
            ],
        )

    def test_proxyTrustedMissing(self) -> None:
        """
        A C{haproxy:} listener with a peer address (not C{haproxy:unix:},
        whose socket file's permissions decide) and no C{--proxy-trusted}
        believes every PROXY header: one warning line at start names the
        listener and the flag.  With C{--proxy-trusted}, none.
        """
        listen = "haproxy:tcp:0:interface=127.0.0.1"
        why = (
            "every PROXY header is believed, from any address (no --proxy-trusted):"
            " bind it where only the proxies reach it, or name them with --proxy-trusted CIDR"
        )
        config = parse("--sink", "--listen", listen, "--listen", "haproxy:unix:/tmp/x.sock")
        self.assertEqual(config["unused"], [f"--listen {listen!r}: {why}"])
        config = parse("--sink", "--listen", listen, "--proxy-trusted", "127.0.0.1/32")
        self.assertEqual(config["unused"], [])

    def test_configFile(self) -> None:
        """
        A flag given in a configuration file counts as given.
        """
        path = self.mktemp() + ".toml"
        with open(path, "w") as f:
            f.write('sink = true\nallow-insecure-auth = true\ndisable = ["STARTTLS"]\n')
        self.assertEqual(
            [line.partition(" ")[0] for line in parse("--config", path)["unused"]],
            ["--allow-insecure-auth"],
        )

    def test_configFileDeliverySettingsReplaced(self) -> None:
        """
        A delivery on the command line replaces the configuration file's
        delivery together with its settings: each setting of the file so
        dropped is warned of, naming the file and the delivery that
        replaced it.  A setting given on the command line too, or a file
        whose delivery is kept, gives no line.
        """
        path = self.mktemp() + ".toml"
        with open(path, "w") as f:
            f.write('maildir = "Maildir"\nmaildir-trace = true\nmaildir-per-recipient = true\n')
        why = "the command line's --sink replaces the file's delivery and its settings"
        self.assertEqual(
            parse("--config", path, "--sink")["unused"],
            [
                f"--maildir-trace in --config {path!r} has no effect: {why}",
                f"--maildir-per-recipient in --config {path!r} has no effect: {why}",
            ],
        )
        maildir = os.path.abspath(self.mktemp())
        config = parse("--config", path, "--maildir", maildir, "--maildir-trace")
        self.assertEqual(
            config["unused"],
            [
                f"--maildir-per-recipient in --config {path!r} has no effect: the command"
                " line's --maildir replaces the file's delivery and its settings"
            ],
        )
        self.assertEqual(parse("--config", path, "--size", "100000")["unused"], [])

    def test_usedNotWarned(self) -> None:
        """
        The same flags where they do something give no line, nor do the
        defaults.
        """
        self.assertEqual(parse("--sink")["unused"], [])
        config = parse(
            "--sink",
            "--listen",
            "haproxy:tcp:0:interface=127.0.0.1",
            "--request-cert",
            "--tls-ca",
            self.ca.certificatePath,
            "--tls-cert",
            self.server.combinedPath,
            "--tls-ciphers",
            "HIGH",
            "--auth",
            "memory:alice:secret",
            "--allow-insecure-auth",
            "--proxy-trusted",
            "127.0.0.1/32",
            "--max-clients-per-ip",
            "5",
            "--limit-exempt",
            "127.0.0.1/32",
            "--dns-server",
            "127.0.0.1",
        )
        self.assertEqual(config["unused"], [])
        config = parse(
            "--sink",
            "--disable",
            "STARTTLS",
            "--listen",
            "ssl:0",
            "--tls-cert",
            self.server.combinedPath,
        )
        self.assertEqual(config["unused"], [])


class BacklogCapTests(SynchronousTestCase):
    """
    A C{backlog=} above the kernel's cap (Linux's C{net.core.somaxconn})
    is accepted, and silently lowered by C{listen()}: warned of at start.
    """

    def setUp(self) -> None:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("4096\n")
        self.patch(tapunused, "SOMAXCONN", path)

    def test_aboveCap(self) -> None:
        """
        A C{tcp:}, C{ssl:} or C{unix:} listener (behind C{haproxy:} too)
        whose backlog is above the cap gets one line naming it, the cap
        and the setting that raises it.
        """
        # Short, for the UNIX sockets' paths (at most 107 octets), wherever
        # the tests run.
        directory = tempfile.mkdtemp(prefix="smtpd-test-", dir="/tmp")
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "s")
        for description in [
            "tcp:0:127.0.0.1:10000",
            f"haproxy:unix:{path}.proxy:backlog=10000",
            "ssl:0:interface=127.0.0.1:backlog=10000",
            f"unix:{path}:backlog=10000",
        ]:
            config = parse("--sink", "--listen", description)
            self.assertEqual(
                config["unused"],
                [
                    f"--listen {description!r}: backlog=10000 is above the kernel's limit"
                    " of 4096 (net.core.somaxconn), which it is lowered to: raise that"
                    " sysctl, or give at most 4096"
                ],
                description,
            )

    def test_withinCap(self) -> None:
        """
        A backlog at or below the cap, or none given, or no cap to read:
        no line.
        """
        for description in ["tcp:0:interface=127.0.0.1:backlog=4096", "tcp:0"]:
            self.assertEqual(parse("--sink", "--listen", description)["unused"], [])
        self.patch(tapunused, "SOMAXCONN", self.mktemp())
        config = parse("--sink", "--listen", "tcp:0:interface=127.0.0.1:backlog=10000")
        self.assertEqual(config["unused"], [])
