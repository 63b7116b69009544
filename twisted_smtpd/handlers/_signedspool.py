# -*- test-case-name: tests.test_webhook -*-
"""
L{SignedSpool}: a temporary file receiving an HTTP request body while the
message arrives, with its HMAC-SHA256 signature computed on the way; the
file is written in a thread pool by a L{Spool}.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable
from typing import IO, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer, IProducer
from zope.interface import implementer

from twisted_smtpd.handlers._spool import Spool

#: The version tag of the signature header's value: C{v2=HEX}, the HMAC of
#: the timestamp and the body, which carries the envelope.
SIGNATURE_VERSION = "v2"


def newBoundary() -> str:
    """
    A random multipart boundary, C{smtpd-} and 32 hexadecimal digits: 128
    random bits, so that no message (which arrives after the boundary is
    chosen and never learns it) can hold the delimiter but by a chance of
    2**-128.
    """
    return "smtpd-" + secrets.token_hex(16)


@implementer(IConsumer)
class SignedSpool:
    """
    The body of one webhook request, written to an unnamed temporary file:
    an L{IConsumer} for L{IMessageStream.pipe
    <twisted_smtpd.interfaces.IMessageStream.pipe>}.

    Both formats carry the envelope in the body, so that no header grows
    with the recipients:

      - C{raw}: C{multipart/form-data} (RFC 7578) with two parts, in this
        order: C{envelope} (C{application/json}, the envelope JSON) and
        C{message} (C{message/rfc822}, file name C{message.eml}, the
        message byte for byte);
      - C{json}: C{{"envelope": ENVELOPE, "message": "BASE64"}}, the
        message encoded as it arrives.

    The message is never held whole in memory either way: the body is
    encoded and signed on the reactor thread as it arrives, and written by
    a L{Spool} in a thread pool, in bounded memory (the stream paused while
    the disk is behind), so that a slow disk never stalls the reactor.  The
    signature is the hexadecimal HMAC-SHA256, keyed with the secret, of
    C{TIMESTAMP + "." + BODY}: the timestamp header and the exact bytes of
    the request body, envelope included.

    @ivar file: The file once L{finish} succeeded, positioned at its start;
        C{None} before.
    @ivar length: Bytes of request body written.
    @ivar contentType: The request's C{Content-Type} header.
    """

    def __init__(
        self,
        *,
        secret: bytes | None,
        timestamp: str,
        envelope: str,
        jsonFormat: bool,
        inThread: Callable[..., Deferred[Any]],
        directory: str | None = None,
        boundary: str | None = None,
    ) -> None:
        """
        @param secret: The HMAC key, or C{None} not to sign.
        @param timestamp: The timestamp header's value.
        @param envelope: The envelope as ASCII JSON.
        @param jsonFormat: Whether to write the JSON body instead of the
            multipart one.
        @param inThread: Runs a function with arguments in a thread pool,
            returning a L{Deferred} of its result: where the file is made
            and written.
        @param directory: Where the temporary file goes (the system's
            temporary directory by default).
        @param boundary: The multipart boundary; a new random one
            (L{newBoundary}) by default.
        """
        self.file: IO[bytes] | None = None
        self._spool = Spool(directory, inThread)
        self.length = 0
        self._mac = None
        if secret is not None:
            self._mac = hmac.new(secret, f"{timestamp}.".encode("ascii"), "sha256")
        self._json = jsonFormat
        self._carry = b""
        encoded = envelope.encode("ascii")
        if jsonFormat:
            self.contentType = "application/json"
            self._put(b'{"envelope":' + encoded + b',"message":"')
            self._end = b'"}'
            return
        marker = (boundary or newBoundary()).encode("ascii")
        self.contentType = f"multipart/form-data; boundary={marker.decode('ascii')}"
        self._put(
            b"--" + marker + b"\r\n"
            b'Content-Disposition: form-data; name="envelope"\r\n'
            b"Content-Type: application/json\r\n"
            b"\r\n" + encoded + b"\r\n"
            b"--" + marker + b"\r\n"
            b'Content-Disposition: form-data; name="message"; filename="message.eml"\r\n'
            b"Content-Type: message/rfc822\r\n"
            b"\r\n"
        )
        self._end = b"\r\n--" + marker + b"--\r\n"

    def _put(self, data: bytes) -> None:
        self._spool.write(data)
        self.length += len(data)
        if self._mac is not None:
            self._mac.update(data)

    # IConsumer

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        """
        Keep the stream, to pause it while the disk is behind.
        """
        self._spool.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        """
        Forget the stream.
        """
        self._spool.unregisterProducer()

    def write(self, chunk: bytes) -> None:
        """
        Add the next chunk of the message.
        """
        if not self._json:
            self._put(chunk)
            return
        data = self._carry + chunk
        keep = len(data) % 3
        self._carry = data[len(data) - keep :] if keep else b""
        if len(data) > keep:
            self._put(base64.b64encode(data[: len(data) - keep]))

    def finish(self) -> Deferred[IO[bytes]]:
        """
        The message has ended: close the body, write what is left and
        rewind the file.

        @return: A L{Deferred} firing with L{file}, or failing with the
            L{OSError} of the first write that failed (the file is then
            gone).
        """
        if self._json:
            self._put(base64.b64encode(self._carry))
            self._carry = b""
        self._put(self._end)

        def rewound(file: IO[bytes]) -> IO[bytes]:
            self.file = file
            return file

        return self._spool.finish().addCallback(rewound)

    def signature(self) -> str | None:
        """
        The signature header's value, C{"v2=" + hex digest}, or C{None}
        without a secret.
        """
        if self._mac is None:
            return None
        return f"{SIGNATURE_VERSION}={self._mac.hexdigest()}"

    def close(self) -> Deferred[None]:
        """
        Remove the file, once a write in flight is done.  What a failed
        write left in its buffer is dropped: closing cannot fail, even on a
        full disk.

        @return: A L{Deferred} firing once the file is closed; it never
            fails.
        """
        self.file = None
        return self._spool.close()


def verifySignature(secret: bytes, timestamp: bytes, body: bytes, signature: bytes) -> bool:
    """
    Whether C{signature} (the C{X-SMTPD-Signature} header) signs this
    request, compared in constant time: what a receiver does.
    """
    expected = hmac.new(secret, timestamp + b"." + body, hashlib.sha256)
    tag = SIGNATURE_VERSION.encode("ascii") + b"="
    return hmac.compare_digest(tag + expected.hexdigest().encode("ascii"), signature)
