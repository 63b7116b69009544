"""
A minimal webhook receiver for bench/deliveries.py: a C{twisted.web} server
on 127.0.0.1 answering every POST with 200, counting requests and bytes, and
writing the counts to a file when it gets SIGTERM.

    python bench/_webhookreceiver.py PORT COUNTFILE
"""

from __future__ import annotations

import signal
import sys
from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import Request, Site


class Receiver(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests = 0
        self.bytes = 0

    def render_POST(self, request: Request) -> bytes:
        assert request.content is not None
        self.bytes += len(request.content.read())
        self.requests += 1
        return b"ok"


def main() -> None:
    from twisted.internet import reactor as _reactor

    # The global reactor provides more than the few interfaces its name is
    # annotated with (run's installSignalHandlers, for one).
    reactor: Any = _reactor
    port, countFile = int(sys.argv[1]), sys.argv[2]
    receiver = Receiver()
    site = Site(receiver)
    site.noisy = False
    reactor.listenTCP(port, site, interface="127.0.0.1", backlog=1024)

    def stop(signum: int, frame: object) -> None:
        with open(countFile, "w") as f:
            f.write(f"{receiver.requests} {receiver.bytes}\n")
        reactor.callFromThread(reactor.stop)

    signal.signal(signal.SIGTERM, stop)
    reactor.run(installSignalHandlers=False)


if __name__ == "__main__":
    main()
