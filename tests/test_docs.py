# -*- test-case-name: tests.test_docs -*-
"""
The documentation in C{docs/}: every Python code block is either a file of
the repository included with C{literalinclude} or a doctest, and the
doctests pass; every C{twistd smtpd} command line and configuration file
shown parses, and a refusal shown after one is the line it gives; the
options reference names every L{ServerOptions} field and
every C{twistd smtpd} flag; the concurrency chart's data agrees with its
table.

The Sphinx build itself (C{sphinx-build -W}, in C{.ci/run}) checks links,
references and that C{literalinclude} finds what it names.
"""

from __future__ import annotations

import doctest
import getopt
import json
import os
import re
import shlex
import textwrap
from itertools import pairwise
from pathlib import Path

import attrs
from attrs import frozen
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from twisted_smtpd import ServerOptions
from twisted_smtpd._twistd.tap import Options
from twisted_smtpd._twistd.tapfile import fileArguments

PROJECT = Path(__file__).resolve().parents[1]
DOCS = PROJECT / "docs"

# Languages Sphinx highlights as Python; a literal block (C{::}) without a
# language is Python too (Sphinx's default).
PYTHON = frozenset({"python", "python3", "py", "pycon", "default", ""})
SHELL = frozenset({"sh", "bash", "shell", "console"})

_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*(\{[\w-]+\})?\s*(.*)$")
_DIRECTIVE = re.compile(r"^(\s*)\.\. (code-block|code|sourcecode|literalinclude)::\s*(.*)$")


@frozen
class CodeBlock:
    """
    One code block of a page.

    @ivar page: The page, relative to C{docs/}.
    @ivar line: Its first line (1-based).
    @ivar language: Its language, lower case; C{""} for none.
    @ivar text: Its content, dedented.
    @ivar include: For C{literalinclude}, the file it includes, else C{None}.
    """

    page: str
    line: int
    language: str
    text: str
    include: Path | None = None


def pages() -> list[Path]:
    """
    The documentation pages.
    """
    found = [p for p in DOCS.rglob("*") if p.suffix in (".md", ".rst")]
    return sorted(p for p in found if "_ext" not in p.parts and "_build" not in p.parts)


def _markdownBlocks(page: Path, lines: list[str]) -> list[CodeBlock]:
    blocks = []
    index = 0
    while index < len(lines):
        match = _FENCE.match(lines[index])
        if match is None:
            index += 1
            continue
        indent, fence, directive, info = match.groups()
        start = index
        index += 1
        body = []
        while index < len(lines) and not lines[index].strip().startswith(fence):
            body.append(lines[index][len(indent) :] if lines[index].strip() else "")
            index += 1
        index += 1
        name = str(page.relative_to(DOCS))
        if directive == "{literalinclude}":
            include = (page.parent / info.strip()).resolve()
            blocks.append(CodeBlock(name, start + 1, "include", "", include))
        elif directive in (None, "{code-block}", "{code}"):
            language = info.split()[0].lower() if info.split() else ""
            blocks.append(CodeBlock(name, start + 1, language, "\n".join(body) + "\n"))
    return blocks


def _indented(lines: list[str], index: int) -> tuple[str, int]:
    """
    The indented block starting at C{lines[index]} (options and blank lines
    first), dedented, and the index after it.
    """
    body = []
    while index < len(lines) and (not lines[index].strip() or lines[index][:1].isspace()):
        body.append(lines[index])
        index += 1
    text = textwrap.dedent("\n".join(body))
    kept = [line for line in text.splitlines() if not re.match(r"^:[\w-]+:", line)]
    return "\n".join(kept).strip("\n") + "\n", index


def _restBlocks(page: Path, lines: list[str]) -> list[CodeBlock]:
    blocks = []
    name = str(page.relative_to(DOCS))
    index = 0
    while index < len(lines):
        line = lines[index]
        directive = _DIRECTIVE.match(line)
        if directive is not None:
            kind, argument = directive.group(2), directive.group(3).strip()
            text, after = _indented(lines, index + 1)
            if kind == "literalinclude":
                include = (page.parent / argument).resolve()
                blocks.append(CodeBlock(name, index + 1, "include", "", include))
            else:
                blocks.append(CodeBlock(name, index + 1, argument.lower(), text))
            index = after
        elif line.rstrip().endswith("::") and not line.lstrip().startswith(".."):
            text, after = _indented(lines, index + 1)
            blocks.append(CodeBlock(name, index + 2, "default", text))
            index = after
        elif line.startswith(">>>") and (index == 0 or not lines[index - 1].strip()):
            start = index
            while index < len(lines) and lines[index].strip():
                index += 1
            blocks.append(CodeBlock(name, start + 1, "pycon", "\n".join(lines[start:index]) + "\n"))
        else:
            index += 1
    return blocks


def codeBlocks(page: Path) -> list[CodeBlock]:
    """
    The code blocks of a Markdown (MyST) or reStructuredText page.
    """
    lines = page.read_text(encoding="utf-8").splitlines()
    if page.suffix == ".md":
        return _markdownBlocks(page, lines)
    return _restBlocks(page, lines)


def allBlocks() -> list[CodeBlock]:
    return [block for page in pages() for block in codeBlocks(page)]


def commandLines(text: str) -> list[str]:
    """
    The command lines of a shell block, continuation lines joined.
    """
    return [line.strip() for line in text.replace("\\\n", " ").splitlines() if line.strip()]


def smtpdArguments(command: str) -> list[str] | None:
    """
    The arguments after C{smtpd} of a C{twistd ... smtpd ...} command, or
    C{None} if C{command} runs something else.
    """
    words = shlex.split(command, comments=True)
    if not words or Path(words[0]).name != "twistd" or "smtpd" not in words:
        return None
    return words[words.index("smtpd") + 1 :]


def checkSmtpdArguments(arguments: list[str]) -> None:
    """
    Check that C{arguments} are options C{twistd smtpd} knows, each with a
    value when it takes one.

    @raise getopt.GetoptError: If not.
    """
    options = Options()
    _, rest = getopt.getopt(arguments, options.shortOpt, options.longOpt)
    if rest:
        raise getopt.GetoptError(f"not an option: {rest[0]!r}")


def missingFields(page: str) -> list[str]:
    """
    The L{ServerOptions} fields without a row of their own on the options
    page (a table row whose first cell is the field's name).
    """
    return [
        f.name
        for f in attrs.fields(ServerOptions)
        if not re.search(rf"^\| `{re.escape(f.name)}` \|", page, re.MULTILINE)
    ]


def missingFlags(page: str) -> list[str]:
    """
    The long options of C{twistd smtpd} that the options page never names.
    """
    names = sorted({name.rstrip("=") for name in Options().longOpt})
    return [name for name in names if not re.search(rf"--{re.escape(name)}(?![\w-])", page)]


class CodeBlockTests(SynchronousTestCase):
    def test_pythonIsIncludedOrDoctest(self) -> None:
        """
        Every Python code block is a doctest: the others are files of the
        repository included with C{literalinclude}, run by the test suite.
        """
        loose = [
            f"{b.page}:{b.line}"
            for b in allBlocks()
            if b.language in PYTHON and b.text.strip() and ">>>" not in b.text
        ]
        self.assertEqual(loose, [])

    def test_includesAreTestedFiles(self) -> None:
        """
        Every C{literalinclude} names a file of C{examples/} (each started
        by C{tests/test_examples.py}) or of C{tests/}.
        """
        includes = [b for b in allBlocks() if b.include is not None]
        self.assertTrue(includes)
        for block in includes:
            assert block.include is not None
            where = block.include.relative_to(PROJECT).parts[0]
            self.assertIn(where, ("examples", "tests"), f"{block.page}:{block.line}")
            self.assertTrue(block.include.is_file(), f"{block.page}:{block.line}")

    def test_everyExampleIsTested(self) -> None:
        """
        Every program in C{examples/} is started by C{tests/test_examples.py}
        and shown on the examples page.
        """
        tests = (PROJECT / "tests" / "test_examples.py").read_text()
        page = (DOCS / "examples.rst").read_text()
        for program in sorted((PROJECT / "examples").glob("*.py")):
            self.assertIn(f'"{program.stem}"', tests)
            self.assertIn(f"../examples/{program.name}", page)

    def test_doctests(self) -> None:
        """
        The doctests of every page pass; the examples of one page share
        their names, in order.
        """
        ran = 0
        for page in pages():
            blocks = [b for b in codeBlocks(page) if ">>>" in b.text]
            if not blocks:
                continue
            parser = doctest.DocTestParser()
            runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
            globs: dict[str, object] = {"__name__": "__docs__"}
            for block in blocks:
                name = f"{block.page}:{block.line}"
                test = parser.get_doctest(block.text, globs, name, str(page), block.line - 1)
                output: list[str] = []
                result = runner.run(test, out=output.append, clear_globs=False)
                globs.update(test.globs)  # the next block goes on from here
                self.assertEqual(result.failed, 0, "".join(output))
                ran += result.attempted
        self.assertGreater(ran, 20)

    def test_twistdCommands(self) -> None:
        """
        Every C{twistd ... smtpd} command shown (in a shell block, or as the
        C{ExecStart=} of a systemd unit) uses options C{twistd smtpd} has,
        with their values.
        """
        checked = 0
        for block in allBlocks():
            if block.language in SHELL:
                commands = commandLines(block.text)
            elif block.language == "ini":
                commands = [
                    line.removeprefix("ExecStart=")
                    for line in commandLines(block.text)
                    if line.startswith("ExecStart=")
                ]
            else:
                continue
            for command in commands:
                arguments = smtpdArguments(command)
                if arguments is None:
                    continue
                try:
                    checkSmtpdArguments(arguments)
                except getopt.GetoptError as e:
                    self.fail(f"{block.page}:{block.line}: {command}: {e}")
                checked += 1
        self.assertGreater(checked, 3)

    def test_checkRejectsUnknownOption(self) -> None:
        """
        The command check refuses an option C{twistd smtpd} does not have,
        and one missing its value.
        """
        self.assertIsNone(smtpdArguments("pip install twisted-smtpd"))
        arguments = smtpdArguments("twistd -n smtpd --listen tcp:25 --maildir-trace")
        self.assertEqual(arguments, ["--listen", "tcp:25", "--maildir-trace"])
        checkSmtpdArguments(["--listen", "tcp:25", "--maildir-trace"])
        self.assertRaises(getopt.GetoptError, checkSmtpdArguments, ["--no-such-flag"])
        self.assertRaises(getopt.GetoptError, checkSmtpdArguments, ["--listen"])

    def test_configurationFiles(self) -> None:
        """
        Every C{twistd smtpd} configuration file shown (TOML, or INI with
        an C{[smtpd]} section) holds only options C{twistd smtpd} has.
        """
        checked = 0
        directory = self.mktemp()
        os.makedirs(directory)
        for block in allBlocks():
            if block.language == "toml":
                suffix = ".toml"
            elif block.language == "ini" and "[smtpd]" in block.text:
                suffix = ".ini"
            else:
                continue
            path = os.path.join(directory, f"config{checked}{suffix}")
            with open(path, "w") as f:
                f.write(block.text)
            arguments, _ = fileArguments(path, set(), Options().longOpt)
            checkSmtpdArguments(arguments)
            checked += 1
        self.assertGreater(checked, 0)


def quotedRefusals() -> list[tuple[CodeBlock, list[str], str]]:
    """
    The C{twistd smtpd} commands of the text blocks followed by the line
    they are shown to end with (C{twistd smtpd: ...; see --help}): each
    block, the command's arguments after C{smtpd}, and the message.
    """
    found = []
    for block in allBlocks():
        if block.language != "text":
            continue
        lines = block.text.splitlines()
        for command, output in pairwise(lines):
            if not command.startswith("$ ") or not output.startswith("twistd smtpd: "):
                continue
            arguments = smtpdArguments(command[2:])
            if arguments is not None and output.endswith("; see --help"):
                message = output.removeprefix("twistd smtpd: ").removesuffix("; see --help")
                found.append((block, arguments, message))
    return found


class RefusalExampleTests(SynchronousTestCase):
    def test_refusalsAreTheRealLines(self) -> None:
        """
        Every refusal shown after a C{twistd smtpd} command is the line the
        options give for it, when they refuse it (one found only when the
        listeners start, a port in use, is checked by the listener tests).
        """
        checked = 0
        for block, arguments, message in quotedRefusals():
            try:
                Options().parseOptions(arguments)
            except usage.UsageError as e:
                self.assertEqual(str(e), message, f"{block.page}:{block.line}: {arguments}")
                checked += 1
        self.assertGreaterEqual(checked, 4)


_CITED = re.compile(r"`([\w.-]+(?:/[\w.-]+)*\.(?:md|rst|py|sh|json|png))`")
_SCRIPT = re.compile(r"^[\w.-]+(?:/[\w.-]+)*\.(?:sh|py)$")


class RepositoryPathTests(SynchronousTestCase):
    def test_citedFilesExist(self) -> None:
        """
        Every file a page cites by a relative name (C{`bench/chart.py`},
        C{`operator.md`}) is in the repository: at its root, beside the
        pages, or in C{bench/}, C{examples/} or C{tests/}.
        """
        roots = [PROJECT, DOCS, PROJECT / "bench", PROJECT / "examples", PROJECT / "tests"]
        missing = []
        for page in pages():
            for name in _CITED.findall(page.read_text(encoding="utf-8")):
                if not any((root / name).exists() for root in roots):
                    missing.append(f"{page.name}: {name}")
        self.assertEqual(missing, [])

    def test_commandsNeedOnlyTheRepository(self) -> None:
        """
        The shell commands shown run scripts of the repository, from its
        root, and read nothing left in C{/tmp} by an earlier run.
        """
        wrong = []
        for block in allBlocks():
            if block.language not in SHELL:
                continue
            for command in commandLines(block.text):
                for word in command.split():
                    value = word.partition("=")[2] if "=" in word else word
                    script = value.strip("'\"")
                    if value.startswith("/tmp/"):
                        wrong.append(f"{block.page}:{block.line}: {word}")
                    elif _SCRIPT.match(script) and not (PROJECT / script).is_file():
                        wrong.append(f"{block.page}:{block.line}: {script}")
        self.assertEqual(wrong, [])


class ChartTests(SynchronousTestCase):
    def test_chartDataIsTheTable(self) -> None:
        """
        The data the concurrency chart is drawn from
        (C{docs/perf-concurrency.json}, written by C{bench/chart.py}) gives
        the medians of the table beside the chart in C{performance.md}.
        """
        with open(DOCS / "perf-concurrency.json") as f:
            records = json.load(f)["records"]
        rates: dict[tuple[str, int], list[float]] = {}
        for record in records:
            key = (record["server"], record["sessions"])
            rates.setdefault(key, []).append(record["rate"])
        page = (DOCS / "performance.md").read_text(encoding="utf-8")
        section = page[page.index("### Messages per second against concurrency") :]
        header = re.search(r"^\| sessions \|(.*)\|$", section, re.MULTILINE)
        assert header is not None
        servers = [cell.strip().removesuffix(" msgs/s") for cell in header.group(1).split("|")]
        table = {}
        for row in re.findall(r"^\| (\d+) \|(.*)\|$", section[header.end() :], re.MULTILINE):
            for server, cell in zip(servers, row[1].split("|"), strict=True):
                table[(server, int(row[0]))] = float(cell)
            if int(row[0]) == 100:
                break
        medians = {key: sorted(values)[len(values) // 2] for key, values in rates.items()}
        self.assertEqual({k: round(v) for k, v in medians.items()}, table)
        self.assertTrue((DOCS / "perf-concurrency.png").is_file())


class PeersChartTests(SynchronousTestCase):
    def test_peersDataIsTheTable(self) -> None:
        """
        The side-by-side table at the top of C{performance.md} gives the
        medians of the run kept in C{docs/perf-peers.json} (written by
        C{bench/peerschart.py}, which draws C{docs/perf-peers.png} from it).
        """
        with open(DOCS / "perf-peers.json") as f:
            records = json.load(f)["records"]
        values: dict[tuple[str, str], list[float]] = {}
        for record in records:
            key = "kibPerConn" if record["workload"] == "W5" else "rate"
            if record.get(key) is not None:
                values.setdefault((record["server"], record["workload"]), []).append(record[key])
        medians = {k: sorted(v)[len(v) // 2] for k, v in values.items() if len(v) % 2}
        page = (DOCS / "performance.md").read_text(encoding="utf-8")
        section = page[page.index("## Current figures") :]
        header = re.search(r"^\| server \| W1 msgs/s \|.*\|$", section, re.MULTILINE)
        assert header is not None
        columns = [cell.strip() for cell in header.group(0).strip("|").split("|")]
        checked = 0
        for line in section[header.end() :].splitlines()[2:]:
            if not line.startswith("|"):
                break
            cells = dict(zip(columns, (c.strip() for c in line.strip("|").split("|")), strict=True))
            for workload in ("W1", "W2", "W3", "W4", "W5"):
                column = next(c for c in columns if c.startswith(workload + " ") and "CPU" not in c)
                expected = medians.get((cells["server"], workload))
                if expected is None or cells[column] == "-":
                    continue
                digits = {"W3": 1, "W5": 2}.get(workload, 0)
                self.assertEqual(
                    cells[column], f"{expected:.{digits}f}", (cells["server"], workload)
                )
                checked += 1
        self.assertGreater(checked, 20)
        self.assertTrue((DOCS / "perf-peers.png").is_file())


class OptionsPageTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.page = (DOCS / "options.md").read_text(encoding="utf-8")

    def test_everyField(self) -> None:
        """
        Every L{ServerOptions} field has its row on the options page.
        """
        self.assertEqual(missingFields(self.page), [])

    def test_everyFlag(self) -> None:
        """
        Every C{twistd smtpd} long option appears on the options page.
        """
        self.assertEqual(missingFlags(self.page), [])

    def test_missingRowIsFound(self) -> None:
        """
        Without the row of a field, or any mention of a flag, the page is
        reported incomplete: the checks above can fail.
        """
        withoutSize = re.sub(r"^\| `size` \|.*\n", "", self.page, flags=re.MULTILINE)
        self.assertEqual(missingFields(withoutSize), ["size"])
        withoutLmtpTo = self.page.replace("--lmtp-to", "--lmtp")
        self.assertEqual(missingFlags(withoutLmtpTo), ["lmtp-to"])
