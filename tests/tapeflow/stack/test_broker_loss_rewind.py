"""The embedded broker came back empty: the live producer's checkpoint goes back to the database's last
trade (`ProducerService.rewind_to_stored`, `Supervisor._rewind_producers`), so the trades the lost
broker had acknowledged but the sink had not stored are filled again. The whole fault runs in
tests/faults/test_broker_and_links.py."""

from __future__ import annotations

import json
from types import SimpleNamespace

import psycopg

from tapeflow.stack.app_services import FakeExchangeService, ProducerService
from tapeflow.stack.supervisor import Supervisor
from tapeflow_runtime.paths import StackPaths
from tapeflow_runtime.settings import Settings


def _producer(tmp_path, fake=False):
    paths = StackPaths(tmp_path)
    paths.ensure()
    settings = Settings(home=tmp_path, broker=None, database_url=None, epoch_max_batches=0)
    service = ProducerService(settings, paths, FakeExchangeService(settings, paths) if fake else None)
    return settings, paths, service


def _checkpoint(service, last):
    path = service.checkpoint_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"last_agg_id": last, "saved_at": 1.0}))
    return path


def test_the_checkpoint_goes_back_to_the_last_stored_trade_never_forward(tmp_path, database):
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE TABLE trades (exchange text, symbol text, agg_id bigint)")
        conn.execute("INSERT INTO trades VALUES ('binance', 'BTCUSDT', 89), ('binance', 'BTCUSDT', 90), "
                     "('binance', 'SOLUSDT', 40), ('bybit', 'ETHUSDT', 10)")
    _, _, service = _producer(tmp_path)
    path = _checkpoint(service, {"BTCUSDT": 100, "ETHUSDT": 50, "SOLUSDT": 30})
    assert service.rewind_to_stored(database) == {"BTCUSDT": (100, 90)}
    saved = json.loads(path.read_text())
    # ETHUSDT: nothing of Binance's stored (left alone); SOLUSDT: the database is ahead (never forward)
    assert saved["last_agg_id"] == {"BTCUSDT": 90, "ETHUSDT": 50, "SOLUSDT": 30}
    assert saved["saved_at"] == 1.0
    assert service.rewind_to_stored(database) == {}  # done once


def test_a_batch_a_second_writer_overtook_is_filled_again(tmp_path, database):
    """The sink's two writers commit out of order: when the broker died the table held 101-110 and
    121-130 but not 111-120. Rewound to the plain maximum (130) those ten trades were lost; the
    checkpoint goes back to 110. A hole further back than the window is not the lost broker's."""
    from tapeflow.stack.app_services import REWIND_WINDOW_IDS

    old = 1_000
    top = old + REWIND_WINDOW_IDS + 200
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE TABLE trades (exchange text, symbol text, agg_id bigint)")
        conn.execute("INSERT INTO trades SELECT 'binance', 'BTCUSDT', i FROM generate_series(101, 110) i")
        conn.execute("INSERT INTO trades SELECT 'binance', 'BTCUSDT', i FROM generate_series(121, 130) i")
        # ETHUSDT: a given-up hole long ago (999..1,000 missing), nothing missing near the end
        conn.execute("INSERT INTO trades SELECT 'binance', 'ETHUSDT', i FROM generate_series(900, 998) i")
        conn.execute("INSERT INTO trades SELECT 'binance', 'ETHUSDT', i FROM generate_series(%s, %s) i",
                     (old + 1, top))
    _, _, service = _producer(tmp_path)
    _checkpoint(service, {"BTCUSDT": 140, "ETHUSDT": top + 5})
    assert service.rewind_to_stored(database) == {"BTCUSDT": (140, 110), "ETHUSDT": (top + 5, top)}


def test_a_replay_producer_and_a_missing_checkpoint_are_left_alone(tmp_path, database):
    _, _, live = _producer(tmp_path)
    assert live.rewind_to_stored(database) == {}  # no checkpoint yet: nothing to rewind, no query
    _, _, replay = _producer(tmp_path, fake=True)
    path = _checkpoint(replay, {"BTCUSDT": 100})
    assert replay.rewind_to_stored(database) == {}
    assert json.loads(path.read_text())["last_agg_id"] == {"BTCUSDT": 100}


def test_without_the_database_the_restart_goes_on_and_says_so(tmp_path):
    settings, paths, service = _producer(tmp_path)
    path = _checkpoint(service, {"BTCUSDT": 100})
    said: list[str] = []
    sup = Supervisor(settings, paths, say=said.append, services=[], steps=[])
    sup.addresses["database"] = "127.0.0.1:1"  # nothing listens there
    sup._rewind_producers([("producer", SimpleNamespace(service=service)),
                           ("sink", SimpleNamespace(service=SimpleNamespace()))])
    assert len(said) == 1 and "producer: checkpoint not rewound to the database" in said[0], said
    assert json.loads(path.read_text())["last_agg_id"] == {"BTCUSDT": 100}
