"""The routed entry orders a backtest keeps (``RunResult.routed_orders``, written to ``routed_orders.json``
beside ``result.json``: ``backtest.result_io``), so that a
backtest has the routing TCA a paper, testnet or live session has (``review.routing_tca``): its report's
routing section and ``tapeflow execution retune --backtest``.

What is kept: per routed entry order, the fields of its PENDING_NEW record the TCA reads (the order as
sent, its reason ``route <bucket> n=<notional> maker|taker k/n ...``, its mid at send and revision),
and the fills of those orders; the TCA derives the rest (bucket, notional, maker/taker from the reason;
filled quantity, average fill price and fill times from the fills). Nothing else: the other orders,
exits included, are what a long run must not keep (``BacktestSink``). Stored as columns' names and
rows of values (a 30-h research run: a few hundred rows, a few tens of KB; benchmarks/bench_routed_orders.py).

Mid at send: the backtest's executors stamp no mid on their order records (``backtest.accounts``: the
sparse feed's last trade at a clock tick that sends an exit depends on the slicing), so the sink
stamps the routed entry orders' own with the executor's ``mid_now`` when they are sent: at a signal
or at a tick where an entry is in flight, points where the sparse feed has passed every held and
skipped record (``backtest.runner``), so the mid is the dense feed's (tests/backtest/test_routing_backtest.py
compares the two feeds' kept orders).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from backtest.model import RunResult
from review.routing_tca import RoutedOrder, routed_from_records, routing_tca
from review.tca import Fill
from stream_apps.core.routing_table import RoutingTable

ORDER_COLUMNS = (
    "client_order_id",
    "signal_id",
    "side",
    "qty",
    "event_time",
    "mid_at_send",
    "mid_source",
    "reason",
    "config_rev",
)
FILL_COLUMNS = ("client_order_id", "price", "qty", "fee", "liquidity", "event_time")
_STATIC = {"leg": "entry", "state": "PENDING_NEW"}  # every kept order row is one


def is_routed_entry(record: dict[str, Any]) -> bool:
    """A routed entry order's PENDING_NEW record (the order as sent)."""
    return (
        record["state"] == "PENDING_NEW"
        and record["leg"] == "entry"
        and (record.get("reason") or "").startswith("route ")
    )


def order_row(record: dict[str, Any], mid: tuple[float, str] | None) -> list[Any]:
    return [
        record["client_order_id"],
        record.get("signal_id"),
        record["side"],
        record["qty"],
        record["event_time"],
        mid[0] if mid else None,
        mid[1] if mid else None,
        record.get("reason"),
        record.get("config_rev"),
    ]


def collect(orders: Iterable[list[Any]], fills: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The result's ``routed_orders``: the kept order rows (in emission order) and their fills' rows;
    empty when the run routed no entry (a run with taker or maker-first entries keeps nothing)."""
    rows = list(orders)
    if not rows:
        return {}
    ids = {r[0] for r in rows}
    fill_rows = [[f[c] for c in FILL_COLUMNS] for f in fills if f["client_order_id"] in ids]
    return {
        "order_columns": list(ORDER_COLUMNS),
        "orders": rows,
        "fill_columns": list(FILL_COLUMNS),
        "fills": fill_rows,
    }


def records(kept: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The kept rows as the executor's order and fill records (the fields the TCA reads)."""
    if not kept:
        return [], []
    orders = [dict(zip(kept["order_columns"], row, strict=True)) | _STATIC for row in kept["orders"]]
    fills = [dict(zip(kept["fill_columns"], row, strict=True)) for row in kept["fills"]]
    return orders, fills


def routed(kept: dict[str, Any]) -> tuple[list[RoutedOrder], list[Fill]]:
    """The TCA's rows of a run's kept orders (``review.routing_tca.routed_from_records``)."""
    return routed_from_records(*records(kept))


def strategy_table(result: RunResult, name: str) -> RoutingTable:
    """The routing table the run worked ``name``'s entries with: its strategy's routing section, else the
    executor config's (as the runner registers them)."""
    [info] = [s for s in result.strategies if s.name == name]
    own = info.config.get("routing")
    if own is not None:
        return RoutingTable.model_validate(own)
    return RoutingTable.model_validate(result.params.get("executor", {}).get("routing") or {})


def of_strategy(orders: list[RoutedOrder], name: str) -> list[RoutedOrder]:
    """The orders of ``name``'s signals (a signal id starts with its strategy's name, as load_routed reads it)."""
    return [o for o in orders if o.signal_id.startswith(name + ":")]


def tca_section(result: RunResult) -> list[dict[str, Any]]:
    """The report's routing TCA (``backtest.report.document``): per strategy with routed entries, per
    bucket of its table over the whole run, the statistics ``tapeflow execution retune`` reports."""
    orders, fills = routed(result.routed_orders)
    out = []
    for s in result.strategies:
        own = of_strategy(orders, s.name)
        if not own:
            continue
        tca = routing_tca(strategy_table(result, s.name), own, fills)
        rows = [
            {
                "bucket": t.bucket,
                "entries": t.entries,
                "maker_orders": t.maker_orders,
                "taker_orders": t.taker_orders,
                "maker_fill_ratio": t.maker_fill_ratio,
                "maker_share": t.maker_share,
                "maker_slip_bps": t.maker_slip_bps,
                "taker_slip_bps": t.taker_slip_bps,
                "maker_fill_p50_ms": t.maker_fill_p50_ms,
                "maker_fill_p90_ms": t.maker_fill_p90_ms,
            }
            for t in tca.totals
        ]
        out.append({"strategy": s.name, "orders": len(tca.stats), "buckets": rows})
    return out
