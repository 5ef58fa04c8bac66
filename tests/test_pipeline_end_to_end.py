"""The whole pipeline as users run it, one process per service: generated market data → fake exchange →
producer → engine → paper executor → sink, through the real broker into the real PostgreSQL.

What users rely on: the trades Grafana shows (the ``positions`` table and the ``trades_closed`` view)
are exactly what the paper executor published on ``positions`` — same position ids, exit reasons,
entry/exit prices and P&L in R, nothing lost and nothing twice — and so are the orders and fills
behind them; every position traces back to a signal the engine published and the sink stored, its
client order ids derive from that signal id, and every fill happened on a trade the producer published,
at its price or at a level of a book the producer published. The paper broker fills against the book
(``paper.fills: book``, the default): an order fills in parts, one fill per trade that reached it and
one per level of a market order's walk, and its fills add up to what it filled, never more. Entries are
routed (``entry.kind: routed``, the default): a post-only limit for the bucket's maker wait, then taker
slices for what it left, so a position's entry price is the qty-weighted market price of all their fills.

Market data is the fake exchange's synthetic session (``--synthetic-seed``), replayed at a fixed
multiple of real time so the engine's signals reach the executor while the session's trades are
still flowing (the paper broker fills on the trades that follow a signal; a replay at ``max`` speed
would be over before the first signal). The generator stamps its sessions with a fixed 2023 epoch, so
the services' wall-clock guards (the engine's signal age, the executor's signal age and stale-data
limits) are widened here, as for any replay of the past; every exit is decided on event time.

The engine is given 3 s (wall clock) of allowed lateness between its input topics: a trade that
arrives after its second was evaluated is dropped as late (counted; its agg id still continues the
sequence, so the warm-up is not restarted), and at 60x a busy 2-core machine can put one topic's fetch
a second or more of wall time behind another's.

The strategy is a test strategy (10-minute warm-up, direction layer only, 2-minute cooldown) with
tight exits (1R = 0.5 x ATR, TP1 0.5R, TP2 1R, 3-minute timeout) so that a 25-minute session closes
positions by stop-loss, take-profit or timeout (usually 9-11 of them). Nothing here asserts on timing.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

import psycopg
import pytest
import yaml

from sinks.migrate import migrate
from tapeflow_runtime.kafka_client import ensure_topics
from tests.support.services import (
    Service,
    database_url,
    record_counts,
    scrape,
    wait_consumed,
    wait_healthy,
)

pytestmark = pytest.mark.integration

SYMBOLS = ("BTCUSDT", "ETHUSDT")
SEED = 7
SESSION_S = 1500  # 25 minutes of event time: 10 of warm-up, then signals and their exits
SPEED = 60  # one minute of event time per second
LATENESS_MS = 180_000  # 3 s of wall time at this speed (see the module docstring)
FAR_PAST_S = 1e9  # "older than ~31 years": the generated session is from 2023, the guards use the wall clock

STRATEGY = {
    "name": "e2e_test",
    "version": "1",
    "windows": {"cvd_fast": "5m", "cvd_mid": "30m"},
    "warmup": "10m",
    "weights": {"direction": 55, "crowding": 0, "environment": 0, "auxiliary": 0},
    "thresholds": {"entry": 40, "heavy": 50, "flip": 50},
    "cooldown": "2m",
    "exits": {"sl_atr_mult": 0.5, "tp1_r": 0.5, "tp2_r": 1.0, "timeout_min": 3},
}
EXECUTOR_CONFIG = {
    "timeout_min": 3,
    "risk": {
        "max_signal_age_s": FAR_PAST_S,
        "stale_market_data_s": FAR_PAST_S,
        # a losing streak of a random walk must not pause the paper account mid-test
        "daily_loss_limit_r": 1000,
        "max_consecutive_losses": 1000,
    },
}
SINK_TOPICS = ("md.trades", "signals", "orders", "fills", "positions")
LEG_CODES = {"entry": "en", "tp1": "t1", "tp2": "t2", "sl": "sl", "exit": "ex"}
#: a routed entry (the default ``entry.kind``) is its maker limit (``-en``) and its taker slices, the k-th
#: (from 0) with the code ``ef`` and attempt k: ``-ef``, ``-ef1``, ``-ef2``, ... (no ``0``, no leading
#: zero); the orders topic records the slices' leg as ``entry`` too
SLICE = re.compile(r"ef(?:[1-9]\d{0,2})?")
EXIT_REASONS = {"sl", "sl_be", "tp", "timeout", "signal_flip"}


# --- independent reference for the id scheme (execution/client_ids.py documents the format) -------------
def digest(signal_id: str) -> str:
    raw = hashlib.blake2b(signal_id.encode(), digest_size=12).digest()
    return base64.b32encode(raw).decode().rstrip("=").lower()


def rows(conninfo: str, query: str) -> list[dict]:
    with psycopg.connect(conninfo, row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute(query).fetchall()


def ms(ts) -> int:
    return round(ts.timestamp() * 1000)


def num(value) -> float | None:
    """numeric columns come back as Decimal (15 significant digits of the published double)."""
    return None if value is None else float(value)


# --- the test ------------------------------------------------------------------------------------------
@pytest.fixture
def home():
    # outside pytest's basetemp (see tests/tapeflow/stack/test_stack_lifecycle.py): pytest prunes it under running tests
    path = Path(tempfile.mkdtemp(prefix="tapeflow-e2e-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_closed_trades_in_the_database_are_what_the_paper_executor_published(
    kafka_bootstrap, database, topic_prefix, read_topic, home
):
    migrate(database)
    ensure_topics(kafka_bootstrap, prefix=topic_prefix)
    pipeline = Pipeline(kafka_bootstrap, topic_prefix, database, read_topic, home)
    try:
        pipeline.start_consumers()
        pipeline.replay_session()
        published, engine_counters = pipeline.drain()
    finally:
        pipeline.kill_all()

    values = {name: [r["value"] for r in recs] for name, recs in published.items()}
    signals, orders, fills, positions = (values[n] for n in ("signals", "orders", "fills", "positions"))
    trade_price = {(t["symbol"], t["agg_id"]): t["price"] for t in values["md.trades"]}
    closed = [p for p in positions if p["event"] == "closed"]
    print(
        f"{len(values['md.trades'])} trades, {len(signals)} signals, {len(orders)} order events, "
        f"{len(fills)} fills, {len(closed)} closed: {Counter(p['exit_reason'] for p in closed)}; fills by leg "
        f"(book fills: one per trade that reached a limit, one per level of a market order's walk): "
        f"{Counter(f['client_order_id'].rsplit('-', 1)[1] for f in fills)}, at most "
        f"{max(Counter(f['client_order_id'] for f in fills).values(), default=0)} of one order"
    )

    # --- the executor traded the engine's signals ----------------------------------------------------
    assert len(closed) >= 3, f"only {len(closed)} positions closed; engine counters:\n{engine_counters}"
    signal_by_id = check_traded_from_signals(signals, orders, positions)
    check_fills_add_up(orders, fills)
    check_closing_numbers(closed, fills, trade_price)

    # --- the database holds exactly what was published ------------------------------------------------
    check_positions_stored(database, positions, closed)
    check_orders_stored(database, orders)
    check_fills_stored(database, fills, len(values["md.trades"]), [r["value"] for r in pipeline.topic("md.book")])
    check_signals_stored(database, signal_by_id, positions)


class Pipeline:
    """The services of one run, each its own `tapeflow` process (`tests.support.services.Service`) on the
    test's broker, topic prefix and database."""

    def __init__(self, bootstrap: str, topic_prefix: str, database: str, read_topic, home: Path) -> None:
        self.bootstrap, self.prefix, self.read_topic, self.home = bootstrap, topic_prefix, read_topic, home
        self.strategy_file = home / "e2e_test.yaml"
        self.strategy_file.write_text(yaml.safe_dump(STRATEGY))
        self.executor_file = home / "executor.yaml"
        self.executor_file.write_text(yaml.safe_dump(EXECUTOR_CONFIG))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TAPEFLOW_")}
        self.env.update(
            {
                "TAPEFLOW_HOME": str(home / "home"),
                "TAPEFLOW_BROKER": bootstrap,
                "TAPEFLOW_TOPIC_PREFIX": topic_prefix,
                "TAPEFLOW_DATABASE_URL": database_url(database),
                "TAPEFLOW_SYMBOLS": ",".join(SYMBOLS),
                "PYTHONUNBUFFERED": "1",
            }
        )
        self.services: list[Service] = []

    def start(self, name: str, *args: str) -> Service:
        service = Service(name, list(args), self.env, self.home)
        self.services.append(service)
        return service

    def topic(self, name: str) -> list[dict]:
        return self.read_topic(self.bootstrap, self.prefix + name, idle_s=1.0)

    def kill_all(self) -> None:
        for service in self.services:
            service.kill()

    def start_consumers(self) -> None:
        """Sink, engine and executor, the executor running (its inputs assigned) before any data flows:
        it starts at the end of its inputs."""
        self.sink = self.start("sink", "sink", "--topics", ",".join(SINK_TOPICS), "--metrics-port", "0")
        self.engine = self.start(
            "engine",
            "engine",
            "--strategy",
            str(self.strategy_file),
            "--metrics-port",
            "0",
            "--allowed-lateness-ms",
            str(LATENESS_MS),
            "--prime-hours",
            "0",
            "--signal-max-age-s",
            str(FAR_PAST_S),
        )
        self.executor = self.start(
            "executor",
            "execute",
            "--mode",
            "paper",
            "--executor-config",
            str(self.executor_file),
            "--metrics-port",
            "0",
        )
        port = int(self.executor.wait_for_line(r"executor started.*metrics_port=(\d+)", 90).group(1))
        wait_healthy(self.executor, port, 90)  # "running" once its input partitions are assigned
        self.engine_port = int(self.engine.wait_for_line(r"engine worker ready .*metrics_port=(\d+)", 90).group(1))

    def replay_session(self) -> None:
        """The fake exchange plays the synthetic session to a producer until its replay ends."""
        fake = self.start(
            "fake-exchange",
            "fake-exchange",
            "--synthetic-seed",
            str(SEED),
            "--synthetic-symbols",
            ",".join(SYMBOLS),
            "--synthetic-duration",
            str(SESSION_S),
            "--speed",
            str(SPEED),
            "--rest-clock",
            "recording",
        )
        urls = json.loads(fake.wait_for_line(r"\{\"ws_url\".*\}", 90).group(0))
        rest = urls["rest_url"]
        producer = self.start(
            "producer",
            "produce",
            "--ws-url",
            urls["ws_url"],
            "--rest-url",
            rest,
            "--spot-url",
            rest,
            "--coinbase-url",
            rest,
            "--replay-control-url",
            rest,
            "--metrics-port",
            "0",
        )
        try:
            assert producer.proc.wait(SESSION_S / SPEED + 90) == 0, producer.tail()
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the replay did not finish\n{producer.tail()}\n{fake.tail()}") from None
        assert "replay-finished" in producer.log(), producer.tail()
        assert fake.stop() == 0, fake.tail()

    def drain(self) -> tuple[dict[str, list[dict]], str]:
        """Drain in pipeline order: engine, then executor, then sink; each stops cleanly once it is done.
        The records of every sink topic, and the engine's state counters (for a diagnosis)."""
        engine, executor, sink = self.engine, self.executor, self.sink
        # read once each, when their writer has stopped (md.trades: the producer; signals: the engine)
        trades = self.topic("md.trades")
        trades_end = record_counts(trades)
        wait_consumed(
            self.bootstrap,
            self.prefix + "tapeflow-engine",
            {self.prefix + "md.trades": trades_end},
            [engine, executor, sink],
            90,
        )
        engine_counters = scrape(self.engine_port, "tapeflow_engine_state_counter")  # late trades, gaps
        assert engine.stop() == 0, engine.tail()
        signals = self.topic("signals")
        signals_end = record_counts(signals)
        wait_consumed(
            self.bootstrap,
            self.prefix + "tapeflow-executor-paper",
            {self.prefix + "md.trades": trades_end, self.prefix + "signals": signals_end},
            [executor, sink],
            60,
        )
        assert executor.stop() == 0, executor.tail()
        published = {
            "md.trades": trades,
            "signals": signals,
            **{name: self.topic(name) for name in SINK_TOPICS if name not in ("md.trades", "signals")},
        }
        wait_consumed(
            self.bootstrap,
            self.prefix + "tapeflow-sink",
            {self.prefix + name: record_counts(recs) for name, recs in published.items()},
            [sink],
            60,
        )
        assert sink.stop() == 0, sink.tail()
        return published, engine_counters


# --- the checks, each over the published records (and the database) ------------------------------------
def check_traded_from_signals(signals: list[dict], orders: list[dict], positions: list[dict]) -> dict[str, dict]:
    """Every position and order traces back to one signal on `signals`, with ids derived from it; the
    signals by id."""
    assert all(p["mode"] == "paper" for p in positions)
    position_events = Counter((p["position_id"], p["event"]) for p in positions)
    assert max(position_events.values()) == 1, "a lifecycle event published twice"
    signal_by_id = {s["signal_id"]: s for s in signals}
    assert len(signal_by_id) == len(signals), "a signal published twice"
    for p in positions:
        s = signal_by_id.get(p["signal_id"])
        assert s is not None, f"position {p['position_id']} has no signal on `signals`"
        assert (p["strategy"], p["strategy_version"], p["config_hash"], p["symbol"], p["direction"]) == (
            s["strategy"],
            s["strategy_version"],
            s["config_hash"],
            s["symbol"],
            s["direction"],
        )
        assert p["position_id"] == "pos-" + digest(p["signal_id"])
    for o in orders:
        assert o["signal_id"] in signal_by_id and o["position_id"] == "pos-" + digest(o["signal_id"])
        assert is_order_of(o["client_order_id"], o["signal_id"], o["leg"]), o
    return signal_by_id


def is_order_of(cid: str, signal_id: str, leg: str) -> bool:
    """Whether `cid` is the id of an order of `leg` (as the orders topic records it) derived from
    `signal_id`: an entry's are its limit's and its taker slices'."""
    base = f"tf{digest(signal_id)}-"
    code = cid[len(base) :]
    return cid.startswith(base) and (code == LEG_CODES[leg] or (leg == "entry" and SLICE.fullmatch(code) is not None))


def entry_fills(signal_id: str, fills_by_order: dict[str, list[dict]]) -> list[dict]:
    """The fills of a position's entry: its maker limit's and every taker slice's."""
    return [f for cid, fs in fills_by_order.items() if is_order_of(cid, signal_id, "entry") for f in fs]


def check_fills_add_up(orders: list[dict], fills: list[dict]) -> None:
    """Book fills (the paper default) fill an order in parts: a fill per trade that reached it (per book
    level for a market order's walk), each published once; together they are what the order's last
    update says it filled, never more than its quantity (a double fill would exceed it)."""
    assert max(Counter((f["client_order_id"], f["trade_id"]) for f in fills).values()) == 1, "a fill published twice"
    qty = {o["client_order_id"]: o["qty"] for o in orders}
    filled = defaultdict(float)
    for o in orders:
        filled[o["client_order_id"]] = max(filled[o["client_order_id"]], o["filled_qty"])
    total = defaultdict(float)
    for f in fills:
        total[f["client_order_id"]] += f["qty"]
    assert set(total) <= set(qty), "a fill of an order never published"
    for cid, got in total.items():
        assert got <= qty[cid] * (1 + 1e-9), f"{cid} filled {got} of an order of {qty[cid]}"
        assert got == pytest.approx(filled[cid], rel=1e-9), f"{cid}: fills {got}, its orders record {filled[cid]}"


def check_closing_numbers(closed: list[dict], fills: list[dict], trade_price: dict[tuple[str, int], float]) -> None:
    """The closing numbers follow from the fills (the entry's fills - its maker limit's and its taker
    slices' - then the exit fills of the position)."""
    fills_by_order = defaultdict(list)
    for f in fills:
        fills_by_order[f["client_order_id"]].append(f)
    tp1_r, tp2_r = STRATEGY["exits"]["tp1_r"], STRATEGY["exits"]["tp2_r"]
    for p in closed:
        entry = entry_fills(p["signal_id"], fills_by_order)
        # the qty-weighted market price of the entry's fills: the trade's for a market order's (its walk's
        # levels are the costs on top), the limit's own for a maker fill
        market = [trade_price[(f["symbol"], agg_id(f))] if f["liquidity"] == "taker" else f["price"] for f in entry]
        qty = sum(f["qty"] for f in entry)
        expected_entry = sum(m * f["qty"] for m, f in zip(market, entry, strict=True)) / qty
        assert p["entry_price"] == pytest.approx(expected_entry, rel=1e-9)
        assert p["exit_reason"] in EXIT_REASONS
        # DESIGN §5, by hand: sl -1, sl_be 0.5 tp1_r, tp 0.5 tp1_r + 0.5 tp2_r (before fees and slippage)
        expected_gross = {"sl": -1.0, "sl_be": 0.5 * tp1_r, "tp": 0.5 * tp1_r + 0.5 * tp2_r}.get(p["exit_reason"])
        if expected_gross is not None:
            assert p["pnl_r_gross"] == pytest.approx(expected_gross), p
        assert p["pnl_r_net"] < p["pnl_r_gross"]  # taker/maker fees are always paid


def check_positions_stored(database: str, positions: list[dict], closed: list[dict]) -> None:
    """The ``positions`` table and the ``trades_closed`` view are what the executor published."""
    db_positions = rows(database, "SELECT * FROM positions")
    assert len(db_positions) == len(positions)
    db_by_key = {(r["position_id"], r["event"]): r for r in db_positions}
    for p in positions:
        r = db_by_key[(p["position_id"], p["event"])]
        assert (
            r["signal_id"],
            r["mode"],
            r["strategy"],
            r["config_hash"],
            r["symbol"],
            r["direction"],
            r["tier"],
            r["exit_reason"],
            r["entry_price"],
            r["exit_price"],
            r["qty"],
            r["sl_price"],
            ms(r["event_time"]),
        ) == (
            p["signal_id"],
            p["mode"],
            p["strategy"],
            p["config_hash"],
            p["symbol"],
            p["direction"],
            p["tier"],
            p["exit_reason"],
            p["entry_price"],
            p["exit_price"],
            p["qty"],
            p["sl_price"],
            p["event_time"],
        )
        for column in ("pnl_r_gross", "pnl_r_net", "fees_r", "slippage_r", "r_usd"):
            want = p[column]
            assert num(r[column]) == (None if want is None else pytest.approx(want, rel=1e-12, abs=1e-12)), column

    view = rows(database, "SELECT * FROM trades_closed")
    trades_closed = {r["position_id"]: r for r in view}
    assert len(view) == len(closed) and set(trades_closed) == {p["position_id"] for p in closed}
    opened_at = {p["position_id"]: p["event_time"] for p in positions if p["event"] == "opened"}
    for p in closed:
        t = trades_closed[p["position_id"]]
        assert (t["signal_id"], t["exit_reason"], t["entry_price"], t["exit_price"]) == (
            p["signal_id"],
            p["exit_reason"],
            p["entry_price"],
            p["exit_price"],
        )
        assert num(t["pnl_r_gross"]) == pytest.approx(p["pnl_r_gross"], rel=1e-12)
        assert num(t["pnl_r_net"]) == pytest.approx(p["pnl_r_net"], rel=1e-12)
        assert ms(t["entry_time"]) == opened_at[p["position_id"]] and ms(t["exit_time"]) == p["event_time"]


def check_orders_stored(database: str, orders: list[dict]) -> None:
    """Every order transition published once and stored as published."""
    order_keys = Counter((o["mode"], o["client_order_id"], o["state"], o["filled_qty"]) for o in orders)
    assert max(order_keys.values()) == 1, "an order transition published twice"
    db_orders = {
        (r["mode"], r["client_order_id"], r["state"], r["filled_qty"]): r
        for r in rows(database, "SELECT * FROM orders")
    }
    assert set(db_orders) == set(order_keys)
    for o in orders:
        r = db_orders[(o["mode"], o["client_order_id"], o["state"], o["filled_qty"])]
        assert (
            r["signal_id"],
            r["position_id"],
            r["leg"],
            r["side"],
            r["type"],
            r["price"],
            r["qty"],
            r["avg_fill_price"],
            ms(r["event_time"]),
        ) == (
            o["signal_id"],
            o["position_id"],
            o["leg"],
            o["side"],
            o["type"],
            o["price"],
            o["qty"],
            o["avg_fill_price"],
            o["event_time"],
        )


def agg_id(fill: dict) -> int:
    """The market trade a paper fill happened on (trade ids p:<agg_id>:<client order id>[:<level>])."""
    return int(fill["trade_id"].split(":")[1])


def check_fills_stored(database: str, fills: list[dict], trades_published: int, books: list[dict]) -> None:
    """Every fill stored as published, and priced from a market trade or book level the producer published."""
    db_fills = {(r["client_order_id"], r["trade_id"]): r for r in rows(database, "SELECT * FROM fills")}
    assert set(db_fills) == {(f["client_order_id"], f["trade_id"]) for f in fills} and len(db_fills) == len(fills)
    db_trades = {
        (r["symbol"], r["agg_id"]): r["price"] for r in rows(database, "SELECT symbol, agg_id, price FROM trades")
    }
    assert len(db_trades) == trades_published
    # the levels a market order could take: a BUY the asks of a published md.book snapshot, a SELL the bids
    levels = {
        (b["symbol"], side, level["price"])
        for b in books
        for side, book_side in (("BUY", "asks"), ("SELL", "bids"))
        for level in b[book_side]
    }
    for f in fills:
        r = db_fills[(f["client_order_id"], f["trade_id"])]
        assert (r["price"], r["qty"], r["side"], r["liquidity"], ms(r["event_time"])) == (
            f["price"],
            f["qty"],
            f["side"],
            f["liquidity"],
            f["event_time"],
        )
        assert num(r["fee"]) == pytest.approx(f["fee"], rel=1e-12)
        market = db_trades[(f["symbol"], agg_id(f))]  # on a market trade the producer published
        if f["liquidity"] == "taker":  # no slippage configured: a level of the book it walked, or the trade's price
            assert f["price"] == market or (f["symbol"], f["side"], f["price"]) in levels, f
        else:  # a resting limit fills at its price when a trade prints at it (its queue eaten) or through it
            assert market <= f["price"] if f["side"] == "BUY" else market >= f["price"]


def check_signals_stored(database: str, signal_by_id: dict[str, dict], positions: list[dict]) -> None:
    """Every signal stored as published, the signal of every position among them."""
    db_signals = {r["signal_id"]: r for r in rows(database, "SELECT * FROM signals")}
    assert set(db_signals) == set(signal_by_id)
    for sid, s in signal_by_id.items():
        r = db_signals[sid]
        assert (
            r["strategy"],
            r["config_hash"],
            r["symbol"],
            r["direction"],
            r["tier"],
            r["price"],
            r["risk_distance"],
            ms(r["eval_time"]),
        ) == (
            s["strategy"],
            s["config_hash"],
            s["symbol"],
            s["direction"],
            s["tier"],
            s["price"],
            s["risk_distance"],
            s["eval_time"],
        )
    assert {p["signal_id"] for p in positions} <= set(db_signals)
