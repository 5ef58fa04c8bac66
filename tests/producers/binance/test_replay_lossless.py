"""A replay at `max` speed loses nothing: every aggTrade of a multi-hour recording reaches `md.trades`.

Run as users run it (`tapeflow up --source replay:DIR --replay-speed max`): the fake exchange and the
producer are separate processes, so the fake finishes sending long before the producer has read and
published everything it was sent. The producer may end only once every frame the fake sent on its
connection has been read, processed and delivered (the fake's end-of-replay marker carries the count),
and its summary line must say so truthfully.

The session is generated (two symbols, two hours: ~72,000 trades in ~230,000 subscribed frames), big
enough that the producer is still minutes of event time behind when the fake has sent its last frame.
"""

from __future__ import annotations

import json
import os
import re

import pytest

from fake_exchange.synthetic import generate_session
from tapeflow_runtime.kafka_client import ensure_topics
from tests.support.services import Service

pytestmark = pytest.mark.integration

SEED = 13
SYMBOLS = ("BTCUSDT", "ETHUSDT")
SESSION_S = 2 * 3600


def service_env(bootstrap: str, prefix: str, home) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAPEFLOW_")}
    env.update({"TAPEFLOW_HOME": str(home), "TAPEFLOW_BROKER": bootstrap, "TAPEFLOW_TOPIC_PREFIX": prefix,
                "TAPEFLOW_SYMBOLS": ",".join(SYMBOLS), "PYTHONUNBUFFERED": "1"})
    return env


@pytest.mark.timeout(1200)
def test_max_speed_replay_of_a_multi_hour_recording_loses_no_trade(kafka_bootstrap, topic_prefix, read_topic,
                                                                  tmp_path):
    session = generate_session(seed=SEED, symbols=SYMBOLS, duration_s=SESSION_S)
    want = {(f.payload["s"], f.payload["a"]) for f in session.frames if f.event == "aggTrade"}
    ensure_topics(kafka_bootstrap, prefix=topic_prefix)
    env = service_env(kafka_bootstrap, topic_prefix, tmp_path / "home")
    services: list[Service] = []
    try:
        fake = Service("fake-exchange", ["fake-exchange", "--synthetic-seed", str(SEED), "--synthetic-symbols",
                                         ",".join(SYMBOLS), "--synthetic-duration", str(SESSION_S), "--speed", "max",
                                         "--rest-clock", "recording"], env, tmp_path)
        services.append(fake)
        urls = json.loads(fake.wait_for_line(r"\{\"ws_url\".*\}", 120).group(0))
        rest = urls["rest_url"]
        producer = Service("producer", ["produce", "--ws-url", urls["ws_url"], "--rest-url", rest, "--spot-url", rest,
                                        "--coinbase-url", rest, "--replay-control-url", rest, "--metrics-port", "0"],
                           env, tmp_path)
        services.append(producer)
        assert producer.proc.wait(900) == 0, producer.tail()
        summary = producer.wait_for_line(r"replay-finished: .*", 5).group(0)
    finally:
        for s in services:
            s.kill()

    trades = [r["value"] for r in read_topic(kafka_bootstrap, topic_prefix + "md.trades", idle_s=2.0)]
    got = [(t["symbol"], t["agg_id"]) for t in trades]
    missing = want - set(got)
    assert not missing, f"{len(missing)} of {len(want)} trades missing from md.trades; producer said: {summary}"
    assert len(got) == len(set(got)) == len(want), "a trade published twice"
    for sym in SYMBOLS:  # and in agg-id order per symbol
        ids = [a for s, a in got if s == sym]
        assert ids == sorted(ids), sym

    # the summary is true: frames in = frames the fake sent, every record delivered, none failed
    counts = {label.strip(): int(n) for n, label in re.findall(r"(\d+) ([a-z][a-z ]*)", summary)}
    subscribed = sum(1 for f in session.frames if f.event != "bookTicker")
    assert counts["frames in"] == subscribed, summary
    assert re.search(rf"\bmd\.trades {len(want)}\b", summary), summary
    assert counts["duplicates dropped"] == counts["undelivered"] == counts["dead letters"] == 0, summary
    assert counts["records delivered"] == len(trades) + sum(
        len(read_topic(kafka_bootstrap, topic_prefix + t, idle_s=1.0))
        for t in ("md.depth", "md.book", "md.mark", "md.liquidations", "md.indicators", "md.progress")), summary
