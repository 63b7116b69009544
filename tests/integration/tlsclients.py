"""
Clients whose TLS handshake fails, each in its own way, and a client that
says QUIT over TLS and never sends its close_notify: blocking code over
real sockets, for a thread (C{deferToThread}) or a test running C{twistd}.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

#: Seconds any one client waits for the server.
CLIENT_TIMEOUT = 10.0


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT)


def _readAll(s: socket.socket) -> bytes:
    out = b""
    with contextlib.suppress(OSError):
        while chunk := s.recv(4096):
            out += chunk
    return out


def startTLS(s: socket.socket) -> None:
    """
    Read the greeting, say EHLO and STARTTLS, and read up to the 220.
    """
    f = s.makefile("rb")
    f.readline()
    s.sendall(b"EHLO client.example.com\r\n")
    while f.readline()[3:4] != b" ":
        pass
    s.sendall(b"STARTTLS\r\n")
    line = f.readline()
    if not line.startswith(b"220 "):
        raise AssertionError(f"STARTTLS answered {line!r}")


def oldClient(port: int, starttls: bool = False) -> str:
    """
    A client that speaks TLS 1.0 only (the server allows 1.2 and later).

    @return: The client's error.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with contextlib.suppress(ssl.SSLError):
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    ctx.options &= ~ssl.OP_NO_TLSv1
    ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    ctx.maximum_version = ssl.TLSVersion.TLSv1
    with _connect(port) as s:
        if starttls:
            startTLS(s)
        try:
            ctx.wrap_socket(s).close()
        except (ssl.SSLError, OSError) as e:
            return str(e)
    return "handshake succeeded"


def garbage(port: int, starttls: bool = False) -> bytes:
    """
    A client that sends plaintext (and an escape sequence) where the
    ClientHello should be, and reads until the server closes.
    """
    with _connect(port) as s:
        if starttls:
            startTLS(s)
        s.sendall(b"EHLO client.example.com\r\n\x1b[31mjunk\r\n")
        return _readAll(s)


def closeMidHandshake(port: int, starttls: bool = False) -> None:
    """
    A client that sends the first octets of a handshake record and closes.
    """
    with _connect(port) as s:
        if starttls:
            startTLS(s)
        s.sendall(bytes.fromhex("1603010200"))


def distrustful(port: int, starttls: bool = False) -> str:
    """
    A client that does not trust the server's certificate (it trusts only
    the system's CAs): it ends the handshake with an alert.

    @return: The client's error.
    """
    ctx = ssl.create_default_context()
    with _connect(port) as s:
        if starttls:
            startTLS(s)
        try:
            ctx.wrap_socket(s, server_hostname="mx.example.com").close()
        except (ssl.SSLError, OSError) as e:
            return str(e)
    return "handshake succeeded"


#: Each kind of failing client, and the C{reason} label it is counted under.
FAILING: list[tuple[Callable[..., object], str]] = [
    (oldClient, "protocol"),
    (garbage, "protocol"),
    (closeMidHandshake, "closed"),
    (distrustful, "certificate"),
]


def quitWithoutCloseNotify(
    port: int, starttls: bool, bound: float, quit: bool = True, header: bytes = b""
) -> tuple[bytes, bool, float]:
    """
    Over TLS (after STARTTLS, or from the start), read the greeting, send
    QUIT, then read the server's records and never send a close_notify:
    wait at most C{bound} seconds after QUIT for the server to close.
    Without C{quit}, only finish the handshake and read what comes (a
    refusal at connect), for C{bound} seconds from the handshake's end.
    C{header} (a PROXY header) is sent first.

    @return: The replies decrypted, whether the server's close_notify came,
        and the seconds from QUIT to the end of the connection (C{inf} if
        the server had not closed it within C{bound}).
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with _connect(port) as raw:
        raw.sendall(header)
        if starttls:
            startTLS(raw)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = ctx.wrap_bio(incoming, outgoing)

        def exchange(step: Callable[[], Any]) -> Any:
            while True:
                try:
                    result = step()
                except ssl.SSLWantReadError:
                    raw.sendall(outgoing.read())
                    data = raw.recv(65536)
                    if not data:
                        raise ConnectionError("the server closed") from None
                    incoming.write(data)
                    continue
                raw.sendall(outgoing.read())
                return result

        exchange(tls.do_handshake)
        replies = b""
        if quit:
            if starttls:
                exchange(lambda: tls.write(b"EHLO client.example.com\r\n"))
            while not replies.endswith(b"\r\n") or (starttls and b"250 " not in replies):
                replies += exchange(lambda: tls.read(65536))
            exchange(lambda: tls.write(b"QUIT\r\n"))
        sent = time.monotonic()
        raw.settimeout(bound)
        more, closeNotify, ended = readToClose(raw, tls, incoming, sent)
        return replies + more, closeNotify, ended


def readToClose(
    raw: socket.socket, tls: ssl.SSLObject, incoming: ssl.MemoryBIO, sent: float
) -> tuple[bytes, bool, float]:
    """
    Read what the server sends over C{tls} until it closes C{raw} or the
    socket's timeout passes.

    @return: The bytes read, whether the server's close_notify came, and
        the seconds from C{sent} to the close (a FIN or a reset), infinite
        if the timeout passed first.
    """
    replies = b""
    closeNotify = False
    while True:
        try:
            data = raw.recv(65536)
        except TimeoutError:
            return replies, closeNotify, float("inf")
        except OSError:
            # A reset: the server gave up on the close.
            return replies, closeNotify, time.monotonic() - sent
        if not data:
            return replies, closeNotify, time.monotonic() - sent
        incoming.write(data)
        with contextlib.suppress(ssl.SSLWantReadError):
            while True:
                try:
                    chunk = tls.read(65536)
                except ssl.SSLZeroReturnError:
                    chunk = b""
                if not chunk:
                    # Python's reading of the close_notify.
                    closeNotify = True
                    break
                replies += chunk
