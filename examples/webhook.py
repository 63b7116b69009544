"""
Forward every message to an HTTP endpoint as a JSON document, and answer
the client with what the endpoint said.

    python examples/webhook.py --url https://hooks.example.com/mail \\
        --listen tcp:2525:interface=127.0.0.1

The POST body is C{{"mailFrom": ..., "rcptTo": [...], "message": BASE64}}.
A 2xx answer accepts the message (C{250}); any other answer, a refused
connection or no answer within C{--timeout} seconds gets C{451 4.3.0}, so
the sending server keeps the message and tries again later.  Messages are
held in memory to be posted, so their size is bounded (C{--size}).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from io import BytesIO

from twisted.internet import defer, task
from twisted.logger import Logger, globalLogBeginner, textFileLogObserver
from twisted.web.client import Agent, FileBodyProducer, readBody
from twisted.web.http_headers import Headers

from twisted_smtpd import ServerOptions, Session, SMTPError, SMTPServer
from twisted_smtpd.handlers import BaseHandler
from twisted_smtpd.interfaces import IMessageStream


class WebhookHandler(BaseHandler):
    """
    POST each message to C{url}.
    """

    log = Logger()

    def __init__(self, reactor: object, url: str, timeout: float) -> None:
        self.reactor = reactor
        self.url = url.encode("ascii")
        self.timeout = timeout
        self.agent = Agent(reactor, connectTimeout=timeout)

    async def onData(self, stream: IMessageStream, session: Session) -> str:
        message = await stream.collect()
        envelope = session.envelope
        document = {
            "mailFrom": envelope.mailFrom.address if envelope.mailFrom else "",
            "rcptTo": [rcpt.address for rcpt in envelope.rcptTo],
            "message": base64.b64encode(message).decode("ascii"),
        }
        body = FileBodyProducer(BytesIO(json.dumps(document).encode("utf-8")))
        headers = Headers({b"Content-Type": [b"application/json"]})
        try:
            posted = self.agent.request(b"POST", self.url, headers, body)
            response = await posted.addTimeout(self.timeout, self.reactor)
            await readBody(response).addTimeout(self.timeout, self.reactor)
        except Exception as e:
            self.log.warn("webhook failed: {error}", error=repr(e))
            raise SMTPError(451, "Webhook unavailable, try again later", "4.3.0") from e
        if not 200 <= response.code < 300:
            self.log.warn("webhook answered {code}", code=response.code)
            raise SMTPError(451, "Webhook refused the message, try again later", "4.3.0")
        return f"OK: posted ({response.code})"


async def main(reactor: object, argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--size", type=int, default=10 * 1024 * 1024)
    parser.add_argument("--listen", default="tcp:2525:interface=127.0.0.1")
    args = parser.parse_args(argv)
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)], redirectStandardIO=False)

    handler = WebhookHandler(reactor, args.url, args.timeout)
    server = SMTPServer(handler, ServerOptions(size=args.size))
    port = await server.listen(args.listen)
    address = port.getHost()  # a unix: listener has a path, not a port
    where = f"port {address.port}" if hasattr(address, "port") else os.fsdecode(address.name)
    print(f"listening on {where}", flush=True)
    await defer.Deferred()  # until SIGINT or SIGTERM stops the reactor


if __name__ == "__main__":
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, sys.argv[1:])))
