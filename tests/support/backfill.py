"""Synthetic Binance aggTrades archives shared by the backfill tests (no tests in this module).

Each trade is derived from its agg id by simple integer rules, and the record the backfill must
publish is computed here from the same integers (price in cents / 100, quantity in thousandths /
1000, ...), independently of the parser, which only ever sees the CSV text.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import zipfile
from datetime import UTC, date, datetime
from pathlib import Path

from aiohttp import web

HEADER = "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker"


def day_start_ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


def _fields(agg_id: int, day: date) -> tuple[int, int, int, int, int, bool]:
    price_cents = 4_200_000 + (agg_id % 97) * 10 + agg_id % 7
    qty_milli = 1 + (agg_id % 13) * 37
    first = 5_000_000 + 3 * agg_id
    last = first + agg_id % 3
    ts = day_start_ms(day) + (agg_id % 80_000) * 1_000 + 17
    buyer_maker = agg_id % 4 == 0
    return price_cents, qty_milli, first, last, ts, buyer_maker


def csv_row(agg_id: int, day: date) -> str:
    price_cents, qty_milli, first, last, ts, buyer_maker = _fields(agg_id, day)
    return (
        f"{agg_id},{price_cents // 100}.{price_cents % 100:02d},{qty_milli // 1000}.{qty_milli % 1000:03d},"
        f"{first},{last},{ts},{'true' if buyer_maker else 'false'}"
    )


def expected_record(agg_id: int, day: date, receive_time: int, symbol: str = "BTCUSDT") -> dict:
    price_cents, qty_milli, first, last, ts, buyer_maker = _fields(agg_id, day)
    return {
        "exchange": "binance",
        "symbol": symbol,
        "agg_id": agg_id,
        "price": price_cents / 100,
        "qty": qty_milli / 1000,
        "first_trade_id": first,
        "last_trade_id": last,
        "event_time": ts,
        "trade_time": ts,
        "receive_time": receive_time,
        "taker_side": "SELL" if buyer_maker else "BUY",
    }


def stem(symbol: str, day: date) -> str:
    return f"{symbol}-aggTrades-{day.isoformat()}"


def write_zip(
    directory: Path,
    symbol: str,
    day: date,
    lines: list[str],
    *,
    compression: int = zipfile.ZIP_DEFLATED,
    checksum: str | None = "auto",
) -> Path:
    """`<stem>.zip` holding `<stem>.csv`; with `<stem>.zip.CHECKSUM` unless checksum is None."""
    path = directory / f"{stem(symbol, day)}.zip"
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        zf.writestr(f"{stem(symbol, day)}.csv", "\n".join(lines) + "\n")
    if checksum is not None:
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if checksum == "auto" else checksum
        (directory / f"{path.name}.CHECKSUM").write_text(f"{digest}  {path.name}\n")
    return path


def write_csv(directory: Path, symbol: str, day: date, lines: list[str]) -> Path:
    path = directory / f"{stem(symbol, day)}.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


class ArchiveServer:
    """data.binance.vision stand-in on 127.0.0.1 (aiohttp in a thread): serves files from a dict."""

    PREFIX = "/data/futures/um/daily/aggTrades/"

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.requests: list[str] = []
        self.failures: dict[str, int] = {}  # path -> how many more requests get `failure_status`
        self.failure_status = 503
        self._loop = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self.url = ""

    def _serve(self) -> None:
        async def handle(request: web.Request) -> web.Response:
            self.requests.append(request.path)
            if self.failures.get(request.path):
                self.failures[request.path] -= 1
                return web.Response(status=self.failure_status, text="try again")
            body = self.files.get(request.path)
            return web.Response(status=404, text="NoSuchKey") if body is None else web.Response(body=body)

        async def main() -> None:
            app = web.Application()
            app.router.add_get("/{tail:.*}", handle)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
            self._stop = asyncio.Event()
            self._ready.set()
            await self._stop.wait()
            await runner.cleanup()

        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(main())
        finally:
            self._loop.close()

    def __enter__(self) -> ArchiveServer:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    @classmethod
    def path(cls, name: str) -> str:
        return f"{cls.PREFIX}{name.split('-', 1)[0]}/{name}"
