# -*- test-case-name: tests.integration.test_dns -*-
"""
C{twistd smtpd --dns-server HOST:PORT}: client names are asked of that DNS
server, here a small responder on 127.0.0.1 answering PTR and A queries.
"""

from __future__ import annotations

import smtplib
import socket
import threading

from twisted.names import dns

from tests.integration.helpers import CLIENT_TIMEOUT, ServerTestCase


class PointerResponder:
    """
    A UDP DNS server on 127.0.0.1 answering every PTR query with C{name},
    and A queries for C{name} with C{addresses}, in a thread, until
    L{stop}.

    @ivar queries: The names asked for.
    """

    def __init__(self, name: str, addresses: tuple[str, ...] = ()) -> None:
        self.name = name
        self.addresses = addresses
        self.queries: list[str] = []
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.settimeout(0.2)
        self.port = self.socket.getsockname()[1]
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stopped.is_set():
            try:
                data, peer = self.socket.recvfrom(512)
            except TimeoutError:
                continue
            except OSError:
                return
            query = dns.Message()
            query.fromStr(data)
            answer = dns.Message(id=query.id, answer=1, auth=1)
            answer.queries = query.queries
            for q in query.queries:
                self.queries.append(q.name.name.decode("ascii"))
                if q.type == dns.PTR:
                    answer.answers.append(
                        dns.RRHeader(
                            name=q.name.name, type=dns.PTR, payload=dns.Record_PTR(self.name)
                        )
                    )
                elif q.type == dns.A and q.name.name.decode("ascii") == self.name:
                    for address in self.addresses:
                        answer.answers.append(
                            dns.RRHeader(
                                name=q.name.name, type=dns.A, payload=dns.Record_A(address)
                            )
                        )
            self.socket.sendto(answer.toStr(), peer)

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(5)
        self.socket.close()


class DNSServerTests(ServerTestCase):
    """
    The reverse lookup goes to C{--dns-server}.
    """

    def test_pointerAnswer(self) -> None:
        """
        A client from 127.0.0.2 (not in the hosts file) is named by the
        configured DNS server, in the greeting's reply and the log, once
        the A records of that name confirm it.
        """
        responder = PointerResponder("client.dns-test.example", ("127.0.0.9", "127.0.0.2"))
        self.addCleanup(responder.stop)
        self.startServer("--sink", "--dns-server", f"127.0.0.1:{responder.port}", maildir=False)
        client = smtplib.SMTP(
            "127.0.0.1",
            self.server.port,
            timeout=CLIENT_TIMEOUT,
            source_address=("127.0.0.2", 0),
        )
        self.addCleanup(client.close)
        code, text = client.ehlo()
        self.assertEqual(code, 250)
        client.quit()
        self.server.waitForLog(" close")
        self.stopServer()
        self.assertEqual(responder.queries, ["2.0.0.127.in-addr.arpa", "client.dns-test.example"])
        self.assertIn(b"client.dns-test.example", text)
        self.assertIn("(client.dns-test.example) to 127.0.0.1:", self.server.output)

    def test_noDatagramNoise(self) -> None:
        """
        The resolver's UDP port, opened for a lookup and closed after it
        and at the stop, leaves no Twisted lines (C{Starting protocol},
        C{(UDP Port N Closed)}, C{Stopping protocol}) in the log.
        """
        responder = PointerResponder("client.dns-test.example", ("127.0.0.2",))
        self.addCleanup(responder.stop)
        self.startServer("--sink", "--dns-server", f"127.0.0.1:{responder.port}", maildir=False)
        for _ in range(2):
            client = smtplib.SMTP(
                "127.0.0.1",
                self.server.port,
                timeout=CLIENT_TIMEOUT,
                source_address=("127.0.0.2", 0),
            )
            self.addCleanup(client.close)
            self.assertEqual(client.ehlo()[0], 250)
            client.quit()
        self.server.waitForLog(" close", count=2)
        self.stopServer()
        output = self.server.output
        self.assertIn("(client.dns-test.example) to 127.0.0.1:", output)
        for noise in ("Starting protocol", "Stopping protocol", "UDP Port", "DNSDatagramProtocol"):
            self.assertNotIn(noise, output)

    def test_unconfirmedPointerAnswer(self) -> None:
        """
        A PTR name whose A records do not hold the client's address is not
        believed: the client is named by its address literal, and a warning
        names the rejected name.
        """
        responder = PointerResponder("mail.bank.example", ("127.0.0.9",))
        self.addCleanup(responder.stop)
        self.startServer("--sink", "--dns-server", f"127.0.0.1:{responder.port}", maildir=False)
        client = smtplib.SMTP(
            "127.0.0.1",
            self.server.port,
            timeout=CLIENT_TIMEOUT,
            source_address=("127.0.0.2", 0),
        )
        self.addCleanup(client.close)
        code, text = client.ehlo()
        self.assertEqual(code, 250)
        client.quit()
        self.server.waitForLog(" close")
        self.stopServer()
        self.assertEqual(responder.queries, ["2.0.0.127.in-addr.arpa", "mail.bank.example"])
        self.assertNotIn(b"bank", text)
        self.assertIn(b"[127.0.0.2]", text)
        self.assertIn("([127.0.0.2]) to 127.0.0.1:", self.server.output)
        self.assertIn(
            "reverse lookup of 127.0.0.2: host name mail.bank.example ignored,"
            " its addresses do not include it",
            self.server.output,
        )
