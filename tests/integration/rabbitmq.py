# -*- test-case-name: tests.integration.test_broker -*-
"""
A throwaway RabbitMQ broker for the integration tests (Debian package
C{rabbitmq-server}), listening on 127.0.0.1 only, with its own C{epmd}, its
data and logs in a temporary directory; and a blocking consumer to read
what the server published.

Starting a broker takes seconds: one is shared by a whole test module
(L{sharedBroker}) and stopped when the test run ends.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Any
from unittest import SkipTest

from tests.integration.helpers import START_TIMEOUT, STOP_TIMEOUT, freePort

RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"


class BrokerFailed(Exception):
    """
    The broker did not start or stop in time.
    """


def requireRabbitMQ() -> None:
    """
    Skip the test if RabbitMQ is not installed, except under CI (the
    environment variable C{CI} set), where its absence is a failure.
    """
    if os.path.exists(RABBITMQ_SERVER) and shutil.which("epmd"):
        return
    message = "rabbitmq-server is not installed (apt-get install rabbitmq-server)"
    if os.environ.get("CI"):
        raise AssertionError(message)
    raise SkipTest(message)


class RabbitMQ:
    """
    One broker node.  L{stop} and L{start} again keep its data (durable
    queues and persistent messages survive, as on a real restart).

    @ivar port: Its AMQP port on 127.0.0.1.
    """

    def __init__(self, directory: str, config: str = "") -> None:
        self.directory = os.path.abspath(directory)
        self.port = freePort()
        self._epmdPort = freePort()
        self._distPort = freePort()
        self._config = config
        self.process: subprocess.Popen[bytes] | None = None
        self._epmd: subprocess.Popen[bytes] | None = None
        self._starts = 0

    @property
    def url(self) -> str:
        """
        The URL of the default virtual host, user guest.
        """
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def _environment(self) -> dict[str, str]:
        d = self.directory
        env = dict(os.environ)
        env.update(
            HOME=d,
            RABBITMQ_NODENAME=f"test{self.port}@localhost",
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self._distPort),
            RABBITMQ_MNESIA_BASE=os.path.join(d, "mnesia"),
            RABBITMQ_LOG_BASE=os.path.join(d, "log"),
            RABBITMQ_CONFIG_FILE=os.path.join(d, "rabbitmq.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=os.path.join(d, "enabled_plugins"),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
            ERL_EPMD_ADDRESS="127.0.0.1",
            ERL_EPMD_PORT=str(self._epmdPort),
        )
        return env

    def start(self) -> None:
        """
        Start the broker and wait until it accepts AMQP connections.

        @raise BrokerFailed: If it exits or is not ready within
            L{START_TIMEOUT} seconds.
        """
        d = self.directory
        if self._starts == 0:
            for sub in ("mnesia", "log"):
                os.makedirs(os.path.join(d, sub), exist_ok=True)
            with open(os.path.join(d, "rabbitmq.conf"), "w") as f:
                f.write(f"listeners.tcp.1 = 127.0.0.1:{self.port}\nloopback_users = none\n")
                f.write(self._config)
            with open(os.path.join(d, "enabled_plugins"), "w") as f:
                f.write("[].\n")
            with open(os.path.join(d, ".erlang.cookie"), "w") as f:
                f.write("twistedsmtpdtests")
            os.chmod(os.path.join(d, ".erlang.cookie"), 0o400)
        self._starts += 1
        env = self._environment()
        if self._epmd is None:
            self._epmd = subprocess.Popen(
                ["epmd", "-address", "127.0.0.1", "-port", str(self._epmdPort)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        output = open(os.path.join(d, f"out{self._starts}"), "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [RABBITMQ_SERVER],
            env=env,
            cwd=d,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        output.close()
        deadline = time.monotonic() + START_TIMEOUT
        path = os.path.join(d, f"out{self._starts}")
        while True:
            if self.process.poll() is not None:
                raise BrokerFailed(f"rabbitmq-server exited: {self.output(path)}")
            with open(path, "rb") as f:
                if b"completed with" in f.read():
                    break
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerFailed(f"rabbitmq-server did not start: {self.output(path)}")
            time.sleep(0.1)
        socket.create_connection(("127.0.0.1", self.port), timeout=5).close()

    def output(self, path: str) -> str:
        with open(path, "rb") as f:
            return f.read()[-2000:].decode("utf-8", "replace")

    def stop(self, kill: bool = False) -> None:
        """
        Stop the broker (C{SIGTERM}, or C{SIGKILL} with C{kill}) and wait
        until it is gone.
        """
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGKILL if kill else signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(STOP_TIMEOUT)
        # The Erlang VM is in the same process group; wait for its port.
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            except OSError:
                return
            time.sleep(0.1)
        raise BrokerFailed("rabbitmq-server still listening after stopping")

    def pause(self) -> None:
        """
        Stop every process of the broker (C{SIGSTOP} to its process group)
        and wait until each of their threads is stopped.

        C{kill} only marks the signal pending: the group stop begins when
        one chosen thread next runs, and until then the broker's other
        threads may go on.  The wait also shows that the Erlang VM is in
        the group the signal went to.

        @raise BrokerFailed: If some thread is not stopped within
            L{STOP_TIMEOUT} seconds.
        """
        assert self.process is not None
        group = self.process.pid
        os.killpg(group, signal.SIGSTOP)
        deadline = time.monotonic() + STOP_TIMEOUT
        while True:
            threads = _groupThreads(group)
            running = [t for t, (_, state) in threads.items() if state not in (b"T", b"t")]
            if not running and any(name == b"beam.smp" for name, _ in threads.values()):
                return
            if time.monotonic() > deadline:
                raise BrokerFailed(f"broker not stopped: {sorted(threads.items())}")
            time.sleep(0.01)

    def resume(self) -> None:
        """
        Let the broker run again after L{pause}.
        """
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGCONT)

    def shutdown(self) -> None:
        """
        Stop the broker and its C{epmd}, and remove its directory.
        """
        with contextlib.suppress(Exception):
            self.stop()
        epmd, self._epmd = self._epmd, None
        if epmd is not None and epmd.poll() is None:
            epmd.terminate()
            epmd.wait(STOP_TIMEOUT)
        shutil.rmtree(self.directory, ignore_errors=True)

    def consume(self, queue: str, count: int, timeout: float = 60.0) -> list[tuple[Any, bytes]]:
        """
        Read (and acknowledge) C{count} messages from C{queue}, blocking,
        with pika's blocking connection.

        @return: C{(properties, body)} of each, in order.
        @raise BrokerFailed: If fewer arrive within C{timeout} seconds.
        """
        import pika

        connection = pika.BlockingConnection(pika.URLParameters(self.url))
        try:
            channel = connection.channel()
            got: list[tuple[Any, bytes]] = []
            deadline = time.monotonic() + timeout
            while len(got) < count:
                method, properties, body = channel.basic_get(queue, auto_ack=True)
                if method is None:
                    if time.monotonic() > deadline:
                        raise BrokerFailed(f"{len(got)} of {count} messages in {queue}")
                    connection.sleep(0.05)
                    continue
                got.append((properties, body))
            return got
        finally:
            connection.close()

    def depth(self, queue: str) -> int:
        """
        How many messages C{queue} holds.
        """
        import pika

        connection = pika.BlockingConnection(pika.URLParameters(self.url))
        try:
            result = connection.channel().queue_declare(queue, passive=True)
            return int(result.method.message_count)
        finally:
            connection.close()


def _groupThreads(group: int) -> dict[str, tuple[bytes, bytes]]:
    """
    The threads (C{pid/tid}) of the processes in process group C{group},
    each with its process's name and its state (C{T} when stopped).
    """
    threads = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
                    # pid (comm) state ppid pgrp ...; comm may hold ")".
                    head, tail = f.read().rsplit(b")", 1)
                fields = tail.split()
                if int(fields[2]) == group:
                    threads[f"{pid}/{tid}"] = (head.split(b"(", 1)[1], fields[0])
        except (FileNotFoundError, ProcessLookupError):
            continue
    return threads


_shared: RabbitMQ | None = None


def sharedBroker() -> RabbitMQ:
    """
    The broker shared by the tests of this run, started at the first call
    and stopped when the interpreter exits.
    """
    global _shared
    requireRabbitMQ()
    if _shared is None:
        broker = RabbitMQ(tempfile.mkdtemp(prefix="twisted-smtpd-rabbitmq-"))
        atexit.register(broker.shutdown)
        broker.start()
        _shared = broker
    elif _shared.process is None:
        _shared.start()
    return _shared
