"""``round_trip_slow`` end to end in testnet: the executor service with the real ``BinanceBroker`` against
the fake exchange, through the session's Kafka and a migrated PostgreSQL. The venue answers one order
0.7 s late (the fake's ``slow`` fault: it acts, then answers as usual, late); the service measures that
round trip (intent committed -> the order's next state) in its 5-minute SLO window; when the window
closes the rule sets ``no_twap_no_maker`` (p95 > 500 ms), the change is audited in
``execution_degradations``, the flags reach the order router, and the next entry is one market order
for its whole quantity, its reason saying why.

The SLO window is not configurable (``SloConfig.window_ms``, 5 minutes, aligned in Unix time), so the
service runs on an injected clock (``ExecutorService(clock=...)``, the wall clock moved by an offset):
it starts 4 minutes before a window's end and is moved to 30 s before it once the service runs (a slow
start cannot close the window early); once the slow order has been answered the test moves it past
the end, as if the rest of the window had passed with nothing sent. Every record the test
produces carries that clock's time.

Entries by hand: price 50,000, R = 500, 1R = 200 USDT -> 0.4 BTC, notional 20,000: bucket 1000+ (maker
3 s, 4 slices 1 s apart). No book is published, so the routed entry skips the maker (``no_book``) and
sends its 4 slices of 0.1; the first is the slow one (p95 of 4 samples, nearest rank: the largest).
After the rule is set, the second signal's entry is one MARKET order of 0.4, ``degraded:no_twap_no_maker``.
"""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from pydantic import SecretStr

from execution.binance_broker import BinanceBroker
from execution.client_ids import client_order_id
from execution.config import ExecutorConfig, RiskLimits
from execution.service import ExecuteOptions, ExecutorService
from execution.service_slo import DegradationAudit
from fake_exchange.orders import TEST_API_KEY, TEST_API_SECRET
from schemas.registry import FileSchemaRegistry
from schemas.serde import AvroSerde
from tapeflow_runtime.kafka_client import ensure_topics
from tapeflow_runtime.settings import Settings
from tests.execution.test_execution_exchange_mode import FakeVenue
from tests.support.execution import signal_record, trade_record
from tests.support.executor_io import Feed, Watcher
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

W = 300_000  # the SLO window (execution.slo.SloConfig.window_ms)
PRICE, RISK, QTY = 50_000.0, 500.0, 0.4
SLOW_S = 0.7  # one order answered this late: over the rule's 500 ms
CONFIG = ExecutorConfig(risk=RiskLimits(max_signal_age_s=600, stale_market_data_s=600))  # routed: the default


class ShiftedClock:
    """The wall clock plus ``offset`` ms (moved by the test)."""

    def __init__(self, offset: int) -> None:
        self.offset = offset

    def __call__(self) -> int:
        return int(time.time() * 1000) + self.offset


class ClockFeed(Feed):
    """``Feed`` with the service's clock's times (strictly increasing)."""

    def __init__(self, bootstrap: str, prefix: str, clock: ShiftedClock) -> None:
        super().__init__(bootstrap, prefix)
        self.clock = clock

    def now(self) -> int:
        self.last = max(self.last + 1, self.clock())
        return self.last

    def trade(self, price: float) -> dict:
        return self.send("md.trades", trade_record(price, self.now()))

    def signal(self, **kw) -> dict:
        return self.send("signals", signal_record(eval_time=self.now(), **kw))


def audited(conninfo: str) -> list[tuple]:
    with psycopg.connect(conninfo) as conn:
        return conn.execute(
            "SELECT mode, rule, active, sli, value, no_twap_no_maker FROM execution_degradations ORDER BY changed_time"
        ).fetchall()


def test_slow_answers_set_round_trip_slow_when_the_window_closes_and_the_next_entry_is_one_market_order(
    kafka_bootstrap, topic_prefix, tmp_path, migrated_database
):
    ensure_topics(kafka_bootstrap, prefix=topic_prefix)
    now = int(time.time() * 1000)
    clock = ShiftedClock((now // W + 1) * W - 240_000 - now)  # 4 minutes before the end of a window
    window_end = (clock() // W + 1) * W
    fake = FakeVenue()
    broker = None
    stop = threading.Event()
    runner = None
    watcher = Watcher(kafka_bootstrap, topic_prefix, ["orders", "positions"])
    try:
        fake.market(bid=PRICE - 0.1, ask=PRICE, price=PRICE, qty=0.0, mark=PRICE)
        broker = BinanceBroker.connect(
            "testnet", fake.rest_url, fake.ws_url, SecretStr(TEST_API_KEY), SecretStr(TEST_API_SECRET)
        )
        settings = Settings(home=tmp_path, broker=kafka_bootstrap, topic_prefix=topic_prefix)
        service = ExecutorService(
            settings,
            "testnet",
            CONFIG,
            kafka_bootstrap,
            AvroSerde(FileSchemaRegistry()),
            ExecuteOptions(start_from="earliest", restore_idle_s=0.3),
            clock=clock,
            broker=broker,
            audit=DegradationAudit(migrated_database, "testnet", retry_s=0.1),
        )
        runner = threading.Thread(target=service.run, args=(stop,), daemon=True)
        runner.start()
        feed = ClockFeed(kafka_bootstrap, topic_prefix, clock)
        feed.trade(PRICE)
        wait_until(lambda: service.status == "running", 60, "the service running")
        clock.offset += window_end - 30_000 - clock()  # 30 s before its end, however long the start took
        feed.trade(PRICE)

        fake.control("faults", {"fail_next": 1, "mode": "slow", "delay_s": SLOW_S})
        a = feed.signal(strategy="a", price=PRICE, risk=RISK)
        watcher.wait("positions", lambda p: p["signal_id"] == a["signal_id"] and p["event"] == "opened", 30)
        a_orders = [o for o in watcher.seen["orders"] if o["signal_id"] == a["signal_id"]]
        a_sent = [o for o in a_orders if o["state"] == "PENDING_NEW"]
        assert [(o["type"], round(o["qty"], 9)) for o in a_sent] == [("MARKET", 0.1)] * 4  # no maker: no book
        assert all("no_book" in o["reason"] and "degraded" not in o["reason"] for o in a_sent)
        assert clock() < window_end and audited(migrated_database) == []  # the window is still open

        clock.offset += window_end - clock() + 1_000  # the rest of the window passes: it closes
        wait_until(lambda: service.slo.flags().no_twap_no_maker, 30, "round_trip_slow set")
        rows = wait_until(lambda: audited(migrated_database), 30, "the change audited")
        [(mode, rule, active, sli, value, no_twap)] = rows
        assert (mode, rule, active, sli, no_twap) == (
            "testnet",
            "round_trip_slow",
            True,
            "order_round_trip_p95_ms",
            True,
        )
        assert value >= SLOW_S * 1000

        feed.trade(PRICE)  # market data at the moved clock
        b = feed.signal(strategy="b", price=PRICE, risk=RISK)
        watcher.wait("positions", lambda p: p["signal_id"] == b["signal_id"] and p["event"] == "opened", 30)
        b_sent = [o for o in watcher.seen["orders"] if o["signal_id"] == b["signal_id"] and o["state"] == "PENDING_NEW"]
        assert [(o["client_order_id"], o["type"], round(o["qty"], 9)) for o in b_sent] == [
            (client_order_id(b["signal_id"], "entry_fallback", 0), "MARKET", QTY)
        ]
        assert "degraded:no_twap_no_maker" in b_sent[0]["reason"]
    finally:
        stop.set()
        if runner is not None:
            runner.join(30)
        watcher.close()
        if broker is not None:
            broker.close()
        fake.stop()
