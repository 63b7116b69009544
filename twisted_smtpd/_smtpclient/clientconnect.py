# -*- test-case-name: tests.test_client -*-
"""
Connecting to a next hop within a deadline.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred

from twisted_smtpd._smtpclient.clientwire import DeliveryError


async def connectWithin(endpoint: Any, factory: Any, clock: Any, timeout: float) -> Any:
    """
    Connect C{factory}'s protocol through C{endpoint}, giving up after
    C{timeout} seconds.

    @return: The connected protocol.
    @raise DeliveryError: 451 4.4.1 when the connection failed or took too
        long.
    """
    connecting: Deferred[Any] = endpoint.connect(factory)
    timedOut = []

    def timeOut() -> None:
        timedOut.append(True)
        connecting.cancel()

    timer = clock.callLater(timeout, timeOut)
    try:
        return await connecting
    except CancelledError:
        if not timedOut:
            raise
        raise DeliveryError(
            451, "Error: timeout connecting to the server", "4.4.1", stage="connect"
        ) from None
    except Exception as e:
        text = f"Error: cannot connect to the server: {e}"
        raise DeliveryError(451, text, "4.4.1", stage="connect") from e
    finally:
        if timer.active():
            timer.cancel()
