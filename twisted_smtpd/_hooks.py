# -*- test-case-name: tests.test_protocol -*-
"""
Calling handler hooks: a plain value is used as it is, with no Deferred made
on the hot path; C{async def} hooks go through C{txaio.as_future}; a Deferred
is waited for.
"""

from __future__ import annotations

from collections.abc import Callable
from inspect import iscoroutine, iscoroutinefunction
from typing import Any

import txaio as _txaio_module
from twisted.internet.defer import Deferred

from twisted_smtpd.handlers._base import BaseHandler

# txaio selects its framework at run time, so its API is not typed statically.
txaio: Any = _txaio_module
txaio.use_twisted()

_ASYNC: dict[Any, bool] = {}


def _isAsync(fn: Callable[..., object]) -> bool:
    key = getattr(fn, "__func__", fn)
    known = _ASYNC.get(key)
    if known is None:
        known = iscoroutinefunction(key)
        if len(_ASYNC) < 4096:
            _ASYNC[key] = known
    return known


def callHook(fn: Callable[..., object], *args: object) -> object:
    """
    Call a hook.

    @return: Its plain result, or a L{Deferred} when it answers later (an
        C{async def} hook, a Deferred, or a coroutine returned by a plain
        function).
    @raise Exception: Whatever the hook raised synchronously.
    """
    if _isAsync(fn):
        d: Deferred[Any] = txaio.as_future(fn, *args)
        return d
    result = fn(*args)
    if iscoroutine(result):
        return Deferred.fromCoroutine(result)
    return result


#: BaseHandler's hooks that only accept: a handler that inherits them is not
#: called for them at all.
ACCEPTING_DEFAULTS = frozenset(
    {
        BaseHandler.onConnect,
        BaseHandler.onHelo,
        BaseHandler.onSecure,
        BaseHandler.onMailFrom,
        BaseHandler.onRcptTo,
    }
)
