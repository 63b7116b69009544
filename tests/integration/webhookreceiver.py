# -*- test-case-name: tests.integration.test_webhook -*-
"""
A real C{twisted.web} webhook receiver for the tests: it records every
request, verifies signatures, and answers as a script says.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IListeningPort
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from twisted_smtpd.handlers._signedspool import verifySignature

# An answer: (status, content type, body); None leaves the request hanging.
Answer = tuple[int, str, bytes] | None

OK: Answer = (200, "text/plain", b"ok")


_BOUNDARY = re.compile(r"multipart/form-data; boundary=(smtpd-[0-9a-f]{32})")


def parseMultipart(contentType: str, body: bytes) -> tuple[dict[str, Any], bytes]:
    """
    The envelope and the message of a C{raw} webhook body, parsed strictly
    as docs/scaling.md describes it.

    @raise ValueError: The body is not exactly that.
    """
    match = _BOUNDARY.fullmatch(contentType)
    if match is None:
        raise ValueError(f"not the multipart content type: {contentType!r}")
    marker = match.group(1).encode("ascii")
    start, end = b"--" + marker + b"\r\n", b"\r\n--" + marker + b"--\r\n"
    if not (body.startswith(start) and body.endswith(end)):
        raise ValueError("body does not begin and end with the boundary")
    first, second = body[len(start) : -len(end)].split(b"\r\n" + start, 1)
    envelopeHead, envelope = first.split(b"\r\n\r\n", 1)
    messageHead, message = second.split(b"\r\n\r\n", 1)
    if envelopeHead != (
        b'Content-Disposition: form-data; name="envelope"\r\nContent-Type: application/json'
    ) or messageHead != (
        b'Content-Disposition: form-data; name="message"; filename="message.eml"\r\n'
        b"Content-Type: message/rfc822"
    ):
        raise ValueError(f"unexpected part headers: {envelopeHead!r}, {messageHead!r}")
    return json.loads(envelope), message


class ReceivedRequest:
    """
    One request the receiver got.

    @ivar envelope: The envelope, parsed from the body (either format).
    @ivar message: The message, parsed from the body (either format).
    """

    def __init__(self, request: Request, body: bytes) -> None:
        self.body = body
        self.headers = {
            name.decode("ascii").lower(): [v.decode("latin-1") for v in values]
            for name, values in request.requestHeaders.getAllRawHeaders()
        }

    def _parts(self) -> tuple[dict[str, Any], bytes]:
        contentType = self.headers.get("content-type", [""])[0]
        if contentType == "application/json":
            document = json.loads(self.body)
            return document["envelope"], base64.b64decode(document["message"], validate=True)
        return parseMultipart(contentType, self.body)

    @property
    def envelope(self) -> dict[str, Any]:
        return self._parts()[0]

    @property
    def message(self) -> bytes:
        return self._parts()[1]

    def header(self, name: str) -> str:
        """
        The one value of header C{name}.
        """
        [value] = self.headers[name.lower()]
        return value


class WebhookReceiver(Resource):
    """
    Answers each POST with the next answer of C{script} (then 200), after
    checking the signature if it has a C{secret} (401 C{bad signature} if
    wrong).

    @ivar requests: Every request received, in order.
    """

    isLeaf = True

    def __init__(self, script: Sequence[Answer] = (), secret: bytes | None = None) -> None:
        super().__init__()
        self.script = list(script)
        self.secret = secret
        self.requests: list[ReceivedRequest] = []
        self.hanging: list[Request] = []
        self.arrived: list[Deferred[ReceivedRequest]] = []

    def render_POST(self, request: Request) -> bytes | int:
        assert request.content is not None
        body = request.content.read()
        received = ReceivedRequest(request, body)
        self.requests.append(received)
        waiting, self.arrived = self.arrived, []
        for d in waiting:
            d.callback(received)
        if self.secret is not None:
            headers = request.requestHeaders
            signature = headers.getRawHeaders(b"x-smtpd-signature") or [b""]
            timestamp = headers.getRawHeaders(b"x-smtpd-timestamp") or [b""]
            if not verifySignature(self.secret, timestamp[0], body, signature[0]):
                return self._answer(request, (401, "text/plain", b"bad signature\r\nmore"))
        answer = self.script.pop(0) if self.script else OK
        if answer is None:
            self.hanging.append(request)
            return NOT_DONE_YET
        return self._answer(request, answer)

    def _answer(self, request: Request, answer: tuple[int, str, bytes]) -> bytes:
        code, contentType, body = answer
        request.setResponseCode(code)
        request.setHeader(b"content-type", contentType.encode("ascii"))
        return body

    def nextRequest(self) -> Deferred[ReceivedRequest]:
        """
        A L{Deferred} firing with the next request to arrive.
        """
        d: Deferred[ReceivedRequest] = Deferred()
        self.arrived.append(d)
        return d


class _TrackedChannel(HTTPChannel):
    def connectionMade(self) -> None:
        super().connectionMade()
        self.lost: Deferred[None] = Deferred()
        self.factory.channels.add(self)  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        super().connectionLost(reason)
        self.factory.channels.discard(self)  # type: ignore[attr-defined]
        self.lost.callback(None)


class TrackingSite(Site):
    """
    A L{Site} that knows its open connections, so that a test can close
    them all and wait until they are gone.
    """

    protocol = _TrackedChannel

    def __init__(self, resource: Resource, **kwargs: Any) -> None:
        super().__init__(resource, **kwargs)
        self.channels: set[_TrackedChannel] = set()
        self.noisy = False

    def closeAll(self) -> Deferred[Any]:
        """
        Drop every connection and fire once they are all closed.
        """
        waits = []
        for channel in list(self.channels):
            waits.append(channel.lost)
            assert channel.transport is not None
            channel.transport.abortConnection()  # type: ignore[attr-defined]
        return gatherResults(waits)


async def stopReceiver(port: IListeningPort, site: TrackingSite) -> None:
    """
    Stop listening and close every connection of C{site}.
    """
    await port.stopListening()
    await site.closeAll()
