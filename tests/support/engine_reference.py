"""What the engine core computes when called directly on a set of `md.*` records: the reference that the
streaming engine (any batching, any fetch interleaving, any replay speed) must reproduce.

One `Engine.process` call over everything, in event-time order, as the backtest runner drives the same
core. A streaming worker evaluates each symbol only up to its own newest input, so the reference is
cut per symbol at that time.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

from schemas.catalogue import ENGINE_INPUT_TIME
from stream_apps.core.engine import Engine, EngineParams
from stream_apps.core.strategy import StrategyConfig
from stream_apps.faust_app.session import SessionRecord, engine_inputs


def session_records(records_by_topic: dict[str, Iterable[dict]]) -> list[SessionRecord]:
    """Decoded topic records (catalogue topic -> values) as session records, each with its engine time."""
    out = []
    for topic, values in records_by_topic.items():
        field = ENGINE_INPUT_TIME[topic]
        out += [SessionRecord(topic, f"{v['exchange']}:{v['symbol']}", int(v[field]), v) for v in values]
    out.sort(key=lambda r: r.time_ms)
    return out


def direct_engine_outputs(
    records: Sequence[SessionRecord], strategies: Sequence[StrategyConfig], params: EngineParams | None = None
) -> dict[str, list[dict]]:
    out = Engine(strategies, params).process(*engine_inputs(records))
    newest: dict[str, int] = defaultdict(int)
    for r in records:
        newest[r.key] = max(newest[r.key], r.time_ms)

    def reached(record: dict, field: str) -> bool:
        return record[field] <= newest[f"{record['exchange']}:{record['symbol']}"]

    return {
        "bars.1m": [b for b in out.bars if reached(b, "close_time")],
        "features": [f for f in out.features if reached(f, "eval_time")],
        "signals": [s for s in out.signals if reached(s, "eval_time")],
    }


def canonical(outputs: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """Outputs in one order (by symbol, time, strategy, direction), so runs can be compared with ==."""
    order = {"bars.1m": "open_time", "features": "eval_time", "signals": "eval_time"}
    return {
        topic: sorted(
            values, key=lambda r: (r["symbol"], r[order[topic]], r.get("strategy", ""), r.get("direction") or "")
        )
        for topic, values in outputs.items()
    }
