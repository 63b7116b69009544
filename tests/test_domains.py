"""
Tests for L{twisted_smtpd._core.domains}: domain names against IDNA 2008
as the C{idna} package implements it.
"""

from __future__ import annotations

import idna
from hypothesis import example, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from twisted_smtpd._core.domains import domainInALabels, validDomainName

# Letters, digits, marks, symbols and the characters the checks single out.
_characters = st.one_of(
    st.characters(categories=("Ll", "Lo", "Mn", "Mc", "Nd", "So", "Cf", "Co", "Cn")),
    st.sampled_from("ab0-\u00fc\u00e9\u0301\u200c\u200d\u3002\uff0e\u3164\u094d"),
)
_labels = st.text(_characters, min_size=1, max_size=12)
_domains = st.lists(_labels, min_size=1, max_size=3).map(lambda labels: ".".join(labels))


def _isIdna2008(domain: str) -> bool:
    """
    Whether C{domain} is a name of U-labels (and LDH labels) to IDNA 2008,
    without UTS 46's mapping.  Some versions of C{idna} split a name at the
    ideographic, fullwidth and halfwidth full stops as at C{.}: such a name
    holds a character no U-label holds.
    """
    if any(stop in domain for stop in "\u3002\uff0e\uff61"):
        return False
    try:
        idna.encode(domain)
    except (idna.IDNAError, UnicodeError):
        return False
    return True


class ULabelTests(SynchronousTestCase):
    """
    L{validDomainName} on non-ASCII names.
    """

    @settings(max_examples=500, deadline=None)
    @given(_domains)
    @example("b\u00fccher.example")
    @example("\u0915\u094d\u200d\u0937.example")
    @example("\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645.example")
    def test_everyIdnaNameAccepted(self, domain: str) -> None:
        """
        A name IDNA 2008 takes as U-labels is never refused: what the
        checks refuse no U-label holds.
        """
        if _isIdna2008(domain) and not domain.isascii():
            self.assertTrue(validDomainName(domain), ascii(domain))

    @settings(max_examples=300, deadline=None)
    @given(_labels)
    def test_refusedLabelsNotIdna(self, label: str) -> None:
        """
        Every non-ASCII label refused for what it holds (not its length) is
        one IDNA 2008 refuses too.
        """
        domain = label + ".example"
        if not label.isascii() and not validDomainName(domain):
            self.assertFalse(_isIdna2008(domain), ascii(domain))


class DomainInALabelsTests(SynchronousTestCase):
    """
    L{domainInALabels} against the C{idna} package.
    """

    @settings(max_examples=300, deadline=None)
    @given(_domains)
    @example("B\u00fccher\u3002Example")
    @example("\uff42\u00fc.example")
    def test_sameAsIdnaWhereItConverts(self, domain: str) -> None:
        """
        A name of U-labels that L{validDomainName} accepts and that the
        C{idna} package writes in A-labels (UTS 46 mapping, STD 3 rules) is
        written the same label by label.
        """
        try:
            expected = idna.encode(domain, uts46=True, std3_rules=True).decode("ascii")
        except (idna.IDNAError, UnicodeError):
            return
        if not domain.isascii() and validDomainName(domain):
            self.assertEqual(domainInALabels(domain), expected, ascii(domain))

    def test_asciiLabelsKept(self) -> None:
        """
        ASCII labels, which the C{idna} package refuses with an
        underscore, are kept, lower-cased, beside the A-labels; a name with
        an empty label has no such form.
        """
        self.assertEqual(
            domainInALabels("_Dmarc.B\u00fccher.example"), "_dmarc.xn--bcher-kva.example"
        )
        self.assertEqual(domainInALabels("a_b.\u00fc.XN--ZCA"), "a_b.xn--tda.xn--zca")
        self.assertIsNone(domainInALabels("\u00fc..example"))
        self.assertIsNone(domainInALabels("\u00fc.example."))
