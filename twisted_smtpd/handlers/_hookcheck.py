# -*- test-case-name: tests.test_handlercontract -*-
"""
Checks of a handler's hooks made once, when the server or a chain is built.
"""

from __future__ import annotations

from inspect import getattr_static, isasyncgenfunction, isfunction, isgeneratorfunction

#: The hooks of L{ISMTPHandler <twisted_smtpd.interfaces.ISMTPHandler>}, in
#: the order a session calls them.
HOOKS = (
    "onConnect",
    "onHelo",
    "onSecure",
    "onAuth",
    "onMailFrom",
    "onRcptTo",
    "onData",
    "onClose",
)


def generatorHookProblem(name: str, hook: object) -> str | None:
    """
    Whether hook C{name} is written with C{yield} but left undecorated: a
    generator function, which runs none of its body when called.  Its
    answer (a generator) would accept whatever the hook meant to refuse,
    and a message C{onData} never stored would be answered 250.

    @return: What to say of it, or C{None} when C{hook} is not one.
    """
    if isgeneratorfunction(hook):
        return (
            f"{name} is a generator function, whose body a call never runs:"
            " decorate it with twisted.internet.defer.inlineCallbacks, or make it"
            " an async def without yield"
        )
    if isasyncgenfunction(hook):
        return (
            f"{name} is an asynchronous generator function, whose body a call never"
            " runs: make it an async def without yield"
        )
    return None


def presentHooks(handler: object, what: str) -> list[str]:
    """
    Check the hooks of C{handler} when the server or a chain is built, not
    at the first connection, and name those it provides.

    A handler may provide only some hooks; the others accept, as
    L{BaseHandler <twisted_smtpd.handlers.BaseHandler>}'s do.  An attribute
    named like a hook that is not one (C{onRcpt}: never called, so what it
    would refuse is accepted), a hook that is not callable, an object with
    no hook at all, a class given instead of its instance (one whose hooks
    are methods, not static or class methods), or a hook written with
    C{yield} but not decorated (L{generatorHookProblem}) is refused.

    @param what: What C{handler} is, to start the error's text with
        (C{"handler"}, C{"chain member"}).
    @return: The names of the hooks C{handler} provides, in L{HOOKS} order.
    @raise TypeError: Naming the handler's class and the attribute.
    """
    if isinstance(handler, type) and any(
        isfunction(getattr_static(handler, n, None)) for n in HOOKS
    ):
        # Its hooks would be called unbound, every session's first failing
        # with a TypeError, logged, and the client refused with 451.
        name = handler.__name__
        raise TypeError(f"{what} {name} is a class, not a handler: pass an instance, {name}()")
    cls = type(handler).__name__
    for name in dir(handler):
        if name.startswith("on") and name[2:3].isupper() and name not in HOOKS:
            # Only for a misspelt hook: difflib costs memory for good.
            from difflib import get_close_matches

            close = get_close_matches(name, HOOKS, 1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise TypeError(
                f"{what} {cls}: {name} is not a hook of ISMTPHandler{hint}"
                f" (hooks: {', '.join(HOOKS)})"
            )
    present = []
    for name in HOOKS:
        value = getattr(handler, name, None)
        if value is None:
            continue
        if not callable(value):
            raise TypeError(f"{what} {cls}: {name} is not callable ({type(value).__name__})")
        problem = generatorHookProblem(name, value)
        if problem is not None:
            raise TypeError(f"{what} {cls}: {problem}")
        present.append(name)
    if not present:
        raise TypeError(f"{what} {cls} has none of the hooks of ISMTPHandler ({', '.join(HOOKS)})")
    return present
