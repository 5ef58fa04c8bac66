"""The executor service trading a replay already in the broker fills exactly as the backtest does.

A generated 3-hour session (two symbols, crossing a funding time) is backtested; its md.trades, md.mark
and md.book records and the signals the backtest's engine produced are then published to the real
broker, all before the executor starts, so it reads hours of trades next to the signals (the case its
event-time input order exists for: `execution.input_order`). Its `positions` must equal the
backtest's position events field for field.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
import yaml

from backtest.runner import BacktestRunner
from backtest.sources.synthetic import SyntheticSource
from execution.config import ExecutorConfig
from execution.service import ExecuteOptions, run_executor
from producers.metrics import ProducerMetrics
from schemas.registry import FileSchemaRegistry
from schemas.serde import AvroSerde
from stream_apps.core.strategy import parse_strategy
from tapeflow_runtime.kafka_client import ensure_topics
from tapeflow_runtime.publisher import Publisher
from tapeflow_runtime.settings import Settings
from tests.backtest.test_backtest_stored_sources import trade_records
from tests.support.executor_io import free_port, wait_consumed

pytestmark = pytest.mark.integration

H = 3_600_000
START = 1_704_090_600_000  # 2024-01-01 06:30 UTC: the 08:00 funding time falls inside
END = START + 3 * H
STRATEGY = parse_strategy(
    {
        "name": "replay",
        "version": "1",
        "windows": {"cvd_fast": "5m", "cvd_mid": "20m"},
        "warmup": "30m",
        "weights": {"direction": 55, "crowding": 0, "environment": 0, "confirmation": 15, "auxiliary": 0},
        "thresholds": {"entry": 55, "heavy": 70, "flip": 55},
        "cooldown": "3m",
        "exits": {"sl_atr_mult": 1.0, "tp1_r": 0.6, "tp2_r": 1.2, "timeout_min": 20},
    }
)
EXECUTOR = {
    "timeout_min": 20,
    "paper": {"slippage_bps": 1.0},
    "risk": {
        "max_signal_age_s": 1e9,
        "stale_market_data_s": 1e9,
        "daily_loss_limit_r": 1000,
        "max_consecutive_losses": 1000,
        "max_open_positions": 100,
    },
}
FIELDS = (
    "position_id",
    "event",
    "signal_id",
    "event_time",
    "entry_price",
    "qty",
    "sl_price",
    "exit_price",
    "exit_reason",
    "pnl_r_gross",
    "fees_r",
    "slippage_r",
    "funding_r",
    "pnl_r_net",
)


def view(events) -> dict[tuple[str, str], tuple]:
    return {(e["position_id"], e["event"]): tuple(e[f] for f in FIELDS[2:]) for e in events}


@pytest.mark.timeout(900)
def test_the_executor_trades_a_replay_already_in_the_broker_as_the_backtest(
    kafka_bootstrap, topic_prefix, tmp_path, read_topic
):
    session = SyntheticSource(["BTCUSDT", "ETHUSDT"], START, END, seed=5, trades_per_s={"BTCUSDT": 3, "ETHUSDT": 2})
    runner = BacktestRunner([STRATEGY], ExecutorConfig.model_validate(EXECUTOR), account="shared")
    runner.run(session)
    expected = runner.position_events()
    assert sum(1 for e in expected if e["event"] == "closed") >= 10
    assert any(e["funding_r"] for e in expected if e["event"] == "closed")

    ensure_topics(kafka_bootstrap, prefix=topic_prefix)
    publisher = Publisher(
        kafka_bootstrap, AvroSerde(FileSchemaRegistry()), ProducerMetrics(), topic_prefix=topic_prefix
    )
    counts = {"md.trades": 0, "md.mark": 0, "md.book": 0, "signals": len(runner.signals)}
    for block in SyntheticSource(
        ["BTCUSDT", "ETHUSDT"], START, END, seed=5, trades_per_s={"BTCUSDT": 3, "ETHUSDT": 2}
    ).blocks():
        for batch in block.trades.values():  # the source's blocks are whole hours: only the run's range
            for r in trade_records(batch):
                if START <= r["trade_time"] < END:
                    publisher.publish("md.trades", f"binance:{r['symbol']}", r, r["receive_time"])
                    counts["md.trades"] += 1
        for kind, topic in (("marks", "md.mark"), ("books", "md.book")):
            for r in block.records[kind]:
                if START <= r["event_time"] < END:
                    publisher.publish(topic, f"binance:{r['symbol']}", r, r["receive_time"])
                    counts[topic] += 1
    for s in runner.signals:
        publisher.publish("signals", f"binance:{s['symbol']}", s, s["eval_time"])
    assert publisher.flush(60) == 0 and not publisher.failed

    config = tmp_path / "executor.yaml"
    config.write_text(yaml.safe_dump(EXECUTOR))
    settings = Settings(home=tmp_path, broker=kafka_bootstrap, topic_prefix=topic_prefix)
    stop, code = threading.Event(), []
    options = ExecuteOptions(
        config_path=config, start_from="earliest", stop=stop, restore_idle_s=0.3, metrics_port=free_port()
    )
    thread = threading.Thread(
        target=lambda: code.append(asyncio.run(run_executor(settings, "paper", options))), daemon=True
    )
    thread.start()
    try:
        for topic, count in counts.items():
            wait_consumed(kafka_bootstrap, topic_prefix, topic, count, timeout=600)
    finally:
        stop.set()
        thread.join(60)
    assert code == [0]
    published = [r["value"] for r in read_topic(kafka_bootstrap, topic_prefix + "positions", idle_s=1.5)]
    got, want = view(published), view(expected)
    assert sorted(set(want) - set(got)) == [] and sorted(set(got) - set(want)) == []
    assert [(k, got[k], want[k]) for k in sorted(want) if got[k] != want[k]] == []
