# -*- test-case-name: tests.test_sasl -*-
"""
Tests for L{twisted_smtpd._core.sasl}: the AUTH mechanisms as plain calls.
"""

from __future__ import annotations

import base64
import json
import re

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from twisted_smtpd._core import replies as replies
from twisted_smtpd._core.optionchecks import AUTH_METHODS
from twisted_smtpd._core.replies import CommandError, Reply
from twisted_smtpd._core.sasl import (
    MECHANISMS,
    Challenge,
    Done,
    Failed,
    cramMD5Digest,
    createMechanism,
    defaultCramMD5Challenge,
    xoauth2FailureChallenge,
)
from twisted_smtpd._core.session import AuthRequest

# RFC 2195 section 2.
RFC2195_CHALLENGE = b"<1896.697170952@postoffice.reston.mci.net>"
RFC2195_SECRET = b"tanstaaftanstaaf"
RFC2195_DIGEST = "b913a602c7eda7a495b4e6e7334d3890"


def b64(data: bytes | str) -> bytes:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return base64.b64encode(data)


# Identities: UTF-8 text without C0 controls or DEL.
IDENTITY_CHARACTERS = st.characters(codec="utf-8", min_codepoint=0x20, exclude_characters="\x7f")

ABORTED = Failed(replies.AUTH_ABORTED)
BAD_BASE64 = Failed(replies.AUTH_BAD_BASE64)
MALFORMED = Failed(replies.AUTH_MALFORMED)


class ReplyTests(SynchronousTestCase):
    """
    The replies the mechanisms send.
    """

    def test_texts(self) -> None:
        """
        Each reply has its code, enhanced code and text (RFC 4954 sections 4
        and 6).
        """
        self.assertEqual(
            replies.AUTH_UNRECOGNIZED,
            Reply(504, "5.5.4", ("Unrecognized authentication type",)),
        )
        self.assertEqual(replies.AUTH_ABORTED, Reply(501, "5.7.0", ("Authentication aborted",)))
        self.assertEqual(replies.AUTH_BAD_BASE64, Reply(501, "5.5.2", ("Error: invalid base64",)))
        self.assertEqual(
            replies.AUTH_MALFORMED,
            Reply(501, "5.5.2", ("Error: malformed authentication data",)),
        )
        self.assertEqual(
            replies.AUTH_INITIAL_RESPONSE_NOT_ALLOWED,
            Reply(501, "5.5.4", ("Error: initial response not allowed",)),
        )
        self.assertEqual(
            replies.XOAUTH2_FAILURE_DONE,
            Reply(535, "5.7.8", ("Error: authentication credentials invalid",)),
        )


class CreateMechanismTests(SynchronousTestCase):
    """
    L{createMechanism} knows the four mechanisms and nothing else.
    """

    def test_unknown(self) -> None:
        """
        An unknown mechanism raises L{CommandError} with 504 5.5.4.
        """
        error = self.assertRaises(CommandError, createMechanism, "GSSAPI")
        self.assertEqual(error.reply, replies.AUTH_UNRECOGNIZED)

    def test_anyCase(self) -> None:
        """
        Mechanism names are matched without regard to case.
        """
        self.assertEqual(createMechanism("login").start(None), Challenge("VXNlcm5hbWU6"))

    def test_mechanismsMatchOptions(self) -> None:
        """
        Every mechanism the options accept has a machine, and each can be
        created.
        """
        self.assertEqual(MECHANISMS, AUTH_METHODS)
        for name in MECHANISMS:
            createMechanism(name)

    def test_stepAfterDone(self) -> None:
        """
        A finished exchange takes no more lines.
        """
        mechanism = createMechanism("PLAIN")
        mechanism.start(b64("\0alice\0secret"))
        self.assertRaises(RuntimeError, mechanism.step, b"*")

    def test_stepAfterFailed(self) -> None:
        """
        A failed exchange takes no more lines.
        """
        mechanism = createMechanism("PLAIN")
        self.assertEqual(mechanism.start(b"%%%"), BAD_BASE64)
        self.assertRaises(RuntimeError, mechanism.step, b64("\0alice\0secret"))

    def test_startTwice(self) -> None:
        """
        A mechanism is started once.
        """
        mechanism = createMechanism("LOGIN")
        mechanism.start(None)
        self.assertRaises(RuntimeError, mechanism.start, None)

    def test_stepBeforeStart(self) -> None:
        """
        A line before L{start} is a caller error.
        """
        self.assertRaises(RuntimeError, createMechanism("LOGIN").step, b"")


class PlainTests(SynchronousTestCase):
    """
    PLAIN (RFC 4616).
    """

    def start(self, message: bytes | str) -> object:
        return createMechanism("PLAIN").start(b64(message))

    def test_initialResponse(self) -> None:
        """
        An initial response C{NUL authcid NUL passwd} gives user name and
        password, no authorization identity.
        """
        self.assertEqual(
            self.start("\0alice\0secret"),
            Done(AuthRequest(method="PLAIN", username="alice", password="secret")),
        )

    def test_authorizationIdentity(self) -> None:
        """
        A non-empty authzid is exposed as C{authorizationIdentity}.
        """
        self.assertEqual(
            self.start("admin\0alice\0secret"),
            Done(
                AuthRequest(
                    method="PLAIN",
                    username="alice",
                    password="secret",
                    authorizationIdentity="admin",
                )
            ),
        )

    def test_emptyChallenge(self) -> None:
        """
        Without an initial response the server sends an empty challenge and
        takes the message from the next line.
        """
        mechanism = createMechanism("PLAIN")
        self.assertEqual(mechanism.start(None), Challenge(""))
        self.assertEqual(
            mechanism.step(b64("\0alice\0secret")),
            Done(AuthRequest(method="PLAIN", username="alice", password="secret")),
        )

    def test_cancel(self) -> None:
        """
        A C{*} line cancels the exchange with 501 5.7.0 (RFC 4954 section 4).
        """
        mechanism = createMechanism("PLAIN")
        mechanism.start(None)
        self.assertEqual(mechanism.step(b"*"), ABORTED)

    def test_emptyInitialResponse(self) -> None:
        """
        C{=} is an empty initial response, which is not a valid message.
        """
        self.assertEqual(createMechanism("PLAIN").start(b"="), MALFORMED)

    def test_emptyLine(self) -> None:
        """
        An empty continuation line is an empty message, refused.
        """
        mechanism = createMechanism("PLAIN")
        mechanism.start(None)
        self.assertEqual(mechanism.step(b""), MALFORMED)

    def test_invalidBase64(self) -> None:
        """
        Characters outside the base64 alphabet, or bad padding, are refused
        with 501 5.5.2.
        """
        self.assertEqual(createMechanism("PLAIN").start(b"AGFsaWNl!AHNlY3JldA=="), BAD_BASE64)
        self.assertEqual(createMechanism("PLAIN").start(b"AGFsaWNlAHNlY3JldA"), BAD_BASE64)
        mechanism = createMechanism("PLAIN")
        mechanism.start(None)
        self.assertEqual(mechanism.step(b"AGFsa WNlAHNlY3JldA=="), BAD_BASE64)

    def test_surroundingWhitespace(self) -> None:
        """
        Spaces around the base64 text are ignored.
        """
        result = createMechanism("PLAIN").start(b" " + b64("\0alice\0secret") + b" ")
        self.assertIsInstance(result, Done)

    def test_wrongSeparatorCount(self) -> None:
        """
        A message without exactly two NULs is refused.
        """
        self.assertEqual(self.start("alice\0secret"), MALFORMED)
        self.assertEqual(self.start("\0alice\0sec\0ret"), MALFORMED)
        self.assertEqual(self.start("alice"), MALFORMED)

    def test_emptyAuthenticationIdentity(self) -> None:
        """
        An empty authcid is refused.
        """
        self.assertEqual(self.start("admin\0\0secret"), MALFORMED)

    def test_emptyPassword(self) -> None:
        """
        An empty password is refused (RFC 4616 section 2: C{1*SAFE}).
        """
        self.assertEqual(self.start("\0alice\0"), MALFORMED)

    def test_controlInIdentity(self) -> None:
        """
        Control characters in either identity are refused.
        """
        self.assertEqual(self.start("\0ali\rce\0secret"), MALFORMED)
        self.assertEqual(self.start("\0alice\x7f\0secret"), MALFORMED)
        self.assertEqual(self.start("ad\nmin\0alice\0secret"), MALFORMED)

    def test_passwordMayHoldAnything(self) -> None:
        """
        A password may hold controls, spaces and non-ASCII text.
        """
        self.assertEqual(
            self.start("\0alice\0 p\x01\r\n\x7fä "),
            Done(AuthRequest(method="PLAIN", username="alice", password=" p\x01\r\n\x7fä ")),
        )

    def test_utf8Identity(self) -> None:
        """
        Identities are UTF-8 (RFC 4616 section 2).
        """
        self.assertEqual(
            self.start("\0jöran@exämple.se\0pw"),
            Done(AuthRequest(method="PLAIN", username="jöran@exämple.se", password="pw")),
        )

    def test_invalidUTF8(self) -> None:
        """
        Bytes that are not UTF-8, in an identity or the password, are
        refused.
        """
        mechanism = createMechanism("PLAIN")
        self.assertEqual(mechanism.start(b64(b"\0al\xffice\0secret")), MALFORMED)
        mechanism = createMechanism("PLAIN")
        self.assertEqual(mechanism.start(b64(b"\0alice\0sec\xc3")), MALFORMED)

    @given(
        authzid=st.text(IDENTITY_CHARACTERS),
        authcid=st.text(IDENTITY_CHARACTERS, min_size=1),
        password=st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1),
    )
    def test_roundTrip(self, authzid: str, authcid: str, password: str) -> None:
        """
        Any identities without controls and any password without NUL come
        back as encoded.
        """
        self.assertEqual(
            self.start(f"{authzid}\0{authcid}\0{password}"),
            Done(
                AuthRequest(
                    method="PLAIN",
                    username=authcid,
                    password=password,
                    authorizationIdentity=authzid or None,
                )
            ),
        )


class LoginTests(SynchronousTestCase):
    """
    LOGIN: user name and password after their own challenges.
    """

    def test_exchange(self) -> None:
        """
        C{Username:} then C{Password:} challenges, then the request.
        """
        mechanism = createMechanism("LOGIN")
        self.assertEqual(mechanism.start(None), Challenge("VXNlcm5hbWU6"))
        self.assertEqual(mechanism.step(b64("alice")), Challenge("UGFzc3dvcmQ6"))
        self.assertEqual(
            mechanism.step(b64("secret")),
            Done(AuthRequest(method="LOGIN", username="alice", password="secret")),
        )

    def test_initialResponse(self) -> None:
        """
        An initial response is the user name: only the password is asked.
        """
        mechanism = createMechanism("LOGIN")
        self.assertEqual(mechanism.start(b64("alice")), Challenge("UGFzc3dvcmQ6"))
        self.assertEqual(
            mechanism.step(b64("s e c r e t")),
            Done(AuthRequest(method="LOGIN", username="alice", password="s e c r e t")),
        )

    def test_cancelAtUsername(self) -> None:
        """
        C{*} instead of the user name cancels.
        """
        mechanism = createMechanism("LOGIN")
        mechanism.start(None)
        self.assertEqual(mechanism.step(b"*"), ABORTED)

    def test_cancelAtPassword(self) -> None:
        """
        C{*} instead of the password cancels.
        """
        mechanism = createMechanism("LOGIN")
        mechanism.start(b64("alice"))
        self.assertEqual(mechanism.step(b"*"), ABORTED)

    def test_emptyUsername(self) -> None:
        """
        An empty user name (C{=} or an empty line) is refused.
        """
        self.assertEqual(createMechanism("LOGIN").start(b"="), MALFORMED)
        mechanism = createMechanism("LOGIN")
        mechanism.start(None)
        self.assertEqual(mechanism.step(b""), MALFORMED)

    def test_emptyPassword(self) -> None:
        """
        An empty password is refused.
        """
        mechanism = createMechanism("LOGIN")
        mechanism.start(b64("alice"))
        self.assertEqual(mechanism.step(b""), MALFORMED)

    def test_passwordWithNUL(self) -> None:
        """
        A password holding NUL is refused.
        """
        mechanism = createMechanism("LOGIN")
        mechanism.start(b64("alice"))
        self.assertEqual(mechanism.step(b64("sec\0ret")), MALFORMED)

    def test_controlInUsername(self) -> None:
        """
        A user name holding a control character is refused.
        """
        self.assertEqual(createMechanism("LOGIN").start(b64("ali\tce")), MALFORMED)

    def test_invalidBase64(self) -> None:
        """
        Invalid base64 at either step is refused with 501 5.5.2.
        """
        self.assertEqual(createMechanism("LOGIN").start(b"YWxpY2U"), BAD_BASE64)
        mechanism = createMechanism("LOGIN")
        mechanism.start(b64("alice"))
        self.assertEqual(mechanism.step(b"c2VjcmV0?"), BAD_BASE64)

    def test_invalidUTF8(self) -> None:
        """
        A user name or password that is not UTF-8 is refused.
        """
        self.assertEqual(createMechanism("LOGIN").start(b64(b"\xffalice")), MALFORMED)
        mechanism = createMechanism("LOGIN")
        mechanism.start(b64("alice"))
        self.assertEqual(mechanism.step(b64(b"\xe2\x82")), MALFORMED)


class CramMD5Tests(SynchronousTestCase):
    """
    CRAM-MD5 (RFC 2195).
    """

    def test_challenge(self) -> None:
        """
        The challenge is the base64 of the source's bytes (RFC 2195 example).
        """
        mechanism = createMechanism("CRAM-MD5", lambda: RFC2195_CHALLENGE)
        self.assertEqual(
            mechanism.start(None),
            Challenge("PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+"),
        )

    def test_response(self) -> None:
        """
        C{user SP digest} gives a request holding the challenge and the
        digest; L{AuthRequest.validatePassword} checks it (RFC 2195 example).
        """
        mechanism = createMechanism("CRAM-MD5", lambda: RFC2195_CHALLENGE)
        mechanism.start(None)
        result = mechanism.step(b"dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw")
        self.assertEqual(
            result,
            Done(
                AuthRequest(
                    method="CRAM-MD5",
                    username="tim",
                    challenge=RFC2195_CHALLENGE,
                    response=RFC2195_DIGEST,
                )
            ),
        )
        assert isinstance(result, Done)
        self.assertTrue(result.request.validatePassword("tanstaaftanstaaf"))
        self.assertFalse(result.request.validatePassword("tanstaaf"))

    def test_digest(self) -> None:
        """
        L{cramMD5Digest} computes the RFC 2195 example digest.
        """
        self.assertEqual(cramMD5Digest(RFC2195_SECRET, RFC2195_CHALLENGE), RFC2195_DIGEST)

    def test_upperCaseDigest(self) -> None:
        """
        An upper-case hex digest is accepted and reported in lower case.
        """
        mechanism = createMechanism("CRAM-MD5", lambda: RFC2195_CHALLENGE)
        mechanism.start(None)
        result = mechanism.step(b64(f"tim {RFC2195_DIGEST.upper()}"))
        assert isinstance(result, Done)
        self.assertEqual(result.request.response, RFC2195_DIGEST)

    def test_usernameWithSpace(self) -> None:
        """
        The digest is after the last space, so a user name may hold spaces.
        """
        mechanism = createMechanism("CRAM-MD5", lambda: RFC2195_CHALLENGE)
        mechanism.start(None)
        result = mechanism.step(b64(f"tim smith {RFC2195_DIGEST}"))
        assert isinstance(result, Done)
        self.assertEqual(result.request.username, "tim smith")

    def test_initialResponseRefused(self) -> None:
        """
        The server speaks first in CRAM-MD5: an initial response is refused.
        """
        mechanism = createMechanism("CRAM-MD5", lambda: RFC2195_CHALLENGE)
        self.assertEqual(
            mechanism.start(b64(f"tim {RFC2195_DIGEST}")),
            Failed(replies.AUTH_INITIAL_RESPONSE_NOT_ALLOWED),
        )

    def test_malformed(self) -> None:
        """
        A response without a space, with an empty user name, or whose digest
        is not 32 hex digits is refused.
        """
        for response in (
            RFC2195_DIGEST,
            f" {RFC2195_DIGEST}",
            f"tim {RFC2195_DIGEST[:-1]}",
            f"tim {RFC2195_DIGEST}0",
            f"tim {RFC2195_DIGEST[:-1]}g",
            f"t\x01m {RFC2195_DIGEST}",
        ):
            mechanism = createMechanism("CRAM-MD5", lambda: RFC2195_CHALLENGE)
            mechanism.start(None)
            self.assertEqual(mechanism.step(b64(response)), MALFORMED, response)

    def test_cancel(self) -> None:
        """
        C{*} cancels.
        """
        mechanism = createMechanism("CRAM-MD5", lambda: RFC2195_CHALLENGE)
        mechanism.start(None)
        self.assertEqual(mechanism.step(b"*"), ABORTED)

    def test_defaultChallenge(self) -> None:
        """
        Without a source, each exchange gets a fresh C{<digits.hex@host>}
        challenge.
        """
        first = createMechanism("CRAM-MD5").start(None)
        second = createMechanism("CRAM-MD5").start(None)
        assert isinstance(first, Challenge) and isinstance(second, Challenge)
        self.assertNotEqual(first, second)
        raw = base64.b64decode(first.text)
        self.assertRegex(raw, re.compile(rb"\A<\d+\.[0-9a-f]{16}@[^>\s]+>\Z"))
        self.assertRegex(defaultCramMD5Challenge(), re.compile(rb"\A<\d+\.[0-9a-f]{16}@"))

    def test_challengeNamesGivenHost(self) -> None:
        """
        The default challenge names the host name it is given (the server's
        configured name), never the machine's own; characters that cannot
        be part of a msg-id are left out.
        """
        step = createMechanism("CRAM-MD5", hostname="mx.example.com").start(None)
        assert isinstance(step, Challenge)
        raw = base64.b64decode(step.text)
        self.assertRegex(raw, re.compile(rb"\A<\d+\.[0-9a-f]{16}@mx\.example\.com>\Z"))
        self.assertTrue(defaultCramMD5Challenge("a <b>\tc").endswith(b"@abc>"))
        self.assertTrue(defaultCramMD5Challenge("<>").endswith(b"@localhost>"))


class XOAuth2Tests(SynchronousTestCase):
    """
    Google's XOAUTH2.
    """

    GOOD = (
        b"user=someuser@example.com\x01"
        b"auth=Bearer ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg\x01\x01"
    )
    EXPECTED = Done(
        AuthRequest(
            method="XOAUTH2",
            username="someuser@example.com",
            accessToken="ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg",
        )
    )

    def test_initialResponse(self) -> None:
        """
        The initial response gives the user and the bearer token.
        """
        self.assertEqual(createMechanism("XOAUTH2").start(b64(self.GOOD)), self.EXPECTED)

    def test_afterEmptyChallenge(self) -> None:
        """
        Without an initial response, an empty challenge asks for it.
        """
        mechanism = createMechanism("XOAUTH2")
        self.assertEqual(mechanism.start(None), Challenge(""))
        self.assertEqual(mechanism.step(b64(self.GOOD)), self.EXPECTED)

    def test_schemeAnyCase(self) -> None:
        """
        The C{Bearer} scheme name is matched without regard to case.
        """
        message = self.GOOD.replace(b"Bearer", b"bearer")
        self.assertEqual(createMechanism("XOAUTH2").start(b64(message)), self.EXPECTED)

    def test_malformed(self) -> None:
        """
        Missing terminators, fields or token, another scheme, a field without
        C{=} or a repeated field are refused.
        """
        for message in (
            b"user=a@example.com\x01auth=Bearer token\x01",
            b"user=a@example.com\x01auth=Bearer token",
            b"auth=Bearer token\x01\x01",
            b"user=a@example.com\x01\x01",
            b"user=a@example.com\x01auth=Basic token\x01\x01",
            b"user=a@example.com\x01auth=Bearer \x01\x01",
            b"user=a@example.com\x01auth=Bearer to ken\x01\x01",
            b"user=\x01auth=Bearer token\x01\x01",
            b"user=a@example.com\x01auth\x01\x01",
            b"user=a@example.com\x01user=b@example.com\x01auth=Bearer t\x01\x01",
            b"user=\xff\x01auth=Bearer token\x01\x01",
        ):
            self.assertEqual(createMechanism("XOAUTH2").start(b64(message)), MALFORMED, message)

    def test_invalidBase64(self) -> None:
        """
        Invalid base64 is refused with 501 5.5.2.
        """
        self.assertEqual(createMechanism("XOAUTH2").start(b"dXNlcj1h\x01"), BAD_BASE64)

    def test_cancel(self) -> None:
        """
        C{*} cancels.
        """
        mechanism = createMechanism("XOAUTH2")
        mechanism.start(None)
        self.assertEqual(mechanism.step(b"*"), ABORTED)

    def test_failureChallenge(self) -> None:
        """
        L{xoauth2FailureChallenge} is Google's base64 JSON error document.
        """
        challenge = xoauth2FailureChallenge()
        self.assertEqual(
            json.loads(base64.b64decode(challenge.text, validate=True)),
            {"status": "400", "schemes": "Bearer", "scope": "https://mail.google.com/"},
        )
        self.assertEqual(
            base64.b64decode(challenge.text),
            b'{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}',
        )

    def test_failureChallengeFields(self) -> None:
        """
        The status, schemes and scope can be chosen.
        """
        challenge = xoauth2FailureChallenge("401", "bearer mac", "https://example.com/mail")
        self.assertEqual(
            json.loads(base64.b64decode(challenge.text)),
            {"status": "401", "schemes": "bearer mac", "scope": "https://example.com/mail"},
        )
