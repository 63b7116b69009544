"""
Per-chunk CPU of pipelined C{BDAT 1} chunks handed to a session in reads of
a given size (16 KiB and 256 KiB by default), in memory over a
L{StringTransport}: what a read of many tiny chunks costs per chunk.

    PYTHONPATH=. python bench/bdatreads.py [--chunks 200000] [--rounds 5]

Run it with C{PYTHONPATH} pointing at the tree to measure (a C{git archive}
snapshot, say).  Prints the best of C{--rounds} per read size.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from twisted_smtpd import ServerOptions
from twisted_smtpd._serving.server import SMTPServerFactory
from twisted_smtpd.handlers import BaseHandler

CHUNK = b"BDAT 1\r\nx"


class Drain(BaseHandler):
    def onData(self, stream: Any, session: Any) -> object:
        return stream.drain()


def perChunk(readSize: int, chunks: int) -> float:
    clock = Clock()
    options = ServerOptions(name="mx.example.com", disableReverseLookup=True, size=0)
    factory = SMTPServerFactory(Drain(), options, reactor=clock)
    proto = factory.buildProtocol(None)
    transport = StringTransport(
        peerAddress=IPv4Address("TCP", "192.0.2.7", 40000),
        hostAddress=IPv4Address("TCP", "192.0.2.1", 25),
    )
    proto.makeConnection(transport)
    proto.dataReceived(b"EHLO c\r\nMAIL FROM:<s@example.com>\r\nRCPT TO:<r@example.com>\r\n")
    transport.clear()
    data = CHUNK * chunks
    reads = [data[i : i + readSize] for i in range(0, len(data), readSize)]
    start = time.process_time()
    for read in reads:
        proto.dataReceived(read)
        transport.clear()
    elapsed = time.process_time() - start
    return elapsed / chunks * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=200000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sizes", default="16384,262144")
    args = parser.parse_args()
    for size in (int(s) for s in args.sizes.split(",")):
        best = min(perChunk(size, args.chunks) for _ in range(args.rounds))
        print(f"reads of {size:7d} octets: {best:6.2f} µs CPU per BDAT 1 chunk")


if __name__ == "__main__":
    main()
