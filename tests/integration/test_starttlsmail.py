# -*- test-case-name: tests.integration.test_starttlsmail -*-
"""
STARTTLS sent in the middle of a mail transaction (after MAIL FROM, after
RCPT TO), with a real TLS client, to a real Postfix C{smtpd} given a
certificate made in the test and to C{twistd smtpd}: both accept it and,
once the handshake is done, have forgotten the transaction with
everything else the client said before (RFC 3207 section 4.2), as
docs/behaviour.md says.
"""

from __future__ import annotations

import os
import smtplib
import ssl

from tests.certs import CertificateAuthority
from tests.integration.helpers import CLIENT_TIMEOUT, ServerTestCase
from tests.integration.nexthops import Postfix
from tests.integration.smtpdiff import POSTFIX_SETTINGS, TWISTD_ARGUMENTS

#: What each step of L{StartTLSInTransactionTests.play} must get from
#: twisted-smtpd: the transaction, STARTTLS taken, a command before the
#: new EHLO refused, RCPT and DATA refused after it (no transaction is
#: left), then a new transaction delivered.
EXPECTED = [250, 250, 250, 220, 503, 250, 503, 503, 250, 250, 250, 221]


class StartTLSInTransactionTests(ServerTestCase):
    """
    STARTTLS after MAIL FROM and RCPT TO, against both servers.
    """

    def setUp(self) -> None:
        self.ca = CertificateAuthority(os.path.abspath(self.mktemp()))
        self.issued = self.ca.server("localhost")
        self.context = ssl.create_default_context(cafile=self.ca.certificatePath)

    def play(self, port: int, early: str) -> list[int]:
        """
        A transaction (recipient C{early}), STARTTLS, then the steps of
        L{EXPECTED}; the reply code of each.
        """
        client = smtplib.SMTP("localhost", port, timeout=CLIENT_TIMEOUT)
        self.addCleanup(client.close)
        codes = [client.ehlo("client.example")[0]]
        codes.append(client.mail("sender@example.com")[0])
        codes.append(client.rcpt(early)[0])
        codes.append(client.starttls(context=self.context)[0])
        codes.append(client.docmd("RCPT TO:<rcpt@example.com>")[0])
        codes.append(client.ehlo("client.example")[0])
        self.assertFalse(client.has_extn("starttls"))
        codes.append(client.rcpt("rcpt@example.com")[0])
        codes.append(client.docmd("DATA")[0])
        codes.append(client.mail("other@example.com")[0])
        codes.append(client.rcpt("late@example.com")[0])
        codes.append(client.data(b"Subject: after\r\n\r\nbody\r\n")[0])
        codes.append(client.quit()[0])
        return codes

    def test_sameAsPostfix(self) -> None:
        """
        Postfix and twisted-smtpd reply alike, by class, at each step:
        STARTTLS in a transaction is taken (220), and after the handshake
        there is no transaction left.  twisted-smtpd delivers the message
        of the new transaction to its own recipient only.
        """
        Postfix.require(self)
        postfix = Postfix(
            relayhost=1,
            certificate=(self.issued.certificatePath, self.issued.keyPath),
            settings=POSTFIX_SETTINGS,
        )
        postfix.start(self)
        self.startServer(
            "--tls-cert",
            self.issued.certificatePath,
            "--tls-key",
            self.issued.keyPath,
            *TWISTD_ARGUMENTS,
        )
        theirs = self.play(postfix.port, "early@example.com")
        ours = self.play(self.server.port, "early@example.com")
        self.assertEqual(ours, EXPECTED)
        self.assertEqual([str(c)[0] for c in theirs], [str(c)[0] for c in ours], theirs)
        self.server.waitForLog("late@example.com")
        self.assertNotIn("early@example.com", self.server.output)
        self.stopServer()
