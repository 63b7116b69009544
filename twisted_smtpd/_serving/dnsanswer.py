# -*- test-case-name: tests.test_dnsanswer -*-
"""
Reading a DNS message that came back for a query, checked as a careful
resolver checks it (glibc's C{res_queriesmatch} and C{ns_rr_cursor_next}):
is it a response repeating the query's question, and does each record fit
in the message?

C{twisted.names} reads any message with the right id as the answer, and
reads what it can of a message cut short: the records before the cut are
kept, silently.  A record's data is read by its type, whatever its
RDLENGTH says, so that a record whose RDLENGTH runs past the end of the
message is taken.  A label holding a C{.} is joined with the others as if
it were two labels.
"""

from __future__ import annotations

import struct
from typing import IO, Any

from twisted.names import dns

from twisted_smtpd._core.printable import printable
from twisted_smtpd._serving.resolve import AnswerUnusable

#: The rcodes of an error answer that may come without its question
#: section, as the 12-octet header alone (glibc's C{send_dg} takes such a
#: SERVFAIL, NOTIMP or REFUSED without matching its question).
_BARE_ERRORS = frozenset({dns.ESERVER, dns.ENOTIMP, dns.EREFUSED})

#: The most octets of a name on the wire (RFC 1035 section 3.1).
_MAX_NAME = 255


class NotTheAnswer(Exception):
    """
    A message that cannot be the answer to the query: not a response, or
    with another question.  It is dropped; the query waits on.
    """


def readAnswer(data: bytes, query: dns.Query) -> dns.Message:
    """
    The message in C{data}, answering C{query}.

    @param data: A whole DNS message (its id already matched).
    @param query: The question asked.
    @raise NotTheAnswer: When the message is not a response (its QR bit is
        0), or its question section is not C{query}'s alone (the name
        compared without regard to case, RFC 4343), or is malformed.
    @raise AnswerUnusable: When it is the answer, but a record in it runs
        past the end of the message, does not fill its RDLENGTH exactly, or
        fewer records are in it than its header counts, without the TC flag
        (RFC 1035 section 4.1.1: a longer answer is truncated with TC set):
        a malformed answer fails the query, as in glibc (C{NO_RECOVERY}).
    """
    if len(data) < 12:
        raise NotTheAnswer(f"truncated ({len(data)} octets)")
    flags, qdcount = struct.unpack_from("!HH", data, 2)
    if not flags & 0x8000:
        raise NotTheAnswer("it is a query, not a response")
    bare = len(data) == 12 and qdcount == 0 and flags & 0xF in _BARE_ERRORS
    if not bare:
        _checkQuestion(data, qdcount, query)
    message = _StrictMessage(data)
    try:
        message.fromStr(data)
    except EOFError:
        if not message.trunc:
            raise AnswerUnusable(
                "the DNS server's answer is malformed (cut short, without the TC flag)"
            ) from None
    except _Malformed as e:
        if not message.trunc:
            raise AnswerUnusable(f"the DNS server's answer is malformed ({e})") from None
    except ValueError as e:
        raise AnswerUnusable(
            f"the DNS server's answer is malformed ({printable(str(e)[:100])})"
        ) from None
    return message


def _checkQuestion(data: bytes, qdcount: int, query: dns.Query) -> None:
    """
    Check that the question section of C{data} is C{query} alone.

    @raise NotTheAnswer: When it is not.
    """
    if qdcount != 1:
        raise NotTheAnswer(f"its question section holds {qdcount} questions, not the query's")
    try:
        labels, end = _labels(data, 12)
    except _Malformed as e:
        raise NotTheAnswer(f"its question section is malformed ({e})") from None
    if end + 4 > len(data):
        raise NotTheAnswer("its question section is malformed (cut short)")
    kind, cls = struct.unpack_from("!HH", data, end)
    asked = [label.lower() for label in query.name.name.rstrip(b".").split(b".") if label]
    if [label.lower() for label in labels] != asked or kind != query.type or cls != query.cls:
        raise NotTheAnswer(
            "its question is not the query's"
            f" ({printable(_presentation(labels)[:100].decode('ascii', 'replace'))}"
            f" type {kind} class {cls})"
        )


class _Malformed(Exception):
    """
    A name or record that does not fit in its message.
    """


def _labels(data: bytes, offset: int) -> tuple[list[bytes], int]:
    """
    The labels of the name at C{offset} in C{data}, following compression
    pointers (RFC 1035 section 4.1.4), and the offset after it.

    @raise _Malformed: When the name runs past the end of C{data}, has a
        label of the obsolete extended types, a pointer loop, or is longer
        than 255 octets.
    """
    labels: list[bytes] = []
    size = 1
    end: int | None = None
    seen: set[int] = set()
    while True:
        if offset >= len(data):
            raise _Malformed("a name runs past the end of the message")
        length = data[offset]
        if length == 0:
            return labels, offset + 1 if end is None else end
        if length >= 0xC0:
            if offset + 2 > len(data):
                raise _Malformed("a name runs past the end of the message")
            target = struct.unpack_from("!H", data, offset)[0] & 0x3FFF
            if end is None:
                end = offset + 2
            if target in seen:
                raise _Malformed("a name's compression pointers loop")
            seen.add(target)
            offset = target
            continue
        if length > 63:
            raise _Malformed(f"a name has a label of type {length >> 6}")
        size += length + 1
        if size > _MAX_NAME:
            raise _Malformed("a name is longer than 255 octets")
        if offset + 1 + length > len(data):
            raise _Malformed("a name runs past the end of the message")
        labels.append(data[offset + 1 : offset + 1 + length])
        offset += 1 + length


def _presentation(labels: list[bytes]) -> bytes:
    """
    C{labels} joined by dots, a dot or backslash inside a label escaped
    with a backslash (RFC 4343 section 2.1, as glibc's C{ns_name_ntop}
    writes it): a label C{evil.com} then C{example} is
    C{evil\\.com.example}, never the three labels C{evil.com.example}.
    """
    return b".".join(label.replace(b"\\", b"\\\\").replace(b".", b"\\.") for label in labels)


class _StrictMessage(dns.Message):
    """
    A L{dns.Message} whose records must each end where their RDLENGTH
    says, within the message, and whose names holding a label with a dot
    (or backslash) are read in presentation form (L{_presentation}).
    """

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self._data = data

    def parseRecords(self, list: list[dns.RRHeader], num: int, strio: IO[bytes]) -> None:
        for _ in range(num):
            owner = strio.tell()
            header: Any = dns.RRHeader(auth=self.auth)
            header.decode(strio)
            start = strio.tell()
            end = start + header.rdlength
            if end > len(self._data):
                raise _Malformed(
                    f"the data of a record (RDLENGTH {header.rdlength}) runs past"
                    " the end of the message"
                )
            payload: Any = self.lookupRecordType(header.type)(ttl=header.ttl)
            payload.decode(strio, header.rdlength)
            header.payload = payload
            if strio.tell() != end:
                raise _Malformed(
                    f"the data of a record of type {header.type} does not fill"
                    f" its RDLENGTH {header.rdlength}"
                )
            self._escape(header.name, owner)
            if isinstance(payload, (dns.Record_PTR, dns.Record_CNAME)):
                self._escape(payload.name, start)
            list.append(header)

    def _escape(self, name: Any, offset: int) -> None:
        """
        Write C{name}, read at C{offset}, in presentation form when a label
        of it holds a dot or backslash.
        """
        labels, _ = _labels(self._data, offset)
        if any(b"." in label or b"\\" in label for label in labels):
            name.name = _presentation(labels)
