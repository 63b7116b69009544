# -*- test-case-name: tests.test_configfile -*-
"""
C{twistd smtpd --config FILE}: a TOML or INI configuration file read and
turned into the command-line arguments it stands for (L{fileArguments}),
checked as it is read: an option unknown, given under both its spellings
or given a value of the wrong kind is one L{usage.UsageError} line naming
the file.
"""

from __future__ import annotations

import codecs
from collections.abc import Collection

from twisted.python import usage

from twisted_smtpd._core.files import readLimited
from twisted_smtpd._twistd.tapconfig import _oneLine, reason
from twisted_smtpd._twistd.tapflags import _MODIFIERS, _NOT_IN_FILE, _REPEATABLE, DELIVERIES

__all__ = ["CONFIG_LIMIT", "asArguments", "fileArguments", "readConfig"]


def asArguments(name: str, value: object, takesValue: bool, repeatable: bool) -> list[str]:
    """
    The command-line arguments for one configuration-file setting.

    @param name: The long option name.
    @param value: A string, number or boolean, a list of them, or (for
        C{handler-option}) a table.
    @raise ValueError: If C{value} does not suit the option: an empty
        list, or a table value that is no string or number.
    """
    if not takesValue:
        if not isinstance(value, bool):
            raise ValueError("expected true or false")
        return ["--" + name] if value else []
    if isinstance(value, dict) and name == "handler-option":
        for key, item in value.items():
            if isinstance(item, bool) or not isinstance(item, str | int | float):
                # Its text (True, [1, 2]) is no value a handler is given
                # on the command line; "False" would even be true.
                raise ValueError(f"{key}: expected a string or a number")
        value = [f"{k}={v}" for k, v in value.items()]
    values = value if isinstance(value, list) else [value]
    if not values:
        # Not the option's default, which leaving it out gives: no
        # listener at all is no server.
        raise ValueError("an empty list (leave the option out for its default)")
    if len(values) != 1 and not repeatable:
        raise ValueError("expected one value")
    arguments = []
    for item in values:
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            raise ValueError("expected a string or a number")
        arguments += ["--" + name, str(item)]
    return arguments


#: The largest configuration file read (a real one is a few KiB).
CONFIG_LIMIT = 1024 * 1024


def readConfig(path: str, switches: Collection[str] = ()) -> dict[str, object]:
    """
    Read a C{twistd smtpd} configuration file.

    A file whose name ends in C{.toml} is TOML: keys at the top level or in a
    C{[smtpd]} table, lists for repeatable options, booleans for flags.  Any
    other file is INI, section C{[smtpd]}: repeatable options take one value
    per line, flags C{true}/C{false} (or yes/no, on/off, 1/0).

    @param switches: The long names of the flags that take no value: only
        their INI values are read as booleans, so that C{max-clients = 0},
        C{workers = 1} or C{banner = yes} keep their text.
    @return: Option names (as written) to values; INI values are strings,
        lists of strings for several lines, or booleans for the words like
        C{true} given to a switch.
    Only a regular file of at most L{CONFIG_LIMIT} bytes is read: a named
    pipe would block the start, a device such as C{/dev/zero} never ends.
    It is UTF-8, a byte order mark before its text left out.  An INI key
    with no value is the empty text, as C{--listen ''} is; one key given
    both as C{max-clients} and C{max_clients} is refused by
    L{fileArguments}.

    @raise OSError: If the file cannot be read.
    @raise ValueError: If it does not parse, is not a regular file, is
        too large or is not UTF-8.
    """
    data = readLimited(path, CONFIG_LIMIT)
    if len(data) > CONFIG_LIMIT:
        raise ValueError(f"larger than {CONFIG_LIMIT} bytes")
    # A byte order mark first (Windows Notepad writes one) is no text.
    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        text = data[start:].decode("utf-8")
    except UnicodeDecodeError as e:
        offset = start + e.start
        raise ValueError(
            f"not UTF-8 text (the byte 0x{data[offset]:02x} at offset {offset})"
        ) from None
    # Their parsers are imported only for a configuration file.
    if path.endswith(".toml"):
        import tomllib

        try:
            document: dict[str, object] = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"not valid TOML: {e}") from None
        except RecursionError:
            # tomllib recurses once per level of nested arrays and tables.
            raise ValueError("not valid TOML: arrays or tables nested too deeply") from None
        section = document.pop("smtpd", None)
        if isinstance(section, dict):
            for key in section.keys() & document.keys():
                raise ValueError(f"{key!r} both in [smtpd] and at the top level")
            document.update(section)
        elif section is not None:
            document["smtpd"] = section
        return document
    import configparser

    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text, path)
    except configparser.Error as e:
        raise ValueError(f"not a valid INI file: {_oneLine(str(e))}") from None
    if not parser.has_section("smtpd"):
        raise ValueError("no [smtpd] section")
    settings: dict[str, object] = {}
    for key, text in parser.items("smtpd"):
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        lowered = text.strip().lower()
        if key.replace("_", "-") in switches and lowered in parser.BOOLEAN_STATES:
            settings[key] = parser.BOOLEAN_STATES[lowered]
        elif not lines:
            # "listen =": an empty value, as --listen '' is, and not an
            # empty list of listeners (the default one).
            settings[key] = ""
        else:
            settings[key] = lines[0] if len(lines) == 1 else lines
    return settings


def fileArguments(
    path: str, given: Collection[str], longOpt: Collection[str]
) -> tuple[list[str], list[str]]:
    """
    The options of the configuration file at C{path} as command-line
    arguments, leaving out those C{given} on the command line: a
    repeatable option given there replaces the file's list, and a
    delivery given there replaces the file's delivery with its settings.

    @param longOpt: The long options of the command line (C{"name="} for
        one that takes a value).
    @return: The arguments, and a warning line for each delivery setting
        of the file that a delivery on the command line dropped.
    @raise usage.UsageError: If the file cannot be read or holds an
        unknown option, one option under both its spellings (C{-} and
        C{_}) or a value of the wrong kind.
    """
    flags = {name.rstrip("="): name.endswith("=") for name in longOpt}
    switches = {name for name, takesValue in flags.items() if not takesValue}
    try:
        settings = readConfig(path, switches)
    except (OSError, ValueError) as e:
        raise usage.UsageError(f"--config {path!r}: {reason(e)}") from None
    replaced = set(given)
    deliveries = [name for name in DELIVERIES if name in given]
    if deliveries:
        replaced |= set(DELIVERIES) | set(_MODIFIERS)
    arguments: list[str] = []
    dropped: list[str] = []
    spelled: dict[str, str] = {}
    for key, value in settings.items():
        name = key.replace("_", "-")
        if name in spelled:
            # max-clients and max_clients: one would silently replace the other.
            raise usage.UsageError(
                f"--config {path!r}: {spelled[name]!r} and {key!r} are the same option"
            )
        spelled[name] = key
        if name not in flags or name in _NOT_IN_FILE:
            raise usage.UsageError(f"--config {path!r}: unknown option {key!r}")
        if name in _MODIFIERS and name not in given and deliveries:
            # Dropped with the file's delivery: said at start.
            dropped.append(
                f"--{name} in --config {path!r} has no effect: the command line's"
                f" --{deliveries[0]} replaces the file's delivery and its settings"
            )
        if name in replaced:
            continue
        try:
            arguments += asArguments(name, value, flags[name], name in _REPEATABLE)
        except ValueError as e:
            raise usage.UsageError(f"--config {path!r}: {key}: {e}") from None
    return arguments, dropped
