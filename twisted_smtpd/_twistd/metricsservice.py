# -*- test-case-name: tests.test_metrics -*-
"""
C{twistd smtpd --metrics ENDPOINT}: the web listener serving C{/metrics}
and C{/healthz}, for one process and for the parent of C{--workers}.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger

from twisted_smtpd._serving.listeners import badLock, listenReason
from twisted_smtpd._serving.metrics import MULTIPROC_ENV, metricsSite, multiprocessRegistry
from twisted_smtpd._serving.metricsfiles import (
    printableName,
    readMetricsFile,
    setAsideEnded,
    setAsideWorkerFile,
    writeMetricsValue,
)
from twisted_smtpd._serving.summary import formatAddress
from twisted_smtpd._twistd.logfile import GivesLogObserver
from twisted_smtpd._twistd.tapconfig import exitWithError, metricsDescription, reason
from twisted_smtpd._twistd.workerside import markMetricsDirectory

_log = Logger(namespace="twisted_smtpd.startup")


class MetricsListener(StreamServerEndpointService):
    """
    Serve C{/metrics} and C{/healthz} on an endpoint string; a listener
    that cannot be made (an C{ssl:} endpoint's C{dhParameters} file gone
    since the options were read) or cannot start ends C{twistd} with one
    line (L{exitWithError}).
    """

    def __init__(
        self, description: str, registry: Any, healthy: Callable[[], bool], reactor: Any = None
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as installed

            reactor = installed
        try:
            endpoint = serverFromString(reactor, metricsDescription(description))
            contextNow(endpoint)
        except ValueError as e:
            exitWithError(f"--metrics {description!r}: {reason(e)}")
        super().__init__(endpoint, metricsSite(registry, healthy))
        self._raiseSynchronously = True
        self.description = description
        self.port: IListeningPort | None = None

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except (CannotListenError, OSError, OverflowError, ValueError) as e:
            why = badLock(self.endpoint)
            if why is None and isinstance(e, ValueError):
                raise
            exitWithError(f"--metrics {self.description!r}: {why or listenReason(e)}")
        waiting = self._waitingForPort
        if waiting is not None:
            waiting.addCallback(self._listening)

    def _listening(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        _log.info(
            "metrics: /metrics and /healthz on {address}",
            address=formatAddress(port.getHost()),
        )
        return port


def contextNow(endpoint: Any) -> None:
    """
    Make the TLS context of the C{ssl:} endpoint C{endpoint} (behind any
    C{haproxy:} layer) now, as the server starts, with its C{dhParameters}
    file read now, as an C{ssl:} listener's is (L{readParameters
    <twisted_smtpd._serving.listenertls.readParameters>}: OpenSSL is
    given a private copy).  Twisted reads the key and the certificate as
    it parses the endpoint string, but from Twisted 24 makes the context,
    and has OpenSSL open the C{dhParameters} file by its path, at the
    first handshake: after C{twistd --uid} has switched users, when a file
    only root may read, or one since removed, would fail every handshake.

    @raise ValueError: The C{dhParameters} file cannot be read or holds
        no parameters.
    """
    from twisted.internet.ssl import CertificateOptions

    from twisted_smtpd._serving.listenertls import readParameters

    endpoint = getattr(endpoint, "_wrappedEndpoint", endpoint)
    options = getattr(endpoint, "_sslContextFactory", None)
    if not isinstance(options, CertificateOptions):
        return
    parameters: Any = options.dhParameters
    prepare = None
    if parameters is not None:
        prepare = readParameters(parameters._dhFile.path)
        options.dhParameters = None
    # Made and kept: each connection is made from it.
    context = options.getContext()
    if prepare is not None:
        prepare(context)


def aliveWorkers(pool: Any) -> int:
    """
    The workers of C{pool} running now: not one that has ended, its pipes
    not closed yet (a process it started holds them).
    """
    return sum(1 for _, w in pool.workers.values() if not getattr(w, "exited", False))


class _WorkersCollector:
    """
    C{smtpd_workers_alive}: the workers running now.
    """

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        yield GaugeMetricFamily(
            "smtpd_workers_alive", "Worker processes running now.", value=aliveWorkers(self._pool)
        )


class WorkerMetrics(GivesLogObserver, MultiService):
    """
    The parent of C{--workers} with C{--metrics}: the workers write their
    metrics into a private directory (C{PROMETHEUS_MULTIPROC_DIR}), the
    parent serves their sum and the number of workers alive.

    The parent removes the directory once its workers have stopped; killed
    outright, it leaves that to them (L{markMetricsDirectory}).
    """

    def __init__(self, pool: Any, description: str, directory: str) -> None:
        super().__init__()
        self.pool = pool
        self._directory = directory
        # Its workers remove the directory themselves once this process is
        # gone, if this file says it is one made for them.
        markMetricsDirectory(directory)
        pool.setServiceParent(self)
        pool.onWorkerEnded.append(self._workerEnded)
        registry = multiprocessRegistry(directory)
        registry.register(_WorkersCollector(pool))
        try:
            listener = MetricsListener(description, registry, self._healthy)
        except BaseException:
            # No worker ever starts to write into it.
            shutil.rmtree(directory, ignore_errors=True)
            raise
        listener.setServiceParent(self)

    def _healthy(self) -> bool:
        return bool(self.running and aliveWorkers(self.pool))

    def _workerEnded(self, pid: int) -> None:
        """
        A worker ended, perhaps killed with connections open: its share of
        the gauges that count what is open now (C{livesum}) goes.  Its
        counters stay: they count what it did, added into those of the
        workers that ended before it (L{foldEndedWorker}).
        """
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, self._directory)
        try:
            foldEndedWorker(self._directory, pid)
        except (OSError, ValueError) as e:
            # Its readable files stay, counted as they are; none is counted
            # twice (an unreadable one is set aside, with its own line,
            # foldEndedWorker).
            _log.warn(
                "metrics of ended worker pid {pid} could not be added to the others': {error}",
                pid=pid,
                error=reason(e),
            )

    def privilegedStartService(self) -> None:
        """
        Listen; a listener that cannot start ends C{twistd} (one line, see
        L{MetricsListener}), and the directory made for the workers goes
        first, as no worker ever started to write into it.
        """
        try:
            super().privilegedStartService()
        except BaseException:
            shutil.rmtree(self._directory, ignore_errors=True)
            raise

    def stopService(self) -> Any:
        d = super().stopService()

        def cleanUp(result: object) -> object:
            shutil.rmtree(self._directory, ignore_errors=True)
            return result

        return d.addBoth(cleanUp)


#: The kinds of C{prometheus_client}'s files whose values stay in the sums
#: once the worker that wrote them has ended.
#: A handler's own gauges stay too, in the modes that sum, or keep the
#: least, the greatest or the latest value of, every process, alive or
#: ended (C{prometheus_client}'s documented modes; a scrape reads them
#: without the pid): each is kept the same way in its own sum.  Those
#: that give a series per pid (C{all}) stay as their workers left them.
_KEPT = (
    "counter",
    "histogram",
    "summary",
    "gauge_sum",
    "gauge_max",
    "gauge_min",
    "gauge_mostrecent",
)


def _combine(kind: str, total: list[float], value: float, timestamp: float) -> None:
    """
    Add the ended worker's C{value} at C{timestamp} into C{total}, the
    value and timestamp of the workers that ended before it, as a scrape
    would combine them (C{kind}, L{_KEPT}).
    """
    if kind == "gauge_max":
        total[0] = max(total[0], value)
    elif kind == "gauge_min":
        total[0] = min(total[0], value)
    elif kind == "gauge_mostrecent":
        if timestamp >= total[1]:
            total[0] = value
    else:
        total[0] += value
    total[1] = max(total[1], timestamp)


def foldEndedWorker(directory: str, pid: int) -> None:
    """
    Add the counters, histograms and summaries of the ended worker C{pid},
    and the gauges kept once a worker ends (L{_KEPT}), into the files
    holding those of every worker that ended before it
    (C{counter_ended.db}, C{gauge_max_ended.db}, ...) and remove its own, so that the directory
    holds a bounded number of files however many workers end (a worker
    that dies at once, started again every 30 seconds, would otherwise
    leave thousands a day, every one read by each scrape).

    Each sum is written whole to a new file which then replaces the old
    one, before the worker's own file goes: a failure (the disk full)
    leaves the old sum and the worker's file, never a value counted twice.
    The parent is the only process that writes these files, from its
    reactor, as it serves the scrapes that read them: a scrape comes
    before or after a fold, never in the middle of one, and the new sum
    (C{counter_ended.new}) is no file a scrape reads.

    A file of the worker's that cannot be read (cut short: the worker was
    killed while it made it) is renamed out of the scrapes' way, to
    C{counter_PID.unreadable}, with one line: every scrape would fail on
    it, and its counts are lost to them anyway.  Only the latest of each
    kind is kept (L{setAsideWorkerFile}).  The worker's other files are
    added.
    An unreadable sum (C{counter_ended.db}) is set aside the same way, with
    one line, and the sum starts again from the worker's counts
    (L{setAsideEnded}).

    @raise OSError: A sum could not be written.
    """
    from prometheus_client.mmap_dict import MmapedDict

    for kind in _KEPT:
        path = os.path.join(directory, f"{kind}_{pid}.db")
        try:
            values = readMetricsFile(path)
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as e:
            _setAsideUnreadable(directory, kind, pid, e)
            continue
        ended = os.path.join(directory, f"{kind}_ended.db")
        sums: dict[str, list[float]] = {}
        try:
            for key, value, timestamp in readMetricsFile(ended):
                sums[key] = [value, timestamp]
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as e:
            # Every scrape would fail on it: out of their way, and the
            # sums start again from this worker's.
            setAsideEnded(ended, e.strerror if isinstance(e, OSError) and e.strerror else e)
            sums.clear()
        for key, value, timestamp in values:
            if key in sums:
                _combine(kind, sums[key], value, timestamp)
            else:
                sums[key] = [value, timestamp]
        # Not a .db file: never read by a scrape before it replaces the
        # sum.
        new = ended[: -len(".db")] + ".new"
        with suppress(FileNotFoundError):
            os.remove(new)
        written = MmapedDict(new)
        try:
            for key, (value, timestamp) in sums.items():
                writeMetricsValue(written, key, value, timestamp)
        finally:
            written.close()
        os.replace(new, ended)
        os.remove(path)


def _setAsideUnreadable(directory: str, kind: str, pid: int, error: Exception) -> None:
    """
    Set aside the unreadable file of kind C{kind} of the ended worker
    C{pid} (L{setAsideWorkerFile}), with one line; one that cannot be
    renamed stays, left out of the scrapes
    (L{twisted_smtpd._serving.metricsfiles.MultiprocessCollector}).
    """
    name = printableName(os.path.join(directory, f"{kind}_{pid}.db"))
    if isinstance(error, OSError) and error.strerror:
        why = error.strerror
    else:
        why = ascii(str(error))[1:-1][:200]
    try:
        aside, removed = setAsideWorkerFile(directory, kind, pid)
    except OSError as e:
        _log.warn(
            "metrics of ended worker pid {pid} could not be added to the others': {name} is"
            " unreadable ({error}) and could not be set aside: {why}",
            pid=pid,
            name=name,
            error=why,
            why=e.strerror or e,
        )
        return
    _log.warn(
        "metrics of ended worker pid {pid} could not be added to the others': {name} is"
        " unreadable ({error}); set aside as {aside}{replacing}",
        pid=pid,
        name=name,
        error=why,
        aside=printableName(aside),
        replacing=(
            f", replacing {', '.join(printableName(r) for r in removed)}" if removed else ""
        ),
    )


def prepareWorkerMetrics() -> str:
    """
    Make the private directory the workers write their metrics into, and
    put it into this process's environment, which the workers inherit.
    """
    directory = tempfile.mkdtemp(prefix="smtpd-metrics-")
    os.environ[MULTIPROC_ENV] = directory
    return directory
