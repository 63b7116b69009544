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
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger

from twisted_smtpd._serving.listeners import listenReason
from twisted_smtpd._serving.metrics import MULTIPROC_ENV, metricsSite, multiprocessRegistry
from twisted_smtpd._serving.summary import formatAddress
from twisted_smtpd._twistd.logfile import GivesLogObserver
from twisted_smtpd._twistd.tapconfig import exitWithError
from twisted_smtpd._twistd.workerside import markMetricsDirectory

_log = Logger(namespace="twisted_smtpd.startup")


class MetricsListener(StreamServerEndpointService):
    """
    Serve C{/metrics} and C{/healthz} on an endpoint string; a listener
    that cannot start ends C{twistd} with one line.
    """

    def __init__(
        self, description: str, registry: Any, healthy: Callable[[], bool], reactor: Any = None
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as installed

            reactor = installed
        super().__init__(serverFromString(reactor, description), metricsSite(registry, healthy))
        self._raiseSynchronously = True
        self.description = description
        self.port: IListeningPort | None = None

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except (CannotListenError, OSError, OverflowError) as e:
            exitWithError(f"--metrics {self.description!r}: {listenReason(e)}")
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


class _WorkersCollector:
    """
    C{smtpd_workers_alive}: the workers running now.
    """

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        yield GaugeMetricFamily(
            "smtpd_workers_alive", "Worker processes running now.", value=len(self._pool.workers)
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
        MetricsListener(description, registry, self._healthy).setServiceParent(self)

    def _healthy(self) -> bool:
        return bool(self.running and self.pool.workers)

    def _workerEnded(self, pid: int) -> None:
        """
        A worker ended, perhaps killed with connections open: its share of
        the gauges that count what is open now (C{livesum}) goes.  Its
        counters stay: they count what it did.
        """
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, self._directory)

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


def prepareWorkerMetrics() -> str:
    """
    Make the private directory the workers write their metrics into, and
    put it into this process's environment, which the workers inherit.
    """
    directory = tempfile.mkdtemp(prefix="smtpd-metrics-")
    os.environ[MULTIPROC_ENV] = directory
    return directory
