# -*- test-case-name: tests.test_maildir -*-
"""
What the handlers that write to local disk (Maildir, mbox, pipe's spool)
answer and log when the disk fails them.
"""

from __future__ import annotations

import errno
from typing import Any

from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_smtpd._core.errors import SMTPError

#: The errors of a full disk or quota.
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


def diskError(error: BaseException | None, mailbox: bool = False) -> SMTPError:
    """
    The reply for a local disk failure: 452 when the disk or quota is full,
    451 otherwise (RFC 3463 X.3.1 and X.3.0); and 552 for a file grown
    past the size the system lets this process write (C{EFBIG}: the
    process's file size limit, or the file system's), which sending the
    message again cannot mend: C{5.3.4} (message too big for the system)
    for the message's own file, as Postfix's C{smtpd} answers for its queue
    file; C{5.2.2} (mailbox full) when C{mailbox} is the file that grew (an
    mbox), as Postfix's C{local} answers.
    """
    if isinstance(error, OSError) and error.errno in NO_SPACE:
        return SMTPError(452, "Error: insufficient system storage", "4.3.1")
    if isinstance(error, OSError) and error.errno == errno.EFBIG:
        if mailbox:
            return SMTPError(552, "Error: mailbox full", "5.2.2")
        return SMTPError(552, "Error: message file too big", "5.3.4")
    return SMTPError(451, "Error: local error in processing", "4.3.0")


def describe(error: OSError) -> str:
    """
    The system's text for C{error} and its symbolic name, as in
    C{"No space left on device (ENOSPC)"}; the file name an C{OSError} may
    carry is left out (the log line names the file itself).
    """
    code = error.errno
    if code is None:
        return str(error.args[0] if error.args else type(error).__name__)
    text = error.strerror or "error"
    return f"{text} ({errno.errorcode.get(code, code)})"


def logDiskFailure(log: Logger, failure: Failure, format: str, **fields: Any) -> None:
    """
    Log a failed disk operation: one error line, C{format} followed by
    C{": {error}"} (L{describe}), when the system refused it (C{OSError}: a
    full disk, a missing or unwritable directory, an I/O error), which is
    the operator's to mend and needs no traceback; anything else, a defect,
    with its traceback.

    @param format: The line's L{twisted.logger} format, naming the file.
    @param fields: The format's fields.
    """
    error = failure.value
    if isinstance(error, OSError):
        log.error(format + ": {error}", error=describe(error), errno=error.errno, **fields)
    else:
        log.failure(format, failure, **fields)
