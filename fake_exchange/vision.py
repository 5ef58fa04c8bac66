"""Binance Vision's daily aggTrades archives, served from the session: what a warm start downloads.

``GET /data/futures/um/daily/aggTrades/<SYMBOL>/<SYMBOL>-aggTrades-<YYYY-MM-DD>.zip`` (and ``.zip.CHECKSUM``,
``sha256sum`` format) like data.binance.vision: one zip per UTC day holding
``<SYMBOL>-aggTrades-<day>.csv`` with the header line
``agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker``, every
aggTrade of that day in agg-id order. As on the real site a day is published only once it is over
(by the fake's "now": the replay position's time with ``rest_clock="recording"``), and a day without
trades is a 404. Archives are built on first request and cached.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import re
import zipfile
from datetime import UTC, date, datetime

from aiohttp import web

from .rest_api import STATE_KEY

VISION_PATH = "/data/futures/um/daily/aggTrades"
DAY_MS = 86_400_000
_NAME = re.compile(r"^(?P<symbol>[A-Z0-9]+)-aggTrades-(?P<day>\d{4}-\d{2}-\d{2})\.zip(?P<checksum>\.CHECKSUM)?$")
_CACHE = web.AppKey("fake_exchange_vision_cache", dict)


def day_start_ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


def archive_bytes(trades: list, name: str) -> bytes:
    """A zip holding ``name`` (the CSV) with the given REST-shaped aggTrades (keys a, p, q, f, l, T, m)."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(
        ["agg_trade_id", "price", "quantity", "first_trade_id", "last_trade_id", "transact_time", "is_buyer_maker"]
    )
    for t in trades:
        writer.writerow([t["a"], t["p"], t["q"], t["f"], t["l"], t["T"], "true" if t["m"] else "false"])
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, text.getvalue())
    return out.getvalue()


async def vision_file(request: web.Request) -> web.Response:
    match = _NAME.match(request.match_info["name"])
    state = request.app[STATE_KEY]
    if match is None or match["symbol"] != request.match_info["symbol"] or match["symbol"] not in state.symbols:
        raise web.HTTPNotFound()
    day = date.fromisoformat(match["day"])
    start = day_start_ms(day)
    if start + DAY_MS > state.now_ms():  # published only once the day is over
        raise web.HTTPNotFound()
    zip_name = f"{match['symbol']}-aggTrades-{match['day']}.zip"
    cache = request.app[_CACHE]
    if zip_name not in cache and state.history is not None:  # the real profile's days (built off the loop)
        cache[zip_name] = await asyncio.to_thread(state.history.day_zip, match["symbol"], day)
    if zip_name not in cache:
        trades = [t.body for t in state.agg_trades.all(match["symbol"]) if start <= t.time < start + DAY_MS]
        cache[zip_name] = archive_bytes(trades, zip_name.removesuffix(".zip") + ".csv") if trades else None
    body = cache[zip_name]
    if delay := state.faults.settings.vision_delay_ms:  # a slow download link (fault switch)
        await asyncio.sleep(delay / 1000)
    if body is None:
        raise web.HTTPNotFound()
    if match["checksum"]:
        return web.Response(text=f"{hashlib.sha256(body).hexdigest()}  {zip_name}\n", content_type="text/plain")
    return web.Response(body=body, content_type="application/zip")


def add_vision_routes(app: web.Application) -> None:
    app[_CACHE] = {}
    app.router.add_get(VISION_PATH + "/{symbol}/{name}", vision_file)
