# -*- test-case-name: tests.test_optionspage -*-
"""
The option tables of the documentation against C{twistd smtpd --help} and
L{ServerOptions}: the defaults they give are the ones the program has, and
the flag a row of C{docs/options.md} names sets the field of that row.

C{tests/test_docs.py} checks that every field and every flag has its row;
this module checks what the rows say.
"""

from __future__ import annotations

import ast
import math
import os
import re
from pathlib import Path

import attrs
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from tests.certs import CertificateAuthority
from twisted_smtpd import ServerOptions
from twisted_smtpd._twistd.tap import Options
from twisted_smtpd.testing import memorySession

PROJECT = Path(__file__).resolve().parents[1]
DOCS = PROJECT / "docs"

#: The pages with a table of C{twistd smtpd} flags, and the column of each
#: that gives the default (counted from 0).
FLAG_TABLES = {
    DOCS / "options.md": 1,
    DOCS / "operator.md": 2,
    PROJECT / "README.md": 2,
}

_HELP_OPTION = re.compile(r"^ {6}(?:-\w, )?--([\w-]+)=?(?: +(.*))?$")
_DEFAULT = re.compile(r"\[default: ([^\]]*)\]")


def cells(line: str) -> list[str]:
    """
    The cells of a Markdown table row, an escaped C{\\|} kept as C{|}.
    """
    parts = re.split(r"(?<!\\)\|", line.strip())[1:-1]
    return [part.strip().replace("\\|", "|") for part in parts]


def tableRows(page: Path) -> list[list[str]]:
    """
    The rows of every table of C{page}, header and rule lines left out.
    """
    rows = []
    for line in page.read_text(encoding="utf-8").splitlines():
        if not line.startswith("| ") or re.match(r"^\|[\s|:-]+\|$", line):
            continue
        rows.append(cells(line))
    return rows


def helpDescriptions(text: str) -> dict[str, str]:
    """
    Each long option of a C{--help} text with its description, its lines
    joined.
    """
    found: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        match = _HELP_OPTION.match(line)
        if match is not None:
            current = match.group(1)
            found[current] = match.group(2) or ""
        elif current is not None and line.startswith(" " * 8) and line.strip():
            found[current] = f"{found[current]} {line.strip()}".strip()
        else:
            current = None
    return found


def helpDefaults() -> dict[str, str | None]:
    """
    The C{[default: ...]} each long option of C{twistd smtpd --help} shows,
    C{None} for those that show none.
    """
    defaults: dict[str, str | None] = {}
    for name, description in helpDescriptions(str(Options())).items():
        match = _DEFAULT.search(description)
        defaults[name] = None if match is None else match.group(1)
    return defaults


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def defaultDisagrees(cell: str, shown: str | None, switch: bool) -> str | None:
    """
    Why the default C{cell} of a table disagrees with the default C{shown}
    by C{--help}, or C{None} if it does not.

    A switch's cell is C{off} (or empty, for a delivery). A number (or
    C{`number`}) at the start of a cell is the number C{--help} shows, and
    a cell C{`value`} (perhaps followed by words in brackets) the value it
    shows; words (C{none}, C{system CAs}) are the writer's and not checked.
    """
    cell = cell.strip()
    if switch:
        return None if cell in ("off", "") else f"a switch: {cell!r} instead of 'off'"
    literal = re.match(r"^`([^`]*)`(?:$| \()", cell)
    leading = re.match(r"^(\d+(?:\.\d+)?)(?![\w.])", cell)
    value = literal.group(1) if literal else leading.group(1) if leading else None
    if value is None:
        return None
    if shown is None:
        return f"{cell!r}, but --help shows no default"
    wanted, got = _number(value), _number(shown)
    if wanted is not None and got is not None:
        return None if wanted == got else f"{cell!r}, but --help shows {shown!r}"
    return None if value == shown else f"{cell!r}, but --help shows {shown!r}"


def flagDefaultsDisagreeing(page: Path, column: int) -> list[str]:
    """
    The rows of C{page} for C{twistd smtpd} flags whose default disagrees
    with C{--help} (L{defaultDisagrees}), or that name a flag it has not.
    """
    shown = helpDefaults()
    switches = {name for name in Options().longOpt if not name.endswith("=")}
    wrong = []
    for row in tableRows(page):
        flags = re.findall(r"`--([\w-]+)", row[0])
        if not row[0].startswith("`--") or len(row) <= column:
            continue
        for flag in flags:
            if flag not in shown:
                wrong.append(f"{page.name}: --{flag}: no such option in --help")
                continue
            why = defaultDisagrees(row[column], shown[flag], flag in switches)
            if why is not None:
                wrong.append(f"{page.name}: --{flag}: {why}")
    return wrong


def fieldRows() -> dict[str, list[str]]:
    """
    The rows of the L{ServerOptions} table of C{docs/options.md}, by field.
    """
    fields = {f.name for f in attrs.fields(ServerOptions)}
    return {
        row[0].strip("`"): row
        for row in tableRows(DOCS / "options.md")
        if row[0].strip("`") in fields and len(row) == 6
    }


def fieldDefaultsDisagreeing() -> list[str]:
    """
    The fields whose default on the options page, a Python literal in
    backquotes at the start of its cell, is not the default of
    L{ServerOptions}.
    """
    built = ServerOptions()
    wrong = []
    for name, row in fieldRows().items():
        literal = re.match(r"^`([^`]*)`", row[2])
        if literal is None:
            continue
        try:
            documented = ast.literal_eval(literal.group(1))
        except (ValueError, SyntaxError):
            wrong.append(f"{name}: {row[2]!r} is not a Python value")
            continue
        actual = getattr(built, name)
        if isinstance(actual, tuple | list) and not actual:
            actual = ()
        if documented != actual or type(documented) is not type(actual):
            wrong.append(f"{name}: documented {documented!r}, is {actual!r}")
    return wrong


class FlagDefaultsTests(SynchronousTestCase):
    def test_helpOptionsRead(self) -> None:
        """
        The C{--help} reader finds every long option and the defaults it
        shows.
        """
        shown = helpDefaults()
        self.assertEqual(set(shown), {name.rstrip("=") for name in Options().longOpt})
        self.assertEqual(shown["listen"], "tcp:2525:interface=127.0.0.1")
        self.assertEqual(shown["size"], str(ServerOptions().size))
        self.assertIsNone(shown["lmtp"])

    def test_pagesAgreeWithHelp(self) -> None:
        """
        Every default that the flag tables of C{docs/options.md},
        C{docs/operator.md} and C{README.md} give as a number or a value
        is the one C{twistd smtpd --help} shows, every switch is C{off},
        and every flag they name is one C{--help} lists.
        """
        wrong = []
        for page, column in FLAG_TABLES.items():
            wrong += flagDefaultsDisagreeing(page, column)
        self.assertEqual(wrong, [])

    def test_disagreementFound(self) -> None:
        """
        A number, a value or a switch's default that differs from
        C{--help}, and a flag C{--help} does not list, are reported; words
        are not compared.
        """
        self.assertIsNone(defaultDisagrees("60", "60.0", False))
        self.assertIsNone(defaultDisagrees("`1.2`", "1.2", False))
        self.assertIsNone(defaultDisagrees("10240000 (Postfix's)", "10240000", False))
        self.assertIsNone(defaultDisagrees("the system's CAs", "system CAs", False))
        self.assertIsNotNone(defaultDisagrees("30", "60.0", False))
        self.assertIsNotNone(defaultDisagrees("`text`", "json", False))
        self.assertIsNotNone(defaultDisagrees("`4`", None, False))
        self.assertIsNone(defaultDisagrees("`/etc/resolv.conf`'s", "resolv.conf", False))
        self.assertIsNone(defaultDisagrees("", None, True))
        self.assertIsNotNone(defaultDisagrees("on", None, True))
        page = Path(self.mktemp())
        page.write_text(
            "| flag | meaning | default |\n| --- | --- | --- |\n"
            "| `--max-recipients N` | recipients | 100 |\n"
            "| `--no-such-flag` | nothing | off |\n"
        )
        self.assertEqual(
            flagDefaultsDisagreeing(page, 2),
            [
                f"{page.name}: --max-recipients: '100', but --help shows '1000'",
                f"{page.name}: --no-such-flag: no such option in --help",
            ],
        )


class FieldDefaultsTests(SynchronousTestCase):
    def test_defaultsAreServerOptions(self) -> None:
        """
        The default the options page gives each L{ServerOptions} field is
        the field's default.
        """
        self.assertGreater(len(fieldRows()), 40)
        self.assertEqual(fieldDefaultsDisagreeing(), [])

    def test_twistdDefaultsAreServerOptions(self) -> None:
        """
        C{twistd smtpd} without flags serves with the defaults of
        L{ServerOptions}: a flag's own default never differs from the
        field's documented one.
        """
        config = Options()
        config.parseOptions(["--sink"])
        self.assertEqual(config["serverOptions"], ServerOptions())


#: A value for each placeholder the options page writes after a flag.
_SAMPLES = {
    "NAME": "mx.example.com",
    "TEXT": "Welcome",
    "BYTES": "7000",
    "N": "7",
    "SECONDS": "7",
    "STRING": "ECDHE+AESGCM",
    "1.2|1.3": "1.3",
    "LIST": "CRAM-MD5",
    "CMD": "VRFY",
    "COUNT/SECONDS": "7/9",
    "BYTES/SECONDS": "7/9",
    "CIDR": "192.0.2.0/24",
    "BITS": "64",
    "POLICY": "normalize",
}


class FlagMeaningTests(SynchronousTestCase):
    def setUp(self) -> None:
        directory = self.mktemp()
        os.makedirs(directory)
        self.authority = CertificateAuthority(directory)
        self.certificate = self.authority.server("mx.example.com")

    def sample(self, field: str, flag: str, placeholder: str) -> list[str]:
        """
        The command-line arguments for C{flag} with a value for
        C{placeholder}.
        """
        if placeholder == "FILE":
            path = {
                "tls-cert": self.certificate.combinedPath,
                "tls-key": self.certificate.keyPath,
                "tls-ca": self.authority.certificatePath,
            }[flag]
            if flag == "tls-key":
                return ["--tls-cert", self.certificate.certificatePath, "--tls-key", path]
            return [f"--{flag}", path]
        if placeholder == "HOST=CERT[,KEY]":
            other = self.authority.server("other.example.com")
            return [f"--{flag}", f"other.example.com={other.combinedPath}"]
        if flag == "auth-optional":
            return ["--auth", "memory:alice:secret", "--auth-optional"]
        if field == "ignoredHosts":
            return [f"--{flag}", "192.0.2.9"]
        if not placeholder:
            return [f"--{flag}"]
        return [f"--{flag}", _SAMPLES.get(placeholder, placeholder)]

    def test_flagSetsItsField(self) -> None:
        """
        The flag each row of the options page gives a L{ServerOptions}
        field sets that field, and only that one (C{--tls-key} needs
        C{--tls-cert}, which sets C{certificate} too).
        """
        checked = 0
        baseline = attrs.asdict(ServerOptions(), recurse=False)
        for field, row in fieldRows().items():
            flag = re.match(r"^`--([\w-]+)(?: ([^`]*))?`", row[3])
            if flag is None:
                continue
            arguments = self.sample(field, flag.group(1), flag.group(2) or "")
            config = Options()
            try:
                config.parseOptions(["--sink", *arguments])
            except usage.UsageError as e:
                self.fail(f"{field}: {arguments}: {e}")
            built = attrs.asdict(config["serverOptions"], recurse=False)
            changed = {name for name in built if built[name] != baseline[name]}
            expected = {field, "certificate"} if field == "privateKey" else {field}
            self.assertEqual(changed, expected, f"{row[3]} ({arguments})")
            checked += 1
        self.assertGreater(checked, 35)


class FieldErrorTests(SynchronousTestCase):
    def test_errorsNameTheFlag(self) -> None:
        """
        A value that L{ServerOptions} refuses, though the flag's own check
        let it through, is one usage line naming the flag, as
        C{docs/operator.md} promises: a CR in C{--banner}, an unknown
        mechanism in C{--auth-methods} (with the ones it knows).
        """
        for arguments, expected in [
            (["--banner", "hi\r\n250 forged"], "--banner: banner must not contain CR, LF or NUL"),
            (
                ["--auth-methods", "PLAIN,GSSAPI"],
                "--auth-methods: unknown AUTH methods: GSSAPI;"
                " one of: CRAM-MD5 LOGIN PLAIN XOAUTH2",
            ),
        ]:
            config = Options()
            e = self.assertRaises(usage.UsageError, config.parseOptions, [*arguments, "--sink"])
            self.assertEqual(str(e), expected)

    def test_everyFieldWithAFlag(self) -> None:
        """
        The errors of every field that the options page gives a flag of its
        own name that flag.
        """
        from twisted_smtpd._twistd.tapflags import FIELD_FLAGS

        named = {}
        for field, row in fieldRows().items():
            flag = re.match(r"^`--([\w-]+)", row[3])
            if flag is not None and flag.group(1) != "hide":
                named[field] = flag.group(1)
        self.assertGreater(len(named), 30)
        self.assertEqual({f: FIELD_FLAGS.get(f) for f in named}, named)


def migrationRows() -> list[list[str]]:
    """
    The rows of the options table of C{docs/migrating-smtp-server.md}: an
    C{smtp-server} option, then its L{ServerOptions} counterpart.
    """
    page = DOCS / "migrating-smtp-server.md"
    section = page.read_text(encoding="utf-8").split("\n## Options\n", 1)[1]
    rows = []
    for line in section.splitlines():
        if line.startswith("| ") and not re.match(r"^\|[\s|:-]+\|$", line):
            rows.append(cells(line))
    return rows


def missingCounterparts() -> list[str]:
    """
    The fields that the options page gives an C{smtp-server} counterpart
    (the first name in backquotes of its C{smtp-server} column) but that
    the migration page's options table does not pair with it.
    """
    rows = migrationRows()
    missing = []
    for name, row in fieldRows().items():
        theirs = re.match(r"^`(\w+)`", row[4])
        if theirs is None:
            continue
        paired = any(
            f"`{theirs.group(1)}`" in left
            and (f"`{name}`" in right or right.startswith("the same names"))
            for left, right in rows
        )
        if not paired:
            missing.append(f"{theirs.group(1)} -> {name}")
    return missing


class MigrationTableTests(SynchronousTestCase):
    def test_everyCounterpartPaired(self) -> None:
        """
        Every L{ServerOptions} field the options page says has an
        C{smtp-server} counterpart is paired with it on the migration page.
        """
        self.assertEqual(missingCounterparts(), [])


#: A field of L{ServerOptions} in backquotes and, in brackets after it,
#: the default a migration page gives it: a number or "no limit".
_MIGRATION_DEFAULT = re.compile(r"`(\w+)` \(((?:\d[\d,.]*)|no limit)")


def migrationDefaultsDisagreeing() -> list[str]:
    """
    The defaults that the migration pages give L{ServerOptions} fields
    (C{`socketTimeout` (60 s)}) and that are not the fields' defaults.
    """
    built = ServerOptions()
    fields = {f.name for f in attrs.fields(ServerOptions)}
    wrong = []
    for name in ("migrating-aiosmtpd.md", "migrating-smtp-server.md"):
        for field, given in _MIGRATION_DEFAULT.findall((DOCS / name).read_text(encoding="utf-8")):
            if field not in fields:
                continue
            actual = getattr(built, field)
            documented = 0 if given == "no limit" else float(given.replace(",", ""))
            if (actual or 0) != documented:
                wrong.append(f"{name}: {field}: documented {given!r}, is {actual!r}")
    return wrong


class MigrationDefaultsTests(SynchronousTestCase):
    def test_defaultsAreServerOptions(self) -> None:
        """
        A default the migration pages give a L{ServerOptions} field, in
        brackets after its name, is the field's default.
        """
        self.assertEqual(migrationDefaultsDisagreeing(), [])


def ehloKeywords(**options: object) -> set[str]:
    """
    The extension keywords a server built with C{options} advertises in
    its EHLO reply.
    """
    settings: dict[str, object] = {"name": "mx.test.invalid", "disableReverseLookup": True}
    settings.update(options)
    session = memorySession(None, ServerOptions(**settings))  # type: ignore[arg-type]
    session.read()
    lines = session.send(b"EHLO client.example.org\r\n").decode("ascii").splitlines()
    return {line[4:].split(" ")[0] for line in lines[1:]}


class HideRowsTests(SynchronousTestCase):
    def test_hiddenIsNotAdvertised(self) -> None:
        """
        Each C{hide*} row of the options page says its extension is not
        advertised, and a server with that switch on advertises its
        keyword in no EHLO line, while one without it does (REQUIRETLS
        aside: a session in memory has no TLS, the only kind it is
        advertised on).
        """
        rows = {name: row for name, row in fieldRows().items() if name.startswith("hide")}
        self.assertIn("hideSize", rows)
        shown = ehloKeywords()
        for name, row in rows.items():
            keyword = name.removeprefix("hide").upper()
            self.assertRegex(row[5], r"^(do not advertise|neither advertise) ", name)
            if keyword != "REQUIRETLS":  # advertised under TLS only
                self.assertIn(keyword, shown, name)
            self.assertNotIn(keyword, ehloKeywords(**{name: True}), name)
