# -*- test-case-name: tests.test_session -*-
"""
Session ids: short, unpredictable, unique within the process, and never
shared with a forked child.
"""

from __future__ import annotations

import os
import re
from base64 import b32encode
from hashlib import blake2b

from twisted.trial.unittest import SynchronousTestCase

from twisted_smtpd._core import session as _session
from twisted_smtpd._core.session import _SessionIds, newSessionId


class SessionIdTests(SynchronousTestCase):
    """
    L{newSessionId}.
    """

    def test_format(self) -> None:
        """
        An id is 8 lower-case base32 characters (40 random bits).
        """
        for _ in range(200):
            self.assertIsNotNone(re.fullmatch(r"[a-z2-7]{8}", newSessionId()))

    def test_distinct(self) -> None:
        """
        Ids drawn one after the other do not repeat.
        """
        ids = [newSessionId() for _ in range(5000)]
        self.assertEqual(len(set(ids)), len(ids))

    def test_uniqueWhenRandomRepeats(self) -> None:
        """
        Two generators seeded alike (the random source repeating) still
        give distinct ids one after the other: the ids are a permutation of
        a counter, so they repeat neither at the birthday bound of 40 random
        bits nor when the random source does.
        """
        self.patch(_session.os, "urandom", lambda n: b"\x00" * n)
        ids = _SessionIds()
        drawn = [ids() for _ in range(4096)]
        self.assertEqual(len(set(drawn)), len(drawn))
        again = _SessionIds()
        self.assertEqual([again() for _ in range(4096)], drawn)

    def test_keyedPermutation(self) -> None:
        """
        Each id is its counter value through four Feistel rounds, each
        round's function the first 20 bits of BLAKE2b (3-byte digest, keyed
        with the generator's 16-byte key) of the round's number and the
        right half, in base32 (RFC 4648, lower case).
        """
        randomBytes = iter([bytes(range(16)), b"\x00\x00\x0f\xff\xfe"])
        self.patch(_session.os, "urandom", lambda n: next(randomBytes))
        ids = _SessionIds()
        key = bytes(range(16))
        for value in range(0xFFFFE, 0xFFFFE + 6):
            left, right = value >> 20, value & 0xFFFFF
            for number in range(4):
                data = bytes([number]) + right.to_bytes(3, "big")
                digest = blake2b(data, key=key, digest_size=3).digest()
                left, right = right, left ^ (int.from_bytes(digest, "big") & 0xFFFFF)
            expected = b32encode(((left << 20) | right).to_bytes(5, "big")).decode().lower()
            self.assertEqual(ids(), expected)

    def test_wrapsAround(self) -> None:
        """
        The counter wraps at 2**40 and every id stays 8 characters.
        """
        ids = _SessionIds()
        ids._next = (1 << 40) - 2
        drawn = [ids() for _ in range(4)]
        self.assertEqual(len(set(drawn)), 4)
        # A batch was made: 2**40 - 2 to 29.
        self.assertEqual(ids._next, _SessionIds.BATCH - 2)
        for value in drawn:
            self.assertIsNotNone(re.fullmatch(r"[a-z2-7]{8}", value))

    def test_batches(self) -> None:
        """
        Ids are made L{_SessionIds.BATCH} at a time and handed out in
        counter order, across batches: the same ids, in the same order, as
        made one at a time.
        """
        self.patch(_session.os, "urandom", lambda n: bytes(range(n)))
        batched, single = _SessionIds(), _SessionIds()
        drawn = [batched() for _ in range(2 * _SessionIds.BATCH + 3)]
        self.assertEqual(len(batched._ready), _SessionIds.BATCH - 3)
        self.assertEqual(drawn, [single._make() for _ in range(len(drawn))])

    def test_reseedForgetsBatch(self) -> None:
        """
        Reseeded (in a forked child), a generator forgets the ids made
        ahead with its old key.
        """
        ids = _SessionIds()
        ids()
        ahead = list(ids._ready)
        ids.reseed()
        self.assertEqual(ids._ready, [])
        self.assertNotIn(ids(), ahead)

    def test_forkedChildDrawsItsOwn(self) -> None:
        """
        A forked child (twistd daemonising, a handler forking) draws with a
        key and a start of its own: it does not hand out the ids its parent
        will.
        """
        newSessionId()
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                os.write(write, "".join(newSessionId() for _ in range(8)).encode())
            finally:
                os._exit(0)
        os.close(write)
        try:
            child = os.read(read, 1024).decode()
        finally:
            os.close(read)
            os.waitpid(pid, 0)
        parent = "".join(newSessionId() for _ in range(8))
        self.assertEqual(len(child), 64)
        self.assertNotEqual(child, parent)
