# -*- test-case-name: tests.test_pipe -*-
"""
Run a program with a lower soft limit on open files than ours.

C{twistd smtpd} raises its own soft limit at start (see
L{twisted_smtpd._twistd.openfiles}); the programs C{--pipe} runs get the
limit the server was started with, as Postfix's C{master} gives its
children its own.  C{spawnProcess} has no hook run between C{fork} and
C{exec} (Twisted uses C{posix_spawn}, which cannot set a limit), and
lowering our own limit around the spawn would make every descriptor opened
meanwhile, by the reactor or a thread, fail past it: the program is run by
C{/bin/sh}, which lowers the limit, then replaces itself with the program
(C{exec}: the same process, no shell left behind).
"""

from __future__ import annotations

import resource
from collections.abc import Mapping, Sequence

SHELL = "/bin/sh"

#: What C{/bin/sh} may export of its own (C{PWD}; C{SHLVL} for bash):
#: unset unless the program's environment sets it.
_SHELL_VARIABLES = ("PWD", "SHLVL")


def limited(
    executable: str, argv: Sequence[str], openFiles: int, env: Mapping[str, str], *, always: bool
) -> tuple[str, list[str]]:
    """
    The executable and arguments that run C{executable} with C{argv} (its
    C{argv[0]} becoming the path C{executable}) under a soft limit of
    C{openFiles} open files, or C{executable} and C{argv} themselves when
    that is already our own limit and C{always} is false.

    A program that cannot be run (gone since it was looked up) exits 75,
    C{EX_TEMPFAIL}, as its start would then fail.
    """
    if not always and resource.getrlimit(resource.RLIMIT_NOFILE)[0] == openFiles:
        return executable, list(argv)
    unset = " ".join(name for name in _SHELL_VARIABLES if name not in env)
    script = (
        f"ulimit -S -n {int(openFiles)} 2>/dev/null; unset {unset};"
        ' [ -x "$1" ] || { echo "cannot run $1" >&2; exit 75; }; exec "$@"'
    )
    return SHELL, [SHELL, "-c", script, "sh", executable, *argv[1:]]
