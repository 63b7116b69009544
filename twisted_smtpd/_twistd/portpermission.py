# -*- test-case-name: tests.test_portpermission -*-
"""
Whether this process may bind a TCP port, decided as Linux decides it
(C{inet_port_requires_bind_service}), without binding it: a port below
C{net.ipv4.ip_unprivileged_port_start} (1024 by default) needs the
C{CAP_NET_BIND_SERVICE} capability in the effective set, which root has
unless it was taken away.  C{--check-config}, which listens on nothing,
refuses such a port with the line the start would end with.
"""

from __future__ import annotations

import os

from twisted.python import usage

from twisted_smtpd._serving.listeners import PRIVILEGED_PORT_HINT

__all__ = ["checkPortPermission", "mayBind"]

#: The first port any process may bind; the ports below it need
#: C{CAP_NET_BIND_SERVICE}.  Its IPv4 name covers IPv6 too.
UNPRIVILEGED_PORT_START = "/proc/sys/net/ipv4/ip_unprivileged_port_start"

#: Where the calling thread's capabilities are (C{CapEff:}, in hex).
THREAD_STATUS = "/proc/thread-self/status"

#: The bit of C{CAP_NET_BIND_SERVICE} in a capability set
#: (C{linux/capability.h}).
CAP_NET_BIND_SERVICE = 10


def _firstUnprivilegedPort() -> int:
    """
    The first port binding needs no capability for; 1024, as on the BSDs
    and Linux by default, where the setting cannot be read.
    """
    try:
        with open(UNPRIVILEGED_PORT_START, encoding="ascii") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 1024


def _mayBindPrivileged() -> bool:
    """
    Whether the calling thread has C{CAP_NET_BIND_SERVICE} in its
    effective set; where capabilities cannot be read, whether it is root.
    """
    try:
        with open(THREAD_STATUS, encoding="ascii") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split(":", 1)[1], 16) >> CAP_NET_BIND_SERVICE & 1)
    except (OSError, ValueError):
        pass
    return os.geteuid() == 0


def _underAuthbind() -> bool:
    """
    Whether the process runs under authbind, whose library (preloaded)
    binds a privileged port through a helper when C{/etc/authbind} allows
    it: only binding tells.
    """
    return "authbind" in os.environ.get("LD_PRELOAD", "")


def mayBind(port: int) -> bool:
    """
    Whether this process may bind C{port} (0: one the system picks), as far
    as the kernel's rule on privileged ports goes: the port may still be in
    use.  Under authbind, which decides as the port is bound, any port.
    """
    if port == 0 or port >= _firstUnprivilegedPort():
        return True
    return _mayBindPrivileged() or _underAuthbind()


def checkPortPermission(flag: str, description: str, endpoint: object) -> None:
    """
    Refuse the port of a TCP endpoint (C{tcp:}, C{tcp6:}, C{ssl:}, behind
    C{haproxy:} too) this process may not bind (L{mayBind}), in the words
    of a start that cannot listen on it.

    @param flag: The flag's name without the dashes, for the message.
    @param endpoint: What Twisted made of C{description}.
    @raise usage.UsageError: Naming the flag and the description.
    """
    endpoint = getattr(endpoint, "_wrappedEndpoint", endpoint)
    port = getattr(endpoint, "_port", None)
    if isinstance(port, int) and not mayBind(port):
        raise usage.UsageError(f"--{flag} {description!r}: {PRIVILEGED_PORT_HINT}")
