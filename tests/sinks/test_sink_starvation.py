"""A sink the broker starves says so: ``/health`` answers 503 ``degraded`` with the partition and why.

On the embedded broker (Tansu 0.6.0) a consumer with the live 10 ms fetch wait receives nothing from a
partition of ~20,000+ record batches; the sink used to keep saying ``running`` while it stored
nothing (issue 21: 28,216 of 56,756 trades stored, ``tapeflow status`` said ok). Here the partition
holds 30,000 single-record batches (what a live producer writes at one trade per batch) and keeps
receiving one more every half second, while the sink's committed offset cannot move. Where a 10 ms wait
starts starving depends on the host's speed (on 2026-11-28 a fast host served it to 30,070 batches, then
starved; another run was never starved within 3 minutes), so the starving sink gets a 1 ms wait, which
Tansu cannot meet for a partition of this size on any host seen: every fetch is answered empty.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time

import psycopg
import pytest

from tapeflow.stack.app_services import http_json
from tapeflow.stack.process import free_port
from tapeflow_runtime.kafka_client import ensure_topics
from tests.sinks.test_sink import SERDE, TRADES_RANGE, trade
from tests.support.kafka import single_record_batches
from tests.support.storage import migrate_for_rows

pytestmark = pytest.mark.integration

BATCHES = 30_000


def _url(conninfo: str) -> str:
    d = psycopg.conninfo.conninfo_to_dict(conninfo)
    return f"postgresql://{d['user']}:{d['password']}@{d['host']}:{d['port']}/{d['dbname']}"


@pytest.mark.timeout(600)
def test_a_starving_sink_reports_degraded_with_the_partition(kafka_bootstrap, topic_prefix, database, tmp_path):
    migrate_for_rows(database, TRADES_RANGE)
    ensure_topics(kafka_bootstrap, prefix=topic_prefix)
    topic = topic_prefix + "md.trades"
    single_record_batches(kafka_bootstrap, topic, [SERDE.encode("md.trades", trade(i)) for i in range(BATCHES)], 0)
    port = free_port()
    env = {**os.environ, "TAPEFLOW_BROKER": kafka_bootstrap, "TAPEFLOW_DATABASE_URL": _url(database),
           "TAPEFLOW_TOPIC_PREFIX": topic_prefix, "TAPEFLOW_HOME": str(tmp_path / "home"),
           "TAPEFLOW_STARVATION_WINDOW_S": "6", "TAPEFLOW_SINK_FETCH_WAIT_MS": "1"}  # starved on any host
    sink = subprocess.Popen([sys.executable, "-m", "tapeflow", "sink", "--topics", "md.trades",
                             "--metrics-port", str(port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    stop = threading.Event()

    def trickle():  # the exchange keeps trading: the partition's end offset moves
        i = BATCHES
        while not stop.wait(0.5):
            single_record_batches(kafka_bootstrap, topic, [SERDE.encode("md.trades", trade(i))], 0)
            i += 1

    feeder = threading.Thread(target=trickle, daemon=True)
    feeder.start()
    seen = []
    try:
        deadline = time.monotonic() + 180
        while True:
            assert sink.poll() is None, sink.stderr.read().decode()[-2000:]
            code, body = http_json(f"http://127.0.0.1:{port}/health")
            if code:
                seen.append(body.get("status"))
            if body.get("status") == "degraded":
                break
            assert time.monotonic() < deadline, f"never degraded; statuses seen {sorted(set(seen))}"
            time.sleep(0.5)
        assert code == 503
        detail = body["detail"]
        match = re.match(rf"degraded: {re.escape(topic)}\[0\] not receiving: position ([\d,]+) for \d+ s "
                         r"while the end offset moved [\d,]+ -> ([\d,]+);", detail)
        assert match and "more partitions" not in detail, detail
        position, end = (int(g.replace(",", "")) for g in match.groups())
        assert position < BATCHES < end, detail
        assert "running" in seen or "idle" in seen  # healthy first, until the window had passed
        with psycopg.connect(database) as conn:
            stored = conn.execute("SELECT count(*) FROM trades").fetchone()[0]
        assert stored < BATCHES  # it really is not receiving: what the status now says
        print(f"\n{detail} ({stored} of {BATCHES} stored)")
    finally:
        stop.set()
        feeder.join(10)
        sink.terminate()
        sink.wait(30)


@pytest.mark.timeout(600)
def test_with_its_default_fetch_wait_the_sink_stores_a_partition_of_many_batches(kafka_bootstrap, topic_prefix,
                                                                                  database):
    """The same partition of 30,000 single-record batches with the sink's default 500 ms fetch wait (the
    history readers'): Tansu assembles those fetches in time, every trade is stored once, and the
    sink never reports starving."""
    from sinks.consumer import SinkConfig, TopicSink
    from tests.sinks.test_sink import count, run_sink_until

    migrate_for_rows(database, TRADES_RANGE)
    ensure_topics(kafka_bootstrap, prefix=topic_prefix)
    single_record_batches(kafka_bootstrap, topic_prefix + "md.trades",
                          [SERDE.encode("md.trades", trade(i)) for i in range(BATCHES)], 0)
    sink = TopicSink(SinkConfig(topics=["md.trades"], topic_prefix=topic_prefix, group_id=f"{topic_prefix}sink",
                                starvation_window_s=6.0), kafka_bootstrap, database, SERDE)
    assert sink.config.fetch_wait_ms == 500
    verdicts = []

    def stored_all() -> bool:
        verdicts.append(sink.starving())
        return sink.metrics.records._value.get() >= BATCHES

    run_sink_until(sink, stored_all, timeout=150)
    assert count(database) == BATCHES
    assert not any(verdicts), [v for v in verdicts if v]
