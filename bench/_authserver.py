"""
A sink server with AUTH allowed over plain text, for bench/pipelining.py when
the C{twistd smtpd} plugin has no C{--auth} flag.

    python bench/_authserver.py PORT USER PASSWORD [CERT KEY]

Listens on 127.0.0.1:PORT with the sink handler, one in-memory account and
C{allowInsecureAuth}; STARTTLS uses CERT and KEY when given, else the
server's self-signed fallback.  twisted-smtpd must be importable (the
benchmarks put the source on C{PYTHONPATH}).
"""

import sys

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.internet import reactor

from twisted_smtpd import ServerOptions, SMTPServer
from twisted_smtpd.handlers import SinkHandler


def main(argv: list[str]) -> None:
    port, user, password = int(argv[1]), argv[2], argv[3]
    certificate, key = (argv[4], argv[5]) if len(argv) > 5 else (None, None)
    options = ServerOptions(
        name="localhost", allowInsecureAuth=True, certificate=certificate, privateKey=key
    )
    checker = InMemoryUsernamePasswordDatabaseDontUse(**{user: password.encode()})
    server = SMTPServer(SinkHandler(), options, checkers=[checker])
    server.listen(f"tcp:{port}:interface=127.0.0.1:backlog=1024")
    reactor.run()


if __name__ == "__main__":
    main(sys.argv)
