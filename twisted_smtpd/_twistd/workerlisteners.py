# -*- test-case-name: tests.test_workers -*-
"""
The listening sockets of C{twistd smtpd --workers N}: the parent binds
each C{--listen} once before any worker starts (a TCP listener one socket
per worker with C{SO_REUSEPORT}, a UNIX one a single shared socket), after
checking that it can hold them and its workers' pipes within its
open-files limit; each worker finds the sockets it inherited in
L{INHERITED}.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.endpoints import serverFromString
from twisted.python import usage

from twisted_smtpd._serving.listeners import listenReason, splitDescription
from twisted_smtpd._twistd.openfiles import RESERVE, raiseLimit
from twisted_smtpd._twistd.tapconfig import reason

#: The environment variable that hands a worker its sockets:
#: C{fd,family,description} entries separated by newlines.
INHERITED = "TWISTED_SMTPD_INHERITED"

#: The most processes C{--workers} starts: well past the cores of any host
#: the server runs on, and each worker is a whole Python process.
MAX_WORKERS = 256

#: The descriptors the parent holds for each worker besides its sockets:
#: the pipes of its standard input and output, the one it watches and the
#: one of its signs of life (L{Watchdog}).
_PIPES_PER_WORKER = 4


class ListenerSpec:
    """
    A listening socket bound by the parent.
    """

    def __init__(self, description: str, sockets: list[socket.socket]) -> None:
        self.description = description
        self.sockets = sockets

    def socketFor(self, index: int) -> socket.socket:
        """
        The socket worker C{index} serves.
        """
        return self.sockets[index % len(self.sockets)]


def _kind(description: str) -> str:
    base, _ = splitDescription(description)
    return base.partition(":")[0].strip().lower()


def checkWorkers(
    count: int, descriptions: Sequence[str], limit: Callable[[], int] | None = None
) -> None:
    """
    Check that the parent of C{count} workers serving C{descriptions} can
    hold their sockets and pipes within its open-files limit, before it
    binds anything.

    @param limit: Raises the open-files limit as far as it goes and
        returns it: L{raiseLimit} by default.
    @raise ValueError: With one line naming the limit exceeded.
    """
    if count > MAX_WORKERS:
        raise ValueError(f"at most {MAX_WORKERS} workers, got {count}")
    shared = sum(1 for d in descriptions if _kind(d) == "unix")
    perWorker = _PIPES_PER_WORKER + len(descriptions) - shared
    needed = count * perWorker + shared + RESERVE
    available = (limit or raiseLimit)()
    if needed > available:
        raise ValueError(
            f"{count} workers need about {needed} open files in the parent"
            f" ({perWorker} per worker), more than its limit of {available};"
            f" start fewer workers or raise the hard limit"
            f" (LimitNOFILE= in a systemd unit, ulimit -Hn)"
        )


def bindListener(reactor: Any, description: str, count: int) -> ListenerSpec:
    """
    Bind the sockets for one C{--listen} description.

    @raise ValueError: The description cannot be served by workers (only
        TCP and UNIX listeners, possibly under C{haproxy:}, and C{ssl:}
        ones, with the server's certificate or keys of their own, can).
    @raise OSError: The address cannot be bound.
    """
    base, _ = splitDescription(description)
    kind = _kind(description)
    if kind not in ("tcp", "tcp6", "unix", "ssl"):
        raise ValueError(
            f"--workers cannot serve {description!r}: only tcp:, ssl: and unix: listeners"
        )
    # Every ssl: endpoint is a TCP one here; the files of one with keys of
    # its own were read with the options (a file that cannot be used stops
    # the parent before any worker starts), and each worker reads them
    # again to make its TLS contexts.
    endpoint = serverFromString(reactor, base)
    port = getattr(endpoint, "_port", None)
    interface = getattr(endpoint, "_interface", None)
    backlog = int(getattr(endpoint, "_backlog", 50))
    if kind in ("tcp", "tcp6", "ssl") and isinstance(port, int) and isinstance(interface, str):
        family = socket.AF_INET6 if kind == "tcp6" or ":" in interface else socket.AF_INET
        host = interface or ("::" if family == socket.AF_INET6 else "")
        if port != 0:
            _refuseInUse(family, host, port)
        sockets: list[socket.socket] = []
        try:
            for _ in range(count):
                s = socket.socket(family, socket.SOCK_STREAM)
                sockets.append(s)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                s.bind((host, port))
                s.listen(backlog)
                s.setblocking(False)
                # Port 0: every worker must share the port the first one got.
                port = s.getsockname()[1]
        except BaseException:
            # A backlog or an address the kernel refuses: none is kept.
            for s in sockets:
                s.close()
            raise
        return ListenerSpec(description, sockets)
    address = getattr(endpoint, "_address", None)
    if kind == "unix" and isinstance(address, str):
        _removeStaleSocket(address)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.bind(address)
        except OSError as e:
            s.close()
            if e.errno is None:
                # Not the kernel's: Python's own "AF_UNIX path too long".
                raise
            raise OSError(e.errno, e.strerror, address) from None
        try:
            s.listen(backlog)
        except BaseException:
            s.close()
            raise
        s.setblocking(False)
        return ListenerSpec(description, [s])
    raise ValueError(f"--workers cannot serve {description!r}: only tcp:, ssl: and unix: listeners")


def bindAll(descriptions: Sequence[str], count: int) -> list[ListenerSpec]:
    """
    Bind every listener of C{descriptions} for C{count} workers
    (L{bindListener}), or none.

    @raise usage.UsageError: Naming the listener that cannot be bound and
        why, as one process says it (address in use, privileged port);
        the sockets bound before it are closed.
    """
    from twisted.internet import reactor

    bound: list[ListenerSpec] = []
    for description in descriptions:
        try:
            bound.append(bindListener(reactor, description, count))
        except (OSError, OverflowError, ValueError) as e:
            for spec in bound:
                for s in spec.sockets:
                    _discard(s)
            if isinstance(e, ValueError):
                raise usage.UsageError(f"--workers: {reason(e)}") from e
            raise usage.UsageError(f"--listen {description!r}: {listenReason(e)}") from e
    return bound


def _discard(bound: socket.socket) -> None:
    """
    Close a socket L{bindListener} bound, for a start that ends: a UNIX
    socket's path is removed too, or the next start would find it in the
    way.
    """
    if bound.family == socket.AF_UNIX:
        path = bound.getsockname()
        if isinstance(path, str | bytes) and path and not os.fsdecode(path).startswith("\0"):
            with contextlib.suppress(OSError):
                os.unlink(path)
    bound.close()


def _refuseInUse(family: int, host: str, port: int) -> None:
    """
    Bind C{(host, port)} as a single-process server would (without
    C{SO_REUSEPORT}), then let it go.  The workers' sockets share their
    port with C{SO_REUSEPORT}, which another socket bound with it (another
    C{twistd smtpd --workers} of the same user, still running or started
    twice) may share too: the kernel would then hand the connections to
    both servers, and neither would say so.

    @raise OSError: C{EADDRINUSE} when something listens there already.
    """
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))


def _removeStaleSocket(path: str) -> None:
    """
    Remove the UNIX socket at C{path} if nothing accepts connections on it
    (one left by a server that was killed).  Anything else there stays, and
    binding refuses it as in use: a file named by mistake, or the socket of
    a server still running, which would otherwise lose its address.
    """
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            return
    except OSError:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.setblocking(False)
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            os.unlink(path)
        except OSError:
            # Listening, its backlog full (EAGAIN), or not ours to probe.
            pass


def inheritedListeners(environ: dict[str, str] | None = None) -> list[tuple[int, int, str]]:
    """
    The sockets a worker was handed, as C{(fd, family, description)}.

    @raise ValueError: A line of the variable is not C{FD,FAMILY,DESCRIPTION}
        (set by something else than the parent of C{--workers}).
    """
    value = (environ if environ is not None else os.environ).get(INHERITED, "")
    out = []
    for line in value.split("\n"):
        if line:
            try:
                fd, family, description = line.split(",", 2)
                out.append((int(fd), int(family), description))
            except ValueError:
                raise ValueError(
                    f"{line[:40]!a} is not a socket the parent of --workers handed on"
                ) from None
    return out


def checkInherited(listeners: Sequence[tuple[int, int, str]]) -> None:
    """
    Check that each descriptor of L{inheritedListeners} is a socket, as the
    parent of C{--workers} hands them on: adopting anything else fails
    with a traceback once the server starts.

    @raise ValueError: Naming the first descriptor that is not one.
    """
    for fd, _, _ in listeners:
        try:
            isSocket = stat.S_ISSOCK(os.fstat(fd).st_mode)
        except (OSError, OverflowError):
            isSocket = False
        if not isSocket:
            raise ValueError(f"descriptor {fd} is not a socket the parent of --workers handed on")
