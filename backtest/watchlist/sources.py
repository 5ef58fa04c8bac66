"""Sessions for the watchlist backtest and the model fit (``--source``):

- ``synthetic[:SEED]``: the generated multi-venue session of ``synthetic`` (``--minutes``, ``--coins``);
- ``jsonl:FILE``: recorded md.book / md.mark / md.indicators records, one JSON object a line, either
  as ``tapeflow topics tail TOPIC --json`` prints them (``{"topic": ..., "value": {...}}``; a topic
  prefix or epoch name such as ``e1.md.book`` is fine) or as ``{"topic": ..., "record": {...}}``.
  Lines of other topics are skipped; the inputs are put in event-time order (stable), so the files of
  several topics can simply be concatenated.

Errors are one line naming the file and line (``WatchlistSourceError``).
"""

from __future__ import annotations

from pathlib import Path

import orjson

from backtest.watchlist.synthetic import session
from stream_apps.cross_venue.events import CrossVenueEvent, event_from_record
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


def load_session(source: str, minutes: float = 120.0, coins: tuple[str, ...] = ("BTC", "ETH"),
                 venues: tuple[str, ...] = ("binance", "bybit", "okx")) -> list[CrossVenueEvent]:
    kind, _, arg = source.partition(":")
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
    raise WatchlistSourceError(f"--source {source!r}: expected synthetic[:SEED] or jsonl:FILE")
