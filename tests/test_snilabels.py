# -*- test-case-name: tests.test_snilabels -*-
"""
An C{sniOptions} name in U-labels is matched in the A-label form clients
send, written as the server's name is (IDNA 2008 with the UTS 46 mapping),
not as Python's C{idna} codec (IDNA 2003) writes it: that maps C{\xdf} to
C{ss}, a name no client asks for.
"""

from __future__ import annotations

from cryptography import x509

from tests.certs import TLSClient
from tests.test_tls import _TLSTestCase, handshake
from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd._serving.tls import ServerTLS

#: A name whose IDNA 2003 and IDNA 2008 forms differ, and the A-label form
#: clients send for it.
U_LABELS = "mail.stra\xdfe.example"
A_LABELS = "mail.xn--strae-oqa.example"


class SNILabelTests(_TLSTestCase):
    """
    The certificate a client asking for the A-label name receives.
    """

    def setUp(self) -> None:
        super().setUp()
        self.named = self.ca.server(A_LABELS)
        self.options = ServerOptions(
            name=U_LABELS,
            certificate=self.default.certificatePath,
            privateKey=self.default.keyPath,
            sniOptions={U_LABELS: (self.named.certificatePath, self.named.keyPath)},
        )

    def certificateFor(self, servername: str) -> x509.Certificate:
        tls = ServerTLS.fromOptions(self.options)
        result = handshake(tls.contextFactory(), TLSClient(servername))
        self.assertTrue(result.server.handshakeDone)
        return result.serverCertificate

    def test_aLabelNameGetsItsCertificate(self) -> None:
        """
        A client asking for the A-label form of an C{sniOptions} name in
        U-labels gets that name's certificate, not the default one.
        """
        self.assertEqual(self.certificateFor(A_LABELS), self.named.certificate)

    def test_sameFormAsTheServerName(self) -> None:
        """
        The server's name and the C{sniOptions} name given alike are the
        same A-label name.
        """
        self.assertEqual(self.options.name, A_LABELS)
        self.assertEqual(self.certificateFor(self.options.name), self.named.certificate)

    def test_idna2003FormIsAnotherName(self) -> None:
        """
        The IDNA 2003 form (C{strasse}) is another name: the default
        certificate.
        """
        self.assertEqual(self.certificateFor("mail.strasse.example"), self.default.certificate)


class SameNameTwiceTests(_TLSTestCase):
    """
    Two C{sniOptions} names that are one host as it is matched (a trailing
    dot, the case, U-labels and their A-labels) are refused: one
    certificate would silently replace the other.
    """

    def test_refused(self) -> None:
        """
        L{ServerOptions} refuses them, naming both.
        """
        pair = (self.default.certificatePath, self.default.keyPath)
        for first, second in [
            ("mx.example", "MX.example."),
            (U_LABELS, A_LABELS),
        ]:
            e = self.assertRaises(
                ValueError, ServerOptions, name="mx.example", sniOptions={first: pair, second: pair}
            )
            self.assertEqual(str(e), f"sniOptions: {second!r} is the same host name as {first!r}")
