# -*- test-case-name: tests.test_passwordfile -*-
"""
The checker of C{--auth file:PATH}: Twisted's L{FilePasswordDB}, which
reads its file again at each login (a password changed is in force at
once), with the file opened as the server's other files are at start.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from twisted.cred.checkers import FilePasswordDB

from twisted_smtpd._core import replies as catalogue
from twisted_smtpd._core.errors import SMTPError
from twisted_smtpd._core.files import openRegular

__all__ = ["PasswordFile"]


class PasswordFile(FilePasswordDB):
    """
    A L{FilePasswordDB} whose file, when a login cannot read it (removed,
    replaced by a directory or a named pipe, no longer readable), fails
    that login with C{454 4.7.0 Temporary authentication failure} (RFC
    4954 section 6, as Postfix answers when its SASL database cannot be
    read) and one error line naming the file, instead of 535: the client's
    credentials were not judged, and it should try again later rather
    than take its password for wrong.  A named pipe put in its place is
    refused without waiting on it (L{openRegular}), so that it cannot
    block the server.
    """

    def _loadCredentials(self) -> Iterable[tuple[bytes, bytes]]:
        """
        The file's users and passwords, once it is known to be a regular
        file that can be opened.

        @raise SMTPError: 454 4.7.0, when it cannot be.
        """
        try:
            os.close(openRegular(self.filename))
        except (OSError, ValueError) as e:
            why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            self._log.error(
                "--auth file: cannot read {path!r}: {why}; AUTH answered 454 until it can",
                path=self.filename,
                why=why,
            )
            reply = catalogue.AUTH_TEMPORARY_FAILURE
            raise SMTPError(reply.code, "\n".join(reply.lines), reply.enhanced) from None
        loaded: Iterable[tuple[bytes, bytes]] = super()._loadCredentials()  # type: ignore[no-untyped-call]
        return loaded
