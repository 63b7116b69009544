# -*- test-case-name: tests.test_renegotiation -*-
"""
A TLS 1.2 client's renegotiation is refused by every server context,
whatever the default of the OpenSSL below, with real handshakes in memory.
"""

from __future__ import annotations

from OpenSSL import SSL

from tests.test_tls import _TLSTestCase
from twisted_smtpd._serving.sni import TLSPolicy
from twisted_smtpd._serving.tls import ServerTLS

#: C{SSL_OP_ALLOW_CLIENT_RENEGOTIATION} (OpenSSL 3.0 and later, which
#: pyOpenSSL does not name): set on a server connection, it gives back
#: OpenSSL 1.1.1's default, under which a client may renegotiate.
ALLOW_CLIENT_RENEGOTIATION = 0x100


def _pump(one: SSL.Connection, other: SSL.Connection) -> None:
    """
    Move what each connection wrote to the other until nothing moves.
    """
    moved = True
    while moved:
        moved = False
        for source, target in ((one, other), (other, one)):
            try:
                data = source.bio_read(65536)
            except SSL.WantReadError:
                continue
            if data:
                target.bio_write(data)
                moved = True


def _step(connection: SSL.Connection) -> None:
    """
    Let C{connection} go on with its handshake and read what came.
    """
    try:
        connection.do_handshake()
        connection.recv(65536)
    except SSL.WantReadError:
        pass


def _renegotiate(server: SSL.Connection, serverName: bytes | None = None) -> SSL.Connection:
    """
    Finish a TLS 1.2 handshake between a client and C{server}, then have the
    client renegotiate.

    @return: The client connection; an C{SSL.Error} from it (the server's
        no_renegotiation alert) propagates.
    """
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_max_proto_version(SSL.TLS1_2_VERSION)
    client = SSL.Connection(context, None)
    client.set_connect_state()
    if serverName is not None:
        client.set_tlsext_host_name(serverName)
    server.set_accept_state()
    for _ in range(10):
        _step(client)
        _pump(client, server)
        _step(server)
        _pump(server, client)
    assert client.get_protocol_version_name() == "TLSv1.2"
    assert client.renegotiate()
    for _ in range(10):
        _step(client)
        _pump(client, server)
        _step(server)
        _pump(server, client)
    return client


class RenegotiationTests(_TLSTestCase):
    """
    Client-initiated renegotiation (TLS 1.2) costs the server a full
    handshake each time and lets a client change its certificate in the
    middle of a session: it is refused with a no_renegotiation alert,
    also where the OpenSSL in use would allow it (1.1.1).
    """

    def assertRefused(self, server: SSL.Connection, serverName: bytes | None = None) -> None:
        """
        A client renegotiating with C{server}, which its OpenSSL would let
        renegotiate, gets the no_renegotiation alert and the renegotiation
        never finishes.
        """
        setOptions = getattr(server, "set_options", None)
        if setOptions is not None:
            setOptions(ALLOW_CLIENT_RENEGOTIATION)
        else:
            # pyOpenSSL before 25 has no Connection.set_options.
            from OpenSSL._util import lib

            lib.SSL_set_options(server._ssl, ALLOW_CLIENT_RENEGOTIATION)  # type: ignore[attr-defined]
        try:
            client = _renegotiate(server, serverName)
        except SSL.Error as e:
            self.assertIn("no renegotiation", str(e))
            return
        self.fail(
            f"the client renegotiated (renegotiation pending: {client.renegotiate_pending()})"
        )

    def test_startTLSContext(self) -> None:
        """
        The context of STARTTLS (and of implicit TLS listeners without keys
        of their own) refuses a client's renegotiation.
        """
        tls = ServerTLS(self.default.certificatePath, self.default.keyPath)
        self.assertRefused(tls.serverConnectionForTLS(None))

    def test_sniContext(self) -> None:
        """
        So does a session whose SNI name chose another certificate.
        """
        other = self.ca.server("mail.example.com")
        tls = ServerTLS(
            self.default.certificatePath,
            self.default.keyPath,
            sniOptions={"mail.example.com": (other.certificatePath, other.keyPath)},
        )
        self.assertRefused(tls.serverConnectionForTLS(None), b"mail.example.com")

    def test_everyPolicyContext(self) -> None:
        """
        Every context the server's TLS policy makes (those of C{ssl:}
        listeners with keys of their own included) refuses it.
        """
        context = TLSPolicy(ciphers="ECDHE+AESGCM").newContext()
        context.use_certificate_file(self.default.certificatePath)
        context.use_privatekey_file(self.default.keyPath)
        self.assertRefused(SSL.Connection(context, None))
