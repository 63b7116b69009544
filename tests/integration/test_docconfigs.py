# -*- test-case-name: tests.integration.test_docconfigs -*-
"""
The HAProxy configurations the documentation shows are ones HAProxy takes
without a warning (C{haproxy -c}).
"""

from __future__ import annotations

import os
import subprocess

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.helpers import CLIENT_TIMEOUT, requireProgram
from tests.test_docs import allBlocks


def haproxyConfigurations() -> list[tuple[str, str]]:
    """
    The HAProxy configurations of the documentation (a block with a
    C{frontend} and a C{backend} section), each with where it is.
    """
    found = []
    for block in allBlocks():
        lines = block.text.splitlines()
        if any(line.startswith("frontend ") for line in lines) and any(
            line.startswith("backend ") for line in lines
        ):
            found.append((f"{block.page}:{block.line}", block.text))
    return found


class HAProxyConfigurationTests(SynchronousTestCase):
    def test_acceptedWithoutWarning(self) -> None:
        """
        C{haproxy -c} finds each documented configuration valid, with no
        warning (a configuration without timeouts draws one).
        """
        haproxy = requireProgram(self, "haproxy", "haproxy")
        configurations = haproxyConfigurations()
        self.assertGreaterEqual(len(configurations), 2)
        directory = self.mktemp()
        os.makedirs(directory)
        for index, (where, text) in enumerate(configurations):
            path = os.path.join(directory, f"haproxy{index}.cfg")
            with open(path, "w") as f:
                f.write(text)
            result = subprocess.run(
                [haproxy, "-c", "-f", path],
                capture_output=True,
                text=True,
                timeout=CLIENT_TIMEOUT,
                check=False,
            )
            output = result.stdout + result.stderr
            self.assertEqual(result.returncode, 0, f"{where}: {output}")
            self.assertNotIn("WARNING", output.upper(), f"{where}: {output}")
            self.assertIn("Configuration file is valid", output, where)
