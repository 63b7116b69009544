# -*- test-case-name: tests.test_session -*-
"""
The values a handler sees: L{Session}, L{Envelope}, L{Address} and the AUTH
request and result.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Mapping
from hashlib import blake2b, md5
from typing import Any

from attrs import define, field, frozen


@frozen
class AddressDSN:
    """
    RFC 3461 data given with one recipient.

    @ivar notify: C{NOTIFY} values, upper case (C{("SUCCESS", "FAILURE")} or
        C{("NEVER",)}); empty when not given.
    @ivar orcpt: The C{ORCPT} value, its address decoded
        (C{"rfc822;a@example.com"}: xtext; C{"utf-8;j\u00f6rg@example.com"}:
        the C{\\x{HEX}} escapes of RFC 6533 section 3), or C{None}.
    """

    notify: tuple[str, ...] = ()
    orcpt: str | None = None


@frozen
class EnvelopeDSN:
    """
    RFC 3461 data given with the reverse-path.

    @ivar ret: C{"FULL"}, C{"HDRS"} or C{None}.
    @ivar envid: The C{ENVID}, xtext-decoded, or C{None}.
    """

    ret: str | None = None
    envid: str | None = None


@frozen
class Address:
    """
    A reverse-path or forward-path with its ESMTP parameters.

    @ivar address: The mailbox (C{"user@example.com"}), or C{""} for the null
        reverse-path C{<>}.
    @ivar args: ESMTP parameters, keys upper case; a parameter given without a
        value maps to C{True}.
    @ivar dsn: The RFC 3461 recipient data (on forward-paths), else C{None}.
    """

    address: str
    args: Mapping[str, str | bool] = field(factory=dict)
    dsn: AddressDSN | None = None


@define
class Envelope:
    """
    One mail transaction, reset by RSET, HELO/EHLO and the end of DATA.

    @ivar mailFrom: The reverse-path, once MAIL was accepted.
    @ivar rcptTo: The accepted forward-paths, in order (duplicates kept).
    @ivar dsn: RFC 3461 C{RET} and C{ENVID}.
    @ivar bodyType: C{"7bit"}, C{"8bitmime"} or C{"binarymime"}.
    @ivar smtpUtf8: Whether MAIL carried C{SMTPUTF8} (RFC 6531).
    @ivar requireTls: Whether MAIL carried C{REQUIRETLS} (RFC 8689).
    @ivar size: The C{SIZE} the client declared, or C{None}.
    """

    mailFrom: Address | None = None
    rcptTo: list[Address] = field(factory=list)
    # Shared while no DSN parameters were given: it is immutable.
    dsn: EnvelopeDSN = EnvelopeDSN()
    bodyType: str = "7bit"
    smtpUtf8: bool = False
    requireTls: bool = False
    size: int | None = None


@frozen
class TLSInfo:
    """
    What the TLS handshake settled.

    @ivar servername: The SNI name the client asked for, or C{None}; an
        octet that is not ASCII is written as its escape (C{\\xff}).
    @ivar protocol: The protocol version (C{"TLSv1.3"}).
    @ivar cipher: The cipher suite name.
    @ivar peerCertificate: The client's certificate
        (C{OpenSSL.crypto.X509}), or C{None}.
    @ivar peerCertificateVerified: Whether C{peerCertificate} verified
        against the configured CAs: always C{True} for a certificate accepted
        with C{rejectUnauthorized}; with C{rejectUnauthorized=False}, C{False}
        for one accepted although it did not verify (another CA's, expired,
        self-signed); C{False} without a certificate.
    """

    servername: str | None = None
    protocol: str | None = None
    cipher: str | None = None
    peerCertificate: Any = None
    peerCertificateVerified: bool = False


@frozen
class ProxyInfo:
    """
    What a trusted PROXY header, XCLIENT or XFORWARD said about the client.

    @ivar attributes: The attributes received, names upper case.
    """

    attributes: Mapping[str, str] = field(factory=dict)


@define
class Session:
    """
    One client connection, as handlers see it.

    @ivar id: A short unique id, used in logs and queue ids.
    @ivar localAddress: C{(host, port)} the client connected to.
    @ivar remoteAddress: C{(host, port)} of the client: the real client when a
        trusted PROXY header or XCLIENT says so; C{("unknown", port)} when
        XCLIENT says the address is unavailable (C{ADDR=[UNAVAILABLE]}), as
        Postfix's C{client_address}, and port 0 when it says so of the port.
    @ivar clientHostname: The client's name by reverse DNS (from the hosts
        file, or a forward-confirmed PTR name: valid host name syntax,
        chosen by whoever owns the client's address, so never proof of
        anything else), or as a trusted XCLIENT front end names it, or the
        address in brackets (C{"[192.0.2.1]"}) when unknown or disabled;
        C{"localhost"} for a UNIX socket's client (L{LOCAL_CLIENT_NAME}).
    @ivar openingCommand: C{"HELO"}, C{"EHLO"} or C{"LHLO"} once greeted.
    @ivar hostNameAppearsAs: The name the client gave in its greeting.
    @ivar envelope: The current transaction.
    @ivar user: What C{onAuth} returned for the authenticated user, or C{None}.
    @ivar transaction: The number of the current transaction, from 1.
    @ivar transmissionType: C{"SMTP"}, C{"ESMTP"}, C{"ESMTPS"}, C{"ESMTPA"},
        C{"ESMTPSA"}, C{"LMTP"}, ... for C{Received:} headers (RFC 3848).
    @ivar secure: Whether the connection is encrypted.
    @ivar tls: Details of the TLS session, or C{None}.
    @ivar xClient: Attributes a trusted XCLIENT command set.
    @ivar xForward: Attributes a trusted XFORWARD command set.
    @ivar proxy: What a trusted PROXY header said, or C{None}.
    """

    id: str
    localAddress: tuple[str, int] = ("", 0)
    remoteAddress: tuple[str, int] = ("", 0)
    clientHostname: str = ""
    openingCommand: str | None = None
    hostNameAppearsAs: str | None = None
    envelope: Envelope = field(factory=Envelope)
    user: object = None
    transaction: int = 1
    transmissionType: str = "SMTP"
    secure: bool = False
    tls: TLSInfo | None = None
    xClient: dict[str, str] = field(factory=dict)
    xForward: dict[str, str] = field(factory=dict)
    proxy: ProxyInfo | None = None


def _secret(value: object) -> str:
    """
    The C{repr} of a credential: whether there is one, never what it is,
    so that an L{AuthRequest} logged by a handler (or in a traceback's
    message) shows no password, token or CRAM-MD5 digest.
    """
    return "None" if value is None else "<hidden>"


@frozen
class AuthRequest:
    """
    One AUTH attempt, handed to C{onAuth}.

    @ivar method: C{"PLAIN"}, C{"LOGIN"}, C{"CRAM-MD5"} or C{"XOAUTH2"}.
    @ivar username: The authentication identity.
    @ivar password: The password (PLAIN, LOGIN), else C{None}.
    @ivar authorizationIdentity: The identity to act as (PLAIN), or C{None}.
    @ivar accessToken: The OAuth 2.0 bearer token (XOAUTH2), else C{None}.
    @ivar challenge: The CRAM-MD5 challenge sent, else C{None}.
    @ivar response: The CRAM-MD5 digest received (hex), else C{None}.

    Its C{repr} hides C{password}, C{accessToken} and C{response}.
    """

    method: str
    username: str
    password: str | None = field(default=None, repr=_secret)
    authorizationIdentity: str | None = None
    accessToken: str | None = field(default=None, repr=_secret)
    challenge: bytes | None = None
    response: str | None = field(default=None, repr=_secret)

    def validatePassword(self, password: str) -> bool:
        """
        Check C{password} against a CRAM-MD5 response (RFC 2195), in constant
        time.  For PLAIN and LOGIN, compare with the password given, also in
        constant time.
        """
        secret = password.encode("utf-8")
        if self.method == "CRAM-MD5":
            if self.challenge is None or self.response is None:
                return False
            expected = hmac.new(secret, self.challenge, md5).hexdigest()
            return hmac.compare_digest(expected.encode(), self.response.lower().encode())
        if self.password is None:
            return False
        return hmac.compare_digest(secret, self.password.encode("utf-8"))


def _optionalText(value: object) -> str | None:
    """
    C{value}, a handler's text, as a plain C{str} (a subclass's own
    C{__str__} or C{__format__} never writes it), or C{None}.

    @raise TypeError: C{value} is neither a C{str} nor C{None}.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"expected a str or None, not {type(value).__name__}")
    return str.__str__(value)


@frozen
class AuthResult:
    """
    What C{onAuth} returns when it accepts: the user object to keep in
    C{session.user}, and an optional text for the 235 reply.

    C{message} and C{authorizationIdentity} are checked when the result is
    made: anything but a C{str} or C{None} raises L{TypeError} in the
    handler's C{onAuth} (answered as its failure, 454), and a C{str}
    subclass is kept as the plain C{str} of its characters.

    @ivar authorizationIdentity: The identity the handler lets this login act
        as.  When a PLAIN client asks to act as an identity other than its
        own (an C{AuthRequest.authorizationIdentity} different from
        C{username}), RFC 4616 section 2 requires the server to check it may:
        the login is refused with C{535 5.7.8} unless this is that same
        identity.  Leave it C{None} to refuse such requests.
    @ivar message: The text of the 235 reply, or C{None} for the standard
        one.
    """

    user: object
    message: str | None = field(default=None, converter=_optionalText)
    authorizationIdentity: str | None = field(default=None, converter=_optionalText)


class _SessionIds:
    """
    Session ids: 40 bits, unique within the process for 2**40 sessions,
    unpredictable from outside it.

    Each id is a consecutive counter (from a random start) through a keyed
    permutation of the 40-bit values: a four-round Feistel network whose
    round function is BLAKE2b keyed with 16 random bytes.  Being a
    permutation, it cannot repeat within the process, as 40 random bits
    would after about a million sessions (the birthday bound), nor when the
    random source repeats.

    Ids are made L{BATCH} at a time and handed out in counter order: made
    one per connection, between the rest of the server's work, the hashing
    ran on cold caches and cost a busy server about three times what it
    costs in a loop.
    """

    #: Ids made at a time.
    BATCH = 32

    def __init__(self) -> None:
        self.reseed()

    def reseed(self) -> None:
        """
        A new key and start: in a forked child, so that it does not hand
        out the ids its parent will.
        """
        key = os.urandom(16)
        # One keyed state per round, copied for each id: the key's block is
        # compressed once here, not on every round of every id.
        self._rounds = [blake2b(round, key=key, digest_size=3) for round in _ROUNDS]
        self._next = int.from_bytes(os.urandom(5), "big")
        # Made ahead with the old key, the next one last: a forked child
        # must not hand out its parent's.
        self._ready: list[str] = []

    def __call__(self) -> str:
        ready = self._ready
        if not ready:
            make = self._make
            ready.extend([make() for _ in range(self.BATCH)])
            ready.reverse()
        return ready.pop()

    def _make(self) -> str:
        value = self._next & 0xFF_FFFF_FFFF
        self._next = value + 1
        left, right = value >> 20, value & 0xFFFFF
        for keyed in self._rounds:
            digest = keyed.copy()
            digest.update(right.to_bytes(3, "big"))
            left, right = right, left ^ (int.from_bytes(digest.digest(), "big") & 0xFFFFF)
        # 40 bits are 8 base32 characters exactly (no padding), two per
        # 10 bits.
        pairs = _BASE32_PAIRS
        return pairs[left >> 10] + pairs[left & 0x3FF] + pairs[right >> 10] + pairs[right & 0x3FF]


_ROUNDS = (b"\x00", b"\x01", b"\x02", b"\x03")
_BASE32 = "abcdefghijklmnopqrstuvwxyz234567"
#: The base32 characters (RFC 4648, lower case) of every 10-bit value.
_BASE32_PAIRS = [_BASE32[i >> 5] + _BASE32[i & 31] for i in range(1024)]
_sessionIds = _SessionIds()
os.register_at_fork(after_in_child=_sessionIds.reseed)


def newSessionId() -> str:
    """
    A short session id (40 bits, base32, lower case), unique within the
    process and unpredictable from outside it (L{_SessionIds}).
    """
    return _sessionIds()


#: The name of a client connected over a UNIX socket, which has no IP
#: address to look up: the local machine's, as Postfix names such clients.
LOCAL_CLIENT_NAME = "localhost"


def unixPeer(address: tuple[str, int]) -> bool:
    """
    Whether C{address}, as L{hostPort} gives it, is a UNIX socket client's:
    port 0 and, for a host, no IP address (an empty string, or the path the
    client bound) nor XCLIENT's C{unknown}.  Only port 0 costs more than one
    test.
    """
    host, port = address
    if port or host == "unknown":
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return True
    return False


def unmapped(host: str) -> str:
    """
    C{host} with an IPv4-mapped IPv6 address (C{::ffff:192.0.2.7}, RFC 4291
    section 2.5.5.2) turned into its IPv4 form (C{192.0.2.7}), as Postfix
    does at accept: an IPv4 client of a dual-stack listener is then matched,
    counted, logged and named as an IPv4 client.  Anything else is returned
    as it is; an IPv4 address or a path costs one C{in} test, an IPv6
    address that is not mapped (whose text cannot hold C{ffff}) two.
    """
    if ":" not in host or "ffff" not in host.lower():
        return host
    try:
        mapped = ipaddress.IPv6Address(host).ipv4_mapped
    except ValueError:
        return host
    return host if mapped is None else str(mapped)


def hostPort(address: object) -> tuple[str, int]:
    """
    C{(host, port)} of a Twisted address; C{(path, 0)} for a UNIX socket.
    An IPv4-mapped IPv6 address is given in its IPv4 form (L{unmapped}).

    The path a UNIX socket's client bound is the client's own choice: one
    that would read as an IP address or as XCLIENT's C{unknown} (a relative
    path, C{127.0.0.1}), or a Linux abstract name (it begins with NUL,
    which C{--pipe}'s environment drops: C{\\x00127.0.0.1}), is given as
    C{""}, as for an unbound client, so that no client can pass for one
    with that address (trusted networks, limits, C{Received:} headers,
    the handlers' client address) by the name it gives its socket.
    """
    host = getattr(address, "host", None)
    if host is None:
        name = getattr(address, "name", None)
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        path = str(name) if name else ""
        return (path if "\x00" not in path and unixPeer((path, 0)) else "", 0)
    host = str(host)
    if ":" in host:
        host = unmapped(host)
    return (host, int(getattr(address, "port", 0) or 0))
