# -*- test-case-name: tests.test_webhook -*-
"""
L{SignedSpool}: a temporary file receiving an HTTP request body while the
message arrives, with its HMAC-SHA256 signature computed on the way.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import secrets
import tempfile
from typing import IO

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


class SignedSpool:
    """
    The body of one webhook request, written to an unnamed temporary file.

    Both formats carry the envelope in the body, so that no header grows
    with the recipients:

      - C{raw}: C{multipart/form-data} (RFC 7578) with two parts, in this
        order: C{envelope} (C{application/json}, the envelope JSON) and
        C{message} (C{message/rfc822}, file name C{message.eml}, the
        message byte for byte);
      - C{json}: C{{"envelope": ENVELOPE, "message": "BASE64"}}, the
        message encoded as it arrives.

    The message is never held whole in memory either way.  The signature is
    the hexadecimal HMAC-SHA256, keyed with the secret, of C{TIMESTAMP + "."
    + BODY}: the timestamp header and the exact bytes of the request body,
    envelope included.

    @ivar file: The file; after L{finish}, positioned at its start.
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
        directory: str | None = None,
        boundary: str | None = None,
    ) -> None:
        """
        @param secret: The HMAC key, or C{None} not to sign.
        @param timestamp: The timestamp header's value.
        @param envelope: The envelope as ASCII JSON.
        @param jsonFormat: Whether to write the JSON body instead of the
            multipart one.
        @param directory: Where the temporary file goes (the system's
            temporary directory by default).
        @param boundary: The multipart boundary; a new random one
            (L{newBoundary}) by default.
        """
        self.file: IO[bytes] = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115 (closed by close())
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
        self.file.write(data)
        self.length += len(data)
        if self._mac is not None:
            self._mac.update(data)

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

    def finish(self) -> None:
        """
        The message has ended: close the body and rewind the file.
        """
        if self._json:
            self._put(base64.b64encode(self._carry))
            self._carry = b""
        self._put(self._end)
        self.file.flush()
        self.file.seek(0)

    def signature(self) -> str | None:
        """
        The signature header's value, C{"v2=" + hex digest}, or C{None}
        without a secret.
        """
        if self._mac is None:
            return None
        return f"{SIGNATURE_VERSION}={self._mac.hexdigest()}"

    def close(self) -> None:
        """
        Remove the file.  What a failed write left in its buffer is
        dropped: closing cannot fail, even on a full disk.
        """
        with contextlib.suppress(OSError):
            self.file.close()


def verifySignature(secret: bytes, timestamp: bytes, body: bytes, signature: bytes) -> bool:
    """
    Whether C{signature} (the C{X-SMTPD-Signature} header) signs this
    request, compared in constant time: what a receiver does.
    """
    expected = hmac.new(secret, timestamp + b"." + body, hashlib.sha256)
    tag = SIGNATURE_VERSION.encode("ascii") + b"="
    return hmac.compare_digest(tag + expected.hexdigest().encode("ascii"), signature)
