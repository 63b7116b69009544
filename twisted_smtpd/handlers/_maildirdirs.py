# -*- test-case-name: tests.test_maildir -*-
"""
The directories a Maildir commit cycle links messages into
(L{twisted_smtpd.handlers._maildirdisk}), held open from the link of a
message to the flush that makes its name durable, and the links and renames
into them; used by the commit cycles, in a pool thread.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections.abc import Callable, Iterator

from twisted_smtpd.handlers._maildirbelow import openBelow


class Directory:
    """
    A C{new/} directory that messages are linked into, or a directory
    whose entries changed, open from before the first link into it until
    every message in it is answered: each link, fsync and removal reaches
    this very directory, even if it is renamed or replaced meanwhile (a
    mailbox moved away by its owner), and the message is then delivered
    where the directory went.

    Beyond L{HELD_LIMIT} directories held open at once by the process, or
    where no descriptor is left (C{EMFILE}, C{ENFILE}), a directory is
    reached by its path, so that with many recipients' Maildirs the
    sessions keep the descriptors they need.  Its identity (device and
    inode) is then noted when it is first reached, and a directory found at
    its path with another one, or none, when its entries are to be made
    durable fails its messages (451): they are never answered 250 for the
    fsync of a directory that does not hold them.  A Maildir moved away in
    that window thus keeps a copy its client sends again.

    A directory below the root of per-recipient Maildirs (C{below}) is
    reached from that root without following a symbolic link
    (L{openBelow}), each time it is reached by its path too: links and
    fsyncs then go through a descriptor opened for them.

    @ivar path: The path it was opened by.
    @ivar below: The root it is reached from without following links, or
        L{None} for a directory reached by its path as it is.
    @ivar fd: Its descriptor, or L{None}.
    @ivar users: How many messages still need it open.
    """

    __slots__ = ("_device", "_identity", "below", "fd", "path", "users")

    #: The most directories held open at once, by every handler together.
    HELD_LIMIT = 256
    _held = 0
    _heldLock = threading.Lock()

    def __init__(self, path: str, below: str | None = None, fd: int | None = None) -> None:
        """
        @param fd: A descriptor of the directory, already opened as C{below}
            asks, that it takes over (held, or closed once its identity is
            noted).
        """
        self.path = path
        self.below = below
        self.users = 0
        self._device: int | None = None
        self.fd: int | None = None
        self._identity: tuple[int, int] | None = None
        with Directory._heldLock:
            held = Directory._held < self.HELD_LIMIT
            if held:
                Directory._held += 1
        if held:
            try:
                if fd is not None:
                    self.fd = fd
                elif below is None:
                    self.fd = openDirectory(path)
                else:
                    self.fd = openDirectory(path, below)
                return
            except BaseException as e:
                with Directory._heldLock:
                    Directory._held -= 1
                if not isinstance(e, OSError) or e.errno not in (errno.EMFILE, errno.ENFILE):
                    raise
        if fd is None and below is not None:
            fd = openBelow(path, below)
        if fd is None:
            status = os.stat(path)
        else:
            try:
                status = os.fstat(fd)
            finally:
                os.close(fd)
        self._identity = (status.st_dev, status.st_ino)

    def openByPath(self) -> int:
        """
        A new descriptor of the directory reached by its path, checked to
        be the one first reached there.

        @raise OSError: C{ENOENT} if another directory, or none, is there.
        """
        # Not through openDirectory, which opens the directories held.
        if self.below is None:
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        else:
            fd = openBelow(self.path, self.below)
        try:
            if self._identity is not None:
                status = os.fstat(fd)
                if (status.st_dev, status.st_ino) != self._identity:
                    raise FileNotFoundError(
                        errno.ENOENT, "directory moved or replaced since the link", self.path
                    )
        except BaseException:
            os.close(fd)
            raise
        return fd

    def device(self) -> int:
        """
        Its file system (C{st_dev}), found once; -1 when it cannot be told
        (then its entries are fsynced on their own).
        """
        if self._device is None:
            try:
                if self.fd is None:
                    os.close(self.openByPath())
                    assert self._identity is not None
                    self._device = self._identity[0]
                else:
                    self._device = os.fstat(self.fd).st_dev
            except OSError:
                self._device = -1
        return self._device

    def removed(self) -> bool:
        """
        Whether it was removed since it was opened (its link count is 0):
        the messages linked into it went with it.
        """
        if self.fd is None:
            # By its path: a missing directory fails its own fsync.
            return False
        try:
            return os.fstat(self.fd).st_nlink == 0
        except OSError:
            return False

    def unlink(self, name: str) -> None:
        """
        Remove the entry C{name}.
        """
        if self.fd is not None:
            os.unlink(name, dir_fd=self.fd)
        elif self.below is None:
            os.unlink(os.path.join(self.path, name))
        else:
            with self.opened() as fd:
                os.unlink(name, dir_fd=fd)

    @contextlib.contextmanager
    def opened(self) -> Iterator[int]:
        """
        Its descriptor: the one held, else one opened by its path
        (L{openByPath}) and closed on leaving.
        """
        if self.fd is not None:
            yield self.fd
            return
        fd = self.openByPath()
        try:
            yield fd
        finally:
            os.close(fd)

    def release(self) -> None:
        """
        One message needs it no more: close it after the last.
        """
        self.users -= 1
        if self.users <= 0 and self.fd is not None:
            fd, self.fd = self.fd, None
            with Directory._heldLock:
                Directory._held -= 1
            with contextlib.suppress(OSError):
                os.close(fd)


def openDirectory(path: str, below: str | None = None) -> int:
    """
    A descriptor of the directory C{path} to hold: reached from C{below}
    without following a link (L{openBelow}) when given.
    """
    if below is not None:
        return openBelow(path, below)
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def linkUnnamed(fd: int, directory: Directory, name: str) -> None:
    """
    Give the unnamed file open as C{fd} (C{O_TMPFILE}) the name C{name} in
    C{directory}: C{linkat(2)} of its C{/proc/self/fd} entry, followed
    (C{os.link} calls C{linkat} with C{AT_SYMLINK_FOLLOW} only when given a
    directory descriptor, which an absolute path then ignores).
    """
    if directory.fd is None:
        name = os.path.join(directory.path, name)
    os.link(
        f"/proc/self/fd/{fd}",
        name,
        src_dir_fd=fd,
        dst_dir_fd=directory.fd,
        follow_symlinks=True,
    )


def _into(call: Callable[..., None], source: str, directory: Directory, name: str) -> None:
    # os.rename or os.link of source to name in directory, through its
    # descriptor when it has one (or when it is below a root).
    if directory.fd is None and directory.below is None:
        call(source, os.path.join(directory.path, name))
        return
    with directory.opened() as fd:
        call(source, name, dst_dir_fd=fd)


def renameInto(source: str, directory: Directory, name: str) -> None:
    """
    Rename the file at C{source} to C{name} in C{directory}.
    """
    _into(os.rename, source, directory, name)


def _linkNoFollow(source: str, destination: str, **kwargs: int | None) -> None:
    os.link(source, destination, follow_symlinks=False, **kwargs)


def linkInto(
    source: str, directory: Directory, name: str, sourceDirectory: int | None = None
) -> None:
    """
    Link the file at C{source} as C{name} in C{directory}; a symbolic link
    at C{source} is linked itself, never the file it names.

    @param sourceDirectory: The descriptor of the directory C{source} is
        named in, if any (then C{source} is a name in it).
    """
    if sourceDirectory is None:
        _into(_linkNoFollow, source, directory, name)
        return
    with directory.opened() as fd:
        _linkNoFollow(source, name, src_dir_fd=sourceDirectory, dst_dir_fd=fd)


def renameFrom(parent: int, source: str, directory: Directory, name: str) -> None:
    """
    Rename C{source}, in the directory open as C{parent}, to C{name} in
    C{directory} (below a root: reached through a descriptor).
    """
    with directory.opened() as fd:
        os.rename(source, name, src_dir_fd=parent, dst_dir_fd=fd)
