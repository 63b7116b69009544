# -*- test-case-name: tests.test_listenaddresses -*-
"""
The checks of the C{twistd smtpd} configuration against the host it starts
on: C{twistd}'s pid file (its directory, one left by an earlier start), the
sockets inherited from systemd for C{systemd:} listeners, and listeners
that would bind the same address.  Each refusal is one L{usage.UsageError} line naming the flag.
"""

from __future__ import annotations

import os
import pwd
import socket
import stat
from collections.abc import Sequence
from typing import Any

from twisted.python import usage

from twisted_smtpd._core.files import NotRegularFile, openRegular
from twisted_smtpd._twistd.runuser import asRunUser, runIdentity


def checkPidFile(path: str | None, leftPid: bool = True) -> None:
    """
    Refuse a C{twistd --pidfile} that C{twistd} could not write: in a
    directory that does not exist or that this process cannot write, or
    naming a directory.  C{twistd}
    itself would end with a traceback, once the options are parsed.  One
    left by an earlier start is checked too (L{_checkLeftPid}).

    @param path: The C{--pidfile} given to C{twistd} (C{""} or C{None}:
        none).
    @param leftPid: Whether to check one left by an earlier start (not for
        C{--check-config}, run beside the server that wrote it).
    @raise usage.UsageError: Naming the path and why.
    """
    if not path:
        return
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise usage.UsageError(f"--pidfile {path!r}: cannot write the pid file: a directory")
    if not os.path.isdir(directory):
        raise usage.UsageError(
            f"--pidfile {path!r}: cannot write the pid file: no directory {directory}"
        )
    # twistd writes it (and removes one left by a process gone) before it
    # switches users (--uid): as the user it starts as.
    effective = os.access in os.supports_effective_ids
    if not os.access(directory, os.W_OK | os.X_OK, effective_ids=effective):
        raise usage.UsageError(
            f"--pidfile {path!r}: cannot write the pid file: its directory {directory}"
            " cannot be written"
        )
    if leftPid and os.path.lexists(path):
        _checkLeftPid(path)


def socketDirectory(parent: Any, workers: int) -> str | None:
    """
    The directory a relative UNIX socket path of C{--listen} or
    C{--metrics} is taken from when the server listens: C{twistd}'s
    C{--rundir} (it changes into it before the listeners start), the
    current one for the parent of C{--workers} (which binds them while the
    options are read).

    @param parent: C{twistd}'s own options (or an empty mapping).
    @param workers: The number of C{--workers}.
    @return: The directory, or C{None} when the paths cannot be told
        here: under C{twistd --chroot}, or in a worker of C{--workers}
        (its listeners are its parent's).
    """
    from twisted_smtpd._twistd.workerlisteners import INHERITED

    if parent.get("chroot") or INHERITED in os.environ:
        return None
    if workers > 1:
        return "."
    return str(parent.get("rundir") or ".")


def pidFileStays(config: Any) -> str | None:
    """
    A warning line when the user C{twistd --uid} runs the server as cannot
    remove C{twistd}'s pid file when the server stops: its directory is
    not writable by that user, or is sticky and not that user's (the file
    is written as root).  C{twistd} then logs only C{Warning: No
    permission to delete pid file}, and the file stays until the next
    start removes it.

    @param config: The options of C{smtpd}, whose C{parent} holds
        C{twistd}'s own.
    @return: The line, or C{None} (no pid file, no C{--uid}, not root,
        or a directory the user can remove it from).
    """
    parent: Any = getattr(config, "parent", None) or {}
    path = parent.get("pidfile")
    uid, _, _ = runIdentity(config)
    if not path or uid is None:
        return None
    directory = os.path.dirname(os.path.abspath(path))
    with asRunUser(config):
        writable = os.access(directory, os.W_OK | os.X_OK, effective_ids=True)
    try:
        info = os.stat(directory)
    except OSError:
        return None
    if writable and not (info.st_mode & stat.S_ISVTX and info.st_uid != uid):
        return None
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    return (
        f"--pidfile {path!r}: user {user} (--uid) cannot remove it when the server stops"
        f" (it cannot write {directory}), so it stays; put it in a directory of that"
        " user's (RuntimeDirectory= in systemd)"
    )


#: The most of a pid file read: a process id and a newline.
_PID_LIMIT = 64


def _checkLeftPid(path: str) -> None:
    """
    Check the pid file C{path} left by an earlier start before C{twistd}
    does: C{twistd} reads a named pipe without end, ends with six lines
    when the process it names runs, and takes its own process for another
    server when the file names it (a start after a crash in a container,
    where the server has the same process id every time).

    @raise usage.UsageError: It cannot be read, holds no process id, or
        names a process that runs.  One naming this process is removed; one
        naming a process gone is left for C{twistd}, which removes it.
    """
    try:
        with os.fdopen(openRegular(path), "rb") as f:
            data = f.read(_PID_LIMIT)
    except NotRegularFile as e:
        raise usage.UsageError(f"--pidfile {path!r}: cannot read the pid file: {e.kind}") from None
    except OSError as e:
        why = (e.strerror or str(e)).lower()
        raise usage.UsageError(f"--pidfile {path!r}: cannot read the pid file: {why}") from None
    text = data.decode("ascii", "replace").strip()
    if not (text.isascii() and text.isdigit() and 0 < int(text) < 2**31):
        raise usage.UsageError(
            f"--pidfile {path!r}: holds no process id ({text[:20]!a}); remove it"
        )
    pid = int(text)
    if pid == os.getpid():
        os.remove(path)
        return
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return
    except OSError:
        pass  # Running, as another user.
    raise usage.UsageError(
        f"--pidfile {path!r}: process {pid} it names is running (another server?): stop it,"
        " or remove the file if that process is not one"
    )


#: The C{domain=} of a C{systemd:} endpoint for each address family.
_DOMAINS: dict[int, str] = {
    socket.AF_INET: "INET",
    socket.AF_INET6: "INET6",
    socket.AF_UNIX: "UNIX",
}


def inheritedSocketProblem(fileno: int, family: int) -> str | None:
    """
    What keeps the socket inherited from systemd as descriptor C{fileno}
    from being served as a listener of C{family}, or C{None}.

    Twisted adopts the descriptor as a listening stream socket of the
    family its C{domain=} names, without looking: an IPv6 socket (what
    C{ListenStream=25} makes on a host with IPv6) adopted as C{INET} reads
    every client's address as garbage, and a socket that is not listening
    (C{Accept=yes}) or not a stream (C{ListenDatagram=}) serves no client
    at all, though the server says it listens.

    @return: Why, for the line refusing it; C{None} if it can be served,
        or if it is no open socket at all (adopting it then fails, saying
        so).
    """
    try:
        copy = os.dup(fileno)
    except OSError:
        return None
    try:
        inherited = socket.socket(fileno=copy)
    except OSError:
        os.close(copy)
        return None
    with inherited:
        actual = inherited.family
        if actual != family and actual in _DOMAINS:
            return (
                f"the inherited socket is {_DOMAINS[actual]}, not"
                f" {_DOMAINS.get(family, family)}: use domain={_DOMAINS[actual]}"
            )
        if inherited.type != socket.SOCK_STREAM:
            return (
                "the inherited socket is not a stream socket (the .socket unit needs ListenStream=)"
            )
        if not inherited.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            return "the inherited socket is not listening (the .socket unit needs Accept=no)"
    return None


def _bound(description: str) -> tuple[str, str, int | str] | None:
    """
    What the listener of a description that parses binds: C{("tcp",
    interface, port)} (C{"tcp6"} for IPv6), C{("unix", "", path)}, or
    C{None} when it cannot be told beforehand (port 0, another endpoint).
    """
    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString

    from twisted_smtpd._serving.listeners import splitDescription

    parse: Any = serverFromString
    try:
        endpoint = parse(reactor, splitDescription(description)[0])
    except Exception:
        return None
    port = getattr(endpoint, "_port", None)
    interface = getattr(endpoint, "_interface", None)
    address = getattr(endpoint, "_address", None)
    if isinstance(port, int) and port != 0 and isinstance(interface, str):
        family = "tcp6" if ":" in interface else "tcp"
        return (family, interface, port)
    if isinstance(address, str) and address and not address.startswith("\0"):
        return ("unix", "", os.path.abspath(address))
    return None


#: The interfaces that take every address of their family.
_WILDCARDS = ("", "0.0.0.0", "::")  # noqa: S104 -- compared, not bound

#: Where Linux says whether IPv6 sockets take IPv4 connections too.
_BINDV6ONLY = "/proc/sys/net/ipv6/bindv6only"


def _dualStack() -> bool:
    """
    Whether a TCP listener on an IPv6 address takes the IPv4 connections
    of the addresses it maps too (and so binds them): Linux's
    C{net.ipv6.bindv6only} is 0, its default, and Twisted leaves
    C{IPV6_V6ONLY} as that says.
    """
    try:
        with open(_BINDV6ONLY, encoding="ascii") as f:
            return f.read().strip() == "0"
    except (OSError, ValueError):
        return False


def _takesIPv4(interface6: str, interface4: str) -> bool:
    """
    Whether a dual-stack IPv6 listener on C{interface6} binds the IPv4
    address C{interface4} of the same port: C{::} takes every IPv4
    address, C{::ffff:A} the address C{A} (and conflicts with the IPv4
    wildcard).
    """
    if interface6 in _WILDCARDS:
        return True
    head, _, mapped = interface6.lower().rpartition(":")
    if head not in ("::ffff", "0:0:0:0:0:ffff"):
        return False
    return mapped == interface4 or interface4 in _WILDCARDS


def checkDistinctAddresses(listen: Sequence[str], metrics: str | None) -> None:
    """
    Refuse two C{--listen} endpoints (or C{--metrics} and one) that bind
    the same address, which would fail as in use, said to be another
    program's: the same TCP port on the same interface, or on the
    wildcard of its family and one of its addresses, or the same UNIX
    socket path.  Where IPv6 listeners take IPv4 connections too
    (L{_dualStack}), an IPv6 one on C{::} and an IPv4 one on the same port
    (C{tcp:25} and C{tcp6:25}) bind the same addresses as well.

    @raise usage.UsageError: Naming both.
    """
    seen: list[tuple[str, tuple[str, str, int | str]]] = []
    named = [f"--listen {d!r}" for d in listen]
    if metrics is not None:
        named.append(f"--metrics {metrics!r}")
    for flag, description in zip(named, [*listen, *([metrics] if metrics else [])], strict=True):
        bound = _bound(description)
        if bound is None:
            continue
        family, interface, where = bound
        for earlier, (otherFamily, otherInterface, otherWhere) in seen:
            if where != otherWhere:
                continue
            note = ""
            if family == otherFamily:
                same = (
                    interface == otherInterface
                    or interface in _WILDCARDS
                    or otherInterface in _WILDCARDS
                )
            else:
                # tcp and tcp6 (a UNIX path is never a port).
                six, four = (interface, otherInterface)[:: 1 if family == "tcp6" else -1]
                same = _takesIPv4(six, four) and _dualStack()
                note = " (IPv6 listeners take IPv4 connections too: net.ipv6.bindv6only is 0)"
            if same:
                raise usage.UsageError(f"{flag}: the same address as {earlier}{note}")
        seen.append((flag, bound))
