# -*- test-case-name: tests.test_proxy -*-
"""
Pure: HAProxy's PROXY protocol header, versions 1 and 2
(U{https://www.haproxy.org/download/2.8/doc/proxy-protocol.txt}).
"""

from __future__ import annotations

import functools
import ipaddress
import struct

from attrs import frozen

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_MAX = 107
#: The largest version 2 header accepted (the format allows 65551 bytes;
#: nothing an SMTP front end sends comes near this).
V2_MAX = 16 + 1024


class ProxyHeaderError(ValueError):
    """
    The bytes are not a valid PROXY header.
    """


@frozen
class ProxyHeader:
    """
    What a PROXY header said.

    @ivar version: 1 or 2.
    @ivar source: The real client C{(host, port)}, or C{None} for a
        health check (C{UNKNOWN}, C{LOCAL}, or an address family that is not
        TCP over IPv4/IPv6).
    @ivar destination: The address the client connected to, or C{None}.
    """

    version: int
    source: tuple[str, int] | None
    destination: tuple[str, int] | None


def parseProxyHeader(data: bytes) -> tuple[ProxyHeader | None, int]:
    """
    Parse a PROXY header at the start of C{data}.

    @return: C{(header, length)} once the header is complete, where
        C{length} is how many bytes it took; C{(None, 0)} while more bytes are
        needed.
    @raise ProxyHeaderError: The data cannot start a valid header: a version
        1 line that breaks the grammar, is longer than 107 bytes or names
        addresses of another family than it says; a version 2 header with
        an unassigned address family or transport, an address block shorter
        than its family needs, a TLV running past its end, or a
        C{PP2_TYPE_CRC32C} TLV that is not 4 bytes long or does not match
        the header's checksum.
    """
    if data[:1] == b"P":
        return _parseV1(data)
    if data[:1] == b"\r":
        return _parseV2(data)
    if data:
        raise ProxyHeaderError("not a PROXY header")
    return None, 0


def _parseV1(data: bytes) -> tuple[ProxyHeader | None, int]:
    # proxy-protocol.txt section 2.1: "PROXY" SP ( "UNKNOWN" [anything] |
    # ("TCP4" | "TCP6") SP src SP dst SP sport SP dport ) CRLF, at most 107
    # bytes in all.
    if not b"PROXY "[: len(data)] == data[:6]:
        raise ProxyHeaderError("not a PROXY header")
    end = data.find(b"\r\n", 0, V1_MAX)
    lineFeed = data.find(b"\n", 0, V1_MAX if end < 0 else end)
    if lineFeed >= 0:
        raise ProxyHeaderError("bare LF in PROXY line")
    if end < 0:
        if len(data) >= V1_MAX:
            raise ProxyHeaderError("PROXY line too long")
        return None, 0
    line = data[:end]
    if line == b"PROXY UNKNOWN" or line.startswith(b"PROXY UNKNOWN "):
        return ProxyHeader(1, None, None), end + 2
    fields = line.split(b" ")
    if len(fields) != 6 or fields[1] not in (b"TCP4", b"TCP6"):
        raise ProxyHeaderError("bad PROXY line")
    version = 4 if fields[1] == b"TCP4" else 6
    source = (_ip(fields[2], version), _portNumber(fields[4]))
    destination = (_ip(fields[3], version), _portNumber(fields[5]))
    return ProxyHeader(1, source, destination), end + 2


def _ip(raw: bytes, version: int) -> str:
    if b"%" in raw:
        raise ProxyHeaderError("bad address")
    try:
        address = ipaddress.ip_address(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ProxyHeaderError("bad address") from e
    if address.version != version:
        raise ProxyHeaderError("address family mismatch")
    return str(address)


def _portNumber(raw: bytes) -> int:
    if not raw.isdigit() or len(raw) > 5 or (len(raw) > 1 and raw[:1] == b"0"):
        raise ProxyHeaderError("bad port")
    port = int(raw)
    if port > 65535:
        raise ProxyHeaderError("bad port")
    return port


#: The address block each assigned family and transport needs
#: (proxy-protocol.txt section 2.2): UNSPEC, TCP and UDP over IPv4, over
#: IPv6, and UNIX stream and datagram sockets.  Any other value of the
#: family byte "must be rejected as invalid by receivers".
_ADDRESS_LENGTHS = {0x00: 0, 0x11: 12, 0x12: 12, 0x21: 36, 0x22: 36, 0x31: 216, 0x32: 216}


def _parseV2(data: bytes) -> tuple[ProxyHeader | None, int]:
    if V2_SIGNATURE[: len(data)] != data[:12]:
        raise ProxyHeaderError("not a PROXY header")
    if len(data) < 16:
        return None, 0
    versionCommand, family = data[12], data[13]
    (length,) = struct.unpack("!H", data[14:16])
    if versionCommand >> 4 != 2 or versionCommand & 0x0F not in (0, 1):
        raise ProxyHeaderError("bad PROXY version or command")
    total = 16 + length
    if total > V2_MAX:
        raise ProxyHeaderError("PROXY header too long")
    if versionCommand & 0x0F == 0:
        # LOCAL: the receiver ignores the family and the address block.
        if len(data) < total:
            return None, 0
        return ProxyHeader(2, None, None), total
    needed = _ADDRESS_LENGTHS.get(family)
    if needed is None:
        raise ProxyHeaderError("unassigned PROXY address family")
    if length < needed:
        raise ProxyHeaderError("PROXY address block too short")
    if len(data) < total:
        return None, 0
    body = data[16:total]
    if family != 0x00:
        _checkTLVs(data[:total], 16 + needed)
    if family == 0x11:
        src = str(ipaddress.IPv4Address(body[0:4]))
        dst = str(ipaddress.IPv4Address(body[4:8]))
        sport, dport = struct.unpack("!HH", body[8:12])
    elif family == 0x21:
        src = str(ipaddress.IPv6Address(body[0:16]))
        dst = str(ipaddress.IPv6Address(body[16:32]))
        sport, dport = struct.unpack("!HH", body[32:36])
    else:
        # UNSPEC, datagrams and UNIX sockets name no TCP client.
        return ProxyHeader(2, None, None), total
    return ProxyHeader(2, (src, sport), (dst, dport)), total


#: The TLV carrying the header's CRC32C checksum (proxy-protocol.txt
#: section 2.2.5), and its length.
PP2_TYPE_CRC32C = 0x03
_CRC32C_LENGTH = 4


def _checkTLVs(header: bytes, offset: int) -> None:
    # Each TLV is a type byte, a two-byte length and that many bytes; their
    # content is ignored, but one running past the header makes it invalid.
    # Section 2.2.5: a receiver that supports PP2_TYPE_CRC32C "MUST also
    # check the checksum value": the CRC32C of the whole header with the
    # checksum's own 4 bytes zeroed.  A header altered or cut on its way
    # (a front end's bug, a splice gone wrong) names no client then.
    end = len(header)
    while offset < end:
        if offset + 3 > end:
            raise ProxyHeaderError("truncated PROXY TLV")
        kind = header[offset]
        (size,) = struct.unpack("!H", header[offset + 1 : offset + 3])
        value = offset + 3
        offset = value + size
        if offset > end:
            raise ProxyHeaderError("truncated PROXY TLV")
        if kind == PP2_TYPE_CRC32C:
            if size != _CRC32C_LENGTH:
                raise ProxyHeaderError("bad PROXY CRC32C length")
            (expected,) = struct.unpack("!I", header[value:offset])
            zeroed = header[:value] + bytes(_CRC32C_LENGTH) + header[offset:]
            if crc32c(zeroed) != expected:
                raise ProxyHeaderError("PROXY CRC32C mismatch")


@functools.cache
def _crc32cTable() -> tuple[int, ...]:
    # The Castagnoli polynomial, bit-reversed (RFC 3720 appendix B.4).
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


def crc32c(data: bytes) -> int:
    """
    The CRC32C (Castagnoli, RFC 3720 appendix B.4) of C{data}, as a PROXY
    version 2 header's C{PP2_TYPE_CRC32C} TLV carries it (in network byte
    order): C{crc32c(b"123456789") == 0xE3069283}.  Computed a byte at a
    time, once per header that carries one (at most L{V2_MAX} bytes).
    """
    table = _crc32cTable()
    crc = 0xFFFFFFFF
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF
