"""Backtest input sources, chosen by ``--source``:

- ``synthetic[:SEED]``: a generated session (``synthetic``), offline;
- ``recording:DIR``: a websocket recording in the fake exchange's format (``recording``);
- ``vision[:DIR]``: Binance Vision archives, downloaded with checksums into a cache or read from DIR
  (``vision``);
- ``db``: the tables the sinks fill (``database``);
- ``topics``: ``md.*`` by timestamp range from the broker (``topics``).

Every source delivers ``backtest.inputs.MarketSlice``s of producer-shaped records; what it cannot
deliver (missing days, bad rows, inputs without public history) is listed in its ``report``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from backtest.inputs import DEFAULT_SLICE_MS, Source

SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,20}(USDT|USDC|BUSD)$")


class SourceError(ValueError):
    """A source that cannot be used (bad spec, unknown symbol, unreachable service); one-line message."""


def check_symbols(symbols: list[str]) -> list[str]:
    out = []
    for s in symbols:
        up = s.strip().upper()
        if not SYMBOL_RE.match(up):
            raise SourceError(f"unknown symbol {s!r}: expected a Binance USD-M symbol such as BTCUSDT")
        if up not in out:
            out.append(up)
    if not out:
        raise SourceError("at least one symbol is required")
    return out


def open_source(spec: str, symbols: list[str] | None, from_ms: int | None, to_ms: int | None, **options: Any) -> Source:
    """The source named by ``spec`` for ``symbols`` over ``[from_ms, to_ms)`` (a recording may leave
    symbols and range unset: all of it).

    ``options``: ``slice_ms``; ``trades_per_s`` (synthetic); ``cache_dir``, ``vision_url``, ``column_cache`` (vision); ``database_url`` (db);
    ``bootstrap``, ``topic_prefix``, ``registry_url`` (topics).
    """
    kind, _, arg = spec.partition(":")
    slice_ms = options.get("slice_ms", DEFAULT_SLICE_MS)
    if from_ms is not None and to_ms is not None and to_ms <= from_ms:
        raise SourceError("--to must be after --from")
    if kind == "recording":
        from backtest.sources.recording import RecordingSource

        if not arg:
            raise SourceError("--source recording:DIR needs the recording directory")
        return RecordingSource(
            Path(arg), check_symbols(symbols) if symbols else None, from_ms, to_ms, slice_ms=slice_ms
        )
    if from_ms is None or to_ms is None:
        raise SourceError("--from and --to are required (or --demo for an offline example)")
    symbols = check_symbols(symbols or [])
    if kind == "synthetic":
        from backtest.sources.synthetic import SyntheticSource

        try:
            seed = int(arg) if arg else 0
        except ValueError:
            raise SourceError(f"--source synthetic:SEED needs an integer seed, got {arg!r}") from None
        return SyntheticSource(
            symbols, from_ms, to_ms, seed, trades_per_s=options.get("trades_per_s"), slice_ms=slice_ms
        )
    if kind == "vision":
        from backtest.sources.column_cache import ColumnCache
        from backtest.sources.vision import VisionSource

        return VisionSource(
            symbols,
            from_ms,
            to_ms,
            directory=Path(arg) if arg else None,
            cache_dir=options.get("cache_dir"),
            base_url=options.get("vision_url"),
            slice_ms=slice_ms,
            column_cache=ColumnCache(options["column_cache"]) if options.get("column_cache") else None,
        )
    if kind == "db":
        from backtest.sources.database import DatabaseSource

        if not options.get("database_url"):
            raise SourceError("--source db needs a database (TAPEFLOW_DATABASE_URL, or a running stack)")
        return DatabaseSource(options["database_url"], symbols, from_ms, to_ms, slice_ms=slice_ms)
    if kind == "topics":
        from backtest.sources.topics import TopicSource

        if not options.get("bootstrap"):
            raise SourceError("--source topics needs a broker (TAPEFLOW_BROKER, or a running stack)")
        return TopicSource(
            options["bootstrap"],
            symbols,
            from_ms,
            to_ms,
            topic_prefix=options.get("topic_prefix", ""),
            registry_url=options.get("registry_url"),
            slice_ms=slice_ms,
        )
    raise SourceError(f"unknown source {spec!r}: use synthetic[:SEED], recording:DIR, vision[:DIR], db or topics")
