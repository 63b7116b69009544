# -*- test-case-name: tests.test_optionnames -*-
"""
Every error L{ServerOptions} raises names the setting at fault, the
settings given in more than one form (rates, networks, lists of words),
which attrs converts before any validator runs, included.
"""

from __future__ import annotations

import attrs
from twisted.trial.unittest import SynchronousTestCase

from twisted_smtpd._core.options import ServerOptions

#: Values of the wrong sort for most settings.
WRONG = [
    object(),
    5,
    2.5,
    True,
    "\uff11/\uff16",
    "+5/1_0",
    "x",
    ["x"],
    [5],
    (1,),
    (2.5, 6),
    (True, 6),
    ("+5", "1_0"),
    ("5", 6),
    -1,
]


class OptionNamedTests(SynchronousTestCase):
    """
    A refused value is a C{ValueError} or C{TypeError} naming the setting.
    """

    def assertNamed(self, setting: str, value: object) -> None:
        """
        C{ServerOptions(**{setting: value})} is refused naming C{setting}.
        """
        e = self.assertRaises((ValueError, TypeError), ServerOptions, name="mx", **{setting: value})
        self.assertTrue(
            str(e).startswith((setting + " ", setting + ":")), f"{setting}={value!r}: {e}"
        )

    def test_rates(self) -> None:
        """
        A rate in a form it cannot take (text in other digits or spellings,
        a pair of the wrong length or holding text or a fraction as count)
        names the rate setting.
        """
        for setting in ["maxConnectionRate", "minDataRate"]:
            for value in ["a", "\uff11/6", "+5/6", 5, (1,), (1, 2, 3), ("+5", "1_0"), (2.5, 6)]:
                self.assertNamed(setting, value)
            for fine, expected in [("30/60", (30, 60.0)), ((30, 1.5), (30, 1.5))]:
                options = ServerOptions(name="mx", **{setting: fine})
                self.assertEqual(getattr(options, setting), expected)

    def test_networks(self) -> None:
        """
        A trusted network that is none, or of the wrong type, names the
        setting.
        """
        for setting in ["useProxy", "useXClient", "useXForward", "limitExemptions"]:
            for value in ["x", ["10.0.0.0/8", "not a network"], 5, [5]]:
                self.assertNamed(setting, value)

    def test_words(self) -> None:
        """
        An unknown AUTH method or command, or a list holding anything but
        strings, names the setting.
        """
        for setting, unknown in [("authMethods", "GSSAPI"), ("disabledCommands", "FOO")]:
            for value in [[unknown], [5], 5]:
                self.assertNamed(setting, value)

    def test_replyTextType(self) -> None:
        """
        A reply text setting that is not a string names the setting.
        """
        for setting in ["banner", "heloResponse", "authRequiredMessage", "ignoredHosts"]:
            self.assertNamed(setting, [5] if setting == "ignoredHosts" else 5)

    def test_everySetting(self) -> None:
        """
        Whatever wrong value a setting refuses, the error names it.
        """
        unnamed = []
        for attribute in attrs.fields(ServerOptions):
            for value in WRONG:
                try:
                    ServerOptions(name="mx", **{attribute.name: value})
                except (ValueError, TypeError) as e:
                    if attribute.name not in str(e):
                        unnamed.append(f"{attribute.name}={value!r}: {e}")
        self.assertEqual(unnamed, [])
