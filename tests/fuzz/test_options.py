"""
Hostile values for the flags of C{twistd smtpd} and for its configuration
files: whatever the arguments (the real option names, given empty, huge,
negative, with NUL, with bytes that are not UTF-8 as C{os.fsdecode} gives
them, in Arabic-Indic digits, as C{1e3}, C{0x10}, C{inf}, C{nan}, between
spaces, twice, or beside options they conflict with), reading the options
and making the service (without starting it) either succeeds or ends with
one L{usage.UsageError} line, never with another exception.
"""

from __future__ import annotations

import atexit
import json
import math
import os
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from tests.fuzz import PROFILE
from twisted_smtpd._twistd.tap import Options, makeService
from twisted_smtpd._twistd.tapflags import _NOT_IN_FILE

#: Flags left out: --handler imports and calls what it names, --workers
#: binds sockets and --check-config exits, by design.
_LEFT_OUT = {"handler", "workers", "check-config", "config", *_NOT_IN_FILE}


def _optionNames() -> list[tuple[str, bool]]:
    """
    Every long option of C{twistd smtpd}, with whether it takes a value.
    """
    names = {name.rstrip("="): name.endswith("=") for name in Options().longOpt}
    return sorted((n, v) for n, v in names.items() if n not in _LEFT_OUT)


NAMES = _optionNames()

HOSTILE = st.sampled_from(
    [
        "",
        " ",
        "x" * 5000,
        "-1",
        "0",
        "1",
        "\x00",
        "a\x00b",
        os.fsdecode(b"\xff\xfe"),
        "\u0661\u0662",
        "1e3",
        "0x10",
        "inf",
        "nan",
        "-inf",
        " 5 ",
        "\t5",
        "1.5",
        "9" * 30,
        "\r\n",
        "\u2028",
        "tcp:0",
        "tcp:99999",
        "tcp:25:interface=::",
        "unix:" + "a" * 200,
        "unix:/nonexistent/x.sock",
        "ssl:0:privateKey=/nonexistent",
        "systemd:domain=INET:index=0",
        "haproxy:tcp:0:interface=127.0.0.1",
        "tcp:0:backlog=0",
        "memory:a:b",
        "memory:",
        "file:/nonexistent",
        "unix",
        "PLAIN",
        "STARTTLS",
        "DATA",
        "10.0.0.1/8",
        "a=b",
        "mx.example",
        "1/0",
        "0/5",
        "5/1",
        "1/nan",
        "http://x",
        "amqp://u:p@h/v",
    ]
)
VALUES = HOSTILE | st.text(max_size=12) | st.from_regex(r"-?[0-9]{1,25}(\.[0-9]*)?(e[0-9]{1,4})?")
ARGUMENTS = st.lists(st.tuples(st.sampled_from(NAMES), VALUES), max_size=4)


def _arguments(drawn: list[tuple[tuple[str, bool], str]]) -> list[str]:
    arguments = []
    for (name, takesValue), value in drawn:
        arguments += [f"--{name}", value] if takesValue else [f"--{name}"]
    return arguments


def _tomlValue(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_tomlValue(item) for item in value) + "]"
    if isinstance(value, dict):
        pairs = (f"{json.dumps(k)} = {_tomlValue(v)}" for k, v in value.items())
        return "{" + ", ".join(pairs) + "}"
    return json.dumps(value)


SCALARS = st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | VALUES
TOML_VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["a", "b", "a b"]), inner, max_size=2)
    ),
    max_leaves=4,
)
KEYS = st.sampled_from([name for name, _ in NAMES] + ["max_clients", "smtpd", "bogus", ""])


class OptionsFuzzTests(SynchronousTestCase):
    def setUp(self) -> None:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(directory)
        # Each service made would flush its log writer at exit.
        self.patch(atexit, "register", lambda *args, **kwargs: None)

    def outcome(self, arguments: list[str]) -> None:
        """
        Read C{arguments} and make the service: an exception other than
        L{usage.UsageError} fails the test, with the arguments.
        """
        try:
            config = Options()
            config.parseOptions(arguments)
            makeService(config)
        except usage.UsageError as e:
            self.assertTrue(str(e), arguments)
        except Exception as e:
            self.fail(f"{arguments!r}: {type(e).__name__}: {e}")

    @settings(PROFILE, max_examples=PROFILE.max_examples * 2)
    @given(ARGUMENTS)
    def test_flags(self, drawn: list[tuple[tuple[str, bool], str]]) -> None:
        """
        Hostile values for the flags: a service or one usage error.
        """
        self.outcome(_arguments(drawn))

    @settings(PROFILE)
    @given(
        st.booleans(),
        st.lists(st.tuples(KEYS, TOML_VALUES), max_size=4),
        st.sampled_from([b"", b"\xef\xbb\xbf", b"\xff", b"[smtpd]\n"]),
        st.booleans(),
        ARGUMENTS,
    )
    def test_configFiles(
        self,
        toml: bool,
        settings: list[tuple[str, Any]],
        prefix: bytes,
        crlf: bool,
        drawn: list[tuple[tuple[str, bool], str]],
    ) -> None:
        """
        Configuration files (TOML or INI, with a byte order mark, a byte
        that is not UTF-8 or a section too many first, CRLF line ends)
        holding any key with any value, beside hostile flags: a service or
        one usage error.
        """
        if toml:
            path = "smtpd.toml"
            lines = [f"{json.dumps(key)} = {_tomlValue(value)}" for key, value in settings]
        else:
            path = "smtpd.ini"
            lines = ["[smtpd]"]
            for key, value in settings:
                items = value if isinstance(value, list) else [value]
                lines.append(f"{key} = " + "\n  ".join(str(item) for item in items))
        text = "\n".join(lines) + "\n"
        if crlf:
            text = text.replace("\n", "\r\n")
        with open(path, "wb") as f:
            f.write(prefix + text.encode("utf-8", "surrogateescape"))
        self.outcome(["--config", path, *_arguments(drawn)])
