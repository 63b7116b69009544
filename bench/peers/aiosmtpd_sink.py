"""
aiosmtpd as a sink, for the side-by-side benchmarks.

    python aiosmtpd_sink.py PORT [SIZE_LIMIT]

Listens on 127.0.0.1:PORT on asyncio's default event loop and answers every
message with 250 once aiosmtpd has read it (aiosmtpd keeps the whole body in
memory).  The host name is given so that no name lookup runs per connection.
SIZE_LIMIT is aiosmtpd's C{data_size_limit} (its default, 32 MiB, when not
given; 0 for none).
"""

import asyncio
import sys

from aiosmtpd.smtp import SMTP, Envelope, Session


class Discard:
    """
    Accept each message and forget it.
    """

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return "250 OK"


async def serve(port: int, limit: dict[str, int | None]) -> None:
    loop = asyncio.get_running_loop()
    handler = Discard()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="localhost", **limit),
        host="127.0.0.1",
        port=port,
        backlog=1024,
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        size = {"data_size_limit": int(sys.argv[2]) or None} if len(sys.argv) > 2 else {}
        asyncio.run(serve(int(sys.argv[1]), size))
    except KeyboardInterrupt:
        pass
