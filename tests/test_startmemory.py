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
import tempfile

from twisted.trial.unittest import TestCase

#: Builds and starts the service of C{twistd smtpd} with the delivery
#: flags given as arguments (its listener on a free port of 127.0.0.1, as
#: the default one is on 127.0.0.1, its self-signed certificate included)
#: from the plugin's options, stops it, and prints the modules loaded.
_PROBE = """
import json, sys
from twisted.internet import reactor
from twisted_smtpd._twistd import tap
options = tap.Options()
options.parseOptions([*sys.argv[1:], "--listen", "tcp:0:interface=127.0.0.1"])
service = tap.makeService(options)
service.startService()
loaded = sorted(sys.modules)
service.stopService()
print(json.dumps(loaded))
"""


@functools.cache
def _loadedAtStart(*delivery: str) -> frozenset[str]:
    with tempfile.TemporaryDirectory(prefix="smtpd-start") as directory:
        arguments = [a.replace("{maildir}", directory + "/Maildir") for a in delivery]
        result = subprocess.run(
            [sys.executable, "-c", _PROBE, *arguments],
            capture_output=True,
            timeout=120,
            check=True,
            cwd=directory,
        )
    return frozenset(json.loads(result.stdout.splitlines()[-1]))


#: The delivery flags of the starts probed: C{--sink}, and the default
#: delivery, a Maildir.
_STARTS = {"--sink": ("--sink",), "the default Maildir": ("--maildir", "{maildir}")}


class StartMemoryTests(TestCase):
    def setUp(self) -> None:
        self.loaded = _loadedAtStart("--sink")

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


class UnusedCodeAtStartTests(TestCase):
    """
    Code that a server without the flags needing it never runs is not
    loaded at start, by C{--sink} nor by the default Maildir delivery:
    every module's code stays in memory for the life of the process.
    """

    def assertNotLoaded(self, *modules: str) -> None:
        """
        None of C{modules} is loaded by either start, which did start a
        server.
        """
        for start, delivery in _STARTS.items():
            loaded = _loadedAtStart(*delivery)
            self.assertIn("twisted_smtpd._serving.protocol", loaded, start)
            self.assertEqual([m for m in modules if m in loaded], [], start)

    def test_defaultIsMaildir(self) -> None:
        """
        The default start probed delivers to a Maildir.
        """
        self.assertIn(
            "twisted_smtpd.handlers.maildir", _loadedAtStart(*_STARTS["the default Maildir"])
        )

    def test_noCredentialsCode(self) -> None:
        """
        Without C{--auth} (no checkers, no portal), neither C{twisted.cred}'s
        checkers, credentials and portal nor the server's code using them
        (the C{file:} and C{unix} checkers) are loaded.
        """
        self.assertNotLoaded(
            "twisted.cred.checkers",
            "twisted.cred.credentials",
            "twisted.cred.portal",
            "twisted.cred.error",
            "twisted_smtpd._serving.cred",
            "twisted_smtpd._twistd.passwordfile",
            "twisted_smtpd._twistd.unixpasswords",
        )

    def test_noTxaio(self) -> None:
        """
        txaio is loaded at the first coroutine a hook gives, not at start.
        """
        self.assertNotLoaded("txaio", "txaio.tx")

    def test_noWorkersCode(self) -> None:
        """
        Without C{--workers}, neither the parent's code nor the workers'
        is loaded.
        """
        self.assertNotLoaded(
            "twisted_smtpd._twistd.workers",
            "twisted_smtpd._twistd.workerside",
            "twisted_smtpd._twistd.workercert",
            "twisted_smtpd._twistd.workerwatchdog",
            "twisted_smtpd._twistd.workerprocess",
            "twisted_smtpd._twistd.startcopies",
        )

    def test_noProxyCode(self) -> None:
        """
        Without a C{haproxy:} listener, the PROXY wrapper and the header
        parser are not loaded.
        """
        self.assertNotLoaded("twisted_smtpd._serving.proxy", "twisted_smtpd._core.proxyheader")

    def test_noDNSErrors(self) -> None:
        """
        C{twisted.names} is not loaded at all until a lookup asks DNS.
        """
        self.assertNotLoaded("twisted.names", "twisted.names.error")

    def test_noConfigurationFileReader(self) -> None:
        """
        Without C{--config}, the reader of configuration files is not
        loaded (nor the TOML and INI parsers it loads).
        """
        self.assertNotLoaded("twisted_smtpd._twistd.tapfile", "tomllib", "configparser")

    def test_noSysconfig(self) -> None:
        """
        C{sysconfig} is not loaded (for the line naming a thread stuck at
        stop, which finds the standard library without it).
        """
        self.assertNotLoaded("sysconfig")

    def test_noIDNACodecWithHostname(self) -> None:
        """
        With C{--hostname} (as the benchmarks start it), the IDNA codec is
        not loaded: the check of an ASCII C{interface=} passes it to the
        resolver as bytes.  (Without C{--hostname}, C{socket.getfqdn()}
        loads it to name the machine.)
        """
        loaded = _loadedAtStart("--sink", "--hostname", "localhost")
        self.assertIn("twisted_smtpd._serving.protocol", loaded)
        self.assertEqual([m for m in ("encodings.idna", "stringprep") if m in loaded], [])
