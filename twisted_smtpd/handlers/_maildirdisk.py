# -*- test-case-name: tests.test_handlers -*-
"""
The disk side of L{MaildirHandler <twisted_smtpd.handlers.MaildirHandler>}:
every function here runs in a pool thread.

Finished messages are committed in groups, so that one flush covers many
messages without a file ever reaching C{new/} before its bytes are durable.
The committer runs in cycles, one at a time; each cycle

 1. writes every message finished since the last cycle to its C{tmp/} file;
 2. flushes once: one C{syncfs(2)} of the Maildir's file system on Linux
    makes durable both the data just written and the names of the messages
    renamed into C{new/} by the previous cycle; where C{syncfs} is missing or
    does not report write-back errors (Linux before 5.8), or for a single
    item, each file and each changed directory is fsynced instead;
 3. answers the messages renamed by the previous cycle, now safe;
 4. renames (or links: unnamed C{O_TMPFILE} files, per-recipient copies)
    the messages written in step 1 into C{new/}; the next
    cycle's flush makes their names durable, or, when no message waits for a
    next cycle, a second flush in this one (a message alone thus costs one
    job: fsync of its file, rename, fsync of C{new/}).

A message is thus answered only after its data (flush, then rename) and its
name (the next flush) are durable.  A crash at any point leaves at worst an
unanswered file in C{tmp/} (none with unnamed files, which the file system
frees), or a complete one in C{new/} whose client did not get its 250 and
will send it again; never a partial file in C{new/}.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import shutil
from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.python.failure import Failure

from twisted_smtpd.handlers._maildirbelow import (
    CREATE,
    createBelow,
    openNewBelow,
    openTmpBelow,
    removeBelow,
)
from twisted_smtpd.handlers._maildirdirs import (
    Directory,
    linkInto,
    linkUnnamed,
    renameFrom,
    renameInto,
)
from twisted_smtpd.handlers._syncfs import loadSyncfs

if TYPE_CHECKING:
    from twisted_smtpd.handlers._maildirdelivery import Delivery

# link() errors meaning "this file system cannot link here": copy instead.
_NO_LINK = frozenset({errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP})

_opened = itertools.count()


_O_TMPFILE: int = getattr(os, "O_TMPFILE", 0)


# Indirections so that tests can observe and break the disk calls.
_fsync = os.fsync
_rename = renameInto
_link = linkUnnamed
_syncfs = loadSyncfs()


def unnamedFilesWork(directory: str) -> bool:
    """
    Whether messages can be written to C{directory} as unnamed files
    (C{O_TMPFILE}, Linux 3.11 and later on most local file systems) and then
    linked into C{new/}: a file is created, linked into C{directory} under a
    name of its own and removed again.
    """
    if not _O_TMPFILE:
        return False
    probe = f".probe-{os.getpid()}-{next(_opened)}"
    try:
        fd = os.open(directory, os.O_WRONLY | _O_TMPFILE | os.O_CLOEXEC, 0o600)
    except OSError:
        return False
    try:
        opened = Directory(directory)
        opened.users = 1
        try:
            linkUnnamed(fd, opened, probe)
            with contextlib.suppress(OSError):
                opened.unlink(probe)
        finally:
            opened.release()
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def _createTmp(path: str) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)


def _openTmp(delivery: Delivery) -> int:
    """
    The descriptor of the message's tmp file, created (and its opening order
    noted) if it is not open yet: an unnamed file in C{tmp/} where the
    handler found those to work (one directory entry less to create and
    remove per message, and nothing left in C{tmp/} by a crash), else
    C{tmp/<name>}.
    """
    fd = delivery.fd
    if fd is None:
        try:
            fd = _newTmp(delivery)
        except FileNotFoundError:
            # tmp/ removed since the handler started: made again (the next
            # flush makes that durable), if the Maildir itself is there.
            delivery.created.extend(restoreMaildir(delivery.tmpDirectory))
            fd = _newTmp(delivery)
        delivery.fd = fd
        delivery.openedAt = next(_opened)
    return fd


def _newTmp(delivery: Delivery) -> int:
    if delivery.unnamed:
        return os.open(delivery.tmpDirectory, os.O_WRONLY | _O_TMPFILE | os.O_CLOEXEC, 0o600)
    if delivery.targets:
        return createBelow(delivery)
    return _createTmp(delivery.tmpPath)


def restoreMaildir(subdirectory: str) -> list[str]:
    """
    Make again the C{tmp/}, C{new/} and C{cur/} directories of the Maildir
    that C{subdirectory} (one of them) belongs to, those removed since the
    handler made them (mode 0700): a Maildir emptied of its directories
    takes mail again, as Postfix's C{local} and Dovecot do.  The Maildir
    itself is never made here: one that is gone may be a file system not
    mounted, whose mail is better left with its senders until it is back
    than hidden under its mount point.

    @return: The directories whose entries changed (the Maildir), to be
        fsynced.
    @raise FileNotFoundError: If the Maildir is gone too.
    """
    root = subdirectory.rpartition("/")[0]
    created = False
    for sub in ("tmp", "new", "cur"):
        try:
            os.mkdir(os.path.join(root, sub), 0o700)
        except FileExistsError:
            continue
        created = True
    return [root] if created else []


def _writeAll(fd: int, chunks: list[bytes]) -> None:
    """
    Write C{chunks} to C{fd} whole: one C{write(2)} for a small message, no
    buffered file object in between (its C{fstat}, C{lseek} and C{ioctl}
    calls cost more than the write).
    """
    data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    written = os.write(fd, data)
    if written < len(data):
        rest = memoryview(data)[written:]
        while rest:
            rest = rest[os.write(fd, rest) :]


def _writeChunks(delivery: Delivery, chunks: list[bytes]) -> None:
    """
    Append C{chunks} to the message's tmp file.
    """
    _writeAll(_openTmp(delivery), chunks)


def _discard(delivery: Delivery) -> None:
    """
    Close and remove the message's tmp file, if any.
    """
    fd, delivery.fd = delivery.fd, None
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)
    if delivery.targets:
        removeBelow(delivery)
        return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(delivery.tmpPath)


def _close(delivery: Delivery) -> None:
    fd, delivery.fd = delivery.fd, None
    if fd is not None:
        os.close(fd)


def _open(
    opened: dict[str, Directory], path: str, delivery: Delivery, below: str | None = None
) -> Directory:
    """
    The directory at C{path}, opened once per cycle (C{opened}), now also
    needed by C{delivery} (in its C{toSync}, released with it).

    @param below: The root of per-recipient Maildirs that C{path} is
        reached from without following links (L{Directory}), if any.
    """
    directory = opened.get(path)
    if directory is None or directory.users <= 0:
        # Not opened yet in this cycle, or closed since by the failure of
        # every message that used it.
        directory = opened[path] = Directory(path, below)
    # Once per entry, which L{_release} takes back one by one.
    directory.users += 1
    delivery.toSync.append(directory)
    return directory


def _release(delivery: Delivery) -> None:
    """
    C{delivery} is answered: it needs its directories open no more.
    """
    for directory in delivery.toSync:
        directory.release()
    delivery.toSync.clear()


def _placeAll(delivery: Delivery, opened: dict[str, Directory]) -> None:
    """
    Rename the message's durable tmp file into C{new/} (or link it into
    every target's C{new/}), each directory opened once per cycle
    (C{opened}).  The directories to fsync for the message to be safe are
    then in its C{toSync}, even when this fails.
    """
    if delivery.created:
        created, delivery.created = delivery.created, []
        for changed in created:
            _open(opened, changed, delivery)
    if not delivery.targets:
        newPath = delivery.handler._newDirectory
        try:
            directory = _open(opened, newPath, delivery)
        except FileNotFoundError:
            for changed in restoreMaildir(newPath):
                _open(opened, changed, delivery)
            directory = _open(opened, newPath, delivery)
        if delivery.unnamed:
            fd = delivery.fd
            assert fd is not None
            _link(fd, directory, delivery.unique)
            delivery.fd = None
            os.close(fd)
        else:
            _rename(delivery.tmpPath, directory, delivery.unique)
        delivery.delivered.append((directory, delivery.unique))
        return
    # Nothing below the root is reached through a symbolic link.
    root = delivery.handler.path
    target = ""
    try:
        for target in delivery.targets:
            _place(delivery, target, _openNew(opened, target, delivery, root))
    except BaseException:
        delivery.failedRecipient = delivery.recipients.get(target)
        _unlinkAll(delivery.delivered)
        raise
    finally:
        with contextlib.suppress(OSError):
            removeBelow(delivery)


def _openNew(opened: dict[str, Directory], target: str, delivery: Delivery, root: str) -> Directory:
    """
    The C{new/} of the per-recipient Maildir C{target}, now also needed by
    C{delivery}: reached (and made where missing) in one walk down from
    C{root} (L{openNewBelow}) by the first message of the cycle for it.
    """
    path = os.path.join(target, "new")
    directory = opened.get(path)
    if directory is not None and directory.users > 0:
        return _open(opened, path, delivery)
    fd, changed = openNewBelow(target, root)
    directory = opened[path] = Directory(path, root, fd)
    directory.users += 1
    delivery.toSync.append(directory)
    for parent in changed:
        _open(opened, parent, delivery, root)
    return directory


def _place(delivery: Delivery, target: str, newDirectory: Directory) -> None:
    """
    Put the fsynced tmp file of C{delivery} into C{newDirectory}, the
    C{new/} of the Maildir C{target}, by a hard link, or where the file
    system refuses one by a copy fsynced in C{target/tmp/} (reached without
    following links) and renamed.
    """
    name = delivery.unique
    try:
        try:
            linkInto(name, newDirectory, name, delivery.tmpFd)
        except OSError as e:
            if e.errno not in _NO_LINK:
                raise
            _copy(delivery, target, newDirectory)
    except OSError as e:
        # The log line names the recipient's file: not the root's tmp file
        # that a failed link names, nor nothing, as a copy's writes do.
        if not (isinstance(e.filename, str) and e.filename.startswith(target + "/")):
            e.filename = os.path.join(newDirectory.path, name)
        raise
    delivery.delivered.append((newDirectory, name))


def _copy(delivery: Delivery, target: str, newDirectory: Directory) -> None:
    """
    Copy the tmp file of C{delivery} into C{target/tmp/}, fsync the copy
    and rename it into C{newDirectory}; a copy that fails is removed.
    """
    name = delivery.unique
    tmp = openTmpBelow(target, delivery.handler.path)
    reading = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        try:
            with (
                os.fdopen(os.open(name, reading, dir_fd=delivery.tmpFd), "rb") as source,
                os.fdopen(os.open(name, CREATE, 0o600, dir_fd=tmp), "wb") as f,
            ):
                shutil.copyfileobj(source, f)
                f.flush()
                _fsync(f.fileno())
            renameFrom(tmp, name, newDirectory, name)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=tmp)
            raise
    finally:
        os.close(tmp)


def _unlinkAll(delivered: list[tuple[Directory, str]]) -> None:
    """
    Remove the files C{delivered} (directory and name), ignoring those
    already gone, and forget them.
    """
    for directory, name in delivered:
        with contextlib.suppress(OSError):
            directory.unlink(name)
    delivered.clear()


def _syncDirectory(directory: Directory) -> None:
    """
    Fsync C{directory}.

    @raise OSError: Naming the directory when the system's error names
        nothing, so that the log line says which one failed.
    """
    try:
        if directory.fd is not None:
            _fsync(directory.fd)
            return
        fd = directory.openByPath()
        try:
            _fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        if e.filename is None:
            e.filename = directory.path
        raise


def _fail(results: list[Failure | None], indexes: list[int], failure: Failure) -> None:
    for index in indexes:
        if results[index] is None:
            results[index] = failure


def _onDevice(delivery: Delivery, devices: dict[str, int]) -> int:
    """
    The file system of the message's tmp file: that of the directory it was
    created in, from the descriptor held of it where there is one
    (per-recipient Maildirs: a link put at its path since is not followed),
    else from its path, remembered in C{devices}; -1 when it cannot be told
    (then the file is fsynced on its own).
    """
    path = delivery.tmpDirectory
    onDevice = None if delivery.tmpFd is not None else devices.get(path)
    if onDevice is None:
        try:
            if delivery.tmpFd is not None:
                return os.fstat(delivery.tmpFd).st_dev
            onDevice = os.stat(path).st_dev
        except OSError:
            onDevice = -1
        devices[path] = onDevice
    return onDevice


def _flush(
    batch: list[Delivery],
    written: list[int],
    results: list[Failure | None],
    placed: list[Delivery],
    placedResults: list[Failure | None],
    root: str,
) -> None:
    """
    Make durable, at once, the data of the messages of C{batch} just written
    (indexes C{written}) and the names of the messages of C{placed} renamed
    by the previous cycle; close the written files.

    Where C{syncfs} exists and there is more than one thing to flush, one
    C{syncfs} covers everything on the file system of C{root}: it is called
    on the file opened first, so that it reports any write-back error since
    before every write it covers.  Everything else (each file and each
    directory, where C{syncfs} is missing, or a file system other than
    C{root}'s) is fsynced on its own.  A failure is recorded in C{results}
    or C{placedResults} for every message it touches.
    """
    directories: dict[Directory, list[int]] = {}
    for position, delivery in enumerate(placed):
        for directory in delivery.toSync:
            positions = directories.get(directory)
            if positions is None:
                directories[directory] = [position]
            else:
                positions.append(position)
    for directory in list(directories):
        if directory.removed():
            # Its messages are gone with it: the clients send them again,
            # and the next delivery makes the Maildir anew.
            gone = FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), directory.path)
            _fail(placedResults, directories.pop(directory), Failure(gone))
    syncfs = _syncfs
    alone = list(written)
    aloneDirectories = list(directories)
    if syncfs is not None and len(written) + len(directories) > 1:
        device = os.stat(root).st_dev
        alone, aloneDirectories = [], []
        covered: list[int] = []
        coveredDirectories: list[Directory] = []
        # A file is on the file system of its tmp/ directory: one stat per
        # directory and cycle (an fstat of the one held open with
        # per-recipient Maildirs), not an fstat per file.
        devices: dict[str, int] = {}
        for index in written:
            onDevice = _onDevice(batch[index], devices)
            (covered if onDevice == device else alone).append(index)
        for directory in directories:
            # One reached by its path and gone since fails its own messages
            # when fsynced alone, not the whole cycle.
            onRoot = directory.device() == device
            (coveredDirectories if onRoot else aloneDirectories).append(directory)
        try:
            if covered:
                openings = [batch[index].openedAt for index in covered]
                first = batch[covered[openings.index(min(openings))]].fd
                assert first is not None
                syncfs(first)
            elif coveredDirectories:
                fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    syncfs(fd)
                finally:
                    os.close(fd)
        except Exception:
            failure = Failure()
            _fail(results, covered, failure)
            for directory in coveredDirectories:
                _fail(placedResults, directories[directory], failure)
    for index in alone:
        descriptor = batch[index].fd
        assert descriptor is not None
        try:
            _fsync(descriptor)
        except Exception:
            _fail(results, [index], Failure())
    for directory in aloneDirectories:
        try:
            _syncDirectory(directory)
        except Exception:
            _fail(placedResults, directories[directory], Failure())
    for index in written:
        if batch[index].unnamed:
            # Closed once linked into new/ (closing would free it).
            continue
        try:
            _close(batch[index])
        except Exception:
            _fail(results, [index], Failure())


def _commitCycle(
    batch: list[Delivery],
    placed: list[Delivery],
    root: str,
    waiting: Callable[[], bool] = bool,
) -> tuple[list[Failure | None], list[Failure | None], bool]:
    """
    One cycle of the committer: write every message of C{batch} to its tmp
    file; flush once, which makes their data durable and the names of the
    messages of C{placed} (renamed into C{new/} by the previous cycle)
    durable too; rename the messages of C{batch} into C{new/}.  The next
    cycle's flush makes their names durable.

    When no message is C{waiting} for the next cycle once the renames are
    done, this cycle flushes their names itself rather than leave that to a
    cycle of its own: a message alone costs one job, as before group
    commit, and is answered one thread hop sooner.

    @param root: The Maildir, whose file system C{syncfs} flushes.
    @param waiting: Tells, in the pool thread, whether messages wait for the
        next cycle (a reading of the committer's queue).
    @return: For each message of C{batch}, C{None} if it is now renamed into
        C{new/} (its directories open in its C{toSync}), else its failure; for
        each message of C{placed}, C{None} if it is now safely in C{new/},
        else its failure; and whether the names of C{batch} are durable too
        (then their results are final).  A failed message leaves no file
        behind.
    """
    results: list[Failure | None] = [None] * len(batch)
    placedResults: list[Failure | None] = [None] * len(placed)
    written: list[int] = []
    for index, delivery in enumerate(batch):
        # What is left of the message, written to its tmp file left open.
        try:
            fd = _openTmp(delivery)
            if delivery.chunks:
                _writeAll(fd, delivery.chunks)
                delivery.chunks.clear()
        except Exception:
            results[index] = Failure()
        else:
            written.append(index)
    _flush(batch, written, results, placed, placedResults, root)
    for delivery, result in zip(placed, placedResults, strict=True):
        if result is not None:
            # The client will retry after 451: do not deliver twice.
            _unlinkAll(delivery.delivered)
        _release(delivery)
    opened: dict[str, Directory] = {}
    for index, delivery in enumerate(batch):
        if results[index] is not None:
            with contextlib.suppress(OSError):
                _discard(delivery)
            continue
        try:
            _placeAll(delivery, opened)
        except Exception:
            results[index] = Failure()
            _release(delivery)
            with contextlib.suppress(OSError):
                _discard(delivery)
    renamed = [batch[i] for i, result in enumerate(results) if result is None]
    if not renamed or waiting():
        return results, placedResults, False
    # Nothing would share the next flush: make the names durable now.
    renamedResults: list[Failure | None] = [None] * len(renamed)
    _flush([], [], [], renamed, renamedResults, root)
    failures = iter(renamedResults)
    for index, result in enumerate(results):
        if result is None:
            failure = next(failures)
            if failure is not None:
                _unlinkAll(batch[index].delivered)
                results[index] = failure
            _release(batch[index])
    return results, placedResults, True
