# -*- test-case-name: tests.test_sasl -*-
"""
SASL mechanisms for the SMTP AUTH command (RFC 4954), each a small state
machine fed the client's lines.

Pure: bytes in, L{Step} values out.  A mechanism answers L{Challenge} (send
C{334 <text>} and read another line), L{Done} (hand the L{AuthRequest} to the
handler) or L{Failed} (send the reply, the exchange is over).

Mechanisms: C{PLAIN} (RFC 4616), C{LOGIN} (draft-murchison-sasl-login),
C{CRAM-MD5} (RFC 2195) and Google's C{XOAUTH2}.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from functools import partial
from hashlib import md5
from typing import Protocol

from attrs import frozen

from twisted_smtpd._core.replies import (
    AUTH_ABORTED,
    AUTH_BAD_BASE64,
    AUTH_INITIAL_RESPONSE_NOT_ALLOWED,
    AUTH_MALFORMED,
    AUTH_UNRECOGNIZED,
    XOAUTH2_FAILURE_DONE,
    CommandError,
    Reply,
)
from twisted_smtpd._core.session import AuthRequest

__all__ = [
    "MECHANISMS",
    "XOAUTH2_FAILURE_DONE",
    "Challenge",
    "Done",
    "Failed",
    "Mechanism",
    "Step",
    "cramMD5Digest",
    "createMechanism",
    "defaultCramMD5Challenge",
    "xoauth2FailureChallenge",
]

MECHANISMS = frozenset({"PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2"})

# Control characters are refused in identities (RFC 4616 section 2 excludes
# only NUL; the others have no place in a user name and could reach logs).
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HEX_DIGEST = re.compile(rb"[0-9A-Fa-f]{32}")
_USERNAME_CHALLENGE = base64.b64encode(b"Username:").decode("ascii")
_PASSWORD_CHALLENGE = base64.b64encode(b"Password:").decode("ascii")


@frozen
class Challenge:
    """
    Send C{334 <text>} and wait for the client's next line.

    @ivar text: The challenge, already base64-encoded where the mechanism
        requires it; C{""} for an empty challenge (C{"334 "}).
    """

    text: str


@frozen
class Done:
    """
    The mechanism has finished: decide on C{request} (C{onAuth} or a
    C{twisted.cred} portal).
    """

    request: AuthRequest


@frozen
class Failed:
    """
    The exchange is over: send C{reply}.
    """

    reply: Reply


Step = Challenge | Done | Failed


class Mechanism(Protocol):
    """
    One AUTH exchange in progress.  Call L{start} once, then L{step} with
    every line the client sends while the last result was a L{Challenge}.
    """

    def start(self, initialResponse: bytes | None) -> Step:
        """
        Begin the exchange.

        @param initialResponse: The optional second argument of the AUTH
            command, still base64-encoded; C{b"="} stands for an empty
            initial response (RFC 4954 section 4).
        """

    def step(self, line: bytes) -> Step:
        """
        Handle one continuation line (CRLF removed).  A line C{*} cancels
        the exchange (RFC 4954 section 4).
        """


def cramMD5Digest(secret: bytes, challenge: bytes) -> str:
    """
    The CRAM-MD5 response digest for C{challenge}: HMAC-MD5 keyed with the
    shared secret, as lower-case hex (RFC 2195 section 2).
    """
    return hmac.new(secret, challenge, md5).hexdigest()


def defaultCramMD5Challenge(hostname: str = "localhost") -> bytes:
    """
    A fresh CRAM-MD5 challenge in the RFC 2195 msg-id form,
    C{<random.random@hostname>}, from C{os.urandom}.

    @param hostname: The server's configured name (C{ServerOptions.name},
        as Postfix's Cyrus SASL uses C{myhostname}), never the machine's
        own host name, which the client has no business learning.
        Characters that cannot be part of a msg-id are left out.
    """
    hostname = "".join(c for c in hostname if c.isprintable() and c not in " <>") or "localhost"
    first = int.from_bytes(os.urandom(4), "big")
    return f"<{first}.{os.urandom(8).hex()}@{hostname}>".encode("utf-8", "replace")


def xoauth2FailureChallenge(
    status: str = "400",
    schemes: str = "Bearer",
    scope: str = "https://mail.google.com/",
) -> Challenge:
    """
    The challenge Google's servers send when an XOAUTH2 token is refused: a
    base64 JSON error document.  The client answers with an empty line, and
    the server then sends L{XOAUTH2_FAILURE_DONE}.
    """
    document = json.dumps(
        {"status": status, "schemes": schemes, "scope": scope}, separators=(",", ":")
    )
    return Challenge(base64.b64encode(document.encode("utf-8")).decode("ascii"))


def createMechanism(
    name: str, challengeSource: Callable[[], bytes] | None = None, hostname: str = "localhost"
) -> Mechanism:
    """
    A new exchange for the mechanism called C{name}.

    @param name: C{"PLAIN"}, C{"LOGIN"}, C{"CRAM-MD5"} or C{"XOAUTH2"}, in any
        case.
    @param challengeSource: Makes the raw CRAM-MD5 challenge; the default is
        L{defaultCramMD5Challenge} naming C{hostname}.
    @param hostname: The server's name, for the default CRAM-MD5 challenge.
    @raise CommandError: With C{504 5.5.4} for any other name (RFC 4954
        section 4).
    """
    upper = name.upper()
    if upper == "PLAIN":
        return _Plain()
    if upper == "LOGIN":
        return _Login()
    if upper == "CRAM-MD5":
        return _CramMD5(challengeSource or partial(defaultCramMD5Challenge, hostname))
    if upper == "XOAUTH2":
        return _XOAuth2()
    raise CommandError(AUTH_UNRECOGNIZED)


class _Fail(Exception):
    """
    Raised inside a mechanism to end it with C{reply}.
    """

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply)
        self.reply = reply


def _decode(data: bytes) -> bytes:
    """
    Strict base64 decoding; C{=} alone is the empty string (RFC 4954
    section 4).
    """
    data = data.strip()
    if data == b"=":
        return b""
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise _Fail(AUTH_BAD_BASE64) from None


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _Fail(AUTH_MALFORMED) from None


def _identity(data: bytes) -> str:
    """
    A non-empty identity without control characters.
    """
    text = _text(data)
    if not text or _CONTROL.search(text):
        raise _Fail(AUTH_MALFORMED)
    return text


def _password(data: bytes) -> str:
    """
    A non-empty password: anything but NUL (RFC 4616 section 2).
    """
    if not data or b"\x00" in data:
        raise _Fail(AUTH_MALFORMED)
    return _text(data)


class _Machine(ABC):
    """
    The common shape: L{Failed} on C{_Fail}, cancellation by C{*}, and a
    guard against use after the exchange finished.
    """

    _started = False
    _finished = False

    def start(self, initialResponse: bytes | None) -> Step:
        if self._started:
            raise RuntimeError("mechanism already started")
        self._started = True
        try:
            result = self._start(initialResponse)
        except _Fail as e:
            result = Failed(e.reply)
        return self._settle(result)

    def step(self, line: bytes) -> Step:
        if not self._started or self._finished:
            raise RuntimeError("mechanism is not waiting for a line")
        if line.strip() == b"*":
            self._finished = True
            return Failed(AUTH_ABORTED)
        try:
            result = self._step(line)
        except _Fail as e:
            result = Failed(e.reply)
        return self._settle(result)

    def _settle(self, result: Step) -> Step:
        if not isinstance(result, Challenge):
            self._finished = True
        return result

    @abstractmethod
    def _start(self, initialResponse: bytes | None) -> Step:
        """
        The mechanism's first step.
        """

    @abstractmethod
    def _step(self, line: bytes) -> Step:
        """
        The mechanism's next step for a continuation line.
        """


class _Plain(_Machine):
    """
    PLAIN (RFC 4616): one message, C{[authzid] NUL authcid NUL passwd}.
    """

    def _start(self, initialResponse: bytes | None) -> Step:
        if initialResponse is None:
            return Challenge("")
        return self._step(initialResponse)

    def _step(self, line: bytes) -> Step:
        parts = _decode(line).split(b"\x00")
        if len(parts) != 3:
            raise _Fail(AUTH_MALFORMED)
        authzid, authcid, passwd = parts
        return Done(
            AuthRequest(
                method="PLAIN",
                username=_identity(authcid),
                password=_password(passwd),
                authorizationIdentity=_identity(authzid) if authzid else None,
            )
        )


class _Login(_Machine):
    """
    LOGIN: the user name, then the password, each after its own challenge;
    an initial response is the user name.
    """

    _username: str | None = None

    def _start(self, initialResponse: bytes | None) -> Step:
        if initialResponse is None:
            return Challenge(_USERNAME_CHALLENGE)
        return self._step(initialResponse)

    def _step(self, line: bytes) -> Step:
        if self._username is None:
            self._username = _identity(_decode(line))
            return Challenge(_PASSWORD_CHALLENGE)
        password = _password(_decode(line))
        return Done(AuthRequest(method="LOGIN", username=self._username, password=password))


class _CramMD5(_Machine):
    """
    CRAM-MD5 (RFC 2195): the server speaks first, the client answers
    C{username SP hex-digest}.
    """

    def __init__(self, challengeSource: Callable[[], bytes]) -> None:
        self._challengeSource = challengeSource
        self._challenge = b""

    def _start(self, initialResponse: bytes | None) -> Step:
        if initialResponse is not None:
            # The server must speak first (RFC 4422 section 5, RFC 4954
            # section 4).
            raise _Fail(AUTH_INITIAL_RESPONSE_NOT_ALLOWED)
        self._challenge = self._challengeSource()
        return Challenge(base64.b64encode(self._challenge).decode("ascii"))

    def _step(self, line: bytes) -> Step:
        username, space, digest = _decode(line).rpartition(b" ")
        if not space or not _HEX_DIGEST.fullmatch(digest):
            raise _Fail(AUTH_MALFORMED)
        return Done(
            AuthRequest(
                method="CRAM-MD5",
                username=_identity(username),
                challenge=self._challenge,
                response=digest.decode("ascii").lower(),
            )
        )


class _XOAuth2(_Machine):
    """
    XOAUTH2: C{user=<user>^Aauth=Bearer <token>^A^A}, base64-encoded, as the
    initial response or after an empty challenge.
    """

    def _start(self, initialResponse: bytes | None) -> Step:
        if initialResponse is None:
            return Challenge("")
        return self._step(initialResponse)

    def _step(self, line: bytes) -> Step:
        data = _decode(line)
        if not data.endswith(b"\x01\x01"):
            raise _Fail(AUTH_MALFORMED)
        fields: dict[bytes, bytes] = {}
        for item in data[:-2].split(b"\x01"):
            key, equals, value = item.partition(b"=")
            if not equals or key in fields:
                raise _Fail(AUTH_MALFORMED)
            fields[key] = value
        user = fields.get(b"user")
        auth = fields.get(b"auth")
        if user is None or auth is None:
            raise _Fail(AUTH_MALFORMED)
        scheme, _, token = auth.partition(b" ")
        token = token.strip(b" ")
        if scheme.lower() != b"bearer" or not token or b" " in token:
            raise _Fail(AUTH_MALFORMED)
        return Done(
            AuthRequest(
                method="XOAUTH2",
                username=_identity(user),
                accessToken=_identity(token),
            )
        )
