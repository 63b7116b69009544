"""
C{docs/compatibility.md} says what the project declares and tests: the
dependency floors of C{.ci/floors.txt}, the Pythons of C{setup.cfg}, and
every public handler class.
"""

from __future__ import annotations

import configparser
import importlib
import inspect
import re
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

import twisted_smtpd.handlers

PROJECT = Path(__file__).resolve().parents[1]
PAGE = (PROJECT / "docs" / "compatibility.md").read_text()

#: The names the page gives the dependencies of C{.ci/floors.txt}.
NAMES = {
    "Twisted": "twisted",
    "pyOpenSSL": "pyopenssl",
    "cryptography": "cryptography",
    "service-identity": "service-identity",
    "zope.interface": "zope.interface",
    "txaio": "txaio",
    "attrs": "attrs",
    "pika (the `amqp` extra)": "pika",
    "prometheus_client (the `metrics` extra)": "prometheus_client",
}


class CompatibilityPageTests(SynchronousTestCase):
    def test_floors(self) -> None:
        """
        The floors table is C{.ci/floors.txt} without the tools of the
        tests.
        """
        rows = re.findall(r"^\| (.+?) \| (\d[\d.]*) \|$", PAGE, re.M)
        page = {NAMES[name]: version for name, version in rows}
        pinned = dict(
            line.split("==")
            for line in (PROJECT / ".ci" / "floors.txt").read_text().splitlines()
            if "==" in line and not line.startswith("#")
        )
        pinned.pop("hypothesis")
        self.assertEqual(page, pinned)

    def test_pythons(self) -> None:
        """
        The Pythons the page names are those of C{setup.cfg}'s classifiers.
        """
        setup = configparser.ConfigParser()
        setup.read(PROJECT / "setup.cfg")
        declared = re.findall(
            r"Programming Language :: Python :: (3\.\d+)", setup["metadata"]["classifiers"]
        )
        match = re.search(r"The package declares Python ([\d., and]+);", PAGE)
        assert match is not None
        self.assertEqual(re.findall(r"3\.\d+", match.group(1)), declared)

    def test_handlers(self) -> None:
        """
        Every public handler class of a public module of
        C{twisted_smtpd.handlers} is exported there or named on the page.
        """
        exported = set(twisted_smtpd.handlers.__all__)
        for path in sorted((PROJECT / "twisted_smtpd" / "handlers").glob("[a-z]*.py")):
            module = importlib.import_module(f"twisted_smtpd.handlers.{path.stem}")
            for name, value in vars(module).items():
                if (
                    inspect.isclass(value)
                    and value.__module__ == module.__name__
                    and name.endswith("Handler")
                    and not name.startswith("_")
                    and name not in exported
                ):
                    self.assertIn(f"`{module.__name__}.{name}`", PAGE)
