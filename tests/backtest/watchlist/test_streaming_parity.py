"""The watchlist backtest equals the live watchlist service on the same recorded multi-venue session.

A generated 12-minute session of BTC and ETH on binance, bybit and okx (books, funding) is published
to md.book and md.mark through the real broker. The watchlist service trades a watchlist strategy on
it (``traders``; and the same strategy with legs that take 300 ms to their venues, filling on the book
they meet: ``execution.leg_fills``), stopped halfway and restarted from its checkpoint; what it published to
xv.signals, xv.orders and xv.pairs (re-published records identical) is what the same trader computes
from those topics read back (``--source broker``: ``read_broker``), and what ``tapeflow watchlist
backtest --source broker:PREFIX`` reports; the sink stores every record once, and the backtest over
the database it filled (``--source db``) reads the same inputs and reports the same result."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import orjson
import psycopg
import pytest
from typer.testing import CliRunner

from backtest.watchlist.sources import read_broker, read_database
from backtest.watchlist.synthetic import session
from execution.watchlist_trader import WatchlistTrader
from sinks.consumer import SinkConfig, TopicSink
from sinks.migrate import migrate
from stream_apps.cross_venue.events import BookEvent, FundingEvent
from stream_apps.cross_venue.state import CrossVenueParams
from stream_apps.watchlist.service import WatchlistOptions
from stream_apps.watchlist.strategy import parse_watchlist_strategy
from tapeflow_runtime.kafka_client import ensure_topics
from tapeflow_runtime.settings import Settings
from tests.support.cross_venue import book, mark, running_watchlist
from tests.support.execution import SERDE
from tests.support.services import database_url

pytestmark = pytest.mark.integration

STRATEGY = {
    "kind": "watchlist",
    "name": "xv_stream",
    "version": "1",
    "notional_usd": 10_000,
    "cooldown": "2m",
    "triggers": {"min_net_spread_bp": 2, "min_z": 1.5, "min_window_samples": 12},
    "exits": {"exit_spread_bp": -2},
}
XV = parse_watchlist_strategy(STRATEGY)
#: the same strategy with legs 300 ms from their venues (execution.leg_fills), traded beside it
XV_LEGS = parse_watchlist_strategy(STRATEGY | {"name": "xv_stream_legs", "legs": {"default_latency_ms": 300}})
EVENTS = session(11, 12, coins=("BTC", "ETH"), jump_per_hour=12.0)
OUTPUTS = ("xv.signals", "xv.orders", "xv.funding", "xv.pairs")
#: what identifies one record of each output (a re-published record has the same key and values)
KEYS: dict[str, Callable[[dict], tuple]] = {
    "xv.signals": lambda r: (r["signal_id"],),
    "xv.orders": lambda r: (r["client_order_id"], r["time_ms"]),
    "xv.funding": lambda r: (r["pair_id"], r["leg"], r["funding_time_ms"]),
    "xv.pairs": lambda r: (r["pair_id"], r["seq"]),
}
TIMES: dict[str, Callable[[dict], int]] = {
    "xv.signals": lambda r: r["eval_time"],
    "xv.orders": lambda r: r["time_ms"],
    "xv.funding": lambda r: r["funding_time_ms"],
    "xv.pairs": lambda r: r["event_time"],
}


def _records(events):
    out = []
    for e in events:
        key = f"{e.exchange}:{e.symbol}"
        if isinstance(e, BookEvent):
            out.append(("md.book", key, book(e.exchange, e.symbol, e.time_ms, list(e.bids), list(e.asks))))
        elif isinstance(e, FundingEvent):
            out.append(("md.mark", key, mark(e.exchange, e.symbol, e.time_ms, e.funding_rate, e.next_funding_time_ms)))
    return out


def _produce(bootstrap: str, prefix: str, items) -> None:
    from confluent_kafka import Producer

    from tapeflow_runtime.kafka_client import producer_config

    producer = Producer(producer_config(bootstrap))
    for topic, key, record in items:
        producer.produce(prefix + topic, key=key.encode(), value=SERDE.encode(topic, record))
        producer.poll(0)
    assert producer.flush(60) == 0


def _wait_evaluated(trader: WatchlistTrader, run, until_ms: int, timeout: float = 180.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end and run.thread.is_alive():
        if (trader.state.next_eval or 0) > until_ms:
            return
        time.sleep(0.2)
    raise AssertionError(f"evaluated up to {trader.state.next_eval}, not past {until_ms}")


def _of(strategy, streamed: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """The records of one strategy's trader (both publish to the same topics)."""
    mine = {
        t: [r for r in streamed[t] if r["signal_id"].startswith(f"xv:{strategy.name}:")]
        for t in ("xv.signals", "xv.orders", "xv.pairs")
    }
    pairs = {p["pair_id"] for p in mine["xv.pairs"]}
    return mine | {"xv.funding": [r for r in streamed["xv.funding"] if r["pair_id"] in pairs]}


def _unique(topic: str, records: list[dict]) -> list[dict]:
    """First occurrence of each key, in order; a re-published record must equal the first."""
    seen: dict[tuple, dict] = {}
    for r in records:
        assert seen.setdefault(KEYS[topic](r), r) == r, (topic, r)
    return list(seen.values())


def test_the_backtest_over_the_topics_equals_the_live_service_through_a_restart(
    kafka_bootstrap, topic_prefix, tmp_path, read_topic, database, monkeypatch
):
    ensure_topics(kafka_bootstrap, prefix=topic_prefix)
    records = _records(EVENTS)
    half = len(records) // 2
    mid_ms, end_ms = records[half - 1][2]["event_time"], records[-1][2]["event_time"]
    settings = Settings(home=tmp_path / "home", broker=kafka_bootstrap, topic_prefix=topic_prefix)

    def options(*traders: WatchlistTrader) -> WatchlistOptions:
        return WatchlistOptions(
            params=CrossVenueParams(),
            lateness_ms=1_000,
            prime_history_ms=None,
            start_from="earliest",
            group_id=topic_prefix + "wl",
            checkpoint_interval_s=1.0,
            traders=traders,
        )

    _produce(kafka_bootstrap, topic_prefix, records[:half])
    first = WatchlistTrader(XV)
    run = running_watchlist(settings, options(first, WatchlistTrader(XV_LEGS)))
    try:
        _wait_evaluated(first, run, mid_ms - 3_000)
        assert run.close() == 0
        _produce(kafka_bootstrap, topic_prefix, records[half:])
        second = WatchlistTrader(XV)  # restored from the checkpoint by the service
        run = running_watchlist(settings, options(second, WatchlistTrader(XV_LEGS)))
        _wait_evaluated(second, run, end_ms - 3_000)
        assert second.counters["signal"] >= first.counters["signal"]  # went on from the first's state
        assert run.close() == 0
    finally:
        if run.thread.is_alive():
            run.close()
    everything = {
        t: _unique(t, [r["value"] for r in read_topic(kafka_bootstrap, topic_prefix + t, settled=True)])
        for t in OUTPUTS
    }
    streamed, legs = _of(XV, everything), _of(XV_LEGS, everything)
    print("\nstreamed: " + ", ".join(f"{t} {len(v)} + {len(legs[t])} with leg timing" for t, v in streamed.items()))
    assert len(streamed["xv.signals"]) >= 3 and len(streamed["xv.orders"]) >= 8, streamed
    assert {p["status"] for p in streamed["xv.pairs"]} >= {"open", "closed"}
    assert all(len(everything[t]) == len(streamed[t]) + len(legs[t]) for t in OUTPUTS)
    assert legs["xv.orders"] and all(o["time_ms"] - o["sent_ms"] == 300 for o in legs["xv.orders"])

    # the backtest's trader over the same topics, read back as the service reads them
    events = read_broker(kafka_bootstrap, topic_prefix, SERDE)
    assert len(events) == len(records)
    cutoff = end_ms - 5_000  # the service held the last second back (lateness): compare what both saw whole
    for strategy, published in ((XV, streamed), (XV_LEGS, legs)):
        backtest = WatchlistTrader(strategy)
        backtest.feed(events)
        computed: dict[str, list[dict]] = {t: [] for t in OUTPUTS}
        for kind, _, record in backtest.take():
            if kind != "blocked":
                computed[backtest.topics[kind]].append(record)
        for topic in OUTPUTS:
            got = [r for r in published[topic] if TIMES[topic](r) <= cutoff]
            want = [r for r in computed[topic] if TIMES[topic](r) <= cutoff]
            assert got == want, (strategy.name, topic)

    # the command over the broker: the same signals
    monkeypatch.setenv("TAPEFLOW_BROKER", kafka_bootstrap)
    monkeypatch.setenv("TAPEFLOW_HOME", str(tmp_path / "cli"))
    strategy_file = tmp_path / "xv_stream.json"
    strategy_file.write_bytes(orjson.dumps(STRATEGY))
    from tapeflow.cli import app

    result = CliRunner().invoke(
        app,
        [
            "watchlist",
            "backtest",
            "--strategy",
            str(strategy_file),
            "--source",
            f"broker:{topic_prefix}",
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"{len(records):,} inputs" in result.output
    report = orjson.loads((tmp_path / "out" / "result.json").read_bytes())
    assert [s for s in report["signals"] if s["eval_time"] <= cutoff] == [
        s for s in streamed["xv.signals"] if s["eval_time"] <= cutoff
    ]

    # the sink keeps one row per record, re-published ones included (and stores the inputs too)
    migrate(database)
    sink = TopicSink(
        SinkConfig(
            topics=[*OUTPUTS, "md.book", "md.mark"],
            topic_prefix=topic_prefix,
            group_id=f"{topic_prefix}sink",
            batch_rows=500,
            batch_ms=100,
            max_backoff_s=1.0,
        ),
        kafka_bootstrap,
        database,
        SERDE,
    )
    done = threading.Event()
    thread = threading.Thread(target=sink.run, kwargs={"should_stop": done.is_set}, daemon=True)
    thread.start()
    tables = {
        "xv.signals": "xv_signals",
        "xv.orders": "xv_leg_orders",
        "xv.funding": "xv_funding_payments",
        "xv.pairs": "xv_pair_events",
    }
    want_rows = {t: len(everything[topic]) for topic, t in tables.items()}
    want_rows |= {
        "depth_snapshots": sum(t == "md.book" for t, _, _ in records),
        "mark_prices": sum(t == "md.mark" for t, _, _ in records),
    }
    try:
        end = time.monotonic() + 60
        while True:
            with psycopg.connect(database) as conn:
                rows = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in want_rows}
            if rows == want_rows or time.monotonic() > end:
                break
            time.sleep(0.3)
    finally:
        done.set()
        thread.join(30)
    assert rows == want_rows
    with psycopg.connect(database) as conn:
        latest = conn.execute("SELECT pair_id, status, net_usd FROM xv_pairs_latest ORDER BY pair_id").fetchall()
    last = {}
    for p in everything["xv.pairs"]:
        last[p["pair_id"]] = p
    assert [(pid, p["status"]) for pid, p in sorted(last.items())] == [(pid, s) for pid, s, _ in latest]

    # and the backtest over the database the sink filled: the same inputs, the same records
    # (inputs of one time in another order than the broker's partitions give: the state applies all of
    # them before it evaluates that time, so the result below must not change)
    def tie_order(e):
        return e.time_ms, type(e).__name__, e.exchange, e.symbol

    stored = read_database(database, EVENTS[0].time_ms, end_ms + 1)
    assert stored != events and sorted(stored, key=tie_order) == sorted(events, key=tie_order)
    result = CliRunner().invoke(
        app,
        [
            "watchlist",
            "backtest",
            "--strategy",
            str(strategy_file),
            "--source",
            "db",
            "--from",
            "2024-01-01T06:59",
            "--to",
            "2024-01-01T08:00",
            "--out",
            str(tmp_path / "db"),
        ],
        env={"TAPEFLOW_DATABASE_URL": database_url(database)},
    )
    assert result.exit_code == 0, result.output
    assert orjson.loads((tmp_path / "db" / "result.json").read_bytes()) == report
