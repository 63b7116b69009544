# -*- test-case-name: tests.test_sessionreplaced -*-
"""
Tests for a hook that replaces an attribute of the session the server goes
on using (C{session.envelope = None}, C{session.transaction = None}): the
handler's bug is answered and logged as a failing hook's is, the server's
own value is kept, and the session goes on.
"""

from __future__ import annotations

from base64 import b64encode

from twisted.internet.defer import succeed
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests import replies
from tests.test_auth import AUTH_OK
from tests.test_protocol import connect, take
from twisted_smtpd._core.session import Address, AuthRequest, AuthResult, Session
from twisted_smtpd.handlers import BaseHandler
from twisted_smtpd.interfaces import IMessageStream

#: The attributes replaced, with the values put in their place.
REPLACED: tuple[tuple[str, object], ...] = (
    ("envelope", None),
    ("envelope", "not an envelope"),
    ("transaction", None),
)


class Replacing(BaseHandler):
    """
    Set C{session.<name>} to C{value} in the hook C{hook}, the first time
    it is called only; answer at once, or through a L{Deferred} with
    C{later}.
    """

    def __init__(self, hook: str, name: str, value: object, later: bool = False) -> None:
        self.hook = hook
        self.name = name
        self.value = value
        self.later = later
        self.done = False
        self.messages: list[bytes] = []

    def _replace(self, hook: str, session: Session) -> object:
        if hook == self.hook and not self.done:
            self.done = True
            owner, _, name = self.name.rpartition(".")
            setattr(getattr(session, owner) if owner else session, name, self.value)
        return succeed(None) if self.later else None

    def onConnect(self, session: Session) -> object:
        return self._replace("onConnect", session)

    def onHelo(self, hostname: str, session: Session) -> object:
        return self._replace("onHelo", session)

    def onAuth(self, auth: AuthRequest, session: Session) -> object:
        self._replace("onAuth", session)
        return AuthResult(auth.username)

    def onMailFrom(self, address: Address, session: Session) -> object:
        return self._replace("onMailFrom", session)

    def onRcptTo(self, address: Address, session: Session) -> object:
        return self._replace("onRcptTo", session)

    def onData(self, stream: IMessageStream, session: Session) -> object:
        self._replace("onData", session)

        def kept(body: bytes) -> None:
            self.messages.append(body)

        return stream.drain().addCallback(kept)


MAIL = b"MAIL FROM:<a@example.com>\r\n"
RCPT = b"RCPT TO:<b@example.com>\r\n"
MESSAGE = b"DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n"
#: A whole transaction, accepted.
ACCEPTED = replies.MAIL_OK + replies.RCPT_OK + replies.START_DATA + replies.DATA_OK


class ReplacedSessionAttributeTests(SynchronousTestCase):
    """
    A hook replacing C{session.envelope} or C{session.transaction} with a
    value of another type is the handler's bug: its command is answered
    451 with one logged error naming the hook and the attribute, the
    server's own value is put back, and the next commands work.
    """

    def session(
        self, hook: str, name: str, value: object, later: bool, commands: bytes, **options: object
    ) -> bytes:
        """
        Run C{commands} after EHLO (unless C{hook} is C{onHelo}) with
        L{Replacing}; check the error logged, that the session is still
        open and ends cleanly, and that the attribute holds a value of its
        type.

        @return: The replies.
        """
        handler = Replacing(hook, name, value, later)
        proto, transport, clock, factory = connect(handler, authOptional=True, **options)
        take(transport)
        if hook != "onHelo":
            proto.dataReceived(b"EHLO c.example\r\n")
            take(transport)
        proto.dataReceived(commands)
        written = take(transport)
        errors = self.flushLoggedErrors(TypeError)
        self.assertEqual(len(errors), 1, (hook, name, value, later))
        self.assertEqual(
            str(errors[0].value),
            f"{hook} replaced session.{name} with a {type(value).__name__}:"
            " the server's own is kept",
        )
        self.assertFalse(transport.disconnecting)
        self.assertIsInstance(proto.session.transaction, int)
        self.assertEqual(type(proto.session.envelope).__name__, "Envelope")
        proto.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(factory.connections, set())
        return written

    def test_onHelo(self) -> None:
        """
        EHLO is answered 451; the next EHLO and a transaction work.
        """
        for name, value in REPLACED:
            for later in (False, True):
                written = self.session(
                    "onHelo", name, value, later, b"EHLO c.example\r\nEHLO c.example\r\n" + MAIL
                )
                self.assertTrue(written.startswith(replies.LOCAL_ERROR + b"250-"), written)
                self.assertTrue(written.endswith(replies.MAIL_OK), written)

    def test_onMailFrom(self) -> None:
        """
        MAIL is answered 451; the next MAIL starts a transaction.
        """
        for name, value in REPLACED:
            for later in (False, True):
                written = self.session("onMailFrom", name, value, later, MAIL + MAIL + RCPT)
                self.assertEqual(written, replies.LOCAL_ERROR + replies.MAIL_OK + replies.RCPT_OK)

    def test_onRcptTo(self) -> None:
        """
        RCPT is answered 451; the transaction goes on with the next one.
        """
        for name, value in REPLACED:
            for later in (False, True):
                written = self.session("onRcptTo", name, value, later, MAIL + RCPT + RCPT + MESSAGE)
                self.assertEqual(
                    written,
                    replies.MAIL_OK
                    + replies.LOCAL_ERROR
                    + replies.RCPT_OK
                    + replies.START_DATA
                    + replies.DATA_OK,
                )

    def test_onData(self) -> None:
        """
        The message is answered 451 (as when C{onData} raises); RSET and
        the next transaction work.
        """
        for name, value in REPLACED:
            for later in (False, True):
                written = self.session(
                    "onData", name, value, later, MAIL + RCPT + MESSAGE + b"RSET\r\n" + MAIL
                )
                self.assertEqual(
                    written,
                    replies.MAIL_OK
                    + replies.RCPT_OK
                    + replies.START_DATA
                    + replies.LOCAL_ERROR
                    + replies.RESET
                    + replies.MAIL_OK,
                )

    def test_onConnect(self) -> None:
        """
        C{onConnect} refuses the connection with 451, as when it raises:
        the client is not left without a reply.
        """
        for name, value in REPLACED:
            handler = Replacing("onConnect", name, value)
            proto, transport, clock, factory = connect(handler, authOptional=True)
            self.assertEqual(take(transport), replies.LOCAL_ERROR)
            self.assertTrue(transport.disconnecting)
            self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)

    def test_forwardedAttributes(self) -> None:
        """
        C{session.xClient} or C{session.xForward} replaced with a value
        that is not a C{dict} is put back the same way: the trusted
        XCLIENT or XFORWARD that follows is taken, not failed with a
        traceback dropping the client.
        """
        for name, command in [
            ("xClient", b"XCLIENT NAME=relay.example\r\n"),
            ("xForward", b"XFORWARD NAME=relay.example\r\n"),
        ]:
            written = self.session(
                "onHelo",
                name,
                None,
                False,
                b"EHLO c.example\r\n" + command,
                useXClient=True,
                useXForward=True,
            )
            self.assertTrue(written.startswith(replies.LOCAL_ERROR), written)
            self.assertIn(written.split(b"\r\n")[1][:4], (b"220 ", b"250 "), written)

    def test_recipientsReplaced(self) -> None:
        """
        C{session.envelope.rcptTo} replaced with a value that is not a
        C{list} (which the server appends each accepted recipient to) is
        put back the same way, in C{onRcptTo} or C{onMailFrom}: the
        transaction goes on.
        """
        for value in (None, ()):
            for later in (False, True):
                written = self.session(
                    "onRcptTo", "envelope.rcptTo", value, later, MAIL + RCPT + RCPT + MESSAGE
                )
                self.assertEqual(
                    written,
                    replies.MAIL_OK
                    + replies.LOCAL_ERROR
                    + replies.RCPT_OK
                    + replies.START_DATA
                    + replies.DATA_OK,
                )
                written = self.session(
                    "onMailFrom", "envelope.rcptTo", value, later, MAIL + MAIL + RCPT
                )
                self.assertEqual(written, replies.LOCAL_ERROR + replies.MAIL_OK + replies.RCPT_OK)

    def test_onAuth(self) -> None:
        """
        AUTH is refused as when C{onAuth} raises (454, a temporary
        failure); the next AUTH logs in.
        """
        plain = b"AUTH PLAIN " + b64encode(b"\0alice\0secret") + b"\r\n"
        for name, value in REPLACED:
            for later in (False, True):
                written = self.session(
                    "onAuth", name, value, later, plain + plain + MAIL, allowInsecureAuth=True
                )
                self.assertEqual(
                    written,
                    b"454 4.7.0 Temporary authentication failure\r\n" + AUTH_OK + replies.MAIL_OK,
                )
