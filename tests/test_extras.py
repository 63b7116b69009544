# -*- test-case-name: tests.test_extras -*-
"""
Every optional extra that C{setup.cfg} declares, when its packages are
missing: the C{twistd smtpd} flag that needs it is one usage line naming
the extra to install, and so is the error a program gets from the public
name that needs it.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from tests.test_packaging import _lines, setupConfig
from twisted_smtpd._twistd.tap import Options

#: The extras that are tools (tests, checks, documentation), not features.
TOOLS = frozenset({"test", "dev", "docs"})


def _amqpHandler() -> object:
    return importlib.import_module("twisted_smtpd.handlers.amqp").AMQPHandler


def _serverMetrics() -> object:
    from twisted_smtpd._serving.metrics import ServerMetrics

    return ServerMetrics()


#: For each feature extra with packages: the arguments of C{twistd smtpd}
#: that need it, and what a program calls that needs it.
USES: dict[str, tuple[list[str], Callable[[], object]]] = {
    "amqp": (["--amqp", "amqp://guest:guest@127.0.0.1:5672/"], _amqpHandler),
    "metrics": (["--sink", "--metrics", "tcp:0:interface=127.0.0.1"], _serverMetrics),
}


def featureExtras() -> dict[str, list[str]]:
    """
    The extras of C{setup.cfg} that are features, each with the module
    names of its packages.
    """
    modules = {"pika": "pika", "prometheus_client": "prometheus_client"}
    extras = {}
    for name, value in setupConfig()["options.extras_require"].items():
        if name in TOOLS:
            continue
        packages = [line.split(">=")[0].strip() for line in _lines(value)]
        extras[name] = [modules.get(package, package) for package in packages]
    return extras


class MissingExtraTests(SynchronousTestCase):
    def hide(self, modules: list[str]) -> None:
        """
        Make C{modules} impossible to import for this test, and forget the
        modules of twisted-smtpd that imported them.
        """
        touched = [
            name
            for name in sys.modules
            if name.startswith(("twisted_smtpd.handlers.amqp", "twisted_smtpd.handlers._amqp"))
        ]
        touched += modules
        saved = {name: sys.modules[name] for name in touched if name in sys.modules}

        def restore() -> None:
            # Only what was changed: a module imported meanwhile stays, as
            # importing it again could register its adapters twice.
            for name in touched:
                sys.modules.pop(name, None)
            sys.modules.update(saved)

        self.addCleanup(restore)
        for name in touched:
            sys.modules.pop(name, None)
        for module in modules:
            sys.modules[module] = None  # type: ignore[assignment]

    def test_everyExtraKnown(self) -> None:
        """
        Every feature extra with packages has its uses checked below; an
        extra without packages (C{webhook}, kept for old installs) needs
        nothing.
        """
        extras = featureExtras()
        self.assertEqual({name for name, packages in extras.items() if packages}, set(USES))
        self.assertEqual(extras["webhook"], [])

    def test_flagNamesTheExtra(self) -> None:
        """
        The flag is refused with one line naming the extra and the package
        missing.
        """
        for extra, packages in featureExtras().items():
            if not packages:
                continue
            arguments, _ = USES[extra]
            self.hide(packages)
            config = Options()
            e = self.assertRaises(usage.UsageError, config.parseOptions, arguments)
            message = str(e)
            self.assertIn(f"pip install 'twisted-smtpd[{extra}]'", message)
            self.assertIn(packages[0], message)
            self.assertNotIn("\n", message)

    def test_libraryNamesTheExtra(self) -> None:
        """
        The public name that needs the extra raises C{ImportError} with one
        line naming the extra.
        """
        for extra, packages in featureExtras().items():
            if not packages:
                continue
            _, use = USES[extra]
            self.hide(packages)
            e = self.assertRaises(ImportError, use)
            message = str(e)
            self.assertIn(f"pip install 'twisted-smtpd[{extra}]'", message)
            self.assertNotIn("\n", message)
