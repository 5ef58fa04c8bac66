"""Sessions for the watchlist backtest and the model fit (``--source``):

- ``synthetic[:SEED]``: the generated multi-venue session of ``synthetic`` (``--minutes``, ``--coins``);
- ``broker[:PREFIX]``: md.book, md.mark and md.indicators read to their end from the broker (the
  stack's, or ``TAPEFLOW_BROKER``; topics ``<PREFIX>md.book`` ..., default the stack's topic prefix),
  decoded and ordered exactly as the live watchlist service merges them
  (per partition in offset order, by event time, topic, partition and offset; inputs far ahead of
  the books dropped as the service drops them), so the backtest computes what the service did;
- ``db``: the same inputs from the database the sink fills (``depth_snapshots``, ``mark_prices``,
  ``market_indicators``; TAPEFLOW_DATABASE_URL or the running stack's, read-only role) between
  ``start_ms`` and ``end_ms`` (the command's ``--from``/``--to``, default the last ``--minutes``), as
  the records the sink stored them from, ordered by event time, topic, venue and symbol (the
  order of inputs with one time does not change the state: it applies all of them before it
  evaluates that time), inputs far ahead of the books dropped as the service drops them;
- ``jsonl:FILE``: recorded md.book / md.mark / md.indicators records, one JSON object a line, either
  as ``tapeflow topics tail TOPIC --json`` prints them (``{"topic": ..., "value": {...}}``; a topic
  prefix such as ``rehearsal.md.book`` is fine) or as ``{"topic": ..., "record": {...}}``.
  Lines of other topics are skipped; the inputs are put in event-time order (stable), so the files of
  several topics can simply be concatenated.

Errors are one line naming the file and line (``WatchlistSourceError``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from backtest.watchlist.synthetic import session
from stream_apps.cross_venue.events import CrossVenueEvent, event_from_record
from stream_apps.watchlist.merge import MAX_AHEAD_MS, AheadOfBooks
from tapeflow_runtime.errors import TapeflowError

TOPICS = ("md.book", "md.mark", "md.indicators")


class WatchlistSourceError(TapeflowError):
    """A session that cannot be read (the message says which and why)."""


def _topic(name: str) -> str | None:
    return next((t for t in TOPICS if name == t or name.endswith("." + t)), None)


def read_jsonl(path: Path) -> list[CrossVenueEvent]:
    try:
        handle = path.open("rb")
    except OSError as error:
        raise WatchlistSourceError(f"{path}: cannot read: {error.strerror or error}") from None
    events: list[CrossVenueEvent] = []
    with handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                item = orjson.loads(line)
                topic = _topic(str(item["topic"]))
                record = item["value"] if "value" in item else item["record"]
                event = event_from_record(topic, record) if topic and record is not None else None
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
                raise WatchlistSourceError(f"{path}:{number}: not a topic record line ({error!s:.120})") from None
            if event is not None:
                events.append(event)
    events.sort(key=lambda e: e.time_ms)
    return events


def _in_service_order(keyed: list[tuple], max_ahead_ms: int) -> list[CrossVenueEvent]:
    """``(time, *tie-breakers, event)`` items as the service feeds them: ordered, then far-ahead inputs
    dropped (``merge.AheadOfBooks``)."""
    keyed.sort(key=lambda k: k[:-1])
    ahead = AheadOfBooks(max_ahead_ms)
    return [k[-1] for k in keyed if ahead.keep(k[0], k[-1])]


def read_broker(
    bootstrap: str, prefix: str, serde: Any, max_ahead_ms: int = MAX_AHEAD_MS, timeout_s: float = 300.0
) -> list[CrossVenueEvent]:
    """The inputs of ``prefix``'s md.book, md.mark and md.indicators in the order the watchlist service
    feeds them (``stream_apps.watchlist.service``): records it cannot decode skipped, the rest sorted by
    (event time, topic, partition, offset) and those far ahead of the books dropped
    (``merge.AheadOfBooks`` with the service's default ``max_ahead_ms``)."""
    from schemas.catalogue import ENGINE_INPUT_TIME
    from tapeflow_runtime.topic_reader import StateReadError, read_topics

    try:
        snapshots = read_topics(
            bootstrap, prefix, dict.fromkeys(TOPICS), serde, raw_topics=frozenset(TOPICS), timeout_s=timeout_s
        )
    except StateReadError as error:
        raise WatchlistSourceError(f"--source broker: {error}") from None
    keyed = []
    for topic, snapshot in snapshots.items():
        for raw in snapshot.records:
            try:
                record = serde.decode(raw.value)
                when = int(record[ENGINE_INPUT_TIME[topic]])
                event = event_from_record(topic, record)
            except Exception:  # nosec B112 # noqa: BLE001 - the service skips (and counts) what it cannot decode
                continue
            if event is not None:
                keyed.append((when, topic, raw.partition, raw.offset, event))
    return _in_service_order(keyed, max_ahead_ms)


def _broker_session(prefix: str | None) -> list[CrossVenueEvent]:
    from schemas.registry import registry_from_url
    from schemas.serde import AvroSerde
    from tapeflow_runtime.endpoints import resolve_broker
    from tapeflow_runtime.paths import StackPaths
    from tapeflow_runtime.settings import Settings

    settings = Settings()
    paths = StackPaths(settings.home)
    if prefix is None:
        prefix = settings.topic_prefix
    bootstrap = resolve_broker(settings, paths)
    events = read_broker(bootstrap, prefix, AvroSerde(registry_from_url(settings.schema_registry_url)))
    if not events:
        raise WatchlistSourceError(
            f"--source broker: no md.book, md.mark or md.indicators records under prefix {prefix!r}"
        )
    return events


_DB_QUERIES = (
    # (topic, query): each row as the record the sink stored it from (event_from_record reads those)
    (
        "md.book",
        "SELECT exchange, symbol, (extract(epoch FROM event_time) * 1000)::bigint, bid_prices, bid_qtys, "
        "ask_prices, ask_qtys FROM depth_snapshots WHERE event_time >= %(start)s AND event_time < %(end)s",
    ),
    (
        "md.indicators",
        "SELECT exchange, symbol, (extract(epoch FROM receive_time) * 1000)::bigint, kind, value, extra "
        "FROM market_indicators WHERE kind IN ('spot_perp_divergence', 'funding_rate') "
        "AND receive_time >= %(start)s AND receive_time < %(end)s",
    ),
    (
        "md.mark",
        "SELECT exchange, symbol, (extract(epoch FROM event_time) * 1000)::bigint, funding_rate, "
        "(extract(epoch FROM next_funding_time) * 1000)::bigint FROM mark_prices "
        "WHERE event_time >= %(start)s AND event_time < %(end)s",
    ),
)


def _db_record(topic: str, row: tuple) -> dict[str, Any]:
    if topic == "md.book":
        exchange, symbol, t, bp, bq, ap, aq = row
        return {
            "exchange": exchange,
            "symbol": symbol,
            "event_time": t,
            "bids": [{"price": p, "qty": q} for p, q in zip(bp, bq, strict=True)],
            "asks": [{"price": p, "qty": q} for p, q in zip(ap, aq, strict=True)],
        }
    if topic == "md.indicators":
        exchange, symbol, t, kind, value, extra = row
        return {
            "exchange": exchange,
            "symbol": symbol,
            "receive_time": t,
            "kind": kind,
            "value": value,
            "extra": extra or {},
        }
    exchange, symbol, t, rate, next_funding = row
    return {
        "exchange": exchange,
        "symbol": symbol,
        "event_time": t,
        "funding_rate": rate,
        "next_funding_time": next_funding,
    }


def read_database(conninfo: str, start_ms: int, end_ms: int, max_ahead_ms: int = MAX_AHEAD_MS) -> list[CrossVenueEvent]:
    """The watchlist's inputs stored between ``start_ms`` and ``end_ms`` (event time; receive time for
    indicators, as the service times them), in event-time order, far-ahead inputs dropped."""
    from datetime import UTC, datetime

    import psycopg

    bounds = {
        "start": datetime.fromtimestamp(start_ms / 1000, tz=UTC),
        "end": datetime.fromtimestamp(end_ms / 1000, tz=UTC),
    }
    keyed = []
    try:
        with psycopg.connect(conninfo, connect_timeout=10) as conn:
            for rank, (topic, query) in enumerate(_DB_QUERIES):
                for row in conn.execute(query, bounds):
                    event = event_from_record(topic, _db_record(topic, row))
                    if event is not None:
                        keyed.append((row[2], rank, row[0], row[1], event))
    except psycopg.Error as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise WatchlistSourceError(f"--source db: {first}") from None
    return _in_service_order(keyed, max_ahead_ms)


def _db_session(start_ms: int, end_ms: int) -> list[CrossVenueEvent]:
    from tapeflow_runtime.endpoints import resolve_database
    from tapeflow_runtime.paths import StackPaths
    from tapeflow_runtime.settings import Settings

    settings = Settings()
    endpoints = resolve_database(settings, StackPaths(settings.home))
    events = read_database(endpoints.readonly or endpoints.owner, start_ms, end_ms)
    if not events:
        raise WatchlistSourceError(
            f"--source db: no stored books, marks or funding/spot indicators from {_iso(start_ms)} to {_iso(end_ms)}"
        )
    return events


def _iso(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def load_session(
    source: str,
    minutes: float = 120.0,
    coins: tuple[str, ...] = ("BTC", "ETH"),
    venues: tuple[str, ...] = ("binance", "bybit", "okx"),
    start_ms: int | None = None,
    end_ms: int | None = None,
) -> list[CrossVenueEvent]:
    kind, sep, arg = source.partition(":")
    if kind == "broker":
        return _broker_session(arg if sep else None)
    if kind == "db" and not sep:
        if end_ms is None:
            import time

            end_ms = int(time.time() * 1000) if start_ms is None else start_ms + int(minutes * 60_000)
        if start_ms is None:
            start_ms = end_ms - int(minutes * 60_000)
        if start_ms >= end_ms:
            raise WatchlistSourceError(f"--from {_iso(start_ms)} is not before --to {_iso(end_ms)}")
        return _db_session(start_ms, end_ms)
    if kind == "synthetic":
        try:
            seed = int(arg) if arg else 1
        except ValueError:
            raise WatchlistSourceError(f"--source {source!r}: the seed must be an integer") from None
        if minutes <= 0:
            raise WatchlistSourceError("--minutes must be positive")
        return session(seed, minutes, coins, venues)
    if kind == "jsonl" and arg:
        events = read_jsonl(Path(arg))
        if not events:
            raise WatchlistSourceError(f"{arg}: no md.book, md.mark or md.indicators records")
        return events
    raise WatchlistSourceError(f"--source {source!r}: expected synthetic[:SEED], broker[:PREFIX], db or jsonl:FILE")
