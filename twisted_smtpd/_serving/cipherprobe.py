# -*- test-case-name: tests.test_tlssettings -*-
"""
Whether a TLS 1.2 cipher string leaves a cipher that a server's
certificate can authenticate, as OpenSSL itself answers it: a handshake in
memory between a server context made with the cipher string and a
throwaway certificate, and a client offering every cipher it has.

A string selecting only ciphers that need no certificate or something else
instead (PSK, SRP, anonymous ones) makes a context OpenSSL accepts, and
then every TLS 1.2 handshake fails with C{no shared cipher}; clients of
TLS 1.3 alone get through, their suites being OpenSSL's.  The certificate
is tried with the kind of key of the certificate the server will serve
(L{keyKind}), or, when that is not known, with each kind a TLS 1.2
certificate carries (EC, RSA, DSA).  Under a security level that the
cipher string sets (C{@SECLEVEL=N}), the throwaway key is one that level
allows (an EC curve as strong; RSA of 3072 bits at level 3): an RSA key
above level 3, or a DSA key above level 2, would take too long to make,
and is not probed (the certificate's own key is judged when it is loaded).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import suppress
from functools import cache

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from OpenSSL import SSL, crypto

from twisted_smtpd._serving.selfsigned import SelfSignableKey, selfSignedBuilder

#: What the probing client offers: every cipher its OpenSSL has.
_EVERY_CIPHER = b"ALL:COMPLEMENTOFALL:@SECLEVEL=0"

#: Flights exchanged before a handshake in memory is given up.
_ROUNDS = 8

#: The kinds of key a TLS 1.2 certificate carries, cheapest first: a key is
#: made only when the ones before it did not do.  Each makes a key for a
#: security level (0 to 5), or gives C{None} for one it makes none for.
_KEYS: dict[str, Callable[[int], SelfSignableKey | None]] = {
    "EC": lambda level: ec.generate_private_key(
        ec.SECP256R1() if level <= 3 else ec.SECP384R1() if level == 4 else ec.SECP521R1()
    ),
    "RSA": lambda level: (
        rsa.generate_private_key(public_exponent=65537, key_size=2048 if level <= 2 else 3072)
        if level <= 3
        else None
    ),
    "DSA": lambda level: dsa.generate_private_key(key_size=2048) if level <= 2 else None,
}

#: What L{certificateCipher} answers for a kind of key it does not probe.
UNPROBED = "(not probed)"


def keyKind(key: object) -> str | None:
    """
    The kind of a certificate's public (or private) key as the probe knows
    it, C{"EC"}, C{"RSA"} or C{"DSA"}; C{None} for another (Ed25519,
    Ed448), which is then probed with every kind.
    """
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        return "EC"
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return "RSA"
    if isinstance(key, dsa.DSAPublicKey | dsa.DSAPrivateKey):
        return "DSA"
    return None


@cache
def _credentials(kind: str, level: int) -> tuple[crypto.X509, crypto.PKey] | None:
    """
    A throwaway self-signed certificate and its key, of the kind
    C{_KEYS[kind]} makes for a security level, or C{None}; made once per
    process.  (OpenSSL judges no self-signed certificate by its signature.)
    """
    key = _KEYS[kind](level)
    if key is None:
        return None
    certificate = selfSignedBuilder(key, "cipher probe").sign(key, hashes.SHA256())
    return crypto.X509.from_cryptography(certificate), crypto.PKey.from_cryptography_key(key)


def _kindsCredentials(
    kind: str | None, level: int
) -> Iterator[tuple[crypto.X509, crypto.PKey] | None]:
    for each in _KEYS if kind is None else (kind,):
        yield _credentials(each, level)


def _handshake(server: SSL.Context, offer: bytes) -> tuple[bytes, bool] | None:
    """
    A TLS 1.2 handshake in memory with a client offering C{offer}.

    @return: The cipher the server chose and whether the client was shown
        a certificate, or C{None} if the handshake failed.
    """
    client = SSL.Context(SSL.TLS_METHOD)
    client.set_min_proto_version(SSL.TLS1_2_VERSION)
    client.set_max_proto_version(SSL.TLS1_2_VERSION)
    try:
        client.set_cipher_list(offer)
    except SSL.Error:
        return None
    serving = SSL.Connection(server, None)
    serving.set_accept_state()
    asking = SSL.Connection(client, None)
    asking.set_connect_state()
    for _ in range(_ROUNDS):
        finished = True
        for connection in (asking, serving):
            try:
                connection.do_handshake()
            except SSL.WantReadError:
                finished = False
            except SSL.Error:
                return None
        if finished:
            cipher = serving.get_cipher_name()
            if cipher is None:
                return None
            return cipher.encode("ascii"), asking.get_peer_certificate() is not None
        for source, destination in ((asking, serving), (serving, asking)):
            with suppress(SSL.WantReadError):
                destination.bio_write(source.bio_read(1 << 16))
    return None


def certificateCipher(
    newContext: Callable[[], SSL.Context], kind: str | None = None, level: int | None = None
) -> str | None:
    """
    The TLS 1.2 cipher a server whose contexts C{newContext} makes chooses
    with a certificate whose key is of C{kind}, or C{None} if it chooses
    none.

    @param newContext: Makes a server context before its certificate, with
        the cipher string to judge.
    @param kind: C{"EC"}, C{"RSA"} or C{"DSA"} (L{keyKind}); C{None} for
        any of them.
    @param level: The security level the cipher string sets, if any.
    @return: L{UNPROBED} for a kind of key the probe makes none of at
        C{level}.
    """
    for credentials in _kindsCredentials(kind, level or 0):
        if credentials is None:
            return UNPROBED
        certificate, key = credentials
        context = newContext()
        context.use_certificate(certificate)
        context.use_privatekey(key)
        offer = _EVERY_CIPHER
        # Each round leaves out a cipher chosen without the certificate
        # (one a server may prefer when its string allows it): bounded by
        # the ciphers the context has.
        for _ in range(len(SSL.Connection(context, None).get_cipher_list()) + 1):
            chosen = _handshake(context, offer)
            if chosen is None:
                break
            cipher, certified = chosen
            if certified:
                return cipher.decode("ascii")
            offer += b":!" + cipher
    return None


def selfSignedRefusal(newContext: Callable[[], SSL.Context]) -> str | None:
    """
    Why a server context C{newContext} makes refuses an EC P-256 key, the
    self-signed certificate's (C{"ee key too small"} under a cipher string's
    C{@SECLEVEL=4}), or C{None} when it takes it.
    """
    credentials = _credentials("EC", 0)
    assert credentials is not None
    context = newContext()
    try:
        context.use_certificate(credentials[0])
    except SSL.Error as e:
        reasons = e.args[0] if e.args and isinstance(e.args[0], list) else []
        return "; ".join(str(entry[-1]) for entry in reasons if entry and entry[-1]) or str(e)
    return None
