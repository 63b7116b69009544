# -*- test-case-name: tests.test_metricsfold -*-
"""
The multiprocess files of C{prometheus_client} under C{--workers}: reading
and writing their values, and the collector the parent's scrapes read them
with, which a file it cannot read does not break.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import struct
from contextlib import suppress
from typing import Any

from twisted.logger import Logger

_log = Logger(namespace="twisted_smtpd.metrics")

#: The files the parent writes, each holding the sums of one kind of
#: metric over the workers that ended (C{counter_ended.db}, ...).
ENDED = "_ended.db"


def readMetricsFile(path: str) -> list[tuple[str, float, float]]:
    """
    The values of a C{prometheus_client} multiprocess file: each key, value
    and timestamp (0 where the release of C{prometheus_client} keeps none,
    as the older ones the package allows).

    @raise ValueError: The file is cut short or holds no such values (a
        worker killed while it made it); C{prometheus_client} says so with
        C{struct.error} or C{RuntimeError}.  Or a key is not one a scrape
        can read (a JSON list of the metric's name, the sample's name, its
        labels and its help), which would break every scrape once added
        into the sums.
    @raise OSError: The file cannot be read (C{FileNotFoundError}: there
        is none).
    """
    from prometheus_client.mmap_dict import MmapedDict

    read: Any = MmapedDict.read_all_values_from_file
    try:
        entries: list[Any] = list(read(path))
    except (struct.error, RuntimeError, UnicodeDecodeError) as e:
        raise ValueError(f"{os.path.basename(path)} is unreadable ({e})") from e
    for entry in entries:
        if not _isKey(entry[0]):
            raise ValueError(f"{os.path.basename(path)} is unreadable (a key is no metric's)")
    return [(e[0], e[1], e[2] if len(e) == 4 else 0.0) for e in entries]


def _isKey(key: str) -> bool:
    try:
        parts = json.loads(key)
    except (ValueError, RecursionError):
        return False
    return (
        isinstance(parts, list)
        and len(parts) == 4
        and isinstance(parts[0], str)
        and isinstance(parts[1], str)
        and isinstance(parts[2], dict)
    )


def writeMetricsValue(d: Any, key: str, value: float, timestamp: float) -> None:
    """
    Write C{value} under C{key} into the opened multiprocess file C{d}
    (a C{prometheus_client} C{MmapedDict}), with its timestamp where the
    release of C{prometheus_client} keeps one.
    """
    import inspect

    if len(inspect.signature(d.write_value).parameters) >= 3:
        d.write_value(key, value, timestamp)
    else:
        d.write_value(key, value)


def setAside(path: str) -> str:
    """
    Rename the unreadable file C{path} (C{counter_ended.db}), a directory
    perhaps, out of the scrapes' way: to C{counter_ended.unreadable},
    replacing one set aside before.

    @return: The new path.
    @raise OSError: It could not be renamed.
    """
    aside = path[: -len(".db")] + ".unreadable"
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        raise
    except OSError:
        # One set aside before, of another kind (a directory, a file).
        if os.path.isdir(aside) and not os.path.islink(aside):
            shutil.rmtree(aside, ignore_errors=True)
        else:
            with suppress(FileNotFoundError):
                os.remove(aside)
        os.replace(path, aside)
    return aside


def setAsideWorkerFile(directory: str, kind: str, pid: int) -> tuple[str, list[str]]:
    """
    Set aside the unreadable file of kind C{kind} (C{counter}) of the
    ended worker C{pid} (L{setAside}: C{counter_PID.unreadable}), and
    remove those of that kind set aside before for other workers, so that
    the directory keeps one per kind, the latest: a worker started again
    and again, leaving an unreadable file each time, does not fill it.

    @return: The new path, and the names of the files removed.
    @raise OSError: It could not be renamed.
    """
    aside = setAside(os.path.join(directory, f"{kind}_{pid}.db"))
    removed = []
    for other in glob.glob(os.path.join(glob.escape(directory), f"{kind}_*.unreadable")):
        number = os.path.basename(other)[len(kind) + 1 : -len(".unreadable")]
        if other == aside or not (number.isascii() and number.isdigit()):
            # The sum's (counter_ended.unreadable), or another kind's
            # (gauge_max_1.unreadable is no gauge_ file).
            continue
        with suppress(OSError):
            if os.path.isdir(other) and not os.path.islink(other):
                shutil.rmtree(other)
            else:
                os.remove(other)
            removed.append(os.path.basename(other))
    return aside, removed


def setAsideEnded(path: str, error: object) -> None:
    """
    Set aside the unreadable sums of the workers that ended (L{setAside}),
    with one line: those counts start again from zero, in a new file the
    next worker that ends makes.

    @raise OSError: It could not be renamed (logged).
    """
    name = printableName(path)
    try:
        aside = setAside(path)
    except OSError as e:
        _log.warn(
            "metrics: {name} is unreadable ({error}) and could not be set aside: {why}",
            name=name,
            error=error,
            why=e.strerror or e,
        )
        raise
    _log.warn(
        "metrics: {name} is unreadable ({error}); set aside as {aside}, the counts of the"
        " workers that ended before start again from zero",
        name=name,
        error=error,
        aside=printableName(aside),
    )


def printableName(path: str) -> str:
    """
    The name of a file of the metrics directory, for a log line.
    """
    return ascii(os.path.basename(path))[1:-1]


class MultiprocessCollector:
    """
    The sums of every worker's metrics in a directory, as
    C{prometheus_client}'s C{MultiProcessCollector} gives them, except that
    a file it cannot read does not fail the scrape: an unreadable sum of
    the workers that ended (L{ENDED}, which only the parent writes) is set
    aside (L{setAsideEnded}), any other unreadable file is left out of the
    scrapes while it stays so, with one line the first time.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._leftOut: set[str] = set()

    def collect(self) -> Any:
        files = glob.glob(os.path.join(self._path, "*.db"))
        try:
            return _merge(files)
        except Exception:
            # Whatever a file holds: found below, and the others read again.
            return _merge(self._readable(files))

    def _readable(self, files: list[str]) -> list[str]:
        """
        Those of C{files} a scrape can read; the others are dealt with
        (L{_unreadable}).
        """
        readable = []
        for path in files:
            try:
                _merge([path])
            except FileNotFoundError:
                # Gone meanwhile (a live gauge's file of a worker that ended).
                continue
            except Exception as e:
                self._unreadable(path, e)
                continue
            readable.append(path)
        self._leftOut &= set(files)
        return readable

    def _unreadable(self, path: str, error: Exception) -> None:
        why = _describe(error)
        if path.endswith(ENDED):
            with suppress(OSError):
                setAsideEnded(path, why)
            return
        if path in self._leftOut:
            return
        self._leftOut.add(path)
        _log.warn(
            "metrics: {name} is unreadable ({error}); left out of the scrapes",
            name=printableName(path),
            error=why,
        )


def _merge(files: list[str]) -> Any:
    """
    The metrics in C{files}, summed as C{prometheus_client}'s scrapes do.
    """
    from prometheus_client import multiprocess

    collector: Any = multiprocess.MultiProcessCollector
    return collector.merge(files, accumulate=True)


def _describe(error: Exception) -> str:
    """
    Why a file could not be read, for a log line.
    """
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return ascii(f"{type(error).__name__}: {error}")[1:-1][:200]
