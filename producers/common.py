"""Plumbing every exchange producer shares: one-at-a-time repair tasks, md.book records, replay end.

Exchange modules keep what differs (parsing, continuity, book rules); this keeps what does not, so
a fix to, say, the end-of-replay handshake lands in every producer at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Protocol

import aiohttp
import structlog

from producers.binance.book_sync import order_book_imbalance
from producers.binance.ws_stream import sleep_or_stop

log = structlog.get_logger("producer")


class RepairTasks:
    """Named background tasks (a gap fill per symbol, a snapshot per book): at most one of each at a time."""

    def __init__(self) -> None:
        self.tasks: dict[str, asyncio.Task] = {}

    def ensure(self, name: str, coro: Coroutine) -> None:
        task = self.tasks.get(name)
        if task is not None and not task.done():
            coro.close()  # already running: the running one will see the new state
            return
        self.tasks[name] = asyncio.create_task(coro, name=name)

    def busy(self) -> bool:
        return any(not t.done() for t in self.tasks.values())

    async def cancel_all(self) -> None:
        for t in self.tasks.values():
            t.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)


class TopBook(Protocol):
    symbol: str
    last_update_id: int
    last_event_time: int

    def top(self, depth: int) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]: ...


def book_snapshot_record(exchange: str, book: TopBook, depth: int, now_ms: int | None = None) -> dict:
    """An md.book record: the verified book's top `depth` levels and OBI over 10 levels."""
    bids, asks = book.top(depth)
    now = int(time.time() * 1000) if now_ms is None else now_ms
    return {"exchange": exchange, "symbol": book.symbol, "last_update_id": book.last_update_id,
            "event_time": book.last_event_time, "receive_time": now,
            "bids": [{"price": p, "qty": q} for p, q in bids], "asks": [{"price": p, "qty": q} for p, q in asks],
            "obi_10": order_book_imbalance(bids, asks, 10)}


async def watch_replay(control_url: str, stop: asyncio.Event, busy: Callable[[], bool],
                       finished: Callable[[dict], None]) -> None:
    """Fake exchange only: once its replay has finished and no repair is running, call `finished`
    (with the fake's status) and set `stop`, so a replay ends the producer cleanly."""
    url = f"{control_url.rstrip('/')}/_control/status"
    async with aiohttp.ClientSession() as session:
        while not await sleep_or_stop(stop, 0.5):
            try:
                async with session.get(url) as resp:
                    body = await resp.json()
            except (TimeoutError, aiohttp.ClientError, ValueError):
                continue
            if body.get("finished") and not busy():
                await asyncio.sleep(0.5)  # frames already sent may still be in our socket buffer
                finished(body)
                log.info("replay finished", frames=body.get("frames_sent_total", body.get("frames_sent")))
                stop.set()
                return
