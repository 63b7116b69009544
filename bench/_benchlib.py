"""
Shared pieces of the benchmarks in this folder: the servers under test, how
to start and stop them, Postfix's C{smtp-source} as the load generator, and
CPU and memory readings from C{/proc}.

Standard library only, so that the drivers run under any Python 3.11+.  Only
the processes started here are ever signalled, by process group id, and all
traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
#: This checkout: where results (docs/) go.
CHECKOUT = os.path.dirname(HERE)
#: The twisted-smtpd source the servers run: this checkout, or
#: C{$TWISTED_SMTPD_SOURCE} (for example an exported commit, so that edits
#: made while a benchmark runs do not change what it measures).
REPO = os.environ.get("TWISTED_SMTPD_SOURCE") or CHECKOUT
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"

#: The virtualenv bench/run.sh makes: aiosmtpd, Twisted, matplotlib and the
#: project's own dependencies.
BENCH_VENV = os.environ.get("BENCH_VENV", "/tmp/twisted-smtpd-bench-venv")
#: Where bench/run.sh installs Node's smtp-server (outside the repository).
BENCH_NODE_DIR = os.environ.get("BENCH_NODE_DIR", "/tmp/peers-node")
SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"


def venvPython() -> str:
    """
    The Python that runs the servers: C{$BENCH_PYTHON}, else the bench venv's,
    else the one running this script.
    """
    explicit = os.environ.get("BENCH_PYTHON")
    if explicit:
        return explicit
    candidate = os.path.join(BENCH_VENV, "bin", "python")
    return candidate if os.path.exists(candidate) else sys.executable


def oursCommand(delivery: Sequence[str] = ("--sink",), extra: Sequence[str] = ()) -> list[str]:
    """
    C{twistd -n smtpd} from this checkout, as an argv with C{{port}} to fill,
    run by C{$OURS_PYTHON} (default: L{venvPython}).  C{$OURS} (a shell
    command with C{{port}}) replaces it when set.
    """
    ours = os.environ.get("OURS")
    if ours:
        return ["sh", "-c", "exec " + ours]
    return [
        os.environ.get("OURS_PYTHON") or venvPython(),
        "-c",
        "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()",
        "-n",
        "--pidfile=",
        "smtpd",
        "--listen",
        "tcp:{port}:interface=127.0.0.1:backlog=1024",
        "--hostname",
        "localhost",
        *delivery,
        *extra,
    ]


#: Where the "twisted-smtpd --maildir" rows deliver: each server process
#: into its own Maildir below it (C{{maildir}} in a command), all removed at
#: the end (L{emptyMaildir}).  Removing a run's files right after it would
#: charge the next runs for the file system's work: on ext4 without a
#: journal, creating a file passes over the inodes freed in the last minute
#: (L{SETTLE_SECONDS}), which multiplied the system CPU per message of the
#: runs after.
MAILDIR = os.environ.get("BENCH_MAILDIR", "/tmp/twisted-smtpd-bench-maildir")
_maildirRuns = itertools.count(1)
#: When files were last removed from below L{MAILDIR} (by this run or an
#: earlier one): the modification time of this file.
_REMOVED_AT = MAILDIR + ".removed-at"
#: How long a Maildir row waits after files were removed.  On ext4 without
#: a journal, creating a file skips every inode of its group freed in the
#: last 60 seconds (300 more while the inode's table block is unwritten):
#: right after 20,000 files were removed (and synced), creating, writing,
#: linking and closing a file took 600-750 µs of CPU against 36-39 µs a
#: minute later.
SETTLE_SECONDS = 65.0
#: Removals of fewer files than this are not waited for.
SETTLE_FILES = 1000


def serverCommands() -> dict[str, list[str]]:
    """
    Every server the benchmarks know, by row name, as argvs with C{{port}}.
    """
    py = venvPython()
    sinkUser = ["-u", "nobody"] if os.geteuid() == 0 else []
    return {
        # Postfix's smtp-sink (C): the floor of what a sink costs.
        "smtp-sink": [SMTP_SINK, *sinkUser, "-m", "4096", "127.0.0.1:{port}", "1024"],
        "smtp-server": ["node", os.path.join(HERE, "peers", "node_sink.js"), "{port}"],
        "twisted-smtpd": oursCommand(),
        "aiosmtpd": [py, os.path.join(HERE, "peers", "aiosmtpd_sink.py"), "{port}"],
        "twisted.mail": [py, os.path.join(HERE, "peers", "twisted_mail_sink.py"), "{port}"],
        "twisted-smtpd --maildir": oursCommand(("--maildir", "{maildir}")),
        # Without the log line per connection and message.
        "twisted-smtpd --quiet": oursCommand(extra=("--quiet",)),
        "twisted-smtpd --quiet --maildir": oursCommand(("--maildir", "{maildir}"), ("--quiet",)),
        # Two worker processes (measure with --no-pin: pinning puts both on one core).
        "twisted-smtpd --workers 2": oursCommand(extra=("--workers", "2")),
        "twisted-smtpd --quiet --workers 2": oursCommand(extra=("--quiet", "--workers", "2")),
    }


def emptyMaildir(path: str = MAILDIR) -> None:
    """
    Remove what the "twisted-smtpd --maildir" rows delivered: everything, or
    one run's Maildir C{path}; write the removal to disk and, for
    L{SETTLE_FILES} files or more, note its time (L{settleAfterRemoval}).
    """
    if not os.path.exists(path):
        return
    files = sum(len(names) for _, _, names in os.walk(path))
    shutil.rmtree(path, ignore_errors=True)
    os.sync()
    if files >= SETTLE_FILES:
        with open(_REMOVED_AT, "w"):
            pass


def settleAfterRemoval() -> None:
    """
    Before a Maildir row runs: wait until L{SETTLE_SECONDS} have passed
    since files were last removed from below L{MAILDIR}, so that the row
    measures delivery, not the file system's memory of the removal.
    """
    try:
        removed = os.path.getmtime(_REMOVED_AT)
    except OSError:
        return
    wait = removed + SETTLE_SECONDS - time.time()
    if wait > 0:
        print(
            f"  waiting {wait:.0f} s before a Maildir row: files were removed"
            f" {SETTLE_SECONDS - wait:.0f} s ago",
            flush=True,
        )
        time.sleep(wait)


def peerAvailable(name: str) -> bool:
    """
    Whether the Python that runs the servers can import the peer C{name}.
    """
    if name == "smtp-sink":
        return os.access(SMTP_SINK, os.X_OK)
    if name == "smtp-server":
        return shutil.which("node") is not None and os.path.exists(
            os.path.join(BENCH_NODE_DIR, "node_modules", "smtp-server", "package.json")
        )
    module = {"aiosmtpd": "aiosmtpd.smtp", "twisted.mail": "twisted.mail.smtp"}.get(name)
    if module is None:
        return True
    probe = subprocess.run(
        [venvPython(), "-c", f"import {module}"], capture_output=True, timeout=60, check=False
    )
    return probe.returncode == 0


def serverEnv() -> dict[str, str]:
    """
    The environment of a server: the twisted-smtpd source (L{REPO}) first on
    C{PYTHONPATH}, so that C{twistd} finds the C{smtpd} plugin without an
    install.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["NODE_PATH"] = os.path.join(BENCH_NODE_DIR, "node_modules")
    _compileSource()
    return env


@functools.cache
def _compileSource() -> None:
    """
    Compile the twisted-smtpd source to bytecode once, as C{pip install}
    does: a server started from source under C{PYTHONDONTWRITEBYTECODE}
    would otherwise compile every module at each start, which costs start-up
    time and about 1.2 MiB of its idle memory that no installed copy pays.
    """
    subprocess.run(
        [venvPython(), "-m", "compileall", "-q", os.path.join(REPO, "twisted_smtpd")],
        stdout=subprocess.DEVNULL,
        timeout=300,
        check=True,
    )


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def pinTo(cpu: int | None):  # type: ignore[no-untyped-def]
    """
    A C{preexec_fn} pinning the child to one vCPU, or C{None}.
    """
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def processTree(root: int) -> list[int]:
    """
    C{root} and every process below it, from C{/proc}.
    """
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(parents.get(pid, ()))
    return found


def cpuSeconds(root: int) -> float:
    """
    User plus system CPU seconds of C{root}'s process tree.
    """
    ticks = 0
    for pid in processTree(root):
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / CLOCK_TICKS


def rssKiB(root: int) -> int:
    """
    Resident memory of C{root}'s process tree, in KiB.
    """
    total = 0
    for pid in processTree(root):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total


class Server:
    """
    One server process on a free loopback port, in its own process group.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        logDir: str,
        cpu: int | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        if any("{maildir}" in a for a in argv):
            settleAfterRemoval()
        self.port = freePort()
        #: The Maildir of this process, for a command with C{{maildir}}.
        self.maildir = os.path.join(MAILDIR, f"run-{next(_maildirRuns)}")
        self.argv = [
            a.replace("{port}", str(self.port)).replace("{maildir}", self.maildir) for a in argv
        ]
        os.makedirs(logDir, exist_ok=True)
        self._log = open(os.path.join(logDir, name.replace(" ", "_") + ".log"), "ab")  # noqa: SIM115
        # The log folder as the working directory: "python -c" puts the
        # working directory first on sys.path, ahead of PYTHONPATH.
        self.proc = subprocess.Popen(
            self.argv,
            cwd=logDir,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            env=env if env is not None else serverEnv(),
            start_new_session=True,
            preexec_fn=pinTo(cpu),
        )
        self.pid = self.proc.pid

    def waitReady(self, timeout: float = 30.0) -> None:
        """
        Wait for a 220 greeting on the port.

        @raise RuntimeError: The server exited or did not greet in time.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    s.settimeout(5)
                    greeting = s.recv(512)
                    s.sendall(b"QUIT\r\n")
                    with contextlib.suppress(OSError):
                        s.recv(512)
                if greeting.startswith(b"220"):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready on port {self.port} after {timeout:.0f}s")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def cpu(self) -> float:
        return cpuSeconds(self.pid)

    def rss(self) -> int:
        return rssKiB(self.pid)

    def stop(self, signum: int = signal.SIGTERM) -> int | None:
        """
        Stop the server's process group.

        @return: The exit code if it had already exited, else C{None}.
        """
        early = self.proc.poll()
        if early is None:
            for sig, wait in ((signum, 10), (signal.SIGKILL, 5)):
                try:
                    os.killpg(self.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self._log.close()
        return early

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class SourceRun:
    """
    One C{smtp-source} run.
    """

    argv: list[str]
    count: int
    wall: float
    returncode: int | None
    timedOut: bool
    clientCpu: float
    output: str = ""
    serverCpu: float = 0.0
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timedOut


def sourceArgv(port: int, args: Sequence[str], count: int) -> list[str]:
    """
    C{smtp-source -M localhost ARGS -m COUNT 127.0.0.1:PORT}.
    """
    return [SMTP_SOURCE, "-M", "localhost", *args, "-m", str(count), f"127.0.0.1:{port}"]


def startSource(argv: list[str], cpu: int | None = None) -> subprocess.Popen[bytes]:
    """
    Start C{smtp-source} (L{sourceArgv}) in its own process group, pinned to
    C{cpu}, its output piped.
    """
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=pinTo(cpu),
    )


def smtpSource(
    port: int,
    args: Sequence[str],
    count: int,
    *,
    cpu: int | None = None,
    timeout: float = 120.0,
    server: Server | None = None,
) -> SourceRun:
    """
    Run C{smtp-source -M localhost ARGS -m COUNT 127.0.0.1:PORT}, bounded by
    C{timeout}; with C{server}, also read its CPU time around the run.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    c0 = server.cpu() if server is not None else 0.0
    t0 = time.monotonic()
    argv = sourceArgv(port, args, count)
    proc = startSource(argv, cpu)
    timedOut = False
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timedOut = True
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
    wall = time.monotonic() - t0
    c1 = server.cpu() if server is not None else 0.0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    clientCpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return SourceRun(
        argv=argv,
        count=count,
        wall=wall,
        returncode=proc.returncode,
        timedOut=timedOut,
        clientCpu=clientCpu,
        output=out.decode("utf-8", "replace")[-400:],
        serverCpu=c1 - c0,
    )


def sessionsOf(args: Sequence[str]) -> int:
    return int(args[list(args).index("-s") + 1]) if "-s" in args else 1


def calibrate(
    port: int,
    args: Sequence[str],
    seconds: float,
    *,
    start: int,
    limit: int,
    cpu: int | None = None,
) -> int:
    """
    Warm the server up and find a message count lasting about C{seconds}.

    @raise RuntimeError: A warm-up run failed.
    """
    sessions = sessionsOf(args)
    n = start
    run = smtpSource(port, args, n, cpu=cpu)
    for _ in range(4):
        if not run.ok:
            raise RuntimeError(f"warm-up failed: {run.output.strip()[-200:]}")
        if run.wall >= 0.5 or n >= limit:
            break
        n = min(limit, n * 8)
        run = smtpSource(port, args, n, cpu=cpu)
    if not run.ok:
        raise RuntimeError(f"warm-up failed: {run.output.strip()[-200:]}")
    wanted = int(min(limit, max(sessions, n / run.wall * seconds)))
    wanted = max(sessions, wanted // sessions * sessions)
    digits: int = 10 ** max(0, len(str(wanted)) - 2)
    return max(sessions, wanted // digits * digits)


def median(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else None


def machineLine() -> str:
    """
    Cores, load and the time, for the head of a report.
    """
    load = os.getloadavg()
    return (
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}, {os.cpu_count()} cores, "
        f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )


def versions() -> dict[str, str]:
    """
    Versions of the pieces under test.
    """
    code = (
        "import sys, importlib.metadata as m\n"
        "print('python', sys.version.split()[0])\n"
        "for n in ('twisted', 'aiosmtpd', 'matplotlib'):\n"
        "    try: print(n, m.version(n))\n"
        "    except Exception: print(n, '-')\n"
    )
    found: dict[str, str] = {}
    try:
        out = subprocess.run(
            [venvPython(), "-c", code], capture_output=True, text=True, timeout=60, check=False
        ).stdout
        for line in out.splitlines():
            name, _, version = line.partition(" ")
            found[name] = version
        dpkg = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", "postfix"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        found["postfix"] = dpkg.stdout.strip() or "-"
    except (OSError, subprocess.SubprocessError):
        pass
    return found
