"""`tapeflow execute --mode testnet` end to end: the executor service with the real `BinanceBroker`
against the fake exchange's order API on 127.0.0.1, through the session's real Kafka broker.

Covered: a signal traded on the exchange (client order id derived from the signal id, the intent
readable on the orders topic before the exchange receives the order, fills, positions, a stop-loss
exit with hand-computed pnl_r); an executor killed (SIGKILL) after sending its entry and before
recording the fill, whose successor finds the order by client id and never sends it again;
reconciliation of orphans under both policies, on start and on the periodic run; the exchange going
away (entries blocked and published); live mode refusing without the opt-in and keys; the keys never
appearing in logs or records.

Prices are posted to the fake's control API, so every fill price is known in advance; the fake charges
0.04 % taker. Trade and signal times are the wall clock, since the service judges freshness by it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal as os_signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from decimal import Decimal as D
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from structlog.testing import capture_logs

from execution.binance_signing import BinanceApiError
from execution.broker import Execution, OrderUpdate
from execution.client_ids import client_order_id
from execution.config import EntryPolicy, ExecutorConfig
from execution.executor import Executor, ListSink
from execution.paper_broker import PaperBroker
from execution.reconcile import Finding, Reconciler, compare
from execution.safety import LIVE_OPT_IN_ENV, LIVE_OPT_IN_VALUE
from execution.service import ExecuteOptions, run_executor
from fake_exchange.orders import TEST_API_KEY, TEST_API_SECRET, VENUE_KEY
from tapeflow_runtime.kafka_client import consumer_config, ensure_topics
from tapeflow_runtime.publisher import Publisher
from tapeflow_runtime.settings import Settings
from tests.support.execution import T0, book_record, signal_record
from tests.support.executor_io import Feed, Watcher, free_port
from tests.support.fake_exchange import FakeOnThread
from tests.support.paths import REPO
from tests.support.services import ServiceThread

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
SYM = "BTCUSDT"
OPT_IN = {LIVE_OPT_IN_ENV: LIVE_OPT_IN_VALUE}
GROUP = "tapeflow-executor-testnet"


class FakeVenue(FakeOnThread):
    """``FakeOnThread`` plus what the executor tests need: request history and a shutdown that
    closes the user-data streams first."""

    control_timeout_s = 10.0

    def __init__(self) -> None:
        super().__init__()
        self.venue = self.fake._runner.app[VENUE_KEY]
        self.stopped = False

    def requests_for(self, cid: str) -> list[str]:
        return [method for method, c in self.control("state")["order_requests"] if c == cid]

    async def _drop_streams(self) -> None:
        """Close the user-data streams and forget their listen keys: a client cannot come back, and the
        server's shutdown need not wait for open websocket handlers."""
        self.venue.listen_keys.clear()
        for ws in list(self.venue.sockets):
            await ws.close()

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        asyncio.run_coroutine_threadsafe(self._drop_streams(), self.loop).result(10)
        asyncio.run_coroutine_threadsafe(self.fake.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def fake():
    venue = FakeVenue()
    venue.market(bid=49999.9, ask=50000.0, price=50000.0, qty=0.0, mark=50000.0)
    yield venue
    venue.stop()


def executor_config(
    tmp_path: Path,
    fake: FakeVenue,
    *,
    orphans: str = "flatten",
    interval_s: float = 300,
    request_timeout_s: float = 5,
    entry_kind: str | None = None,
) -> Path:
    """`entry_kind`: pinned for a test that hand-computes one kind's orders (None: the default kind)."""
    path = tmp_path / f"executor-{orphans}.yaml"
    path.write_text(
        f"exchange:\n  rest_url: {fake.rest_url}\n  ws_url: {fake.ws_url}\n  request_timeout_s: {request_timeout_s}\n"
        f"  probe_interval_s: 0.5\nreconcile:\n  orphans: {orphans}\n  interval_s: {interval_s}\n  retry_s: 0.5\n"
        + (f"entry:\n  kind: {entry_kind}\n" if entry_kind else "")
    )
    return path


@pytest.fixture
def env(kafka_bootstrap, topic_prefix, tmp_path):
    ensure_topics(kafka_bootstrap, prefix=topic_prefix)
    settings = Settings(
        home=tmp_path,
        broker=kafka_bootstrap,
        topic_prefix=topic_prefix,
        binance_api_key=TEST_API_KEY,
        binance_api_secret=TEST_API_SECRET,
    )
    watcher = Watcher(kafka_bootstrap, topic_prefix, ["orders", "fills", "positions", "risk.events"])
    yield settings, Feed(kafka_bootstrap, topic_prefix), watcher
    watcher.close()


class RunningExecutor(ServiceThread):
    """`run_executor(..., "testnet")` on a thread, as `tapeflow execute --mode testnet` runs it."""

    def __init__(self, settings: Settings, config: Path, mode: str = "testnet") -> None:
        self.port = free_port()
        super().__init__(
            lambda stop: run_executor(
                settings,
                mode,
                ExecuteOptions(
                    config_path=config, start_from="earliest", stop=stop, restore_idle_s=0.3, metrics_port=self.port
                ),
                environ=OPT_IN,
            ),
            join_s=60.0,
        )


def wait_running(port: int, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> dict:
    """Until /health says running (state restored, first reconciliation done)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc is None or proc.poll() is None, "executor process exited"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                body = json.loads(resp.read())
                if body["status"] == "running":
                    return body
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass  # not serving yet: poll again
        time.sleep(0.1)
    raise AssertionError(f"executor not running within {timeout}s")


def wait_consumed(bootstrap: str, prefix: str, topic: str, count: int, timeout: float = 60.0) -> None:
    c = Consumer(consumer_config(bootstrap, f"{prefix}{GROUP}"))
    try:
        md = c.list_topics(prefix + topic, timeout=10).topics[prefix + topic]
        parts = [TopicPartition(prefix + topic, p) for p in md.partitions]
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if sum(max(tp.offset, 0) for tp in c.committed(parts, timeout=10)) >= count:
                return
            time.sleep(0.1)
        raise AssertionError(f"executor did not consume {count} records of {topic} within {timeout}s")
    finally:
        c.close()


def assert_no_keys(*texts: str) -> None:
    for text in texts:
        assert TEST_API_KEY not in text and TEST_API_SECRET not in text
        assert TEST_API_KEY[:16] not in text and TEST_API_SECRET[-16:] not in text


# ---------------------------------------------------------------------------------------------------
def test_testnet_executor_trades_a_signal_on_the_fake_exchange(env, fake, tmp_path, capfd, monkeypatch):
    settings, feed, w = env
    boot, prefix = settings.broker, settings.topic_prefix
    # Order records the executor published, and how many of them Kafka had acknowledged, at the moment
    # the exchange received each order (the orders of one symbol share a partition: acks come in order).
    published: list[tuple[str, str]] = []
    acked = [0]
    at_receipt: dict[str, tuple[list[tuple[str, str]], int]] = {}
    publish, acked_one, place = Publisher.publish, Publisher._acked_one, fake.venue.engine.place

    def spy_publish(self, topic, key, record, *args, **kw):
        if topic == "orders":
            published.append((record["client_order_id"], record["state"]))
        return publish(self, topic, key, record, *args, **kw)

    def spy_acked(self, topic):
        acked[0] += topic == prefix + "orders"
        return acked_one(self, topic)

    def spy_place(params, now):
        at_receipt[params.get("newClientOrderId", "")] = (list(published), acked[0])
        return place(params, now)

    monkeypatch.setattr(Publisher, "publish", spy_publish)
    monkeypatch.setattr(Publisher, "_acked_one", spy_acked)
    fake.venue.engine.place = spy_place
    with capture_logs() as logs:
        # one MARKET entry, filled whole (the hand computation below): market entries pinned
        ex = RunningExecutor(settings, executor_config(tmp_path, fake, entry_kind="taker"))
        try:
            health = wait_running(ex.port)
            feed.trade(50000.0)  # fresh market data
            wait_consumed(boot, prefix, "md.trades", 1)
            sig = feed.signal(price=50000.0, risk=500.0)  # 1R = 200 USDT / 500 = 0.4 BTC
            cid = client_order_id(sig["signal_id"], "entry")
            opened = w.wait("positions", lambda p: p["signal_id"] == sig["signal_id"] and p["event"] == "opened")
            fake.market(price=49400.0, qty=0.0)  # below the stop (49,500): the exit fills here
            feed.trade(49400.0)
            closed = w.wait("positions", lambda p: p["signal_id"] == sig["signal_id"] and p["event"] == "closed")
            w.pump(0.5)
        finally:
            code = ex.close()
    assert code == 0 and health["exchange_up"] is True

    entry_states = [o["state"] for o in w.seen["orders"] if o["client_order_id"] == cid]
    assert entry_states == ["PENDING_NEW", "NEW", "FILLED"]
    sent_after, acked_then = at_receipt[cid]
    assert sent_after[-1] == (cid, "PENDING_NEW") and acked_then == len(sent_after)  # intent durable, then sent
    st = fake.control("state")
    assert st["placements"][cid] == 1 and fake.requests_for(cid) == ["POST"]
    [entry_order] = [o for o in st["orders"] if o["clientOrderId"] == cid]
    assert (entry_order["side"], entry_order["type"], D(entry_order["origQty"])) == ("BUY", "MARKET", D("0.4"))
    [filled] = [o for o in w.seen["orders"] if o["client_order_id"] == cid and o["state"] == "FILLED"]
    assert filled["exchange_order_id"] == str(entry_order["orderId"]) and filled["mode"] == "testnet"

    fills = {f["client_order_id"]: f for f in w.seen["fills"]}
    entry_fill = fills[cid]
    assert (entry_fill["price"], entry_fill["qty"], entry_fill["liquidity"]) == (50000.0, 0.4, "taker")
    assert entry_fill["fee"] == pytest.approx(0.0004 * 50000 * 0.4)  # 8.0 USDT
    assert (opened["entry_price"], opened["qty"], opened["sl_price"], opened["tp1_price"]) == (
        50000.0,
        0.4,
        49500.0,
        50500.0,
    )
    assert opened["r_usd"] == pytest.approx(200.0)

    # stop-loss: reduce-only market sell at 49,400, 100 below the stop = 0.2 R slippage;
    # fees (8.0 + 0.0004 x 49,400 x 0.4 = 7.904) / 200 = 0.07952 R; gross -1 R
    [sl_fill] = [f for c, f in fills.items() if c != cid]
    assert (sl_fill["side"], sl_fill["price"], sl_fill["qty"]) == ("SELL", 49400.0, 0.4)
    sl_orders = [o for o in w.seen["orders"] if o["client_order_id"] == sl_fill["client_order_id"]]
    assert sl_orders[0]["leg"] == "sl" and sl_orders[0]["reduce_only"] and sl_orders[-1]["state"] == "FILLED"
    assert closed["exit_reason"] == "sl" and closed["pnl_r_gross"] == pytest.approx(-1.0)
    assert closed["fees_r"] == pytest.approx(0.07952) and closed["slippage_r"] == pytest.approx(0.2)
    assert closed["pnl_r_net"] == pytest.approx(-1.27952)
    assert D(st["positions"][SYM]["amount"]) == 0

    # start-up echo and the first order, for the operator to confirm; keys only as "present"
    [echo] = [e for e in logs if e["event"] == "executor configuration (confirm before trading)"]
    assert (echo["mode"], echo["exchange_rest_url"], echo["binance_api_key"]) == ("testnet", fake.rest_url, "present")
    [first] = [e for e in logs if e["event"] == "first order of this run"]
    assert (first["client_order_id"], first["side"], first["mode"]) == (cid, "BUY", "testnet")
    [reconciled] = [e for e in logs if e["event"] == "reconciliation done"]
    assert reconciled["findings"] == 0  # on start, after the state was restored
    assert any(e["event"] == "exchange disconnected" for e in logs)
    out, err = capfd.readouterr()
    assert_no_keys(repr(logs), out, err, repr(w.seen))


RUNNER = """
import asyncio, sys
from pathlib import Path
from execution.service import ExecuteOptions, run_executor
from tapeflow_runtime.publisher import Publisher
from tapeflow_runtime.logs import configure_logging
from tapeflow_runtime.settings import Settings
settings = Settings()
configure_logging(settings.log_level, settings.log_format)
options = ExecuteOptions(config_path=Path(sys.argv[1]), start_from="earliest", restore_idle_s=0.3,
                         metrics_port=int(sys.argv[2]))
sys.exit(asyncio.run(run_executor(settings, "testnet", options)))
"""


def test_killed_after_sending_the_entry_the_restart_finds_it_by_client_id_and_never_resends(env, fake, tmp_path):
    settings, feed, w = env
    boot, prefix = settings.broker, settings.topic_prefix
    (tmp_path / "key").write_text(TEST_API_KEY)
    (tmp_path / "secret").write_text(TEST_API_SECRET)
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("TAPEFLOW_")}
    child_env.update(
        {
            "PYTHONPATH": str(REPO),
            "TAPEFLOW_HOME": str(tmp_path),
            "TAPEFLOW_BROKER": boot,
            "TAPEFLOW_TOPIC_PREFIX": prefix,
            "TAPEFLOW_BINANCE_API_KEY_FILE": str(tmp_path / "key"),
            "TAPEFLOW_BINANCE_API_SECRET_FILE": str(tmp_path / "secret"),
            **OPT_IN,
        }
    )
    # the exchange acts on the next order at once but answers only after 8 s; the executor waits up to 30 s.
    # Taker entries: the test follows one market entry order through the kill and the restart
    config = executor_config(tmp_path, fake, request_timeout_s=30, entry_kind="taker")
    port = free_port()
    log_path = tmp_path / "executor.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-c", RUNNER, str(config), str(port)],
            cwd=tmp_path,
            env=child_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_running(port, proc=proc)
            feed.trade(50000.0)
            wait_consumed(boot, prefix, "md.trades", 1)
            fake.control("faults", {"fail_next": 1, "mode": "timeout_after", "delay_s": 8})
            sig = feed.signal(price=50000.0, risk=500.0)
            cid = client_order_id(sig["signal_id"], "entry")
            w.wait("orders", lambda o: o["client_order_id"] == cid and o["state"] == "PENDING_NEW")
            end = time.monotonic() + 10
            while fake.control("state")["placements"].get(cid) != 1 and time.monotonic() < end:
                time.sleep(0.05)
            assert fake.control("state")["placements"].get(cid) == 1  # sent, filled, answer still pending
        finally:
            proc.send_signal(os_signal.SIGKILL)
            proc.wait(10)
    w.pump(1.0)
    assert [o["state"] for o in w.seen["orders"] if o["client_order_id"] == cid] == ["PENDING_NEW"]
    assert not w.seen["fills"] and not w.seen["positions"]  # died before recording anything but the intent
    child_log = log_path.read_text()
    assert "first order of this run" in child_log and cid in child_log
    assert_no_keys(child_log)

    restart = int(time.time() * 1000)
    ex = RunningExecutor(settings, executor_config(tmp_path, fake, entry_kind="taker"))
    try:
        opened = w.wait(
            "positions", lambda p: p["signal_id"] == sig["signal_id"] and p["event"] == "opened", timeout=60
        )
        # the signal was never committed by the dead process: it comes again and is refused
        w.wait("risk.events", lambda r: r["reason"] == "duplicate_signal" and r["event_time"] >= restart)
        w.pump(0.5)
    finally:
        assert ex.close() == 0
    assert [o["state"] for o in w.seen["orders"] if o["client_order_id"] == cid] == ["PENDING_NEW", "NEW", "FILLED"]
    [fill] = [f for f in w.seen["fills"] if f["client_order_id"] == cid]
    assert (fill["price"], fill["qty"], fill["side"]) == (50000.0, 0.4, "BUY")
    assert (opened["entry_price"], opened["qty"], opened["sl_price"]) == (50000.0, 0.4, 49500.0)
    st = fake.control("state")
    assert st["placements"] == {cid: 1} and fake.requests_for(cid) == ["POST"]  # found, never sent again
    assert D(st["positions"][SYM]["amount"]) == D("0.4")
    # the exchange and the restored state agree: nothing for the reconciliation to report
    assert not [r for r in w.seen["risk.events"] if r["scope"].startswith("reconcile:")]


@pytest.mark.parametrize("policy", ["flatten", "adopt"])
def test_reconciliation_reports_and_handles_orphans_then_an_unreachable_exchange_blocks_entries(
    env, fake, tmp_path, policy
):
    settings, feed, w = env
    fake.market(symbol="ETHUSDT", bid=2999.9, ask=3000.0, price=3000.0, qty=0.0, mark=3000.0)
    fake.control("orphan", {"symbol": SYM, "position_amt": "0.5", "entry_price": "49000"})
    fake.control(
        "orphan",
        {
            "order": {
                "symbol": SYM,
                "side": "SELL",
                "type": "LIMIT",
                "quantity": "0.1",
                "price": "51000",
                "timeInForce": "GTC",
                "newClientOrderId": "manual-1",
            }
        },
    )
    ex = RunningExecutor(settings, executor_config(tmp_path, fake, orphans=policy, interval_s=1))
    try:
        wait_running(ex.port)

        def finding(scope: str) -> dict:
            return w.wait("risk.events", lambda r: r["scope"] == scope)

        on_start_position = finding("reconcile:binance:BTCUSDT")
        on_start_order = finding("reconcile:binance:BTCUSDT:manual-1")
        fake.control("orphan", {"symbol": "ETHUSDT", "position_amt": "-2", "entry_price": "3100"})
        periodic = finding("reconcile:binance:ETHUSDT")  # found by the periodic run (every second here)
        w.pump(2.5)  # two more periodic runs
        st = fake.control("state")

        # --- the exchange goes away: entries blocked, and published -----------------------------------
        fake.stop()
        w.wait("risk.events", lambda r: r["scope"] == "global" and r["reason"] == "exchange_down")
        w.wait("risk.events", lambda r: r["scope"] == "reconcile:binance" and r["reason"] == "reconcile_failed")
        feed.trade(50000.0)
        blocked = feed.signal(price=50000.0, risk=500.0)
        refusal = w.wait(
            "risk.events",
            lambda r: r["scope"] == "strategy:v53:binance:BTCUSDT" and r["event_time"] >= blocked["eval_time"],
        )
        w.pump(0.5)
    finally:
        assert ex.close() == 0

    assert refusal["decision"] == "block" and refusal["reason"] == "exchange_down"
    assert not [o for o in w.seen["orders"] if o["signal_id"] == blocked["signal_id"]]
    reconcile_events = [r for r in w.seen["risk.events"] if r["scope"].startswith("reconcile:binance:")]
    if policy == "flatten":
        assert (on_start_position["decision"], on_start_position["reason"]) == (
            "flatten",
            "orphan_position:flatten_sent",
        )
        assert (on_start_order["decision"], on_start_order["reason"]) == ("flatten", "orphan_order:cancelled")
        assert periodic["reason"] == "orphan_position:flatten_sent"
        assert D(st["positions"][SYM]["amount"]) == 0 and D(st["positions"]["ETHUSDT"]["amount"]) == 0
        assert st["open_orders"] == []
        # the closes are our orders too: intent recorded, then the exchange's states and fills
        repairs = [o for o in w.seen["orders"] if o["reason"] == "reconcile_flatten"]
        by_symbol = {o["symbol"]: o for o in repairs}
        assert {(o["symbol"], o["side"], o["qty"], o["leg"], o["reduce_only"]) for o in repairs} == {
            (SYM, "SELL", 0.5, "exit", True),
            ("ETHUSDT", "BUY", 2.0, "exit", True),
        }
        for symbol, order in by_symbol.items():
            states = [o["state"] for o in w.seen["orders"] if o["client_order_id"] == order["client_order_id"]]
            assert states == ["PENDING_NEW", "NEW", "FILLED"], (symbol, states)
        assert {(f["symbol"], f["qty"], f["price"]) for f in w.seen["fills"]} == {
            (SYM, 0.5, 50000.0),
            ("ETHUSDT", 2.0, 3000.0),
        }
    else:
        assert (on_start_position["decision"], on_start_position["reason"]) == ("allow", "orphan_position:adopted")
        assert (on_start_order["decision"], on_start_order["reason"]) == ("allow", "orphan_order:adopted")
        assert periodic["reason"] == "orphan_position:adopted"
        assert D(st["positions"][SYM]["amount"]) == D("0.5") and D(st["positions"]["ETHUSDT"]["amount"]) == -2
        assert [o["clientOrderId"] for o in st["open_orders"]] == ["manual-1"]
        assert not w.seen["orders"] and not w.seen["fills"]  # adopted: nothing sent
    # each orphan reported once, although reconciliation ran several times
    assert len(reconcile_events) == 3, reconcile_events


async def test_live_mode_refuses_without_the_opt_in_or_keys_and_never_logs_them(tmp_path, capfd):
    keyed = Settings(
        home=tmp_path, broker="127.0.0.1:1", binance_api_key=TEST_API_KEY, binance_api_secret=TEST_API_SECRET
    )
    # a loopback port nobody listens on: a start that got past the checks could not reach anything else
    config = tmp_path / "executor.yaml"
    port = free_port()
    config.write_text(
        f"exchange:\n  rest_url: http://127.0.0.1:{port}\n  ws_url: ws://127.0.0.1:{port}\n"
        "  request_timeout_s: 1\n  connect_timeout_s: 1\n"
    )
    options = ExecuteOptions(config_path=config)

    async def refused(s: Settings, environ: dict) -> str:
        with capture_logs() as logs:
            assert await run_executor(s, "live", options, environ=environ) == 2
        [refusal] = [e for e in logs if e["event"] == "executor refused to start"]
        assert not any(e["event"] == "exchange connected" for e in logs)
        assert_no_keys(repr(logs))
        return refusal["reason"]

    assert LIVE_OPT_IN_ENV in await refused(keyed, {})
    assert LIVE_OPT_IN_ENV in await refused(keyed, {LIVE_OPT_IN_ENV: "yes"})
    unkeyed = Settings(home=tmp_path, broker="127.0.0.1:1", binance_api_key=TEST_API_KEY)
    assert "TAPEFLOW_BINANCE_API_SECRET" in await refused(unkeyed, OPT_IN)
    # opt-in and keys: past every check, and only then does it try (and here fail) to connect
    assert f"cannot reach the exchange at http://127.0.0.1:{port}" in await refused(keyed, OPT_IN)
    out, err = capfd.readouterr()
    assert_no_keys(out, err)


# --- the pure parts the service relies on ----------------------------------------------------------
def test_compare_leaves_symbols_with_orders_in_flight_for_the_next_run():
    exchange = {"BTCUSDT": 0.4, "ETHUSDT": -2.0}
    # our entry on BTCUSDT filled at the exchange but its fill has not arrived yet: not an orphan
    findings = compare(exchange, [], {}, {"tf-entry"}, in_flight={"BTCUSDT"})
    assert [(f.kind, f.symbol, f.exchange_amount) for f in findings] == [("orphan_position", "ETHUSDT", -2.0)]
    assert {f.symbol for f in compare(exchange, [], {}, set())} == {"BTCUSDT", "ETHUSDT"}
    assert Finding("orphan_position", "X", "", action="flatten sent tfrc01").outcome == "flatten_sent"
    assert Finding("orphan_order", "X", "", action="cancel failed: HTTP 503").outcome == "cancel_failed"
    assert Finding("orphan_order", "X", "", action="adopted").outcome == "adopted"


def test_a_failed_reconciliation_is_retried_sooner_and_blocks_entries_until_one_succeeds():
    class Exchange:
        up = False

        def positions(self):
            if not self.up:
                raise BinanceApiError(None, None, "ConnectionRefusedError: no answer")
            return {}

        def open_orders(self):
            return []

    cfg = ExecutorConfig()
    venue = Exchange()
    ex = Executor(cfg, "testnet", PaperBroker(cfg.fees, cfg.paper), ListSink(), T0)
    rec = Reconciler(venue, "flatten", interval_ms=300_000, retry_ms=10_000)
    assert rec.due(T0) and ex.reconcile(rec, T0).error is not None
    assert not ex.venue_up and not rec.due(T0 + 9_999) and rec.due(T0 + 10_000)
    ex.reconcile(rec, T0 + 10_000)  # still down: logged, not published again
    venue.up = True
    assert ex.reconcile(rec, T0 + 20_000).ok and ex.venue_up
    assert not rec.due(T0 + 20_000 + 299_999) and rec.due(T0 + 320_000)
    assert [(r["decision"], r["scope"], r["reason"]) for r in ex.sink.of("risk.events")] == [
        ("block", "reconcile:binance", "reconcile_failed"),
        ("resume", "reconcile:binance", "reconcile_ok"),
    ]


def test_an_entry_that_ends_part_filled_opens_a_position_of_what_filled():
    """Maker entry, 40 of 100 filled when the timeout cancels it: the 40 are managed, at 40 % of the 1R."""

    class ScriptedBroker(PaperBroker):
        mode = "testnet"

        def submit(self, request, now_ms):
            self.request = request
            return [OrderUpdate(request.client_order_id, "NEW", 0.0, None, "9", now_ms)]

        def cancel(self, client_order_id, now_ms, reason):
            return [
                Execution(
                    client_order_id, "9", "b:BTCUSDT:1", "BUY", 100.0, 40.0, 0.8, "USDT", "maker", 100.0, now_ms - 1
                ),
                OrderUpdate(client_order_id, "CANCELED", 40.0, 100.0, "9", now_ms, reason),
            ]

    cfg = ExecutorConfig(entry=EntryPolicy(kind="maker_first", maker_timeout_ms=1000))
    sink = ListSink()
    ex = Executor(cfg, "testnet", ScriptedBroker(cfg.fees, cfg.paper), sink, T0)
    ex.on_book(book_record(100.0, 100.1, T0), T0)
    assert ex.on_signal(signal_record(price=100.0, risk=2.0, eval_time=T0), T0).allowed  # 1R 200 = 100 x 2.0
    assert ex.broker.request.type == "LIMIT" and ex.broker.request.qty == 100.0
    ex.on_clock(T0 + 1000)
    [opened] = sink.of("positions")
    assert (opened["qty"], opened["entry_price"], opened["sl_price"], opened["tp1_price"]) == (40.0, 100.0, 98.0, 102.0)
    assert opened["r_usd"] == pytest.approx(80.0) and opened["fees_r"] == pytest.approx(0.8 / 80.0)
    assert not [o for o in sink.of("orders") if o["client_order_id"].endswith("-ef")]  # no taker top-up
