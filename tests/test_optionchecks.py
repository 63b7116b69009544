# -*- test-case-name: tests.test_optionchecks -*-
"""
The L{ServerOptions} settings without a converter of their own (switches,
file paths, SNI certificates, the TLS texts, the SNI callback) are checked
when the options are made, each error naming the setting, as the others'.
"""

from __future__ import annotations

from pathlib import Path

import attrs
from twisted.trial.unittest import SynchronousTestCase

from twisted_smtpd._core.options import ServerOptions

#: Every setting that is C{True} or C{False}.
SWITCHES = [a.name for a in attrs.fields(ServerOptions) if a.type in (bool, "bool")]


class OptionCheckTests(SynchronousTestCase):
    """
    A value of the wrong type or form is refused at construction with one
    C{TypeError} or C{ValueError} whose text begins with the setting's name.
    """

    def assertRefused(self, setting: str, value: object) -> str:
        """
        C{ServerOptions(**{setting: value})} is refused naming C{setting}.

        @return: The error's text.
        """
        e = self.assertRaises((ValueError, TypeError), ServerOptions, name="mx", **{setting: value})
        text = str(e)
        self.assertTrue(text.startswith((setting + " ", setting + ":")), f"{setting}: {text}")
        self.assertNotIn("\n", text)
        return text

    def test_switchesFound(self) -> None:
        """
        The switches are found among the settings (so that the tests below
        cover them all).
        """
        for name in ("requestCert", "disableReverseLookup", "lmtp", "hideCHUNKING", "hideSize"):
            self.assertIn(name, SWITCHES)
        self.assertEqual(len(SWITCHES), 16)

    def test_switchesRefuseText(self) -> None:
        """
        A switch given a text (C{"no"}, true as any non-empty text is), a
        number or C{None} is refused, not taken for C{True}.
        """
        for setting in SWITCHES:
            for value in ("no", "false", "", 1, 0, None, [True]):
                text = self.assertRefused(setting, value)
                self.assertIn("must be True or False", text)

    def test_switchesAccepted(self) -> None:
        """
        C{True} and C{False} are kept as they are.
        """
        for setting in SWITCHES:
            for value in (True, False):
                options = ServerOptions(name="mx", **{setting: value})
                self.assertIs(getattr(options, setting), value)

    def test_bareNewlineNamesValue(self) -> None:
        """
        A C{bareNewline} policy that is none of the three is refused naming
        what was given, so that a near miss (C{"Normalize"}, C{"reject "})
        shows; a value that is no text is refused as such.
        """
        for value in ("Normalize", "reject ", "", "bare"):
            text = self.assertRefused("bareNewline", value)
            self.assertEqual(
                text, f"bareNewline must be one of legacy, normalize, reject, got {value!r}"
            )
        for value, kind in ((None, "NoneType"), (1, "int"), (b"reject", "bytes")):
            e = self.assertRaises(TypeError, ServerOptions, name="mx", bareNewline=value)
            self.assertEqual(str(e), f"bareNewline must be a string, got {kind}")

    def test_filePaths(self) -> None:
        """
        A certificate, key or CA bundle path that is not a string or path
        object, or an empty one or one holding NUL, is refused; a path
        object is kept as its string.
        """
        for setting in ("certificate", "privateKey", "caCertificates"):
            for value in (5, b"/etc/cert.pem", ["/etc/cert.pem"], "", "a\x00b"):
                self.assertRefused(setting, value)
            options = ServerOptions(name="mx", **{setting: Path("/etc/cert.pem")})
            self.assertEqual(getattr(options, setting), "/etc/cert.pem")
            options = ServerOptions(name="mx", **{setting: "/etc/cert.pem"})
            self.assertEqual(getattr(options, setting), "/etc/cert.pem")
            self.assertIsNone(getattr(ServerOptions(name="mx"), setting))

    def test_sniOptions(self) -> None:
        """
        SNI certificates that are not a mapping of host names to
        C{(certificate, key)} paths are refused: a list, a bare path for a
        pair, a pair of the wrong length or without a certificate, a key
        that is no host name or not a string, a path of the wrong type.
        """
        for value in (
            ["a.example"],
            "a.example=cert.pem",
            {"a.example": "cert.pem"},
            {"a.example": ("cert.pem",)},
            {"a.example": ("cert.pem", None, None)},
            {"a.example": (None, "key.pem")},
            {"a.example": (5, None)},
            {"a.example": ("cert.pem", 5)},
            {"a.example": ("", None)},
            {5: ("cert.pem", None)},
            {"a b.example": ("cert.pem", None)},
            {"a\x01b.example": ("cert.pem", None)},
            {"": ("cert.pem", None)},
        ):
            self.assertRefused("sniOptions", value)

    def test_sniOptionsAccepted(self) -> None:
        """
        A mapping of host names (wildcards and U-labels too) to pairs (a
        list too) of paths (path objects too) is kept as a mapping to
        pairs of strings.
        """
        options = ServerOptions(
            name="mx",
            sniOptions={
                "a.example": ["/c.pem", None],
                "*.b.example": (Path("/c.pem"), Path("/k.pem")),
                "b\xfccher.example": ("/c.pem", "/k.pem"),
            },
        )
        self.assertEqual(
            dict(options.sniOptions),
            {
                "a.example": ("/c.pem", None),
                "*.b.example": ("/c.pem", "/k.pem"),
                "b\xfccher.example": ("/c.pem", "/k.pem"),
            },
        )
        self.assertEqual(ServerOptions(name="mx").sniOptions, {})

    def test_tlsTexts(self) -> None:
        """
        A cipher string or minimum version that is not a string is refused
        (their values are checked when the server is made, with OpenSSL).
        """
        for setting in ("tlsCiphers", "tlsMinVersion"):
            for value in (5, 1.3, b"DEFAULT", ["DEFAULT"]):
                self.assertRefused(setting, value)
        self.assertRefused("tlsMinVersion", None)
        options = ServerOptions(name="mx", tlsCiphers=None, tlsMinVersion="1.3")
        self.assertEqual((options.tlsCiphers, options.tlsMinVersion), (None, "1.3"))

    def test_sniCallback(self) -> None:
        """
        An SNI callback that cannot be called is refused.
        """
        for value in ("module:callable", 5, {"a.example": None}):
            self.assertRefused("sniCallback", value)
        self.assertIs(ServerOptions(name="mx", sniCallback=str.lower).sniCallback, str.lower)


class WordListTests(SynchronousTestCase):
    """
    C{authMethods} and C{disabledCommands}: words upper-cased, each once.
    """

    def test_repeatsOnce(self) -> None:
        """
        A word given twice, in any case, is kept once, in the order first
        given: C{PLAIN,plain} would advertise C{AUTH PLAIN PLAIN LOGIN}.
        """
        options = ServerOptions(
            authMethods=["PLAIN", "plain", "LOGIN", " PLAIN "], disabledCommands=["vrfy", "VRFY"]
        )
        self.assertEqual(options.authMethods, ("PLAIN", "LOGIN"))
        self.assertEqual(options.disabledCommands, ("VRFY",))
