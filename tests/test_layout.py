"""
The four parts of the design, kept apart: the pure protocol core
(C{twisted_smtpd._core}), the server glue (C{_serving}), the SMTP client the
relaying handlers use (C{_smtpclient}) and the C{twistd} layer
(C{_twistd}).  These tests read every module's imports (top level and inside
functions) and fail when one crosses a line it must not.
"""

from __future__ import annotations

import ast
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

PACKAGE = Path(__file__).resolve().parents[1] / "twisted_smtpd"


def imports(path: Path) -> set[str]:
    """
    Every module C{path} imports, as dotted names (C{from a import b} gives
    C{a} and C{a.b}).
    """
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def modulesOf(part: str) -> list[Path]:
    return sorted((PACKAGE / part).glob("*.py"))


class LayoutTests(SynchronousTestCase):
    def crossings(self, part: str, forbidden: tuple[str, ...]) -> list[str]:
        found = []
        for path in modulesOf(part):
            for name in sorted(imports(path)):
                if any(name == f or name.startswith(f + ".") for f in forbidden):
                    found.append(f"{part}/{path.name} imports {name}")
        self.assertTrue(modulesOf(part), part)
        return found

    def test_coreImportsNoTwisted(self) -> None:
        """
        The core imports neither Twisted nor zope.interface, nor any other
        part of the package.
        """
        self.assertEqual(
            self.crossings(
                "_core",
                (
                    "twisted",
                    "zope",
                    "twisted_smtpd._serving",
                    "twisted_smtpd._smtpclient",
                    "twisted_smtpd._twistd",
                    "twisted_smtpd._stream",
                    "twisted_smtpd.handlers",
                    "twisted_smtpd.interfaces",
                    "twisted_smtpd.testing",
                ),
            ),
            [],
        )

    def test_serverKnowsNoTwistd(self) -> None:
        """
        The server glue never imports the C{twistd} layer or the client.
        """
        self.assertEqual(
            self.crossings("_serving", ("twisted_smtpd._twistd", "twisted_smtpd._smtpclient")),
            [],
        )

    def test_handlersWithoutTwistd(self) -> None:
        """
        The handlers are usable without C{twistd}.
        """
        self.assertEqual(self.crossings("handlers", ("twisted_smtpd._twistd",)), [])

    def test_clientSharesNoServerGlue(self) -> None:
        """
        The SMTP client imports no server glue, no handler and no C{twistd}.
        """
        self.assertEqual(
            self.crossings(
                "_smtpclient",
                ("twisted_smtpd._serving", "twisted_smtpd._twistd", "twisted_smtpd.handlers"),
            ),
            [],
        )

    def test_everyPrivateModuleHasItsPart(self) -> None:
        """
        No private module sits beside the public ones but the message stream,
        which the server, the handlers and the client share.
        """
        loose = sorted(p.name for p in PACKAGE.glob("_*.py") if p.name != "__init__.py")
        self.assertEqual(loose, ["_stream.py"])


#: The modules whose functions act on one session through
#: L{twisted_smtpd._serving.context}.
SESSION_MODULES = (
    "authcommand",
    "commands",
    "deadlines",
    "flow",
    "forwarding",
    "greeting",
    "hooks",
    "tlscommand",
    "transaction",
)
#: The types a session is passed as.
SESSION_TYPES = ("CommandContext", "SessionControl", "SMTPProtocol")


def privateReaches(path: Path) -> list[str]:
    """
    Every private attribute C{path} reads or writes through a session: a
    parameter annotated with one of L{SESSION_TYPES}, or C{self._protocol}.
    """
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        names = {
            arg.arg
            for arg in node.args.args + node.args.kwonlyargs
            if arg.annotation is not None
            and any(t in ast.unparse(arg.annotation) for t in SESSION_TYPES)
        }
        for inner in ast.walk(node):
            if not isinstance(inner, ast.Attribute) or not inner.attr.startswith("_"):
                continue
            base = inner.value
            viaName = isinstance(base, ast.Name) and base.id in names
            viaSelf = (
                isinstance(base, ast.Attribute)
                and base.attr == "_protocol"
                and isinstance(base.value, ast.Name)
                and base.value.id == "self"
            )
            if viaName or viaSelf:
                found.append(f"{path.name}:{inner.lineno} {ast.unparse(inner)}")
    return found


class SessionInterfaceTests(SynchronousTestCase):
    """
    The functions that act on a session see it through the interfaces of
    L{twisted_smtpd._serving.context}, never through the protocol class and
    its private state.
    """

    def test_noPrivateReaches(self) -> None:
        """
        No module but the protocol's own touches a private attribute of a
        session.
        """
        found = []
        for path in sorted(PACKAGE.rglob("*.py")):
            if path != PACKAGE / "_serving" / "protocol.py":
                found.extend(privateReaches(path))
        self.assertEqual(found, [])

    def test_typedWithTheInterfaces(self) -> None:
        """
        The session modules do not import the protocol class, so C{mypy}
        holds them to L{CommandContext
        <twisted_smtpd._serving.context.CommandContext>} and L{SessionControl
        <twisted_smtpd._serving.context.SessionControl>}.
        """
        found = [
            f"{name} imports {imported}"
            for name in SESSION_MODULES
            for imported in sorted(imports(PACKAGE / "_serving" / f"{name}.py"))
            if imported.startswith("twisted_smtpd._serving.protocol")
        ]
        self.assertEqual(found, [])

    def test_checkerFindsReaches(self) -> None:
        """
        L{privateReaches} finds a private attribute read through a parameter
        or through C{self._protocol}.
        """
        directory = Path(self.mktemp())
        directory.mkdir()
        path = directory / "x.py"
        path.write_text(
            "def f(p: CommandContext) -> None:\n"
            "    p._fail(1)\n"
            "    p.fail(1)\n"
            "class A:\n"
            "    def g(self) -> None:\n"
            "        self._protocol._buffer = b''\n",
            encoding="utf-8",
        )
        self.assertEqual(privateReaches(path), ["x.py:2 p._fail", "x.py:6 self._protocol._buffer"])
