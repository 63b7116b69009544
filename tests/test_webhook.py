# -*- test-case-name: tests.test_webhook -*-
"""
Unit tests for the webhook handler's parts: the envelope it sends, the
spooled and signed request body, and the C{--webhook} flags.  The handler
against a real HTTP receiver is in L{tests.integration.test_webhook}.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sys
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from tests.test_handlers import makeSession
from tests.test_tap import parse
from twisted_smtpd._core.session import TLSInfo
from twisted_smtpd.handlers._envelope import envelopeFields, envelopeJSON, sanitise
from twisted_smtpd.handlers._signedspool import SignedSpool, verifySignature
from twisted_smtpd.handlers.webhook import WebhookHandler

MESSAGE = b"From: alice@example.com\r\nSubject: hook\r\n\r\n" + bytes(range(256)) * 7 + b"\r\n"


def inThreadNow(f: Any, *args: Any) -> Deferred[Any]:
    """
    Run a spool's thread job at once, in the calling thread.
    """
    return maybeDeferred(f, *args)


def spool(
    message: bytes, chunkSize: int, *, jsonFormat: bool, secret: bytes | None = b"k"
) -> SignedSpool:
    """
    A finished L{SignedSpool} of C{message}, written C{chunkSize} bytes at
    a time.
    """
    s = SignedSpool(
        secret=secret,
        timestamp="1700000000",
        envelope='{"a":1}',
        jsonFormat=jsonFormat,
        inThread=inThreadNow,
        boundary="smtpd-" + "0" * 32,
    )
    for start in range(0, len(message), chunkSize):
        s.write(message[start : start + chunkSize])
    s.finish()
    return s


def read(s: SignedSpool) -> bytes:
    """
    The request body in the finished spool C{s}.
    """
    assert s.file is not None
    return s.file.read()


class EnvelopeTests(SynchronousTestCase):
    """
    L{envelopeFields}, L{envelopeJSON} and L{sanitise}.
    """

    def test_fields(self) -> None:
        """
        The envelope names the sender, recipients, client, HELO name,
        user, TLS, session id and message id.
        """
        session = makeSession(
            user=b"alice",
            secure=True,
            tls=TLSInfo(protocol="TLSv1.3", cipher="TLS_AES_128_GCM_SHA256"),
            transaction=3,
        )
        self.assertEqual(
            envelopeFields(session),
            {
                "sender": "alice@example.com",
                "recipients": ["bob@example.org", "carol@example.net"],
                "clientAddress": "192.0.2.1",
                "clientPort": 40123,
                "helo": "helo.example",
                "user": "alice",
                "tls": {"protocol": "TLSv1.3", "cipher": "TLS_AES_128_GCM_SHA256"},
                "sessionId": "s1d",
                "messageId": "s1d.3",
            },
        )

    def test_plainSession(self) -> None:
        """
        Without AUTH and TLS, C{user} and C{tls} are C{None}.
        """
        fields = envelopeFields(makeSession())
        self.assertIsNone(fields["user"])
        self.assertIsNone(fields["tls"])
        self.assertEqual(fields["messageId"], "s1d.1")

    def test_jsonIsOneASCIILine(self) -> None:
        """
        The envelope JSON fits an HTTP header: ASCII, no line break, even
        for an internationalised address (RFC 6531).
        """
        fields = envelopeFields(makeSession())
        fields["recipients"] = ["j\u00f6rg@b\u00fccher.example\r\nX-Evil: 1"]
        text = envelopeJSON(fields)
        text.encode("ascii")
        self.assertNotIn("\r", text)
        self.assertNotIn("\n", text)
        self.assertEqual(json.loads(text), fields)

    def test_sanitise(self) -> None:
        """
        Text from outside keeps printable ASCII only and at most 200
        characters.
        """
        self.assertEqual(sanitise(b"\x1b[31mno\r\nsuch\x00user\xff "), "[31mno such user")
        self.assertEqual(len(sanitise("x" * 1000)), 200)


class SignedSpoolTests(SynchronousTestCase):
    """
    L{SignedSpool} writes the request body to a file and signs it.
    """

    def test_rawAnyChunking(self) -> None:
        """
        In raw format the file holds, exactly as docs/scaling.md shows it,
        a C{multipart/form-data} body: the envelope part, then the message
        part with the message byte for byte, whatever the chunks; the
        signature is the HMAC of the timestamp and the body.
        """
        marker = b"smtpd-" + b"0" * 32
        for size in (1, 2, 3, 5, 64, 65536):
            s = spool(MESSAGE, size, jsonFormat=False)
            body = read(s)
            self.assertEqual(
                body,
                b"--" + marker + b"\r\n"
                b'Content-Disposition: form-data; name="envelope"\r\n'
                b"Content-Type: application/json\r\n"
                b'\r\n{"a":1}\r\n'
                b"--" + marker + b"\r\n"
                b'Content-Disposition: form-data; name="message"; filename="message.eml"\r\n'
                b"Content-Type: message/rfc822\r\n"
                b"\r\n" + MESSAGE + b"\r\n--" + marker + b"--\r\n",
            )
            self.assertEqual(s.contentType, "multipart/form-data; boundary=" + marker.decode())
            self.assertEqual(s.length, len(body))
            expected = hmac.new(b"k", b"1700000000." + body, hashlib.sha256)
            self.assertEqual(s.signature(), "v2=" + expected.hexdigest())
            s.close()

    def test_multipartParses(self) -> None:
        """
        A generic MIME parser (the standard library's) finds the two named
        parts of a raw body, with a new random boundary for each spool.
        """
        from email import message_from_bytes
        from email.policy import HTTP

        contentTypes = set()
        for _ in range(2):
            s = SignedSpool(
                secret=None,
                timestamp="1",
                envelope='{"a":1}',
                jsonFormat=False,
                inThread=inThreadNow,
            )
            s.write(b"Subject: x\r\n\r\nbody\r\n")
            s.finish()
            head = f"MIME-Version: 1.0\r\nContent-Type: {s.contentType}\r\n\r\n"
            document = message_from_bytes(head.encode("ascii") + read(s), policy=HTTP)
            envelope, message = document.get_payload()  # type: ignore[misc]
            self.assertEqual(envelope.get_param("name", header="content-disposition"), "envelope")
            self.assertEqual(json.loads(envelope.get_payload()), {"a": 1})
            self.assertEqual(message.get_param("name", header="content-disposition"), "message")
            self.assertEqual(message.get_content_type(), "message/rfc822")
            contentTypes.add(s.contentType)
            s.close()
        self.assertEqual(len(contentTypes), 2)

    def test_jsonAnyChunking(self) -> None:
        """
        In JSON format the message is base64-encoded as it arrives; every
        chunking gives the same, valid, signed document.
        """
        bodies = set()
        for size in (1, 2, 3, 4, 7, 64, 65536):
            s = spool(MESSAGE, size, jsonFormat=True)
            body = read(s)
            document = json.loads(body)
            self.assertEqual(document["envelope"], {"a": 1})
            self.assertEqual(base64.b64decode(document["message"], validate=True), MESSAGE)
            sig = s.signature()
            assert sig is not None
            self.assertTrue(verifySignature(b"k", b"1700000000", body, sig.encode("ascii")))
            bodies.add(body)
            s.close()
        self.assertEqual(len(bodies), 1)

    def test_emptyMessage(self) -> None:
        """
        An empty message is an empty string in JSON.
        """
        s = spool(b"", 1, jsonFormat=True)
        self.assertEqual(json.loads(read(s))["message"], "")

    def test_noSecret(self) -> None:
        """
        Without a secret there is no signature.
        """
        self.assertIsNone(spool(MESSAGE, 10, jsonFormat=False, secret=None).signature())

    def test_verifyRejectsTampering(self) -> None:
        """
        L{verifySignature} refuses a changed key, timestamp, body or
        envelope (which is in the body), in either format.
        """
        for jsonFormat in (False, True):
            s = spool(MESSAGE, 100, jsonFormat=jsonFormat)
            body = read(s)
            sig = (s.signature() or "").encode("ascii")
            args = (b"k", b"1700000000", body)
            self.assertTrue(verifySignature(*args, sig))
            envelopeChanged = body.replace(b'{"a":1}', b'{"a":2}')
            self.assertNotEqual(envelopeChanged, body)
            for i, changed in enumerate([b"K", b"1700000001", envelopeChanged]):
                tampered = list(args)
                tampered[i] = changed
                self.assertFalse(verifySignature(*tampered, sig))  # type: ignore[arg-type]
            self.assertFalse(verifySignature(*args, sig.replace(b"v2=", b"v1=")))
            s.close()


class WebhookOptionsTests(SynchronousTestCase):
    """
    The C{--webhook} flags of C{twistd smtpd}.
    """

    def test_flags(self) -> None:
        """
        C{--webhook URL} with its secret and format builds a
        L{WebhookHandler}.
        """
        config = parse(
            "--webhook",
            "http://127.0.0.1:8080/in",
            "--webhook-secret",
            "s3cret",
            "--webhook-format",
            "json",
        )
        handler = config["handler"]
        self.assertIsInstance(handler, WebhookHandler)
        self.assertEqual(handler.url, "http://127.0.0.1:8080/in")
        self.assertEqual(handler._secret, b"s3cret")
        self.assertTrue(handler._json)

    def test_modifiersNeedWebhook(self) -> None:
        """
        C{--webhook-secret} without C{--webhook} is a usage error.
        """
        e = self.assertRaises(usage.UsageError, parse, "--webhook-secret", "x")
        self.assertEqual(str(e), "--webhook-secret needs --webhook")

    def test_badValues(self) -> None:
        """
        A URL that is not HTTP, or an unknown format, is one usage line.
        """
        e = self.assertRaises(usage.UsageError, parse, "--webhook", "ftp://x/")
        self.assertIn("not an http:// or https:// URL", str(e))
        self.assertRaises(
            usage.UsageError, parse, "--webhook", "http://x/", "--webhook-format", "xml"
        )

    def test_unusableURLs(self) -> None:
        """
        A URL that could never be posted to is one usage line at start-up,
        saying why: a port past 65535 (never taken modulo 65536), a user
        name or password, no host, a bad IPv6 literal, an empty label, a
        fragment.
        """
        for url, why in [
            ("http://127.0.0.1:91750/hook", "port 91750 is not from 1 to 65535"),
            ("http://127.0.0.1:0/hook", "port 0 is not from 1 to 65535"),
            ("http://api:S3cret@127.0.0.1/hook", "a user name or password"),
            ("http://api@127.0.0.1/hook", "a user name or password"),
            ("http://", "the URL names no host"),
            ("https:///path", "the URL names no host"),
            ("http://[::1/x", "not a valid URL"),
            ("http://[::g]/x", "not a valid URL"),
            ("http://a..b/", "not a valid host name"),
            ("http://-a.example/", "not a valid host name"),
            ("http://a.example/x#frag", "a fragment"),
            ("http://a.example/\u2028", "spaces or control characters"),
        ]:
            e = self.assertRaises(usage.UsageError, parse, "--webhook", url)
            self.assertIn(why, str(e), url)
            self.assertNotIn("\n", str(e))

    def test_usableURLs(self) -> None:
        """
        Names, IPv4 and bracketed IPv6 addresses, explicit ports, queries
        and internationalised names pass; the request goes to the URL in
        ASCII.
        """
        for url, sent in [
            ("http://127.0.0.1:8080/in", b"http://127.0.0.1:8080/in"),
            ("https://hooks.example.com/in?key=1", b"https://hooks.example.com/in?key=1"),
            ("http://[::1]:65535/in", b"http://[::1]:65535/in"),
            ("http://b\u00fccher.example/in", b"http://xn--bcher-kva.example/in"),
            ("http://hooks.example./", b"http://hooks.example./"),
        ]:
            handler = parse("--webhook", url)["handler"]
            self.assertEqual(handler._requestURL, sent)

    def test_noExtraNeeded(self) -> None:
        """
        C{--webhook} needs no package beyond the core: not treq.
        """
        saved = dict(sys.modules)

        def restore() -> None:
            sys.modules.clear()
            sys.modules.update(saved)

        self.addCleanup(restore)
        sys.modules["treq"] = None  # type: ignore[assignment]
        sys.modules.pop("twisted_smtpd.handlers.webhook", None)
        config = parse("--webhook", "http://127.0.0.1/")
        self.assertEqual(config["handler"].url, "http://127.0.0.1/")
