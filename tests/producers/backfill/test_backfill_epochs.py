"""`tapeflow backfill binance-vision` into a running embedded stack follows its topic epochs: it
writes where the epochs file says, switches with a rollover at a record boundary after delivering
everything under the old names, and registers so the rollover's switch step waits for it (before,
a backfill kept writing to the old names, which the rollover drained and deleted: lost, while its
checkpoint counted them delivered)."""

from __future__ import annotations

import time
from datetime import date
from types import SimpleNamespace

import pytest

from producers.backfill import run_backfill
from producers.backfill.trade_producer import TradeTopicProducer
from tapeflow.stack.epochs import EpochRoller
from tapeflow_runtime.epochs import EPOCHS_FILE, WRITERS_DIR, EpochState, EpochWriter, epoch_writers
from tapeflow_runtime.process_records import ProcessRecord
from tests.producers.backfill.test_backfill import RECEIVE_TIME, SYMBOL, trades_in
from tests.support.backfill import HEADER, csv_row, expected_record, write_csv

pytestmark = pytest.mark.integration

DAY = date(2024, 1, 1)
IDS = list(range(5_000, 8_000))


def test_a_backfill_switches_epochs_with_the_stack_and_loses_nothing(kafka_bootstrap, topic_prefix, tmp_path,
                                                                     monkeypatch):
    home = tmp_path / "home"
    archives = tmp_path / "archives"
    archives.mkdir()
    write_csv(archives, SYMBOL, DAY, [HEADER, *(csv_row(i, DAY) for i in IDS)])
    calls = [0]
    seen_registered: list[list[dict]] = []
    publish_trade = TradeTopicProducer.publish_trade

    def publish_counting(self, key, record):  # the rollover's switch step comes at row 1,000
        calls[0] += 1
        if calls[0] == 1_000:
            seen_registered.append(epoch_writers(home))
            EpochState(epoch=0, step="switch").save(home / EPOCHS_FILE)
            time.sleep(0.3)  # past the writer's 0.25 s look at the file
        publish_trade(self, key, record)

    monkeypatch.setattr(TradeTopicProducer, "publish_trade", publish_counting)
    clock = lambda: RECEIVE_TIME  # noqa: E731
    summary = run_backfill(bootstrap=kafka_bootstrap, topic_prefix=topic_prefix, home=home, symbol=SYMBOL,
                           start=DAY, end=DAY, directory=archives, progress=False, clock=clock, follow_epochs=True)
    old = trades_in(kafka_bootstrap, topic_prefix + "md.trades")
    new = trades_in(kafka_bootstrap, topic_prefix + "e1.md.trades")
    assert old + new == [expected_record(i, DAY, RECEIVE_TIME) for i in IDS]  # every row once, in order
    assert len(old) >= 1_000 and len(old) % 256 == 0 and new  # switched at the next look after the rollover
    assert summary.topic == topic_prefix + "md.trades"  # the checkpoint and summary keep the base name
    # registered while it ran, under the prefix it wrote to; gone once it ended
    (registered,) = seen_registered[0]
    assert registered.extra["topic_prefix"] == topic_prefix and registered.name == f"backfill {SYMBOL}"
    assert epoch_writers(home) == [] and not list((home / WRITERS_DIR).glob("*.json"))


def test_a_backfill_into_a_stack_already_in_epoch_1_writes_there(kafka_bootstrap, topic_prefix, tmp_path):
    home = tmp_path / "home"
    archives = tmp_path / "archives"
    archives.mkdir()
    write_csv(archives, SYMBOL, DAY, [HEADER, *(csv_row(i, DAY) for i in IDS[:50])])
    EpochState(epoch=1, rollovers=1).save(home / EPOCHS_FILE)
    run_backfill(bootstrap=kafka_bootstrap, topic_prefix=topic_prefix, home=home, symbol=SYMBOL, start=DAY,
                 end=DAY, directory=archives, progress=False, clock=lambda: RECEIVE_TIME, follow_epochs=True)
    assert [t["agg_id"] for t in trades_in(kafka_bootstrap, topic_prefix + "e1.md.trades")] == IDS[:50]


def test_the_switch_step_waits_for_a_registered_writer(tmp_path):
    said: list[str] = []
    sup = SimpleNamespace(settings=SimpleNamespace(topic_prefix="s.", epoch_check_s=1.0, topic_retention="24h",
                                                   topic_retention_s=lambda: 86_400.0, topic_memory_mb=0),
                          paths=SimpleNamespace(home=tmp_path), addresses={}, running={})
    roller = EpochRoller(sup, said.append)
    roller.state = EpochState(epoch=0, step="switch")
    writer = EpochWriter(tmp_path, "s.", "backfill BTCUSDT")
    try:
        assert writer.current == "s."
        assert roller._step_switch("fake:9092") is False
        assert any("waiting for backfill BTCUSDT" in line and "to write to s.e1." in line for line in said), said
        writer.switched("s.e1.")
        assert roller._step_switch("fake:9092") is True
    finally:
        writer.close()
    ProcessRecord("backfill ETHUSDT", 999999, 1.0, "", 1.0, "", {"topic_prefix": "s."}).save(
        tmp_path / WRITERS_DIR / "999999.json")
    assert roller._step_switch("fake:9092") is True  # a dead writer's file does not hold the rollover
    assert not (tmp_path / WRITERS_DIR / "999999.json").exists()
