# -*- test-case-name: tests.test_optionnames -*-
"""
Pure: the converters of L{ServerOptions} settings given in more than one
form (rates, trusted networks, lists of words, client addresses, file
paths, SNI certificates), the validators of its switches and its other
typed settings, and the syntax of numbers written as text.

A converter does not learn which setting it converts (attrs hands it the
value only), so each takes the setting's name from a small converter of
L{ServerOptions}: every error it raises names the setting, as the
validators' do.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from twisted_smtpd._core.hostname import aLabels
from twisted_smtpd._core.printable import validHostname

__all__ = [
    "DECIMAL",
    "MIN_RATE_WINDOW",
    "MIN_TIMEOUT",
    "WHOLE",
    "IPNetwork",
    "callableOrNone",
    "filePath",
    "handlerSeconds",
    "hostBits",
    "networks",
    "normaliseHosts",
    "plainText",
    "rate",
    "sniCertificates",
    "sniName",
    "switch",
    "textOrNone",
    "trusted",
    "upperWords",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: The shortest window of a rate setting (C{minDataRate},
#: C{maxConnectionRate}), in seconds.  The deadline sweeper wakes every
#: quarter of the C{minDataRate} window (at most every second): a shorter
#: window would have it wake continuously while a client is connected,
#: and Postfix's rates are per second or longer.
MIN_RATE_WINDOW = 1.0

#: The shortest session timeout (C{socketTimeout}, C{handlerTimeout},
#: C{tlsHandshakeTimeout}), in seconds, for the same reason: the deadline
#: sweeper wakes every quarter of the shortest.  Postfix's timeouts are
#: whole seconds, at least 1.
MIN_TIMEOUT = 1.0

#: A whole number as a text setting or a numeric flag takes it: ASCII
#: digits, a minus sign allowed only to be refused as below the bound.  Not
#: the other spellings C{int()} takes (C{+5}, C{1_000}, C{" 12 "},
#: Arabic-Indic or full-width digits), which a reader of the configuration
#: would not read as the number the server uses.
WHOLE = re.compile(r"-?[0-9]+")

#: A number of seconds: ASCII digits with an optional decimal point and
#: exponent, or the words C{float()} takes for infinity and NaN (refused
#: later as not finite).
DECIMAL = re.compile(r"-?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?|-?(inf|infinity|nan)", re.I)


def _shown(value: object) -> str:
    """
    C{value} for an error message: its C{ascii()} form, at most 80
    characters of it.
    """
    text = ascii(value)
    return text if len(text) <= 80 else text[:77] + "..."


def upperWords(name: str, value: Iterable[str]) -> tuple[str, ...]:
    """
    Convert the list setting C{name} (C{authMethods}, C{disabledCommands}):
    one word or an iterable of words, each stripped and upper-cased, empty
    ones and repeats left out (C{PLAIN,plain} would advertise
    C{AUTH PLAIN PLAIN}).

    @raise TypeError: Naming the setting, for anything but strings.
    """
    if isinstance(value, str):
        value = [value]
    try:
        words = list(value)
    except TypeError:
        raise TypeError(f"{name} must be a list of strings, got {_shown(value)}") from None
    for word in words:
        if not isinstance(word, str):
            raise TypeError(f"{name} must hold strings only, got {_shown(word)}")
    return tuple(dict.fromkeys(w.strip().upper() for w in words if w.strip()))


def networks(name: str, value: bool | Iterable[str | IPNetwork] | None) -> tuple[IPNetwork, ...]:
    """
    Convert the trusted-network setting C{name}: C{True} trusts every
    address, C{False} or C{None} none, otherwise a CIDR string or network,
    or an iterable of them.

    @raise ValueError: Naming the setting, for a network that is none.
    @raise TypeError: Naming the setting, for a value of another type.
    """
    if value is None or value is False:
        return ()
    if value is True:
        return (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
    if isinstance(value, str | ipaddress.IPv4Network | ipaddress.IPv6Network):
        value = [value]
    try:
        items = list(value)
    except TypeError:
        raise TypeError(f"{name} must be networks, got {_shown(value)}") from None
    out = []
    for item in items:
        if not isinstance(item, str | ipaddress.IPv4Network | ipaddress.IPv6Network):
            raise TypeError(f"{name} must hold CIDR strings or networks, got {_shown(item)}")
        try:
            network = ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(
                f"{name}: {_shown(item)} is not an IPv4 or IPv6 network (CIDR)"
            ) from None
        if isinstance(item, str):
            why = hostBits(item, network)
            if why is not None:
                raise ValueError(f"{name}: {_shown(item)} {why}")
        out.append(_unmappedNetwork(network))
    return tuple(out)


def hostBits(text: str, network: IPNetwork) -> str | None:
    """
    What is wrong with the CIDR string C{text}, read as C{network}, when it
    has host bits set (C{10.0.0.1/8}): the whole network, or the one
    address?  Postfix refuses it too ("non-null host address bits").

    @return: Saying both readings, or C{None} for a network written as
        one (or an address alone).
    """
    address = ipaddress.ip_interface(text.strip()).ip
    if network.network_address == address:
        return None
    return (
        f"has host bits set: write {network} for the network or"
        f" {address}/{network.max_prefixlen} for the address"
    )


def _unmappedNetwork(network: IPNetwork) -> IPNetwork:
    """
    An IPv6 network inside C{::ffff:0:0/96} (IPv4-mapped addresses) as the
    IPv4 network it maps: clients are matched in their IPv4 form
    (L{trusted}), so C{::ffff:192.0.2.0/120} means C{192.0.2.0/24}.
    """
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        address = network.network_address.ipv4_mapped
        if address is not None:
            return ipaddress.IPv4Network((address, network.prefixlen - 96))
    return network


def normaliseHosts(value: Iterable[str]) -> tuple[str, ...]:
    """
    Normalise C{ignoredHosts}: each IP address in the form a session's
    C{remoteAddress} has (IPv4-mapped addresses as IPv4, IPv6 compressed
    and lower case); other entries (a UNIX socket path) as they are.

    @raise TypeError: Naming C{ignoredHosts}, for anything but strings.
    """
    if isinstance(value, str):
        value = [value]
    try:
        hosts = list(value)
    except TypeError:
        raise TypeError(f"ignoredHosts must be a list of strings, got {_shown(value)}") from None
    out = []
    for host in hosts:
        if not isinstance(host, str):
            raise TypeError(f"ignoredHosts must hold strings only, got {_shown(host)}")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            out.append(host)
            continue
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        out.append(str(address))
    return tuple(out)


def handlerSeconds(name: str, value: float, *, zero: bool = False) -> float:
    """
    Check the number of seconds C{value} of a handler's argument C{name} (a
    timeout, a pause between attempts): finite and above 0 (or 0 as well,
    with C{zero}), so that its timer can be set and fires.  Twisted's
    C{callLater} refuses NaN and a negative delay, at each use; infinity
    never fires, and 0 between attempts makes them a busy loop.

    @raise ValueError: Naming the argument.
    """
    if not (math.isfinite(value) and (value > 0 or (zero and value == 0))):
        bound = "0 or more" if zero else "positive"
        raise ValueError(f"{name} must be {bound} and finite, got {value!r}")
    return value


def rate(name: str, value: str | tuple[int, float] | None) -> tuple[int, float] | None:
    """
    Convert the rate setting C{name}: C{None} (no limit), a C{(count,
    seconds)} pair of numbers, or the text C{"COUNT/SECONDS"} (C{"30/60"})
    in ASCII digits (L{WHOLE}, L{DECIMAL}).

    @raise ValueError: Naming the setting, for a text in another form.
    @raise TypeError: Naming the setting, for a value of another type (a
        count that is not an C{int}, a pair holding text).
    """
    if value is None:
        return None
    if isinstance(value, str):
        count, slash, seconds = value.partition("/")
        written = value.isascii() and WHOLE.fullmatch(count) and DECIMAL.fullmatch(seconds)
        if not (slash and written):
            raise ValueError(f"{name} must be COUNT/SECONDS in ASCII digits, got {_shown(value)}")
        return int(count), float(seconds)
    pair: Any = value
    if not isinstance(pair, tuple | list) or len(pair) != 2:
        raise TypeError(
            f"{name} must be a (count, seconds) pair or COUNT/SECONDS, got {_shown(value)}"
        )
    number, period = pair
    if isinstance(number, bool) or not isinstance(number, int):
        raise TypeError(f"{name} must have a whole number as its count, got {_shown(number)}")
    if isinstance(period, bool) or not isinstance(period, int | float):
        raise TypeError(f"{name} must have a number of seconds, got {_shown(period)}")
    return number, float(period)


def trusted(networks: tuple[IPNetwork, ...], host: str) -> bool:
    """
    Whether C{host} (an IP address string) lies in one of C{networks}.

    An IPv4-mapped IPv6 address (C{::ffff:192.0.2.7}, an IPv4 client of a
    dual-stack listener) is matched in its IPv4 form, as Postfix matches
    it: against IPv4 networks only, so that C{::/0} does not take in every
    IPv4 client.
    """
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr.version == n.version and addr in n for n in networks)


def plainText(value: str | None) -> str | None:
    """
    Convert a text setting the server writes or reads as text (C{name},
    C{banner}, C{heloResponse}, C{authRequiredMessage}): a C{str} subclass
    becomes a plain C{str} of the same characters, so that what its
    validator checked is what the server writes, whatever the subclass's
    C{__str__}, C{__format__} or C{__mod__} would make of it; anything else
    is kept for the validator to refuse.
    """
    if isinstance(value, str) and type(value) is not str:
        return str.__str__(value)
    return value


def switch(instance: object, attribute: Any, value: object) -> None:
    """
    Validate a switch (C{requestCert}, C{disableReverseLookup}, the
    C{hide...} settings): C{True} or C{False} only, so that a text such as
    C{"no"} or C{"false"}, true as any non-empty text is, is never taken
    for C{True}.

    @raise TypeError: Naming the setting, for anything but a C{bool}.
    """
    if not isinstance(value, bool):
        raise TypeError(f"{attribute.name} must be True or False, got {_shown(value)}")


def textOrNone(instance: object, attribute: Any, value: object) -> None:
    """
    Validate a text setting read later (C{tlsCiphers}, C{tlsMinVersion}):
    a string (or C{None} where the setting has no default).

    @raise TypeError: Naming the setting, for a value of another type.
    """
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{attribute.name} must be a string, got {_shown(value)}")
    if value is None and attribute.default is not None:
        raise TypeError(f"{attribute.name} must be a string, got None")


def callableOrNone(instance: object, attribute: Any, value: object) -> None:
    """
    Validate a callback setting (C{sniCallback}): a callable or C{None}.

    @raise TypeError: Naming the setting, for anything else.
    """
    if value is not None and not callable(value):
        raise TypeError(f"{attribute.name} must be callable or None, got {_shown(value)}")


def filePath(name: str, value: str | os.PathLike[str] | None) -> str | None:
    """
    Convert the file setting C{name} (C{certificate}, C{privateKey},
    C{caCertificates}): C{None}, or a path as a string or path object,
    kept as a string.  The file is read when the server is made.

    @raise TypeError: Naming the setting, for a value of another type.
    @raise ValueError: Naming the setting, for an empty path or one
        holding NUL, which no file has.
    """
    if value is None:
        return None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a file path or None, got {_shown(value)}")
    if not value or "\x00" in value:
        raise ValueError(f"{name} must be a file path, got {_shown(value)}")
    return value


def sniName(name: str) -> str:
    """
    An SNI host name (or C{*.} and one) as it is matched: lower-case,
    without a trailing dot, IDNA-encoded (clients send A-labels).

    @raise ValueError: C{name} is not a host name: it holds white space,
        control characters or an empty label, say.
    """
    name = name.strip().rstrip(".").lower()
    try:
        # A label in U-labels as the server's name is written (IDNA 2008,
        # L{aLabels}), as clients write it: Python's codec (IDNA 2003)
        # would make "strasse" of "stra\xdfe", a name no client sends.
        # ASCII labels (C{*}, C{_sip}) as they are, checked below.
        encoded = ".".join(
            label if label.isascii() else aLabels(label) for label in name.split(".")
        )
    except ValueError as e:
        raise ValueError(f"invalid SNI host name: {name!r}") from e
    host = encoded[2:] if encoded.startswith("*.") else encoded
    if not validHostname(host, underscore=True):
        raise ValueError(f"invalid SNI host name: {name!r}")
    return encoded


def sniCertificates(
    name: str, value: Mapping[str, tuple[str, str | None]] | None
) -> dict[str, tuple[str, str | None]]:
    """
    Convert the SNI setting C{name} (C{sniOptions}): a mapping of host
    names (L{sniName}) to C{(certificate, privateKey)} file paths
    (L{filePath}; the key C{None} when it is in the certificate file), or
    C{None} for none; a copy, with the paths as strings.

    @raise TypeError: Naming the setting, for a value of another shape.
    @raise ValueError: Naming the setting, for a host name that is none or
        a path no file has.
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(
            f"{name} must map host names to (certificate, key) paths, got {_shown(value)}"
        )
    out: dict[str, tuple[str, str | None]] = {}
    matched: dict[str, str] = {}
    for host, files in value.items():
        if not isinstance(host, str):
            raise TypeError(f"{name} must have host names as keys, got {_shown(host)}")
        try:
            key = sniName(host)
        except ValueError as e:
            raise ValueError(f"{name}: {e}") from None
        if key in matched:
            # One certificate would silently replace the other's.
            raise ValueError(f"{name}: {host!r} is the same host name as {matched[key]!r}")
        matched[key] = host
        pair: Any = files
        if not isinstance(pair, tuple | list) or len(pair) != 2:
            raise TypeError(
                f"{name} must give {_shown(host)} a (certificate, key) pair of paths, the key"
                f" None when it is in the certificate file; got {_shown(files)}"
            )
        certificate = filePath(f"{name} certificate of {_shown(host)}", pair[0])
        if certificate is None:
            raise TypeError(f"{name} must give {_shown(host)} a certificate path, got None")
        out[host] = (certificate, filePath(f"{name} key of {_shown(host)}", pair[1]))
    return out
