"""Hot reload against the real broker and real worker processes, exactly once. A canary is published
on config.rollouts while a worker is idle: it reads it and writes nothing (a switch chosen without
input would sit in a transaction Faust never commits). The next worker chooses each symbol's switch
at that symbol's first new input (config.applied, one record per symbol, in the transaction of that
input's outputs, snapshot and offsets) and is SIGKILLed while that transaction is open. Its successor
restores the last committed state, reads the config topics (the open transaction aborted by its own
producers), chooses the switch again and commits it. Read committed, every evaluation is on
``features`` once, made by the revision in force at its time per the committed config.applied
records, and a direct engine given those recorded points (a replay) produces exactly the committed
features and signals."""

from __future__ import annotations

import signal
from collections import Counter

import pytest
import yaml

from stream_apps.core.engine import Engine, EngineParams
from stream_apps.core.engine_rollout import Switch
from stream_apps.core.rollout import Canary, Revision, RolloutState
from stream_apps.core.strategy import load_strategy, parse_strategy
from stream_apps.faust_app.session import SessionProducer, engine_inputs, read_topic, synthetic_session
from stream_apps.faust_app.worker import ensure_engine_topics
from tapeflow.rollout import Publisher
from tapeflow_runtime.kafka_client import consumer_config, end_offsets
from tests.stream_apps.faust_app.test_engine_app import (  # noqa: F401 - fixtures
    MIN,
    STRATEGY_FILES,
    Worker,
    make_config,
    serde,
    strategy_files,
    workers,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def _revision(rev: int, **changes) -> Revision:
    content = yaml.safe_dump({**STRATEGY_FILES["fast_test.yaml"], **changes}, sort_keys=False)
    return Revision(rev, parse_strategy(yaml.safe_load(content)).config_hash, content)


def _evaluations(bootstrap, prefix, serde_) -> list[dict]:  # noqa: F811 - not the fixture
    rows = read_topic(bootstrap, prefix + "features", serde_, idle_s=0.5, isolation_level="read_committed")
    return [v for _, _, _, v in rows]


def _applied(bootstrap, prefix, serde_) -> list[dict]:  # noqa: F811 - not the fixture
    rows = read_topic(bootstrap, prefix + "config.applied", serde_, idle_s=0.5, isolation_level="read_committed")
    return [v for _, _, _, v in rows]


def _written(bootstrap: str, topic: str) -> int:
    """Records (and transaction markers) ever written to partition 0 of ``topic``, committed or not."""
    from confluent_kafka import Consumer

    consumer = Consumer(consumer_config(bootstrap))
    try:
        return end_offsets(consumer, [(topic, 0)], 10.0)[(topic, 0)]
    finally:
        consumer.close()


def _wait(condition, timeout: float, what, workers_=()) -> None:
    def alive() -> None:
        for w in workers_:
            assert w.proc.poll() is None, f"{w.name} died:\n{w.log()[-3000:]}"

    wait_until(condition, timeout, what, interval=0.2, alive=alive)


@pytest.mark.timeout(300)
def test_sigkill_during_the_switch_leaves_each_evaluation_once_and_of_one_revision(
    kafka_bootstrap,
    topic_prefix,
    tmp_path,
    strategy_files,  # noqa: F811 - the fixture
    serde,  # noqa: F811 - the fixture
    workers,  # noqa: F811 - the fixture
):
    config = make_config(
        kafka_bootstrap, topic_prefix, tmp_path, strategy_files, processing_guarantee="exactly_once"
    ).model_copy(update={"follow_rollouts": True})
    ensure_engine_topics(config)
    session = synthetic_session(duration_ms=16 * MIN, trades_per_s=4.0, seed=41)
    cut = session[0].time_ms + 11 * MIN
    producer = SessionProducer(kafka_bootstrap, serde, topic_prefix, **{"batch.num.messages": 200})
    producer.produce_all([r for r in session if r.time_ms < cut])

    a = Worker(config, tmp_path, "a")
    workers.append(a)
    a.wait_ready()
    _wait(lambda: len(_evaluations(kafka_bootstrap, topic_prefix, serde)) > 200, 120, a.log, [a])
    active, candidate = _revision(1), _revision(2, version="2")
    state = RolloutState(
        "fast_test", 1, active, Canary(2, candidate.config_hash, candidate.content, ("ETHUSDT",)), "canary", "t", "", 0
    )
    Publisher(kafka_bootstrap, topic_prefix, serde).publish(state)
    _wait(lambda: "rollout state read" in a.log(), 60, a.log, [a])
    # idle, A chooses nothing: a switch written now would sit in a transaction Faust never commits
    # (no input offset moves), holding back every read-committed reader of config.applied
    assert "rollout scheduled" not in a.log()
    assert _written(kafka_bootstrap, topic_prefix + "config.applied") == 0
    assert a.stop() == 0, a.log()[-3000:]

    # A2 commits every 30 s: the kill lands in the open transaction of the switch it chooses at the
    # first new input of each symbol, with the outputs of that input
    a2 = Worker(config.model_copy(update={"commit_interval_s": 30.0}), tmp_path, "a2")
    workers.append(a2)
    a2.wait_ready()
    producer.produce_all([r for r in session if r.time_ms >= cut])
    _wait(lambda: a2.log().count("rollout scheduled") >= 2, 60, a2.log, [a2])
    a2.proc.send_signal(signal.SIGKILL)
    a2.proc.wait(30)

    b = Worker(config.model_copy(update={"datadir": tmp_path / "faust-b", "max_hold_s": 5.0}), tmp_path, "b")
    workers.append(b)
    b.wait_ready()
    strategies = [load_strategy(p) for p in strategy_files]
    total = len({(f["strategy"], f["symbol"], f["eval_time"]) for f in _direct(session, strategies, {})["features"]})

    def distinct() -> int:
        return len(
            {(f["strategy"], f["symbol"], f["eval_time"]) for f in _evaluations(kafka_bootstrap, topic_prefix, serde)}
        )

    _wait(lambda: distinct() >= total, 120, lambda: f"{distinct()} of {total}\n{b.log()[-3000:]}", [b])
    assert b.stop() == 0, b.log()[-3000:]

    applied = _applied(kafka_bootstrap, topic_prefix, serde)
    assert sorted(a_["market"] for a_ in applied) == ["binance:BTCUSDT", "binance:ETHUSDT"]  # once per symbol
    point = {a_["market"]: a_["applied_from"] for a_ in applied}
    # the first boundary after what the committed state had evaluated (inputs up to the cut)
    assert all(cut - 15_000 < t <= cut + 15_000 and t % 15_000 == 0 for t in point.values()), point
    features = _evaluations(kafka_bootstrap, topic_prefix, serde)
    twice = Counter((f["strategy"], f["symbol"], f["eval_time"]) for f in features)
    assert max(twice.values()) == 1, [k for k, n in twice.items() if n > 1][:10]
    for f in features:
        if f["strategy"] != "fast_test":
            assert f["config_rev"] == 0
            continue
        switched = f["eval_time"] >= point[f"binance:{f['symbol']}"]
        rev = (2 if f["symbol"] == "ETHUSDT" else 1) if switched else 0
        assert (f["config_rev"], f["config_hash"]) == (rev, candidate.config_hash if rev == 2 else active.config_hash)
    want = _direct(
        session, strategies, {m: Switch("fast_test", 1, t, state.active, state.canary) for m, t in point.items()}
    )
    key = lambda r: (r["symbol"], r["eval_time"], r["strategy"], r.get("direction") or "")  # noqa: E731
    assert sorted(features, key=key) == sorted(want["features"], key=key)
    signals = [
        v
        for _, _, _, v in read_topic(
            kafka_bootstrap, topic_prefix + "signals", serde, idle_s=1.0, isolation_level="read_committed"
        )
    ]
    assert sorted(signals, key=key) == sorted(want["signals"], key=key)


def _direct(session, strategies, switches: dict[str, Switch]) -> dict[str, list[dict]]:
    """Per symbol, one direct engine call with the symbol's recorded switch scheduled up front (a replay),
    cut at the symbol's newest input."""
    out: dict[str, list[dict]] = {"features": [], "signals": []}
    for market in sorted({r.key for r in session}):
        records = [r for r in session if r.key == market]
        engine = Engine(strategies, EngineParams(allowed_lateness_ms=0))
        if market in switches:
            engine.schedule_switch(switches[market])
        result = engine.process(*engine_inputs(records))
        newest = max(r.time_ms for r in records)
        out["features"] += [f for f in result.features if f["eval_time"] <= newest]
        out["signals"] += [s for s in result.signals if s["eval_time"] <= newest]
    return out
