"""
Sphinx inventories (C{objects.inv}) for the Twisted and Python names that the
docstrings of twisted_smtpd link to, written from the installed packages.

pydoctor resolves C{L{Deferred}} and the like through intersphinx inventories,
which are normally downloaded.  The documentation build must not depend on the
network, so the inventories are made here from the modules themselves: every
public class and function of the listed modules, pointing at the pages of the
published Twisted API reference (laid out by pydoctor) and of the Python
documentation.
"""

from __future__ import annotations

import builtins
import importlib
import inspect
import os
import zlib

from zope.interface.interface import InterfaceClass

TWISTED_URL = "https://docs.twisted.org/en/stable/api"
PYTHON_URL = "https://docs.python.org/3"

# The Twisted modules whose names the docstrings link to.
TWISTED_MODULES = (
    "twisted.application.service",
    "twisted.cred.checkers",
    "twisted.cred.credentials",
    "twisted.cred.portal",
    "twisted.internet.address",
    "twisted.internet.defer",
    "twisted.internet.endpoints",
    "twisted.internet.interfaces",
    "twisted.internet.protocol",
    "twisted.internet.ssl",
    "twisted.internet.task",
    "twisted.internet.testing",
    "twisted.logger",
    "twisted.protocols.basic",
    "twisted.protocols.policies",
    "twisted.python.failure",
    "twisted.python.usage",
)


def _write(path: str, project: str, entries: list[tuple[str, str, str]]) -> str:
    """
    Write a version 2 Sphinx inventory.

    @param entries: C{(name, role, uri)} triples.
    """
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {project}\n"
        "# Version: \n"
        "# The remainder of this file is compressed using zlib.\n"
    ).encode()
    body = "".join(f"{name} py:{role} 1 {uri} -\n" for name, role, uri in sorted(set(entries)))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(header + zlib.compress(body.encode()))
    return path


def twistedEntries() -> list[tuple[str, str, str]]:
    """
    The modules in L{TWISTED_MODULES}, their public classes (with their
    methods) and functions, at the URLs pydoctor gives them.
    """
    entries: list[tuple[str, str, str]] = []
    for moduleName in TWISTED_MODULES:
        module = importlib.import_module(moduleName)
        entries.append((moduleName, "module", f"{moduleName}.html"))
        for name, value in vars(module).items():
            if name.startswith("_"):
                continue
            if inspect.isclass(value) or isinstance(value, InterfaceClass):
                # Documented where it is defined; re-exports point there too.
                qualname = getattr(value, "__qualname__", value.__name__)
                home = f"{value.__module__}.{qualname}"
                if not home.startswith("twisted."):
                    continue
                page = f"{home}.html"
                entries.append((f"{moduleName}.{name}", "class", page))
                entries.append((home, "class", page))
                members = value.names() if isinstance(value, InterfaceClass) else vars(value)
                for member in members:
                    if not member.startswith("_"):
                        entries.append(
                            (f"{moduleName}.{name}.{member}", "method", f"{page}#{member}")
                        )
            elif inspect.isfunction(value) and value.__module__ == moduleName:
                entries.append((f"{moduleName}.{name}", "function", f"{moduleName}.html#{name}"))
    return entries


def pythonEntries() -> list[tuple[str, str, str]]:
    """
    The built-in types, functions and exceptions.
    """
    entries: list[tuple[str, str, str]] = []
    for name, value in vars(builtins).items():
        if name.startswith("_"):
            continue
        if inspect.isclass(value) and issubclass(value, BaseException):
            entries.append((name, "exception", f"library/exceptions.html#{name}"))
        elif inspect.isclass(value):
            entries.append((name, "class", f"library/stdtypes.html#{name}"))
        elif callable(value):
            entries.append((name, "function", f"library/functions.html#{name}"))
    return entries


def writeInventories(directory: str) -> list[str]:
    """
    Write both inventories into C{directory}.

    @return: pydoctor C{--intersphinx-file} arguments for them.
    """
    twisted = _write(os.path.join(directory, "twisted.inv"), "Twisted", twistedEntries())
    python = _write(os.path.join(directory, "python.inv"), "Python", pythonEntries())
    return [
        f"--intersphinx-file={twisted}::{TWISTED_URL}",
        f"--intersphinx-file={python}::{PYTHON_URL}",
    ]
