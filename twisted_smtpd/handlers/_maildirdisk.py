# -*- test-case-name: tests.test_handlers -*-
"""
The disk side of L{MaildirHandler <twisted_smtpd.handlers.MaildirHandler>}:
every function here runs in a pool thread.

A batch of finished messages is committed in three steps, so that one flush
covers many messages (group commit) without a file ever reaching C{new/}
before its bytes are durable:

 1. every message is written to its C{tmp/} file; then the data of all of
    them is made durable at once, by one C{syncfs(2)} of the Maildir's file
    system on Linux, or by an C{fsync} of each file where C{syncfs} is
    missing or does not report write-back errors (Linux before 5.8);
 2. each file is renamed (or linked) into C{new/};
 3. each directory that changed is fsynced once, which makes the new names
    durable.

A message is reported safe only after the three steps succeeded for it; a
crash at any point leaves at worst an unanswered file in C{tmp/} (or, after
step 2, a complete one in C{new/} whose client will send it again).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import itertools
import os
import shutil
import sys
from collections.abc import Callable
from typing import IO, TYPE_CHECKING

from twisted.python.failure import Failure

if TYPE_CHECKING:
    from twisted_smtpd.handlers.maildir import _Delivery

# link() errors meaning "this file system cannot link here": copy instead.
_NO_LINK = frozenset({errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP})

_opened = itertools.count()


def _loadSyncfs(
    platform: str = sys.platform, release: str | None = None
) -> Callable[[int], None] | None:
    """
    C{syncfs(2)} from the C library, or C{None} where it is missing or where
    it does not report write-back errors (Linux before 5.8), so that an
    C{fsync} per file must be used instead.

    @param platform: C{sys.platform}.
    @param release: The kernel release, C{os.uname().release} by default.
    """
    if not platform.startswith("linux"):
        return None
    if release is None:
        release = os.uname().release
    try:
        major, minor = (int(part) for part in release.split(".")[:2])
    except ValueError:
        return None
    if (major, minor) < (5, 8):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int

    def syncfs(fd: int) -> None:
        # ctypes releases the GIL for the call.
        if function(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))

    return syncfs


# Indirections so that tests can observe and break the disk calls.
_fsync = os.fsync
_rename = os.rename
_syncfs = _loadSyncfs()


def _createTmp(path: str) -> IO[bytes]:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    return os.fdopen(fd, "wb")


def _openTmp(delivery: _Delivery) -> IO[bytes]:
    """
    The message's tmp file, created (and its opening order noted) if it is
    not open yet.
    """
    if delivery.file is None:
        delivery.file = _createTmp(delivery.tmpPath)
        delivery.openedAt = next(_opened)
    return delivery.file


def _writeChunks(delivery: _Delivery, chunks: list[bytes]) -> None:
    """
    Append C{chunks} to the message's tmp file.
    """
    _openTmp(delivery).writelines(chunks)


def _discard(delivery: _Delivery) -> None:
    """
    Close and remove the message's tmp file, if any.
    """
    f, delivery.file = delivery.file, None
    if f is not None:
        with contextlib.suppress(OSError):
            f.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(delivery.tmpPath)


def _writeRest(delivery: _Delivery) -> None:
    """
    Write what is left of the message to its tmp file, leaving it open.
    """
    f = _openTmp(delivery)
    f.writelines(delivery.chunks)
    delivery.chunks = []
    f.flush()


def _close(delivery: _Delivery) -> None:
    f, delivery.file = delivery.file, None
    if f is not None:
        f.close()


def _flushData(batch: list[_Delivery], written: list[int], results: list[Failure | None]) -> None:
    """
    Make the data of the written messages durable and close their files: one
    C{syncfs} of the file system the first-opened file lives on covers every
    file of the batch on that file system (it reports any write-back error
    since that file was opened); a file elsewhere, or every file where
    C{syncfs} is missing, is fsynced alone.  A message whose data cannot be
    made durable gets its failure in C{results} and its tmp file removed.
    """
    syncfs = _syncfs
    byDevice: dict[int, list[int]] = {}
    for index in written:
        f = batch[index].file
        assert f is not None
        if syncfs is None:
            byDevice.setdefault(-1 - index, []).append(index)
        else:
            byDevice.setdefault(os.fstat(f.fileno()).st_dev, []).append(index)
    for indexes in byDevice.values():
        try:
            if syncfs is not None and len(indexes) > 1:
                first = min(indexes, key=lambda i: batch[i].openedAt)
                f = batch[first].file
                assert f is not None
                syncfs(f.fileno())
            else:
                for index in indexes:
                    f = batch[index].file
                    assert f is not None
                    _fsync(f.fileno())
        except Exception:
            failure = Failure()
            for index in indexes:
                results[index] = failure
                with contextlib.suppress(OSError):
                    _discard(batch[index])
            continue
        for index in indexes:
            try:
                _close(batch[index])
            except Exception:
                results[index] = Failure()
                with contextlib.suppress(OSError):
                    _discard(batch[index])


def _placeAll(delivery: _Delivery) -> list[str]:
    """
    Rename the message's durable tmp file into C{new/} (or link it into
    every target's C{new/}).

    @return: The directories to fsync for the message to be safe.
    """
    if not delivery.targets:
        _rename(delivery.tmpPath, delivery.newPath)
        delivery.delivered.append(delivery.newPath)
        return [os.path.dirname(delivery.newPath)]
    toSync: list[str] = []
    try:
        for target in delivery.targets:
            toSync.extend(_ensureMaildir(target))
            toSync.append(_place(delivery, target))
    except BaseException:
        _unlinkAll(delivery.delivered)
        raise
    finally:
        with contextlib.suppress(OSError):
            os.unlink(delivery.tmpPath)
    return toSync


def _ensureMaildir(root: str) -> list[str]:
    """
    Create the Maildir C{root} with its parents as needed (mode 0700).

    @return: The directories whose entries changed, to be fsynced.
    """
    if all(os.path.isdir(os.path.join(root, sub)) for sub in ("tmp", "new", "cur")):
        return []
    changed: list[str] = []
    missing: list[str] = []
    directory = root
    while not os.path.isdir(directory):
        missing.append(directory)
        directory = os.path.dirname(directory)
    missing.reverse()
    missing.extend(os.path.join(root, sub) for sub in ("tmp", "new", "cur"))
    for directory in missing:
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            continue
        changed.append(os.path.dirname(directory))
    return changed


def _place(delivery: _Delivery, target: str) -> str:
    """
    Put the fsynced tmp file of C{delivery} into C{target/new/}, by a hard
    link, or where the file system refuses one by a copy fsynced in
    C{target/tmp/} and renamed.

    @return: The C{new/} directory to fsync.
    """
    newDirectory = os.path.join(target, "new")
    destination = os.path.join(newDirectory, delivery.unique)
    try:
        os.link(delivery.tmpPath, destination)
    except OSError as e:
        if e.errno not in _NO_LINK:
            raise
        copy = os.path.join(target, "tmp", delivery.unique)
        try:
            with open(delivery.tmpPath, "rb") as source, _createTmp(copy) as f:
                shutil.copyfileobj(source, f)
                f.flush()
                _fsync(f.fileno())
            _rename(copy, destination)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(copy)
            raise
    delivery.delivered.append(destination)
    return newDirectory


def _unlinkAll(paths: list[str]) -> None:
    """
    Remove the files at C{paths}, ignoring those already gone, and forget
    them.
    """
    for path in paths:
        with contextlib.suppress(OSError):
            os.unlink(path)
    paths.clear()


def _syncDirectory(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _fsync(fd)
    finally:
        os.close(fd)


def _commitBatch(batch: list[_Delivery]) -> list[Failure | None]:
    """
    Commit every message of C{batch}: write them all, flush their data
    once, rename them into C{new/}, then fsync each directory they changed
    once.

    @return: For each message, C{None} if it is safely in C{new/}, else the
        failure; a failed message leaves no file behind.
    """
    results: list[Failure | None] = [None] * len(batch)
    written: list[int] = []
    for index, delivery in enumerate(batch):
        try:
            _writeRest(delivery)
        except Exception:
            results[index] = Failure()
            with contextlib.suppress(OSError):
                _discard(delivery)
        else:
            written.append(index)
    _flushData(batch, written, results)
    committed: list[int] = []
    directories: dict[str, None] = {}
    for index in written:
        if results[index] is not None:
            continue
        delivery = batch[index]
        try:
            directories.update(dict.fromkeys(_placeAll(delivery)))
        except Exception:
            results[index] = Failure()
            with contextlib.suppress(OSError):
                _discard(delivery)
        else:
            committed.append(index)
    if committed:
        try:
            for directory in directories:
                _syncDirectory(directory)
        except Exception:
            failure = Failure()
            for index in committed:
                results[index] = failure
                # The client will retry after 451: do not deliver twice.
                _unlinkAll(batch[index].delivered)
    return results
