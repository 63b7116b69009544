# -*- test-case-name: tests.test_tap -*-
"""
The version of twisted-smtpd.  C{setup.cfg} reads it from here
(C{version = attr: ...}), so the package's metadata and this constant are
one; reading the metadata at run time instead would cost every process
C{importlib.metadata} (about 0.8 MiB of memory).
"""

from __future__ import annotations

__version__ = "0.1.0"
