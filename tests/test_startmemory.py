"""
What a server loads at start: modules that only some sessions need stay
unloaded until then, since every module's code stays in memory for the
life of the process.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys

from twisted.trial.unittest import TestCase

#: Builds and starts the service of C{twistd smtpd --sink} (its listener on
#: a free port of 127.0.0.1, its self-signed certificate included) from the
#: plugin's options, stops it, and prints the modules loaded.
_PROBE = """
import json, sys
from twisted.internet import reactor
from twisted_smtpd._twistd import tap
options = tap.Options()
options.parseOptions(["--sink", "--listen", "tcp:0:interface=127.0.0.1"])
service = tap.makeService(options)
service.startService()
loaded = sorted(sys.modules)
service.stopService()
print(json.dumps(loaded))
"""


@functools.cache
def _loadedAtStart() -> frozenset[str]:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, timeout=120, check=True
    )
    return frozenset(json.loads(result.stdout.splitlines()[-1]))


class StartMemoryTests(TestCase):
    def setUp(self) -> None:
        self.loaded = _loadedAtStart()

    def test_started(self) -> None:
        """
        The probe did start a server: its listener's module is loaded.
        """
        self.assertIn("twisted_smtpd._serving.protocol", self.loaded)

    def test_noDNSMessageCodeAtStart(self) -> None:
        """
        C{twisted.names.dns} (about 1 MiB) is loaded only when a DNS answer
        is read, not at start: the hosts file answers for local clients,
        and a server may never look a name up.
        """
        self.assertNotIn("twisted.names.dns", self.loaded)

    def test_noPackageMetadataAtStart(self) -> None:
        """
        The version is a constant, not read through C{importlib.metadata}
        (about 0.8 MiB) at start; C{tests.integration.test_twistd}'s
        C{test_version} checks it is the installed package's.
        """
        self.assertNotIn("importlib.metadata", self.loaded)

    def test_noDiskDeliveryCodeInASink(self) -> None:
        """
        A sink does not load the disk code of the Maildir and mbox
        deliveries, nor the other handlers it does not run.
        """
        for module in (
            "twisted_smtpd.handlers.maildir",
            "twisted_smtpd.handlers._maildirdisk",
            "twisted_smtpd.handlers.mbox",
            "twisted_smtpd.handlers._spool",
            "twisted_smtpd.handlers.chain",
            "twisted_smtpd.handlers.debugging",
        ):
            self.assertNotIn(module, self.loaded)
        self.assertIn("twisted_smtpd.handlers.sink", self.loaded)

    def test_noSASLCodeAtStart(self) -> None:
        """
        The SASL mechanisms and the AUTH exchange are loaded at the first
        AUTH command, not at start.
        """
        self.assertNotIn("twisted_smtpd._core.sasl", self.loaded)
        self.assertNotIn("twisted_smtpd._serving.authcommand", self.loaded)
