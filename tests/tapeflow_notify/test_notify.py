"""The notifiers (tapeflow_notify) against a local HTTP server that records what it received.

Units: the wording and the choice of what is worth a message, the rate limit with its summary, a
failing or hanging channel (counted, never blocking `submit`). Integration: `tapeflow notify` as a
process reads real records from the broker and delivers them to Telegram-, Discord- and webhook-shaped
endpoints on loopback; its secrets never appear in its output.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from confluent_kafka import Producer

from schemas.registry import FileSchemaRegistry
from schemas.serde import AvroSerde
from tapeflow_notify.channels import channels_from
from tapeflow_notify.dispatch import Dispatcher, TokenBucket
from tapeflow_notify.messages import note_for
from tapeflow_notify.metrics import NotifyMetrics
from tapeflow_runtime.kafka_client import ensure_topics
from tapeflow_runtime.settings import Settings
from tests.support.services import http_status
from tests.tapeflow_notify.test_market_alerts import FIRING
from tests.tapeflow_notify.test_market_alerts import T0 as MARKET_T0
from tests.tapeflow_notify.test_market_alerts import rec as feature_record

TOKEN = "123456:SECRET-bot-token-do-not-log"
HOOK_SECRET = "hook-secret-xyz"

SIGNAL = {
    "signal_id": "v53:abc:binance:BTCUSDT:1700000000000",
    "strategy": "v53",
    "strategy_version": "1",
    "config_hash": "abc",
    "exchange": "binance",
    "symbol": "BTCUSDT",
    "eval_time": 1_700_000_000_000,
    "direction": "LONG",
    "tier": "heavy",
    "score": 87.5,
    "factors": {"direction": 55.0},
    "price": 67000.5,
    "atr": 120.0,
    "risk_distance": 180.0,
    "sl_price": 66820.5,
    "tp1_price": 67270.5,
    "tp2_price": 67540.5,
    "sl_r": -1.0,
    "tp1_r": 1.5,
    "tp2_r": 3.0,
    "is_flip": False,
}
FILL = {
    "exchange": "binance",
    "symbol": "BTCUSDT",
    "mode": "paper",
    "client_order_id": "tfabc-en",
    "exchange_order_id": "p1",
    "trade_id": "p:1:tfabc-en",
    "side": "BUY",
    "price": 67001.0,
    "qty": 0.003,
    "fee": 0.1005,
    "fee_asset": "USDT",
    "liquidity": "taker",
    "reference_price": 67000.5,
    "event_time": 1_700_000_000_100,
}
POSITION = {
    "position_id": "pos-abc",
    "signal_id": SIGNAL["signal_id"],
    "strategy": "v53",
    "strategy_version": "1",
    "config_hash": "abc",
    "exchange": "binance",
    "symbol": "BTCUSDT",
    "mode": "paper",
    "event": "closed",
    "direction": "LONG",
    "tier": "heavy",
    "entry_price": 67001.0,
    "qty": 0.003,
    "r_usd": 300.0,
    "sl_price": 66820.5,
    "tp1_price": 67270.5,
    "tp2_price": 67540.5,
    "exit_price": 67540.5,
    "exit_reason": "tp",
    "pnl_r_gross": 2.25,
    "pnl_r_net": 2.1,
    "fees_r": 0.15,
    "slippage_r": 0.0,
    "event_time": 1_700_000_600_000,
}
RISK = {
    "scope": "global",
    "mode": "paper",
    "decision": "halt",
    "state": "halted",
    "reason": "kill_switch",
    "daily_pnl_r": -1.5,
    "consecutive_losses": 2,
    "paused_until": None,
    "event_time": 1_700_000_700_000,
}


# --- a local server that records every request -----------------------------------------------------------
class Recorder:
    """POSTs are recorded as (path, json body); `status` and `delay_s` change how it answers. An answer
    to a client that has gone (a held request whose sender was cancelled) is counted in `abandoned`,
    not printed as a traceback by socketserver."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict]] = []
        self.abandoned = 0
        self.status = 200
        self.delay_s = 0.0
        self.release = threading.Event()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                recorder.requests.append((self.path, body))
                if recorder.delay_s:
                    recorder.release.wait(recorder.delay_s)
                try:
                    self.send_response(recorder.status)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(b'{"ok": true}')
                except (BrokenPipeError, ConnectionResetError):
                    recorder.abandoned += 1

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def bodies(self, prefix: str) -> list[dict]:
        return [body for path, body in self.requests if path.startswith(prefix)]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recorder():
    r = Recorder()
    yield r
    r.close()


def settings_for(recorder: Recorder, **extra) -> Settings:
    return Settings(
        telegram_bot_token=TOKEN,
        telegram_chat_id="-1001",
        telegram_api_url=recorder.url + "/tg",
        discord_webhook_url=recorder.url + "/discord/1/" + HOOK_SECRET,
        notify_webhook_url=recorder.url + "/hook?key=" + HOOK_SECRET,
        **extra,
    )


def sample(metrics: NotifyMetrics, name: str, **labels) -> float:
    return sum(
        s.value
        for m in metrics.registry.collect()
        for s in m.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def settle(dispatcher: Dispatcher, expect: int, recorder: Recorder, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while len(recorder.requests) < expect and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    await dispatcher.drain(5.0)


# --- what is worth a message and its words -------------------------------------------------------------
def test_every_event_kind_reads_as_one_line():
    assert note_for("signals", SIGNAL).text == (
        "signal LONG BTCUSDT (binance): v53 heavy, score 87.5, price 67000.5, SL 66820.5, TP1 67270.5, TP2 67540.5"
    )
    assert note_for("fills", FILL).text == (
        "fill paper BUY 0.003 BTCUSDT @ 67001 (taker, fee 0.1005 USDT, order tfabc-en)"
    )
    assert note_for("positions", POSITION).text == (
        "closed paper LONG BTCUSDT v53: tp, net +2.10R (gross +2.25R), entry 67001 -> exit 67540.5"
    )
    assert note_for("risk.events", RISK).text == "risk paper global: halt (kill_switch), state halted, day -1.50R"


def test_only_closed_positions_and_guard_level_risk_events_are_sent():
    assert note_for("positions", {**POSITION, "event": "opened"}) is None
    assert note_for("positions", {**POSITION, "event": "tp1"}) is None
    assert note_for("risk.events", {**RISK, "decision": "allow", "reason": "checks_passed"}) is None
    blocked_entry = {**RISK, "scope": "strategy:v53:binance:BTCUSDT", "decision": "block", "state": "active"}
    assert note_for("risk.events", blocked_entry) is None
    stale = {**RISK, "scope": "symbol:binance:BTCUSDT", "decision": "block", "reason": "stale_market_data"}
    assert note_for("risk.events", stale).kind == "risk"
    assert note_for("orders", {}) is None


def test_channels_are_on_only_when_their_secrets_are_set(recorder):
    assert channels_from(Settings()) == []
    assert [c.name for c in channels_from(settings_for(recorder))] == ["telegram", "discord", "webhook"]
    with pytest.raises(ValueError, match="TELEGRAM_CHAT_ID"):
        channels_from(Settings(telegram_bot_token=TOKEN))
    assert TOKEN not in repr(channels_from(settings_for(recorder)))
    masked = settings_for(recorder).masked()
    assert TOKEN not in str(masked) and HOOK_SECRET not in str(masked)


def test_token_bucket_allows_a_burst_then_the_rate():
    now = [0.0]
    bucket = TokenBucket(60, clock=lambda: now[0])  # one a second, bursts of 60
    assert sum(bucket.take() for _ in range(100)) == 60
    now[0] += 2.5
    assert sum(bucket.take() for _ in range(10)) == 2


# --- delivery against the local server -------------------------------------------------------------------
async def test_each_channel_receives_its_own_shape(recorder):
    metrics = NotifyMetrics()
    dispatcher = Dispatcher(channels_from(settings_for(recorder)), 20, metrics)
    runner = asyncio.create_task(dispatcher.run())
    try:
        for topic, record in (("signals", SIGNAL), ("fills", FILL), ("positions", POSITION), ("risk.events", RISK)):
            dispatcher.submit(note_for(topic, record))
        await settle(dispatcher, 12, recorder)
    finally:
        runner.cancel()
    telegram = recorder.bodies(f"/tg/bot{TOKEN}/sendMessage")
    assert [b["text"].split()[0] for b in telegram] == ["signal", "fill", "closed", "risk"]
    assert all(b["chat_id"] == "-1001" for b in telegram)
    discord = recorder.bodies("/discord/1/" + HOOK_SECRET)
    assert [b["content"] for b in discord] == [b["text"] for b in telegram]
    assert discord[0]["allowed_mentions"] == {"parse": []}
    hooks = recorder.bodies("/hook?key=" + HOOK_SECRET)
    assert [h["kind"] for h in hooks] == ["signal", "fill", "position", "risk"]
    assert hooks[0]["record"]["signal_id"] == SIGNAL["signal_id"] and hooks[2]["record"]["pnl_r_net"] == 2.1
    for channel in ("telegram", "discord", "webhook"):
        assert sample(metrics, "tapeflow_notify_sent_total", channel=channel) == 4
        assert sample(metrics, "tapeflow_notify_failures_total", channel=channel) == 0


async def test_over_the_rate_the_rest_is_summarised_once_a_token_is_free(recorder):
    now = [0.0]
    metrics = NotifyMetrics()
    settings = Settings(notify_webhook_url=recorder.url + "/hook")
    dispatcher = Dispatcher(channels_from(settings), 3, metrics, clock=lambda: now[0])
    runner = asyncio.create_task(dispatcher.run())
    try:
        for i in range(3):
            dispatcher.submit(note_for("signals", {**SIGNAL, "score": 80.0 + i}))
        for _ in range(5):
            dispatcher.submit(note_for("fills", FILL))
        dispatcher.submit(note_for("positions", POSITION))
        await settle(dispatcher, 3, recorder)
        await asyncio.sleep(1.5)  # the summary check runs, but the bucket is empty: nothing more is sent
        assert [b["kind"] for b in recorder.bodies("/hook")] == ["signal"] * 3
        now[0] += 20.0  # one token back (3 a minute)
        await settle(dispatcher, 4, recorder)
        dispatcher.submit(note_for("signals", SIGNAL))  # no token left: held, summarised later
        now[0] += 20.0
        await settle(dispatcher, 5, recorder)
    finally:
        runner.cancel()
    bodies = recorder.bodies("/hook")
    assert [b["kind"] for b in bodies] == ["signal", "signal", "signal", "summary", "summary"]
    assert bodies[3]["text"] == "tapeflow: 6 notifications held back (limit 3/min): 5 fills, 1 position"
    assert bodies[3]["record"] == {"held": {"fill": 5, "position": 1}}
    assert bodies[4]["text"] == "tapeflow: 1 notification held back (limit 3/min): 1 signal"
    assert sample(metrics, "tapeflow_notify_suppressed_total", reason="rate_limit") == 7
    assert sample(metrics, "tapeflow_notify_sent_total", kind="summary") == 2


async def test_a_failing_channel_is_counted_and_the_others_still_deliver(recorder):
    metrics = NotifyMetrics()
    settings = Settings(
        notify_webhook_url=recorder.url + "/hook", discord_webhook_url="http://127.0.0.1:9/unreachable/" + HOOK_SECRET
    )  # nothing listens
    dispatcher = Dispatcher(channels_from(settings), 20, metrics)
    runner = asyncio.create_task(dispatcher.run())
    try:
        for _ in range(3):
            dispatcher.submit(note_for("signals", SIGNAL))
        await settle(dispatcher, 3, recorder)
        deadline = time.monotonic() + 10
        while sample(metrics, "tapeflow_notify_failures_total", channel="discord") < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        recorder.status = 500
        dispatcher.submit(note_for("fills", FILL))
        await settle(dispatcher, 4, recorder)
    finally:
        runner.cancel()
    assert sample(metrics, "tapeflow_notify_failures_total", channel="discord") == 4
    assert sample(metrics, "tapeflow_notify_sent_total", channel="webhook") == 3
    assert sample(metrics, "tapeflow_notify_failures_total", channel="webhook") == 1
    health = dispatcher.health()
    assert health["channels"]["discord"]["failing"] and not health["channels"]["webhook"]["failing"]
    assert not health["all_failing"]


async def test_a_hanging_channel_never_blocks_submit(recorder):
    """The server holds every request: submit still returns at once, the queue stays bounded and
    what does not fit is held back and counted."""
    recorder.delay_s = 30.0
    metrics = NotifyMetrics()
    dispatcher = Dispatcher(
        channels_from(Settings(notify_webhook_url=recorder.url + "/hook")), 600, metrics, queue_size=5
    )
    runner = asyncio.create_task(dispatcher.run())
    try:
        await asyncio.sleep(0)
        dispatcher.submit(note_for("signals", SIGNAL))
        deadline = time.monotonic() + 10
        while not recorder.requests and time.monotonic() < deadline:
            await asyncio.sleep(0.02)  # the sender is now stuck in the first request
        for _ in range(200):
            dispatcher.submit(note_for("fills", FILL))  # synchronous: it cannot wait for the server
        sender = dispatcher.senders[0]
        assert sender.queue.qsize() == 5
        assert sample(metrics, "tapeflow_notify_suppressed_total", reason="queue_full") == 195
        assert sender.held == {"fill": 195}
    finally:
        recorder.release.set()
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


# --- the process --------------------------------------------------------------------------------------
@pytest.mark.integration
def test_notify_process_delivers_topic_events_and_never_prints_its_secrets(
    kafka_bootstrap, topic_prefix, recorder, tmp_path
):
    ensure_topics(kafka_bootstrap, prefix=topic_prefix)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAPEFLOW_")}
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    env.update(
        TAPEFLOW_BROKER=kafka_bootstrap,
        TAPEFLOW_TOPIC_PREFIX=topic_prefix,
        TAPEFLOW_HOME=str(tmp_path),
        TAPEFLOW_TELEGRAM_BOT_TOKEN_FILE=str(token_file),
        TAPEFLOW_TELEGRAM_CHAT_ID="-1001",
        TAPEFLOW_TELEGRAM_API_URL=recorder.url + "/tg",
        TAPEFLOW_DISCORD_WEBHOOK_URL=recorder.url + "/discord/1/" + HOOK_SECRET,
        TAPEFLOW_NOTIFY_WEBHOOK_URL=recorder.url + "/hook?key=" + HOOK_SECRET,
        TAPEFLOW_LOG_LEVEL="DEBUG",
        TAPEFLOW_NOTIFY_EVENTS="signals,fills,positions,risk.events,features",
    )
    serde = AvroSerde(FileSchemaRegistry())
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    # history: a first run starts at the end, so this one is never announced
    producer.produce(
        topic_prefix + "signals",
        key=b"binance:BTCUSDT",
        value=serde.encode("signals", {**SIGNAL, "signal_id": "old", "score": 76.0}),
    )
    assert producer.flush(10) == 0
    log_path = tmp_path / "notify.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tapeflow", "notify", "--metrics-port", "0"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        port = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            match = re.search(r"metrics_port=(\d+)", log_path.read_text())
            if match and http_status(f"http://127.0.0.1:{match.group(1)}/health") == 200:
                port = int(match.group(1))
                break
            assert proc.poll() is None, log_path.read_text()
            time.sleep(0.2)
        assert port, f"not healthy:\n{log_path.read_text()}"
        for topic, record in (
            ("signals", SIGNAL),
            ("fills", FILL),
            ("positions", {**POSITION, "event": "opened"}),
            ("positions", POSITION),
            ("risk.events", RISK),
        ):
            producer.produce(topic_prefix + topic, key=b"binance:BTCUSDT", value=serde.encode(topic, record))
        # the market alerts: engine feature records with detector fields (each rule once; an OI spike
        # still holding a tick later is not sent again), as the engine writes them to `features`
        for k, (_kind, inputs) in enumerate([*FIRING.items(), ("oi_spike", FIRING["oi_spike"])]):
            producer.produce(
                topic_prefix + "features",
                key=b"binance:ETHUSDT",
                value=serde.encode("features", feature_record(inputs, MARKET_T0 + (k // 4) * 15_000, "ETHUSDT")),
            )
        assert producer.flush(10) == 0
        deadline = time.monotonic() + 30
        while len(recorder.requests) < 24 and time.monotonic() < deadline:
            time.sleep(0.1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            metrics = resp.read().decode()
        proc.terminate()
        assert proc.wait(30) == 0
    finally:
        proc.kill()
    output = log_path.read_text()
    telegram = [b["text"] for b in recorder.bodies(f"/tg/bot{TOKEN}/sendMessage")]
    market = [t for t in telegram if "(binance):" in t and "ETHUSDT" in t]
    assert sorted(t.split(" ETHUSDT")[0] for t in market) == [
        "divergence",
        "liquidation cascade",
        "oi spike",
        "wall pulled",
    ], telegram
    assert sorted(t.split()[0] for t in telegram if t not in market) == ["closed", "fill", "risk", "signal"], output
    assert "score 87.5" in " ".join(telegram) and "score 76.0" not in " ".join(telegram)
    assert len(recorder.bodies("/discord/")) == 8 and len(recorder.bodies("/hook")) == 8
    hooked = [b for b in recorder.bodies("/hook") if b["kind"] in FIRING]
    assert sorted(b["kind"] for b in hooked) == sorted(FIRING) and {b["record"]["symbol"] for b in hooked} == {
        "ETHUSDT"
    }, hooked
    assert 'tapeflow_notify_sent_total{channel="telegram",kind="signal"} 1.0' in metrics
    assert 'tapeflow_notify_events_total{topic="positions"} 2.0' in metrics
    assert TOKEN not in output and HOOK_SECRET not in output
    assert "notifier started" in output and "telegram" in output


def test_notify_without_a_channel_refuses_to_start(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAPEFLOW_")}
    env.update(TAPEFLOW_HOME=str(tmp_path), TAPEFLOW_BROKER="127.0.0.1:9")
    res = subprocess.run(
        [sys.executable, "-m", "tapeflow", "notify"], env=env, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 2 and res.stderr.startswith("error: no notification channel configured")
    assert "Traceback" not in res.stderr
