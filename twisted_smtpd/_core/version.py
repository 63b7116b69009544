# -*- test-case-name: tests.test_tap -*-
"""
The version of twisted-smtpd, read from the installed package's metadata
(setup.cfg's C{version}, the one source of truth).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def _installedVersion() -> str:
    try:
        return version("twisted-smtpd")
    except PackageNotFoundError:
        # Run from a checkout that was never installed.
        return "0+unknown"


__version__ = _installedVersion()
