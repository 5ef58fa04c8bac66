"""Waiting on a condition, the one way the tests do it: poll, never a fixed sleep.

Two forms, because the tests need two answers: `wait_until` for a test (the condition must come true,
else the test fails naming what it waited for) and `poll` for the fault harnesses shared with
`benchmarks/` (a row records what happened, also that something never did, so a timeout is a value).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any


def poll(condition: Callable[[], Any], timeout: float, interval: float = 0.1) -> Any:
    """The first truthy value of ``condition()`` within ``timeout`` s, else its last (falsy) value.
    The condition is asked once more at the deadline, so a slow last poll still counts."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def wait_until(
    condition: Callable[[], Any],
    timeout: float,
    what: str | Callable[[], str] = "the condition",
    *,
    interval: float = 0.1,
    alive: Callable[[], None] | None = None,
) -> Any:
    """Poll ``condition()`` every ``interval`` s until it returns something truthy, and return that.

    ``alive()`` runs between polls to fail at once instead of at the deadline (`services_alive`: a
    process the condition depends on died). After ``timeout`` s: AssertionError "not within T s: what";
    ``what`` may be a callable, evaluated only then, when the message needs the latest state (a log)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if alive is not None:
            alive()
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what() if callable(what) else what}")
        time.sleep(interval)


def services_alive(services: Iterable[Any]) -> Callable[[], None]:
    """For `wait_until`'s ``alive``: asserts every service (``tests.support.services.Service``: ``name``,
    ``proc``, ``tail()``) is still running, with the dead one's last log lines."""
    services = list(services)

    def check() -> None:
        for s in services:
            assert s.proc.poll() is None, f"{s.name} died\n{s.tail()}"

    return check
