# -*- test-case-name: tests.test_lateauthz -*-
"""
A login refused because it may not act as the authorization identity it
asked for is a failed login whenever its answer comes: after the client
left, as while it waits.
"""

from __future__ import annotations

from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from tests.test_auth import b64
from tests.test_authfailures import CLIENT, LateHandler, _Logged
from tests.test_protocol import take
from twisted_smtpd._core.session import AuthResult

#: mallory's own password, asking to act as admin.
AS_ADMIN = b"AUTH PLAIN " + b64(b"admin\0mallory\0right") + b"\r\n"


class LateAuthorizationTests(_Logged):
    def authLines(self) -> list[str]:
        return [line for line in self.lines() if " auth " in line]

    def expected(self, sid: str) -> str:
        return (
            f"{sid} auth failed: PLAIN from {CLIENT} user=<mallory> authzid=<admin>:"
            " 535 5.7.8 Error: authentication failed: authorization failure"
        )

    def test_whileWaiting(self) -> None:
        """
        The refusal of an identity the login may not take, answered while
        the client waits, is one C{auth failed} line naming it.
        """
        handler = LateHandler()
        proto, transport = self.session(handler)
        proto.dataReceived(AS_ADMIN)
        handler.pending[0].callback(AuthResult(user="mallory"))
        self.assertTrue(take(transport).startswith(b"535 "))
        self.assertEqual(self.authLines(), [self.expected(proto.session.id)])

    def test_afterClientLeft(self) -> None:
        """
        The same answer after the client left is the same failed login,
        logged once: the client cannot hide its tries at other identities
        by leaving before a slow handler answers.
        """
        handler = LateHandler()
        proto, transport = self.session(handler)
        proto.dataReceived(AS_ADMIN)
        proto.connectionLost(Failure(ConnectionDone()))
        handler.pending[0].callback(AuthResult(user="mallory"))
        self.assertEqual(self.authLines(), [self.expected(proto.session.id)])

    def test_allowedAfterClientLeftNotLogged(self) -> None:
        """
        A late answer that lets the login act as the identity asked for is
        no failed login.
        """
        handler = LateHandler()
        proto, transport = self.session(handler)
        proto.dataReceived(AS_ADMIN)
        proto.connectionLost(Failure(ConnectionDone()))
        handler.pending[0].callback(AuthResult(user="mallory", authorizationIdentity="admin"))
        self.assertEqual(self.authLines(), [])
