# -*- test-case-name: tests.test_auth -*-
"""
Which AUTH mechanisms something can decide (L{decidableMechanisms}): the
handler's own C{onAuth} (L{ownsOnAuth}) or the checkers of a portal.

Apart from L{twisted_smtpd._serving.cred}, which needs C{twisted.cred}: a
server without checkers (no C{--auth}, no portal) never loads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from twisted_smtpd.handlers._base import BaseHandler

if TYPE_CHECKING:
    from twisted.cred.portal import Portal


def ownsOnAuth(handler: object) -> bool:
    """
    Whether C{handler} decides AUTH itself rather than inheriting the
    refusing default of L{BaseHandler}.
    """
    method = getattr(handler, "onAuth", None)
    return method is not None and getattr(method, "__func__", method) is not BaseHandler.onAuth


def decidableMechanisms(
    methods: Sequence[str], portal: Portal | None, onAuth: bool
) -> tuple[str, ...]:
    """
    The mechanisms of C{methods} something can decide, as
    C{SMTPServerFactory.authenticator} picks it: the portal those it has a
    checker for (L{portalDecides
    <twisted_smtpd._serving.cred.portalDecides>}), the handler's own
    C{onAuth} (C{onAuth} true) XOAUTH2, or all of them without a portal.
    """
    if portal is None:
        return tuple(methods) if onAuth else ()
    # A portal was made, so twisted.cred is loaded already.
    from twisted_smtpd._serving.cred import portalDecides

    return tuple(m for m in methods if (onAuth and m == "XOAUTH2") or portalDecides(portal, m))
