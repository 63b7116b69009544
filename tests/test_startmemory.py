"""
What a server loads at start: modules that only some sessions need stay
unloaded until then, since every module's code stays in memory for the
life of the process.
"""

from __future__ import annotations

import json
import subprocess
import sys

from twisted.trial.unittest import TestCase

from twisted_smtpd._core.version import __version__

#: Imports what C{twistd smtpd} imports to build and start a server, makes a
#: server of the default configuration (its self-signed certificate
#: included), and prints the modules loaded.
_PROBE = """
import json, sys
import twisted.internet.reactor
from twisted_smtpd._twistd import tap
from twisted_smtpd import SMTPServer
from twisted_smtpd.handlers import SinkHandler
server = SMTPServer(SinkHandler())
server.factory.tls
print(json.dumps(sorted(sys.modules)))
"""


def _loadedAtStart() -> set[str]:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, timeout=120, check=True
    )
    return set(json.loads(result.stdout))


class StartMemoryTests(TestCase):
    def test_noDNSMessageCodeAtStart(self) -> None:
        """
        C{twisted.names.dns} (about 1 MiB) is loaded only when a DNS answer
        is read, not at start: the hosts file answers for local clients,
        and a server may never look a name up.
        """
        self.assertNotIn("twisted.names.dns", _loadedAtStart())

    def test_noPackageMetadataAtStart(self) -> None:
        """
        The version is a constant, not read through C{importlib.metadata}
        (about 0.8 MiB) at start.
        """
        self.assertNotIn("importlib.metadata", _loadedAtStart())

    def test_versionIsTheInstalledOne(self) -> None:
        """
        The constant is the version of the installed package's metadata,
        which C{setup.cfg} reads from it.
        """
        from importlib.metadata import version

        self.assertEqual(__version__, version("twisted-smtpd"))
