# -*- test-case-name: tests.test_webhook -*-
"""
L{SignedSpool}: a temporary file receiving an HTTP request body while the
message arrives, with its HMAC-SHA256 signature computed on the way.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import tempfile
from typing import IO


class SignedSpool:
    """
    The body of one webhook request, written to an unnamed temporary file.

    In C{raw} format the body is the message itself; in C{json} format it is
    C{{"envelope": ENVELOPE, "message": "BASE64"}}, the message encoded as it
    arrives (so it is never held whole in memory either way).

    The signature is the hexadecimal HMAC-SHA256, keyed with the secret, of
    C{TIMESTAMP + "." + ENVELOPE + "." + BODY}: the timestamp and envelope
    headers and the exact bytes of the request body.

    @ivar file: The file; after L{finish}, positioned at its start.
    @ivar length: Bytes of request body written.
    """

    def __init__(
        self,
        *,
        secret: bytes | None,
        timestamp: str,
        envelope: str,
        jsonFormat: bool,
        directory: str | None = None,
    ) -> None:
        """
        @param secret: The HMAC key, or C{None} not to sign.
        @param timestamp: The timestamp header's value.
        @param envelope: The envelope header's value (ASCII JSON).
        @param jsonFormat: Whether to write the JSON body instead of the
            raw message.
        @param directory: Where the temporary file goes (the system's
            temporary directory by default).
        """
        self.file: IO[bytes] = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115 (closed by close())
        self.length = 0
        self._mac = None
        if secret is not None:
            self._mac = hmac.new(secret, f"{timestamp}.{envelope}.".encode("ascii"), "sha256")
        self._json = jsonFormat
        self._carry = b""
        if jsonFormat:
            self._put(b'{"envelope":' + envelope.encode("ascii") + b',"message":"')

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
        The message has ended: close the JSON body and rewind the file.
        """
        if self._json:
            self._put(base64.b64encode(self._carry) + b'"}')
            self._carry = b""
        self.file.flush()
        self.file.seek(0)

    def signature(self) -> str | None:
        """
        The signature header's value, C{"v1=" + hex digest}, or C{None}
        without a secret.
        """
        if self._mac is None:
            return None
        return "v1=" + self._mac.hexdigest()

    def close(self) -> None:
        """
        Remove the file.
        """
        self.file.close()


def verifySignature(
    secret: bytes, timestamp: bytes, envelope: bytes, body: bytes, signature: bytes
) -> bool:
    """
    Whether C{signature} (the C{X-SMTPD-Signature} header) signs this
    request, compared in constant time: what a receiver does.
    """
    expected = hmac.new(secret, timestamp + b"." + envelope + b"." + body, hashlib.sha256)
    return hmac.compare_digest(b"v1=" + expected.hexdigest().encode("ascii"), signature)
