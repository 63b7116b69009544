# -*- test-case-name: tests.test_packaging -*-
"""
What C{setup.cfg} and C{MANIFEST.in} declare: the dependency floors are the
versions C{.ci/floors.txt} tests with, the wheel carries the C{twistd}
plugin and C{py.typed}, and the sdist every file of the repository's tests,
documentation, examples and benchmarks.
"""

from __future__ import annotations

import configparser
import fnmatch
import os
import re
import subprocess
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

PROJECT = Path(__file__).resolve().parents[1]

#: The extras whose requirements are run-time or test dependencies, pinned
#: at their floors by C{.ci/floors.txt}; C{dev} and C{docs} are tools.
PINNED_EXTRAS = ("webhook", "amqp", "metrics", "test")

#: The directories the sdist carries whole (C{MANIFEST.in}).
SHIPPED = ("tests", "docs", "examples", "bench", "newsfragments", ".ci")


def setupConfig() -> configparser.ConfigParser:
    config = configparser.ConfigParser(interpolation=None)
    config.read(PROJECT / "setup.cfg", encoding="utf-8")
    return config


def _lines(value: str) -> list[str]:
    return [
        line.split("#", 1)[0].strip()
        for line in value.splitlines()
        if line.split("#", 1)[0].strip()
    ]


_REQUIREMENT = re.compile(r"^([A-Za-z0-9][\w.-]*)(?:\[[\w,\s-]*\])?>=([\d.]+)$")


def canonical(name: str) -> str:
    """
    A distribution name as pip compares it (PEP 503).
    """
    return re.sub(r"[-_.]+", "-", name).lower()


def version(text: str) -> tuple[int, ...]:
    """
    A release number without its trailing zeros: C{6.90} and C{6.90.0}
    are one version, C{23.1} and C{23.1.1} two.
    """
    parts = [int(part) for part in text.split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def declaredFloors(config: configparser.ConfigParser) -> dict[str, str]:
    """
    The lowest version each run-time and test requirement allows (its
    C{>=}), by canonical name.

    @raise ValueError: For a requirement that is not C{NAME>=VERSION}
        (extras allowed), or two requirements of one package with
        different floors.
    """
    requirements = _lines(config["options"]["install_requires"])
    extras = config["options.extras_require"]
    for extra in PINNED_EXTRAS:
        requirements += _lines(extras.get(extra, ""))
    floors: dict[str, str] = {}
    for text in requirements:
        match = _REQUIREMENT.match(text.replace(" ", ""))
        if match is None:
            raise ValueError(f"{text}: not NAME>=VERSION")
        name, floor = canonical(match.group(1)), match.group(2)
        if floors.setdefault(name, floor) != floor:
            raise ValueError(f"{text}: another floor than {floors[name]}")
    return floors


def testedFloors(text: str) -> dict[str, str]:
    """
    The C{NAME==VERSION} pins of a constraints file, by canonical name.
    """
    pins = {}
    for line in _lines(text):
        name, _, pinned = line.partition("==")
        pins[canonical(name.strip())] = pinned.strip()
    return pins


def floorsDiffering(declared: dict[str, str], tested: dict[str, str]) -> list[str]:
    """
    The packages whose declared floor is not the version tested, or that
    only one side names.
    """
    wrong = []
    for name in sorted(set(declared) | set(tested)):
        floor, pin = declared.get(name), tested.get(name)
        if floor is None or pin is None or version(floor) != version(pin):
            wrong.append(f"{name}: declared >={floor}, tested =={pin}")
    return wrong


def manifestFiles(files: list[str], template: str) -> set[str]:
    """
    The C{files} (relative paths) a C{MANIFEST.in} C{template} adds to the
    sdist, with the commands this project's template uses.

    @raise ValueError: For another command, so that this reader is taught
        it before the template uses it.
    """
    chosen: set[str] = set()
    for line in _lines(template):
        command, *patterns = line.split()
        if command == "include":
            chosen |= {f for f in files for p in patterns if fnmatch.fnmatchcase(f, p)}
        elif command == "exclude":
            chosen -= {f for f in chosen for p in patterns if fnmatch.fnmatchcase(f, p)}
        elif command == "recursive-include":
            top, *names = patterns
            chosen |= {
                f
                for f in files
                if f.startswith(top.rstrip("/") + "/")
                and any(fnmatch.fnmatchcase(os.path.basename(f), n) for n in names)
            }
        elif command == "global-exclude":
            chosen -= {
                f
                for f in chosen
                for p in patterns
                if any(fnmatch.fnmatchcase(part, p) for part in f.split("/"))
            }
        elif command == "prune":
            chosen -= {f for f in chosen for p in patterns if f.startswith(p.rstrip("/") + "/")}
        else:
            raise ValueError(f"MANIFEST.in: {command} is not understood here")
    return chosen


def repositoryFiles() -> list[str]:
    """
    The files of the repository (those git tracks; all of them in an
    unpacked sdist), relative to the project.
    """
    if (PROJECT / ".git").exists():
        result = subprocess.run(
            ["git", "ls-files"],
            cwd=PROJECT,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return result.stdout.splitlines()
    return [
        os.path.relpath(os.path.join(root, name), PROJECT)
        for root, _, names in os.walk(PROJECT)
        for name in names
    ]


class FloorsTests(SynchronousTestCase):
    def test_declaredAreTested(self) -> None:
        """
        Every floor C{setup.cfg} declares for a run-time or test dependency
        is the version C{.ci/floors.txt} pins, written the same way, and
        C{.ci/floors.txt} pins nothing else.
        """
        declared = declaredFloors(setupConfig())
        tested = testedFloors((PROJECT / ".ci" / "floors.txt").read_text())
        self.assertGreater(len(declared), 8)
        self.assertEqual(floorsDiffering(declared, tested), [])

    def test_differenceFound(self) -> None:
        """
        A floor lower than the version tested (C{>=23.1} against
        C{==23.1.1}), a package pinned but not declared and one declared
        but not pinned are reported.
        """
        declared = {"txaio": "23.1", "attrs": "21.3"}
        tested = {"txaio": "23.1.1", "attrs": "21.3.0", "six": "1"}
        self.assertEqual(
            floorsDiffering(declared, tested),
            ["six: declared >=None, tested ==1", "txaio: declared >=23.1, tested ==23.1.1"],
        )
        self.assertEqual(
            floorsDiffering({"pika": "1.3.2"}, {}),
            ["pika: declared >=1.3.2, tested ==None"],
        )


class DistributionTests(SynchronousTestCase):
    def test_wheelContents(self) -> None:
        """
        The wheel carries the plugin module C{twistd} finds, without an
        C{__init__.py} beside it, and C{py.typed}.
        """
        options = setupConfig()["options"]
        packages = _lines(options["packages"])
        self.assertIn("twisted.plugins", packages)
        self.assertFalse((PROJECT / "twisted" / "plugins" / "__init__.py").exists())
        self.assertFalse((PROJECT / "twisted" / "__init__.py").exists())
        self.assertTrue((PROJECT / "twisted" / "plugins" / "twisted_smtpd_plugin.py").is_file())
        data = setupConfig()["options.package_data"]
        self.assertEqual(_lines(data["twisted_smtpd"]), ["py.typed"])
        self.assertTrue((PROJECT / "twisted_smtpd" / "py.typed").is_file())
        for path in PROJECT.joinpath("twisted_smtpd").rglob("__init__.py"):
            package = ".".join(path.parent.relative_to(PROJECT).parts)
            self.assertIn(package, packages)

    def test_sdistCarriesTheRepository(self) -> None:
        """
        Every file of the repository under C{tests/}, C{docs/},
        C{examples/}, C{bench/}, C{newsfragments/} and C{.ci/} is in the
        sdist (the suite, the documentation build and the benchmarks run
        from it), and the sdist has nothing C{git} does not track there.
        """
        files = repositoryFiles()
        shipped = manifestFiles(files, (PROJECT / "MANIFEST.in").read_text())
        wanted = {
            f
            for f in files
            if f.split("/", 1)[0] in SHIPPED
            and "__pycache__" not in f.split("/")
            and not f.endswith((".pyc", ".pyo"))
            and not f.startswith("docs/_build/")
        }
        self.assertGreater(len(wanted), 100)
        self.assertEqual(sorted(wanted - shipped), [])

    def test_manifestReader(self) -> None:
        """
        The C{MANIFEST.in} reader includes, excludes and prunes as
        setuptools does, and refuses a command it does not know.
        """
        files = ["README.md", "bench/a.py", "bench/peers/b.js", "bench/c.txt", "docs/_build/x"]
        files += ["docs/a.md", "bench/__pycache__/a.pyc", "twisted/plugins/dropin.cache"]
        template = (
            "include README.md\nrecursive-include bench *.py *.js *.pyc\n"
            "recursive-include docs *\nprune docs/_build\nglobal-exclude *.py[cod]\n"
            "include twisted/plugins/*\nexclude twisted/plugins/dropin.cache\n"
        )
        self.assertEqual(
            manifestFiles(files, template),
            {"README.md", "bench/a.py", "bench/peers/b.js", "docs/a.md"},
        )
        self.assertRaises(ValueError, manifestFiles, files, "graft bench\n")

    def test_noStrayFiles(self) -> None:
        """
        The top of the repository holds no file left by a run (a pid file,
        a process's output).
        """
        top = [f for f in repositoryFiles() if "/" not in f]
        stray = [f for f in top if f.endswith((".pid", ".out", ".log"))]
        self.assertEqual(stray, [])
