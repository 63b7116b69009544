# -*- test-case-name: tests.test_errorsleepreplies -*-
"""
Postfix's error tarpit holds every reply past C{softErrorLimit}, not only
refusals: the 354 of DATA, the 334 of AUTH, the 250 of a BDAT chunk and
the 220 of STARTTLS wait C{errorSleep} seconds as Postfix's
C{smtpd_chat_reply} sleeps before them, and a message accepted forgives
the errors before its own reply is sent (C{common_post_message_handling}).
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from tests import replies, test_starttls
from tests.test_auth import AUTH_OK, PasswordHandler, b64
from tests.test_deadlines import LogCatcher
from tests.test_errorsleep import BAD, SOFT_LIMIT_LINE, greeted, held, makeErrors
from tests.test_protocol import connect, take
from tests.test_starttls import READY, FakeTLS
from twisted_smtpd import SMTPError
from twisted_smtpd._core.session import Session
from twisted_smtpd.handlers import BaseHandler
from twisted_smtpd.interfaces import IMessageStream

QUEUED = b"250 2.0.0 OK: queued as X1\r\n"
MESSAGE = b"MAIL FROM:<s@example.com>\r\nRCPT TO:<r@example.com>\r\n"


class RefusingData(BaseHandler):
    """
    C{onData} refuses every message, once its body is in.
    """

    def onData(self, stream: IMessageStream, session: Session) -> object:
        raise SMTPError(554, "Message refused", "5.7.1")


class ReplyKindsTests(SynchronousTestCase):
    """
    The intermediate replies wait as the final ones do.
    """

    def test_startDataLate(self) -> None:
        """
        The 354 of DATA past the limit waits; the body the client sends
        meanwhile (a client that does not wait for it) is read once the
        354 is sent, and the message's 250 is not held.
        """
        proto, transport, clock, _ = greeted()
        makeErrors(proto, transport, 10)
        proto.dataReceived(MESSAGE)
        clock.pump([1.0, 1.0])
        self.assertEqual(take(transport), replies.MAIL_OK + replies.RCPT_OK)
        proto.dataReceived(b"DATA\r\nhi\r\n.\r\n")
        clock.advance(0.999)
        self.assertEqual(take(transport), b"")
        clock.advance(0.001)
        self.assertEqual(take(transport), replies.START_DATA + QUEUED)
        self.assertEqual(held(clock), [])

    def test_authChallengeLate(self) -> None:
        """
        The 334 of AUTH waits, and so does the answer to the client's
        response: a login does not forgive the errors (Postfix resets its
        count only for a message accepted).
        """
        proto, transport, clock, _ = greeted(handler=PasswordHandler(), allowInsecureAuth=True)
        makeErrors(proto, transport, 10)
        proto.dataReceived(b"AUTH PLAIN\r\n")
        clock.advance(0.999)
        self.assertEqual(take(transport), b"")
        clock.advance(0.001)
        self.assertEqual(take(transport), b"334 \r\n")
        proto.dataReceived(b64(b"\0alice\0secret") + b"\r\n")
        self.assertEqual(take(transport), b"")
        clock.advance(1)
        self.assertEqual(take(transport), AUTH_OK)
        proto.dataReceived(b"NOOP\r\n")
        self.assertEqual(take(transport), b"")

    def test_chunkLate(self) -> None:
        """
        The 250 of a BDAT chunk that is not the last waits; the message's
        own reply, to the last chunk, does not.
        """
        proto, transport, clock, _ = greeted()
        makeErrors(proto, transport, 10)
        proto.dataReceived(MESSAGE)
        clock.pump([1.0, 1.0])
        take(transport)
        proto.dataReceived(b"BDAT 4\r\nhi\r\nBDAT 0 LAST\r\n")
        clock.advance(0.999)
        self.assertEqual(take(transport), b"")
        clock.advance(0.001)
        self.assertEqual(take(transport), b"250 2.0.0 OK: 4 octets received\r\n" + QUEUED)

    def test_startTLSLate(self) -> None:
        """
        The 220 of STARTTLS waits; the switch to TLS follows it, never
        before: the 220 leaves in plaintext, the commands pipelined behind
        it are still discarded, and reading goes on for the handshake.
        """
        proto, transport = test_starttls.connect(softErrorLimit=1)
        clock = proto.clock
        proto.dataReceived(b"EHLO c\r\n" + BAD)
        take(transport)
        proto.dataReceived(b"STARTTLS\r\nMAIL FROM:<evil@example.com>\r\n")
        self.assertEqual(transport.tlsStarted, [])
        self.assertEqual(take(transport), b"")
        clock.advance(1)  # type: ignore[attr-defined]
        self.assertEqual(transport.tlsStarted, [FakeTLS.marker])
        self.assertEqual(transport.writtenBeforeTLS, READY)
        self.assertEqual(transport.producerState, "producing")
        proto.handshakeCompleted()
        self.assertIsNone(proto.session.envelope.mailFrom)
        take(transport)
        proto.dataReceived(b"EHLO c\r\n")
        self.assertEqual(take(transport), b"")
        clock.advance(1)  # type: ignore[attr-defined]
        self.assertTrue(take(transport).startswith(b"250-mx.example.com"))

    def test_closedWhileTLSHeld(self) -> None:
        """
        A server closing while the 220 of STARTTLS is held drops it and
        answers STARTTLS with its 421 alone, in plaintext, and never
        starts TLS: a client that read the 220 would start its handshake
        and read the 421 behind it as a TLS record.  What it pipelined
        behind STARTTLS is never run.
        """
        proto, transport = test_starttls.connect(softErrorLimit=1)
        proto.dataReceived(b"EHLO c\r\n" + BAD)
        take(transport)
        proto.dataReceived(b"STARTTLS\r\nMAIL FROM:<evil@example.com>\r\n")
        assert proto.server is not None
        proto.server.close()
        self.assertEqual(take(transport), replies.SHUTDOWN)
        self.assertTrue(transport.disconnecting)
        proto.clock.advance(1)  # type: ignore[attr-defined]
        self.assertEqual(transport.tlsStarted, [])
        self.assertEqual(take(transport), b"")
        self.assertEqual(held(proto.clock), [])  # type: ignore[arg-type]

    def test_halfClosedWhileTLSHeld(self) -> None:
        """
        A client that shuts its sending side while the 220 of STARTTLS is
        held gets it at once, and the session closes: no TLS is started
        for a handshake that can no longer come (it would keep the
        connection until C{tlsHandshakeTimeout}, then reset it), and what
        it pipelined behind STARTTLS is still discarded, never run.
        """
        proto, transport = test_starttls.connect(softErrorLimit=1)
        proto.dataReceived(b"EHLO c\r\n" + BAD)
        take(transport)
        proto.dataReceived(b"STARTTLS\r\nMAIL FROM:<evil@example.com>\r\n")
        proto.readConnectionLost()
        self.assertEqual(take(transport), READY)
        self.assertEqual(transport.tlsStarted, [])
        self.assertTrue(transport.disconnecting)
        self.assertEqual(held(proto.clock), [])  # type: ignore[arg-type]


class ResetTests(SynchronousTestCase):
    """
    A message accepted forgives the errors before it, as Postfix's
    C{common_post_message_handling} resets C{error_count} before it
    answers: its own reply and the replies after it are prompt again.
    """

    def test_messageAcceptedResets(self) -> None:
        """
        Past the limit, MAIL, RCPT and DATA are each answered a second
        late; the message's 250 is not, and brings the count back to 0:
        the next ten refusals are prompt, the 11th reply waits again; the
        soft limit's line is not repeated.
        """
        catcher = LogCatcher(self)
        proto, transport, clock, _ = greeted()
        makeErrors(proto, transport, 10)
        proto.dataReceived(MESSAGE + b"DATA\r\nhi\r\n.\r\nNOOP\r\n")
        for reply in (replies.MAIL_OK, replies.RCPT_OK):
            clock.advance(1)
            self.assertEqual(take(transport), reply)
        clock.advance(1)
        self.assertEqual(take(transport), replies.START_DATA + QUEUED + replies.OK)
        self.assertEqual(makeErrors(proto, transport, 10), replies.UNKNOWN_COMMAND * 10)
        proto.dataReceived(b"NOOP\r\n")
        self.assertEqual(take(transport), b"")
        clock.advance(1)
        self.assertEqual(take(transport), replies.OK)
        self.assertEqual(len(catcher.matching(SOFT_LIMIT_LINE)), 1)

    def test_messageRefusedLate(self) -> None:
        """
        A message refused past the limit forgives nothing: its refusal
        waits, counts once sent, and the one that reaches C{maxErrors} is
        followed by the 421.
        """
        proto, transport, clock, _ = greeted(handler=RefusingData(), softErrorLimit=2, maxErrors=3)
        makeErrors(proto, transport, 2)
        proto.dataReceived(MESSAGE + b"DATA\r\nhi\r\n.\r\n")
        clock.pump([1.0, 1.0, 1.0])
        self.assertEqual(take(transport), replies.MAIL_OK + replies.RCPT_OK + replies.START_DATA)
        self.assertFalse(transport.disconnecting)
        clock.advance(0.999)
        self.assertEqual(take(transport), b"")
        clock.advance(0.001)
        self.assertEqual(
            take(transport), b"554 5.7.1 Message refused\r\n" + replies.TOO_MANY_ERRORS
        )
        self.assertTrue(transport.disconnecting)

    def test_lateAnswerAfterBody(self) -> None:
        """
        A handler that answers after the body is in: its 250 is sent as it
        answers, not held, and the session takes commands again at once.
        """
        answer: Deferred[None] = Deferred()

        class Late(BaseHandler):
            def onData(self, stream: IMessageStream, session: Session) -> object:
                return answer

        proto, transport, clock, _ = greeted(handler=Late())
        makeErrors(proto, transport, 10)
        proto.dataReceived(MESSAGE + b"DATA\r\nhi\r\n.\r\nNOOP\r\n")
        clock.pump([1.0] * 3)
        self.assertEqual(take(transport), replies.MAIL_OK + replies.RCPT_OK + replies.START_DATA)
        answer.callback(None)
        self.assertEqual(take(transport), replies.DATA_OK + replies.OK)
        self.assertEqual(held(clock), [])

    def test_lmtpRepliesTogether(self) -> None:
        """
        The replies one command makes together are held together: an LMTP
        message refused for its two recipients gets its two replies one
        second late, at once; accepted, both are sent at once, the errors
        forgiven.
        """
        for handler, reply in [(RefusingData(), b"554 5.7.1 Message refused\r\n"), (None, QUEUED)]:
            proto, transport, clock, _ = connect(handler, lmtp=True)
            proto.dataReceived(b"LHLO c\r\n")
            take(transport)
            makeErrors(proto, transport, 10)
            proto.dataReceived(MESSAGE + b"RCPT TO:<q@example.com>\r\nDATA\r\n")
            clock.pump([1.0] * 4)
            take(transport)
            proto.dataReceived(b"hi\r\n.\r\n")
            if reply is not QUEUED:
                self.assertEqual(take(transport), b"")
                clock.advance(1)
            self.assertEqual(take(transport), reply * 2)
            self.assertEqual(held(clock), [])
