# -*- test-case-name: tests.test_handlercontract -*-
"""
Checks of a handler's hooks made once, when the server or a chain is built.
"""

from __future__ import annotations

from inspect import isasyncgenfunction, isgeneratorfunction

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
