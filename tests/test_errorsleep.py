# -*- test-case-name: tests.test_errorsleep -*-
"""
Postfix's error tarpit: past C{softErrorLimit} errors a refusal is sent
C{errorSleep} seconds late, the session reading no command meanwhile
(C{smtpd_soft_error_limit} and C{smtpd_error_sleep_time}).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.test.proto_helpers import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from tests import replies
from tests.test_deadlines import LogCatcher
from tests.test_protocol import connect, take
from tests.test_tap import parse
from twisted_smtpd import ServerOptions, SMTPError
from twisted_smtpd._core.session import Address, Session
from twisted_smtpd._serving.protocol import SMTPProtocol
from twisted_smtpd.handlers import BaseHandler

BAD = b"FOO\r\n"
SOFT_LIMIT_LINE = "soft error limit reached"


def greeted(**options: Any) -> tuple[SMTPProtocol, StringTransport, Clock, Any]:
    """
    A session past EHLO, replies read.
    """
    proto, transport, clock, factory = connect(**options)
    proto.dataReceived(b"EHLO c\r\n")
    take(transport)
    return proto, transport, clock, factory


def held(clock: Clock) -> list[Any]:
    """
    The timers of held refusals pending on C{clock}.
    """
    return [
        c
        for c in clock.getDelayedCalls()
        if c.active() and getattr(c.func, "__name__", "") == "_release"
    ]


def makeErrors(proto: SMTPProtocol, transport: StringTransport, count: int) -> bytes:
    """
    Send C{count} unknown commands one at a time, each answered at once.
    """
    for _ in range(count):
        proto.dataReceived(BAD)
    return take(transport)


class DelayTests(SynchronousTestCase):
    """
    The refusals of a session with C{softErrorLimit} errors counted wait
    C{errorSleep} seconds, on the reactor's clock.
    """

    def test_eleventhRefusalLate(self) -> None:
        """
        Ten refusals are sent at once; with ten errors counted, the 11th
        waits one second (the defaults, Postfix's), and so does each after
        it.
        """
        proto, transport, clock, _ = greeted()
        self.assertEqual(makeErrors(proto, transport, 10), replies.UNKNOWN_COMMAND * 10)
        for _ in range(2):
            proto.dataReceived(BAD)
            self.assertEqual(take(transport), b"")
            clock.advance(0.999)
            self.assertEqual(take(transport), b"")
            clock.advance(0.001)
            self.assertEqual(take(transport), replies.UNKNOWN_COMMAND)

    def test_everyReplyLate(self) -> None:
        """
        Past the limit every reply waits, not only refusals: the replies
        to NOOP, RSET, VRFY, HELP and EHLO each come one second late, as
        Postfix's C{smtpd_chat_reply} sleeps before any reply once
        C{error_count >= smtpd_soft_error_limit}.
        """
        proto, transport, clock, _ = connect()
        take(transport)
        proto.dataReceived(b"EHLO c\r\n")
        ehlo = take(transport)
        makeErrors(proto, transport, 10)
        for command, reply in [
            (b"NOOP\r\n", replies.OK),
            (b"RSET\r\n", replies.RESET),
            (b"VRFY someone\r\n", replies.VRFY),
            (b"HELP\r\n", replies.HELP),
            (b"EHLO c\r\n", ehlo),
        ]:
            proto.dataReceived(command)
            clock.advance(0.999)
            self.assertEqual(take(transport), b"", command)
            clock.advance(0.001)
            self.assertEqual(take(transport), reply, command)

    def test_underLimitPrompt(self) -> None:
        """
        Postfix's condition, C{error_count >= smtpd_soft_error_limit},
        tested before each reply, the error counted after its reply: with
        nine errors a NOOP is answered at once, and so is the refusal
        that is the tenth error; the NOOP after it waits.
        """
        proto, transport, clock, _ = greeted()
        makeErrors(proto, transport, 9)
        proto.dataReceived(b"NOOP\r\n")
        self.assertEqual(take(transport), replies.OK)
        proto.dataReceived(BAD)
        self.assertEqual(take(transport), replies.UNKNOWN_COMMAND)
        proto.dataReceived(b"NOOP\r\n")
        self.assertEqual(take(transport), b"")
        clock.advance(1)
        self.assertEqual(take(transport), replies.OK)

    def test_junkReachingLimitPrompt(self) -> None:
        """
        A junk command past C{maxJunkCommands} is counted after its reply,
        as Postfix's C{smtpd_proto} counts it once its action replied: the
        one that is the tenth error is answered at once, like the refusal
        that is; the reply after it waits.  So for an empty BDAT chunk and
        for an EHLO whose C{onHelo} answers later.
        """
        MESSAGE = b"MAIL FROM:<s@example.com>\r\nRCPT TO:<r@example.com>\r\n"
        CHUNK = b"250 2.0.0 OK: 0 octets received\r\n"
        for command, reply, before in [
            (b"NOOP\r\n", replies.OK, b""),
            (b"RSET\r\n", replies.RESET, b""),
            (b"HELP\r\n", replies.HELP, b""),
            (b"HELO c\r\n", None, b""),
            (b"BDAT 0\r\n", CHUNK, MESSAGE),
        ]:
            catcher = LogCatcher(self)
            proto, transport, clock, _ = greeted(maxJunkCommands=1)
            proto.dataReceived(before)
            makeErrors(proto, transport, 9)
            for _ in range(4):
                proto.dataReceived(command)
                answer = take(transport)
                self.assertEqual(answer[:1], b"2", command)
                self.assertTrue(reply is None or answer == reply, (command, answer))
                if catcher.matching(SOFT_LIMIT_LINE):
                    break
            self.assertEqual(len(catcher.matching(SOFT_LIMIT_LINE)), 1, command)
            self.assertIn("(10 errors)", catcher.matching(SOFT_LIMIT_LINE)[0])
            proto.dataReceived(command)
            self.assertEqual(take(transport), b"", command)
            clock.advance(1)
            self.assertEqual(take(transport)[:1], b"2", command)

    def test_slowHeloReachingLimitPrompt(self) -> None:
        """
        An EHLO whose C{onHelo} answers later is counted once it answered:
        the one that is the tenth error is answered at once when its hook
        answers, not held.
        """
        catcher = LogCatcher(self)
        handler = SlowHelo()
        proto, transport, clock, _ = greeted(maxJunkCommands=1)
        makeErrors(proto, transport, 9)
        proto.handler = handler
        for _ in range(4):
            handler.pending = Deferred()
            proto.dataReceived(b"EHLO c\r\n")
            self.assertEqual(take(transport), b"")
            handler.pending.callback(None)
            self.assertTrue(take(transport).startswith(b"250-mx.example.com"))
            if catcher.matching(SOFT_LIMIT_LINE):
                break
        self.assertIn("(10 errors)", catcher.matching(SOFT_LIMIT_LINE)[0])
        proto.dataReceived(b"NOOP\r\n")
        self.assertEqual(take(transport), b"")
        clock.advance(1)
        self.assertEqual(take(transport), replies.OK)

    def test_errorSleepSet(self) -> None:
        """
        C{softErrorLimit} and C{errorSleep} set the count and the delay.
        """
        proto, transport, clock, _ = greeted(softErrorLimit=2, errorSleep=0.2)
        self.assertEqual(makeErrors(proto, transport, 2), replies.UNKNOWN_COMMAND * 2)
        proto.dataReceived(BAD)
        clock.advance(0.19)
        self.assertEqual(take(transport), b"")
        clock.advance(0.01)
        self.assertEqual(take(transport), replies.UNKNOWN_COMMAND)

    def test_zeroTurnsItOff(self) -> None:
        """
        With C{errorSleep} 0 no refusal waits: the 20th is followed by the
        421 of C{maxErrors} at once.
        """
        proto, transport, clock, _ = greeted(errorSleep=0)
        self.assertEqual(
            makeErrors(proto, transport, 20),
            replies.UNKNOWN_COMMAND * 20 + replies.TOO_MANY_ERRORS,
        )
        self.assertTrue(transport.disconnecting)

    def test_hardLimitAfterDelay(self) -> None:
        """
        The refusal that reaches C{maxErrors} is late too, and the 421
        follows it.
        """
        proto, transport, clock, _ = greeted(softErrorLimit=2, maxErrors=3)
        makeErrors(proto, transport, 2)
        proto.dataReceived(BAD)
        self.assertFalse(transport.disconnecting)
        clock.advance(1)
        self.assertEqual(take(transport), replies.UNKNOWN_COMMAND + replies.TOO_MANY_ERRORS)
        self.assertTrue(transport.disconnecting)

    def test_authFailuresLate(self) -> None:
        """
        A failed AUTH past the limit (a password guesser) waits like any
        refusal; the lockout's 421 after the last attempt is not held.
        """
        proto, transport, clock, _ = greeted(softErrorLimit=1, allowInsecureAuth=True)
        makeErrors(proto, transport, 1)
        proto.dataReceived(b"AUTH FROB\r\n")
        self.assertEqual(take(transport), b"")
        clock.advance(1)
        self.assertEqual(take(transport)[:1], b"5")

    def test_oneLogLine(self) -> None:
        """
        The error that reaches the limit leaves one line naming the client
        and the errors counted; the replies held after it, none.
        """
        catcher = LogCatcher(self)
        proto, transport, clock, _ = greeted()
        makeErrors(proto, transport, 9)
        self.assertEqual(catcher.matching(SOFT_LIMIT_LINE), [])
        makeErrors(proto, transport, 1)
        for command in (BAD, b"NOOP\r\n", BAD):
            proto.dataReceived(command)
            clock.advance(1)
        (line,) = catcher.matching(SOFT_LIMIT_LINE)
        self.assertIn("192.0.2.7", line)
        self.assertIn("(10 errors)", line)
        self.assertIn("replies delayed by 1 s", line)


class SlowRcpt(BaseHandler):
    """
    C{onRcptTo} answers with the L{Deferred} in C{pending}.
    """

    def __init__(self) -> None:
        self.pending: Deferred[None] = Deferred()

    def onRcptTo(self, address: Address, session: Session) -> object:
        return self.pending


class SlowHelo(BaseHandler):
    """
    C{onHelo} answers with the L{Deferred} in C{pending}.
    """

    def __init__(self) -> None:
        self.pending: Deferred[None] = Deferred()

    def onHelo(self, hostname: str, session: Session) -> object:
        return self.pending


class HeldCommandsTests(SynchronousTestCase):
    """
    While a reply is held the session reads nothing: commands pipelined
    behind it wait, in order, and the held reply is the only one.
    """

    def test_pipelinedWait(self) -> None:
        """
        Commands pipelined behind a held reply, however their octets
        arrive, are handled once it is sent, each reply held in turn (one
        a second, as Postfix's sleep before each reply gives them); the
        reading stops meanwhile.
        """
        for split in (False, True):
            proto, transport, clock, _ = greeted()
            makeErrors(proto, transport, 10)
            data = BAD + b"NOOP\r\n" + BAD + b"NOOP\r\n"
            if split:
                for i in range(len(data)):
                    proto.dataReceived(data[i : i + 1])
            else:
                proto.dataReceived(data)
            self.assertEqual(take(transport), b"")
            self.assertEqual(transport.producerState, "paused")
            self.assertEqual(len(held(clock)), 1)
            for reply, state in [
                (replies.UNKNOWN_COMMAND, "paused"),
                (replies.OK, "paused"),
                # The last command is read: the client is read again.
                (replies.UNKNOWN_COMMAND, "producing"),
            ]:
                clock.advance(1)
                self.assertEqual(take(transport), reply)
                self.assertEqual(transport.producerState, state)
                self.assertEqual(len(held(clock)), 1)
            clock.advance(1)
            self.assertEqual(take(transport), replies.OK)
            self.assertEqual(transport.producerState, "producing")
            self.assertEqual(held(clock), [])

    def test_pipelinedRecipients(self) -> None:
        """
        MAIL and RCPTs pipelined in one read past the limit (a harvester's
        batch) are answered one a second, each 250 held as a refusal is.
        """
        proto, transport, clock, _ = greeted()
        makeErrors(proto, transport, 10)
        proto.dataReceived(
            b"MAIL FROM:<s@example.com>\r\n"
            + b"".join(b"RCPT TO:<r%d@example.com>\r\n" % i for i in range(3))
        )
        for reply in (replies.MAIL_OK,) + (replies.RCPT_OK,) * 3:
            clock.advance(0.999)
            self.assertEqual(take(transport), b"")
            clock.advance(0.001)
            self.assertEqual(take(transport), reply)
        self.assertEqual(len(proto.session.envelope.rcptTo), 3)

    def test_lateHookRefusal(self) -> None:
        """
        A hook's late refusal past the limit is held too; the time it is
        held is not the handler's (C{handlerTimeout} counts the hook's
        wait alone).
        """
        handler = SlowRcpt()
        proto, transport, clock, _ = greeted(handler=handler, handlerTimeout=10)
        makeErrors(proto, transport, 10)
        proto.dataReceived(b"MAIL FROM:<s@example.com>\r\nRCPT TO:<r@example.com>\r\n")
        clock.advance(1)
        self.assertEqual(take(transport), replies.MAIL_OK)
        clock.pump([0.5] * 19)
        handler.pending.errback(SMTPError(550, "No such user", "5.1.1"))
        self.assertEqual(take(transport), b"")
        clock.pump([0.25] * 4)
        self.assertEqual(take(transport), b"550 5.1.1 No such user\r\n")
        self.assertFalse(transport.disconnecting)

    def test_lateHookAcceptance(self) -> None:
        """
        A hook's late acceptance past the limit is held as its refusal
        would be, not counted as the handler's time either; the command
        pipelined behind it waits for the 250.
        """
        handler = SlowRcpt()
        proto, transport, clock, _ = greeted(handler=handler, handlerTimeout=10)
        makeErrors(proto, transport, 10)
        proto.dataReceived(b"MAIL FROM:<s@example.com>\r\n")
        clock.advance(1)
        take(transport)
        proto.dataReceived(b"RCPT TO:<r@example.com>\r\nNOOP\r\n")
        clock.pump([0.5] * 19)
        handler.pending.callback(None)
        clock.pump([0.25] * 3)
        self.assertEqual(take(transport), b"")
        clock.advance(0.25)
        self.assertEqual(take(transport), replies.RCPT_OK)
        clock.advance(1)
        self.assertEqual(take(transport), replies.OK)
        self.assertFalse(transport.disconnecting)

    def test_idleClientKeepsReading(self) -> None:
        """
        A client that sends nothing behind the held reply is still read
        (its close is seen at once), as while a hook is waited for.
        """
        for command in (BAD, b"NOOP\r\n"):
            proto, transport, clock, _ = greeted()
            makeErrors(proto, transport, 10)
            proto.dataReceived(command)
            self.assertEqual(transport.producerState, "producing")

    def test_delayIsNotSilence(self) -> None:
        """
        The time a reply is held is not the client's silence: a delay
        longer than C{socketTimeout} does not end the session; once the
        reply is sent, the client's silence is timed again.
        """
        for command, reply in [(BAD, replies.UNKNOWN_COMMAND), (b"NOOP\r\n", replies.OK)]:
            proto, transport, clock, _ = greeted(errorSleep=30, socketTimeout=10)
            makeErrors(proto, transport, 10)
            proto.dataReceived(command)
            clock.pump([1.0] * 30)
            self.assertEqual(take(transport), reply)
            self.assertFalse(transport.disconnecting)
            clock.pump([1.0] * 11)
            self.assertEqual(take(transport), replies.TIMEOUT)


#: A command past the limit whose reply refuses, and one whose reply
#: accepts: the session's end treats both held replies alike.
HELD = [(BAD, replies.UNKNOWN_COMMAND), (b"NOOP\r\n", replies.OK)]


class EndDuringDelayTests(SynchronousTestCase):
    """
    A held reply, refusal or not, never keeps a session that ends: the
    client's close, its half-close, a QUIT and the server's shutdown end it
    at once.
    """

    def test_clientGone(self) -> None:
        """
        A client that goes while its reply is held frees its slot at once;
        the timer is cancelled and nothing is written.
        """
        for command, _reply in HELD:
            for reason in (ConnectionDone(), ConnectionLost()):
                proto, transport, clock, factory = greeted()
                makeErrors(proto, transport, 10)
                proto.dataReceived(command)
                proto.connectionLost(Failure(reason))
                self.assertNotIn(proto, factory.connections)
                self.assertEqual(held(clock), [])
                self.assertEqual(take(transport), b"")
                self.assertNotIn("reply", vars(proto))

    def test_halfClose(self) -> None:
        """
        A client that shuts its sending side gets the held reply at once,
        then the answers to what it pipelined behind it, none held, then
        the close.
        """
        for command, reply in HELD:
            proto, transport, clock, _ = greeted()
            makeErrors(proto, transport, 10)
            proto.dataReceived(command + b"NOOP\r\n" + BAD)
            proto.readConnectionLost()
            self.assertEqual(take(transport), reply + replies.OK + replies.UNKNOWN_COMMAND)
            self.assertTrue(transport.disconnecting)
            self.assertEqual(held(clock), [])

    def test_quit(self) -> None:
        """
        QUIT's 221 is not held: it follows the held reply of the command
        before it at once, and the session closes.
        """
        proto, transport, clock, _ = greeted()
        makeErrors(proto, transport, 10)
        proto.dataReceived(b"QUIT\r\n")
        self.assertEqual(take(transport), replies.CLOSING)
        self.assertTrue(transport.disconnecting)
        for command, reply in HELD:
            proto, transport, clock, _ = greeted()
            makeErrors(proto, transport, 10)
            proto.dataReceived(command + b"QUIT\r\n")
            clock.advance(1)
            self.assertEqual(take(transport), reply + replies.CLOSING)
            self.assertTrue(transport.disconnecting)
            self.assertEqual(held(clock), [])

    def test_shutdown(self) -> None:
        """
        A server closing sends the held reply at once, then its 421, and
        its close does not wait for the timer.
        """
        for command, reply in HELD:
            proto, transport, clock, factory = greeted()
            makeErrors(proto, transport, 10)
            proto.dataReceived(command)
            d = factory.close()
            self.assertEqual(take(transport), reply + replies.SHUTDOWN)
            self.assertTrue(transport.disconnecting)
            proto.connectionLost(Failure(ConnectionDone()))
            self.successResultOf(d)
            self.assertEqual(held(clock), [])

    def test_shutdownInTransaction(self) -> None:
        """
        Inside a transaction the session may finish it, as any; past
        C{closeTimeout} the held reply and the 421 leave at once.
        """
        for command, reply in [*HELD, (b"RCPT TO:<r@example.com>\r\n", replies.RCPT_OK)]:
            proto, transport, clock, factory = greeted(errorSleep=10, closeTimeout=5)
            makeErrors(proto, transport, 10)
            proto.dataReceived(b"MAIL FROM:<s@example.com>\r\n")
            clock.pump([1.0] * 10)
            self.assertEqual(take(transport), replies.MAIL_OK)
            proto.dataReceived(command)
            factory.close()
            self.assertEqual(take(transport), b"")
            clock.advance(5)
            self.assertEqual(take(transport), reply + replies.SHUTDOWN)
            self.assertTrue(transport.disconnecting)


class OptionTests(SynchronousTestCase):
    """
    The two settings and their bounds.
    """

    def test_defaults(self) -> None:
        """
        Postfix's defaults: 10 errors, 1 second.
        """
        options = ServerOptions(name="mx.example.com")
        self.assertEqual((options.softErrorLimit, options.errorSleep), (10, 1.0))

    def test_refused(self) -> None:
        """
        A negative, infinite or too long delay, or a soft limit of 0, is
        refused, naming the setting.
        """
        for name, value in [
            ("errorSleep", -1),
            ("errorSleep", float("nan")),
            ("errorSleep", float("inf")),
            ("errorSleep", 301),
            ("softErrorLimit", 0),
            ("softErrorLimit", -1),
        ]:
            e = self.assertRaises(ValueError, ServerOptions, name="x.example", **{name: value})
            self.assertIn(name, str(e))
        self.assertRaises(TypeError, ServerOptions, name="x.example", softErrorLimit=1.5)
        ServerOptions(name="x.example", errorSleep=300, softErrorLimit=1)


class FlagTests(SynchronousTestCase):
    """
    C{twistd smtpd --soft-error-limit N --error-sleep SECONDS}.
    """

    def test_flagsSetOptions(self) -> None:
        """
        The flags set the two settings; without them Postfix's defaults
        stay.
        """
        options = parse("--sink", "--soft-error-limit", "5", "--error-sleep", "0.2")
        self.assertEqual(options["serverOptions"].softErrorLimit, 5)
        self.assertEqual(options["serverOptions"].errorSleep, 0.2)
        options = parse("--sink", "--error-sleep", "0")
        self.assertEqual(options["serverOptions"].errorSleep, 0.0)
        defaults = parse("--sink")["serverOptions"]
        self.assertEqual((defaults.softErrorLimit, defaults.errorSleep), (10, 1.0))

    def test_badValues(self) -> None:
        """
        A bad value is one usage error naming the flag.
        """
        for flag, value in [
            ("soft-error-limit", "0"),
            ("soft-error-limit", "1.5"),
            ("error-sleep", "-1"),
            ("error-sleep", "inf"),
            ("error-sleep", "301"),
        ]:
            e = self.assertRaises(usage.UsageError, parse, "--sink", f"--{flag}", value)
            self.assertIn(f"--{flag}", str(e))
            self.assertNotIn("\n", str(e))
