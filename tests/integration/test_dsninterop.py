# -*- test-case-name: tests.integration.test_dsninterop -*-
"""
Postfix as the client passing on DSN parameters: the C{utf-8} C{ORCPT}
its SMTP client writes (C{\\x{HEX}} escapes, RFC 6533 section 3, by its
C{uxtext_quote}) is accepted by C{twistd smtpd}'s checks and reaches the
handler decoded.
"""

from __future__ import annotations

import os
import smtplib

from tests.integration import recordinghandler
from tests.integration.helpers import CLIENT_TIMEOUT, ServerTestCase
from tests.integration.nexthops import DELIVERY_TIMEOUT, Postfix, waitUntil

SENDER = "alice@example.com"
BODY = b"Subject: orcpt\r\n\r\nbody\r\n"


class PostfixUtf8OrcptTests(ServerTestCase):
    """
    A client gives Postfix a C{utf-8} ORCPT holding non-ASCII letters, a
    C{+} and an C{=}; Postfix relays the message to C{twistd smtpd}.
    """

    def test_passedOnAndDecoded(self) -> None:
        """
        Postfix's 7-bit re-encoding of the address (C{\\x{F6}},
        C{\\x{2B}}, C{\\x{3D}}) is accepted (Postfix logs C{status=sent})
        and the handler's C{dsn.orcpt} holds the address decoded.
        """
        Postfix.require(self)
        records = os.path.join(self.makeDirectory(), "records")
        self.startServer(
            "--handler",
            "tests.integration.recordinghandler:make",
            "--handler-option",
            f"directory={records}",
            maildir=False,
        )
        postfix = Postfix(relayhost=self.server.port)
        postfix.start(self)
        client = smtplib.SMTP("127.0.0.1", postfix.port, timeout=CLIENT_TIMEOUT)
        self.addCleanup(client.close)
        client.ehlo()
        self.assertEqual(client.mail(SENDER, ["SMTPUTF8"])[0], 250)
        orcpt = "ORCPT=utf-8;j\u00f6rg\\x{2B}a\\x{3D}b@b\u00fccher.example"
        code, text = client.rcpt("bob@example.org", ["NOTIFY=FAILURE", orcpt])
        self.assertEqual(code, 250, text)
        self.assertEqual(client.data(BODY)[0], 250)
        client.quit()
        waitUntil(lambda: postfix.count("status=") >= 1, DELIVERY_TIMEOUT, "the delivery")
        self.assertEqual(postfix.count("status=sent"), 1, postfix.log)
        (record,) = recordinghandler.readRecords(records)
        self.assertEqual(record["orcpt"], ["utf-8;j\u00f6rg+a=b@b\u00fccher.example"])
        sent = record["orcptSent"]
        assert isinstance(sent, list)
        self.assertIn("\\x{2B}", sent[0])
        self.stopServer()
