# -*- test-case-name: tests.test_tap -*-
"""
The service C{twistd smtpd} runs, built from its parsed options
(L{twisted_smtpd._twistd.tap.Options}): an L{SMTPDaemon}, or the parent of
C{--workers} processes, with the log writer and the metrics listener.
"""

from __future__ import annotations

import atexit
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from twisted_smtpd._core.files import forgetStartCopies, keptReads
from twisted_smtpd._serving.deadlines import CLOSE_GRACE
from twisted_smtpd._serving.listeners import servesServerTLS
from twisted_smtpd._serving.logwriter import PARENT_STALL_WAIT, BufferedLogWriter
from twisted_smtpd._serving.resolve import resolverFor
from twisted_smtpd._twistd.daemon import HANDLER_CLOSE_TIMEOUT, SMTPDaemon
from twisted_smtpd._twistd.logfile import logDestination
from twisted_smtpd._twistd.openfiles import checkOpenFiles
from twisted_smtpd._twistd.runuser import asRunUser
from twisted_smtpd._twistd.tapconfig import exitWithError, reason

_log = Logger(namespace="twisted_smtpd.startup")

if TYPE_CHECKING:
    # Imported when --metrics is given: the web server stays unloaded
    # otherwise (its modules cost about 2 MiB of memory).  The --workers
    # modules are imported by the parent or by a worker only: a single
    # process never runs their code.
    from twisted_smtpd._twistd.metricsservice import WorkerMetrics
    from twisted_smtpd._twistd.workercert import SharedCertificate
    from twisted_smtpd._twistd.workers import WorkerPool


#: Seconds a worker may take to end once its sessions and its delivery are
#: closed (its last log lines, its reactor's stop).
_WORKER_EXIT = 5.0


def workerStopTimeout(closeTimeout: float) -> float:
    """
    How long the parent of C{--workers} lets a worker stop gracefully
    after SIGTERM before it kills it: the longest graceful stop of a
    worker (its sessions' C{closeTimeout}, the grace after their 421, the
    time its delivery gets to close its connections) and a little more.
    """
    return closeTimeout + CLOSE_GRACE + HANDLER_CLOSE_TIMEOUT + _WORKER_EXIT


def _workerReady() -> None:
    """
    A worker has started: it reads the files themselves from now on (a
    reload reads them again, as the user it runs as), and tells its parent
    it is ready.
    """
    from twisted_smtpd._twistd.workerside import closeStandardInput

    forgetStartCopies()
    closeStandardInput()


def makeService(config: Any) -> SMTPDaemon | WorkerPool | WorkerMetrics | SharedCertificate:
    """
    Build the server that C{twistd smtpd} runs.

    @param config: Parsed L{Options}.
    A listener (C{--listen}, C{--metrics}) whose files cannot be read
    again now (one removed since the options were read) ends C{twistd}
    with one line (L{exitWithError}).

    @return: An L{SMTPDaemon} with one listening child service per
        C{--listen} endpoint; they start listening when it starts.  With
        C{--workers}, their parent; wrapped in a L{SharedCertificate} that
        makes one self-signed certificate for all of them when no
        certificate is configured and a listener can serve it (not an
        C{ssl:} listener with keys of its own).
    """
    parent: Any = getattr(config, "parent", None) or {}
    inherited = config.get("inherited") or []
    # What the options read at start (as root, before twistd --uid switches
    # users): the parent of --workers hands it to each worker.
    startCopies = keptReads()
    writer = None
    if config["log-format"] == "json" or not parent.get("syslog"):
        # Text to syslog stays with twistd's observer; else one buffered
        # writer takes every line, in order.  A worker's goes to its
        # parent, through its standard output.
        onBrokenPipe: Callable[[], object] | None = None
        stall = None
        if inherited:
            from twisted_smtpd._twistd.workerside import stdoutToStderr

            destination = sys.stdout
            onBrokenPipe = stdoutToStderr
            stall = PARENT_STALL_WAIT
        else:
            # Made by the user twistd --uid runs the server as, who rotates
            # it and opens it again.
            with asRunUser(config):
                destination = logDestination(config)
        writer = BufferedLogWriter(
            destination,
            json=config["log-format"] == "json",
            onBrokenPipe=onBrokenPipe,
            stall=stall,
        )
        # The lines of the last moments, at exit (after the reactor
        # stopped, lines are written at once).
        atexit.register(writer.flush)
    if not inherited:
        # A worker of --workers inherits its parent's limit, warned of once;
        # and its parent warns of the flags that change nothing.
        checkOpenFiles(config["serverOptions"].maxClients)
        for line in config.get("unused") or ():
            _log.warn("{text}", text=line)
    if config.get("workerListeners"):
        from twisted_smtpd._twistd.workercert import SharedCertificate
        from twisted_smtpd._twistd.workers import WorkerPool

        options = config["serverOptions"]
        directory = None
        if config["metrics"] is not None:
            from twisted_smtpd._twistd.metricsservice import WorkerMetrics, prepareWorkerMetrics

            # The workers' (twistd --uid's user), who write there.
            with asRunUser(config):
                directory = prepareWorkerMetrics()
        if writer is None:
            logging = ["--syslog", f"--prefix={parent.get('prefix') or 'twisted'}"]
        else:
            logging = ["--logfile=-"]
        pool = WorkerPool(
            config["workerListeners"],
            int(config["workers"]),
            ["--nodaemon", "--pidfile=", *logging, "smtpd", *config["arguments"]],
            stopTimeout=workerStopTimeout(options.closeTimeout),
            logWriter=writer,
            stopOnce=True,
            workerTimeout=config["worker-timeout"],
            startCopies=startCopies,
        )
        service: WorkerPool | WorkerMetrics | SharedCertificate = pool
        if directory is not None:
            with asRunUser(config):
                # Its lock file, which the workers lock, is theirs too.
                service = WorkerMetrics(pool, config["metrics"], directory)
        startTLS = "STARTTLS" not in options.disabledCommands
        if options.certificate is None and any(
            servesServerTLS(description, startTLS) for description in config["listen"]
        ):
            # Not for ssl: listeners with keys of their own only: no client
            # could be served it.
            service = SharedCertificate(service, pool, options.name)
        service.logObserver = writer
        return service
    server = SMTPDaemon(
        config["handler"],
        config["serverOptions"],
        checkers=config.get("credCheckers", []),
        logObserver=writer,
        logSessions=not config["quiet"],
        delivery=config.get("deliveryDescription", ""),
        resolver=None if config["dns-server"] is None else resolverFor(config["dns-server"]),
        settleHeap=True,
        dispatchWithoutContext=True,
        stopOnce=True,
    )
    if config["metrics"] is not None:
        # A worker of --workers records its metrics for the parent to serve.
        server.serveMetrics(None if inherited else config["metrics"])
    for fileno, family, description in inherited:
        server.addInherited(description, fileno, family)
    pipe = None
    if inherited:
        from twisted_smtpd._twistd.workerside import parentPipe

        pipe = parentPipe()
    if pipe is not None:
        from twisted_smtpd._twistd.workercert import SHARED_CERTIFICATE
        from twisted_smtpd._twistd.workerside import ParentWatch, workerName
        from twisted_smtpd._twistd.workerwatchdog import heartbeatPipe

        metricsDirectory = None
        if config["metrics"] is not None:
            from twisted_smtpd._serving.metrics import MULTIPROC_ENV

            metricsDirectory = os.environ.get(MULTIPROC_ENV)
        server.workerName = workerName()
        server.sharedSelfSigned = os.environ.get(SHARED_CERTIFICATE) is not None

        def sessions() -> int:
            return len(server.factory.connections)

        # A worker of --workers stops when its parent is gone.
        ParentWatch(
            pipe,
            logToStderr=writer,
            sharedCertificate=os.environ.get(SHARED_CERTIFICATE),
            announceReady=_workerReady,
            metricsDirectory=metricsDirectory,
            heartbeat=heartbeatPipe(),
            sessions=sessions,
        ).setServiceParent(server)
    if not inherited:
        for description in config["listen"]:
            try:
                server.addEndpoint(description)
            except ValueError as e:
                # Its files read again, one of them gone or changed since
                # the options were read.
                exitWithError(f"--listen {description!r}: {reason(e)}")
    return server
