"""Exactly-once engine: outputs, state snapshots and input offsets in one Kafka transaction
per input partition and commit, against the real embedded Kafka and real worker processes.

What users rely on: however often the engine dies (SIGKILL mid-batch) or hangs and comes back after
another worker took over (a zombie), ``bars.1m``, ``features`` and ``signals`` read committed hold
every record once and are what an uninterrupted run writes. Without the transactions a killed worker's
outputs past its last snapshot were written again by its successor (same ids, so the database sink
absorbed them, but every other reader saw them twice).

The uninterrupted run is represented by the engine core called directly on the same inputs:
``tests/test_replay_parity.py`` proves a replay's outputs equal it, record for record. The engines here
read what the test publishes itself, in steps with progress markers as a replaying source does
(``tests/support/engine_feed.py``): the faults are the engine's, and the path through the fake exchange
and the producer is the replay tests'.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import Counter

import pytest

from schemas.catalogue import SYMBOL_PARTITIONS
from stream_apps.core.strategy import parse_strategy
from stream_apps.faust_app.session import SessionProducer, synthetic_session
from stream_apps.faust_app.session import read_topic as read_session_topic
from stream_apps.faust_app.worker import ensure_engine_topics
from tests.stream_apps.faust_app.test_engine_app import (  # noqa: F401 - fixtures
    MIN,
    Worker,
    assert_matches_reference,
    distinct,
    make_config,
    read_outputs,
    record_id,
    reference,
    serde,
    strategy_files,
    workers,
)
from tests.support.engine_feed import (
    OpenTransactionRecords,
    SessionFeed,
    partition_ends,
    stable_offsets_client,
    wait_for_distinct,
)
from tests.support.engine_reference import canonical, direct_engine_outputs
from tests.support.kafka import committed_offsets
from tests.support.replay_runs import (
    OUTPUTS,
    STRATEGY,
    assert_same,
    service_env,
    start_engine,
)
from tests.support.replay_runs import (
    read_outputs as read_replay_outputs,
)
from tests.support.services import Service, metrics_text, wait_consumed
from tests.support.waiting import services_alive, wait_until

pytestmark = pytest.mark.integration


def _metric(port: int, name: str) -> float:
    """``name`` summed over its labels; 0 while the engine does not answer in time (a loaded engine's
    event loop can be busy with a large catch-up step for longer than the request's timeout)."""
    try:
        text = metrics_text(port)
    except OSError:  # a timeout or a refused connection: not known yet, the caller waits on
        return 0.0
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _port(engine: Service) -> int:
    return int(engine.wait_for_line(r"engine worker ready .*metrics_port=(\d+)", 120).group(1))


def _group_empty(bootstrap: str, group: str) -> bool:
    """Whether ``group``'s coordinator has no member left (every session expired or left)."""
    from confluent_kafka import ConsumerGroupState, KafkaException

    from tapeflow_runtime.kafka_client import admin_client

    admin = admin_client(bootstrap)  # held until the answer: a client collected first never resolves it
    try:
        described = admin.describe_consumer_groups([group], request_timeout=10)[group].result(timeout=15)
    except (KafkaException, TimeoutError):  # the coordinator is busy (loading, moving): asked again
        return False
    return described.state == ConsumerGroupState.EMPTY


def _no_duplicates(outputs: dict[str, list[dict]], hint: str = "") -> None:
    for topic, values in outputs.items():
        repeated = [k for k, n in Counter(record_id(topic, v) for v in values).items() if n > 1]
        assert not repeated, f"{topic}: {len(repeated)} records twice{hint}, e.g. {repeated[:3]}"


def _values(outputs: dict[str, list[tuple]]) -> dict[str, list[dict]]:
    """`read_outputs`' rows (key, partition, timestamp, value) as their values."""
    return {topic: [row[3] for row in rows] for topic, rows in outputs.items()}


#: the killed engines' session: half an hour of both symbols (23,000 records: bars, thousands of
#: features, dozens of signals), every record of it published while the engines are killed and restarted
KILL_SESSION_MIN = 30
KILL_STEP = 100  # records per source step (each followed by its progress markers)
#: while kills remain, how far the source may run ahead of the group's committed offsets on md.trades
#: (~100 s of the session: always a backlog, so every engine is killed with input in hand, and the
#: session cannot run out before the third kill however fast or slow the engines are)
AHEAD_TRADES = 1_000


@pytest.fixture(scope="module")
def kill_session():
    """The killed engines' session and what an uninterrupted run writes for it (the engine core called
    directly): generated and computed once for both guarantees."""
    session = synthetic_session(duration_ms=KILL_SESSION_MIN * MIN, seed=31)
    want = canonical(direct_engine_outputs(session, [parse_strategy(STRATEGY)]))
    assert all(want[t] for t in OUTPUTS), {t: len(v) for t, v in want.items()}  # something of each to compare
    return session, want


def _committed_trades(client, bootstrap: str, prefix: str) -> int:
    """md.trades records the engine group has committed (asked with `client`, a `stable_offsets_client`
    of the group; fresh topics written without transactions: offsets count records)."""
    group, topic = prefix + "tapeflow-engine", prefix + "md.trades"
    partitions = list(range(SYMBOL_PARTITIONS))
    return sum(committed_offsets(bootstrap, group, topic, consumer=client, partitions=partitions).values())


def _held_back(feed: SessionFeed, bootstrap: str, prefix: str, until: threading.Event):
    """The feed's pace: until ``until`` is set, at most AHEAD_TRADES trades past the group's committed
    offsets (its own client: librdkafka clients are not shared between threads)."""
    clients = [stable_offsets_client(bootstrap, prefix + "tapeflow-engine")]

    def pace() -> None:
        if not clients:  # the rest of the session is not held back
            return
        while (
            not until.is_set()
            and feed.published_trades - _committed_trades(clients[0], bootstrap, prefix) > AHEAD_TRADES
        ):
            time.sleep(0.1)
        if until.is_set():
            clients.pop().close()

    return pace


def _kill_mid_batch(engine: Service, label: str, feed: SessionFeed, committed, open_outputs) -> None:
    """Waits until ``engine`` has committed a transaction of its own (``committed()``, the group's md.trades
    offsets, moved past where they were once it was ready), has taken input in, and input past the
    committed offsets is in the broker (the source still writing); with ``open_outputs`` (exactly once)
    also until its open transaction holds outputs in the log. SIGKILLs it then."""
    port = _port(engine)
    before = committed()
    seen: dict[str, int] = {}  # what the kill was decided on, for the log

    def processing() -> bool:
        seen.update(committed=committed(), published=feed.published_trades)
        if not before < seen["committed"] < seen["published"]:
            return False
        if _metric(port, "tapeflow_engine_input_records_total") == 0:
            return False
        if open_outputs is not None:
            seen["outputs in its open transaction"] = open_outputs()
            return seen["outputs in its open transaction"] > 0
        return True

    def alive() -> None:
        services_alive([engine])()
        feed.check()

    wait_until(
        processing, 300, lambda: f"{label} committing and processing\n{engine.tail()}", interval=0.2, alive=alive
    )
    assert feed.running, f"the session ran out before {label} was killed: lengthen it"
    engine.proc.send_signal(signal.SIGKILL)
    engine.proc.wait(30)
    print(f"\n{label} killed at {seen}")  # committed and published: md.trades records


@pytest.mark.timeout(900)
@pytest.mark.parametrize("guarantee", ["exactly_once", "at_least_once"])
def test_three_sigkills_mid_batch_while_the_source_writes_leave_no_duplicate_and_no_gap(
    kafka_bootstrap, read_topic, tmp_path, guarantee, kill_session, serde
):
    """A source publishes a session (steps with progress markers, as a replay does) into `tapeflow
    engine`; the engine is SIGKILLed three times while it is processing (it has committed a transaction
    of its own, input past its committed offsets is in the broker; exactly once, its open transaction
    holds outputs in the log), restarted each time in the same group; a fourth one finishes. The source
    writes throughout the kills, held at most AHEAD_TRADES trades ahead of the group's committed
    offsets. Every restarted engine first restores the state its group's committed offsets correspond
    to (Faust's table recovery once ended early with exactly-once and a restart went on from empty
    state: `ShortWaitConsumerThread._highwaters`).

    Exactly once, read committed: the outputs hold no record twice and equal the uninterrupted run's;
    read uncommitted they hold the aborted transactions' records too (the kills did land mid-batch).
    At least once: a record may be written again after a kill, identical; by id the outputs equal the
    uninterrupted run's."""
    session, want = kill_session
    exactly_once = guarantee == "exactly_once"
    flag = "--exactly-once" if exactly_once else "--at-least-once"
    prefix = f"eo{os.getpid()}{tmp_path.name[-6:]}."
    env = service_env(kafka_bootstrap, prefix, tmp_path)
    group = prefix + "tapeflow-engine"
    services: list[Service] = []
    kills_done = threading.Event()
    client = stable_offsets_client(kafka_bootstrap, group)
    try:
        engine = start_engine(env, tmp_path, flag)  # creates the engine's topics, the feed's among them
        services.append(engine)
        feed = SessionFeed(kafka_bootstrap, serde, prefix, session)
        feed.start(KILL_STEP, _held_back(feed, kafka_bootstrap, prefix, kills_done))
        open_outputs = OpenTransactionRecords(kafka_bootstrap, [prefix + t for t in OUTPUTS], SYMBOL_PARTITIONS)
        for kill in range(1, 4):
            _kill_mid_batch(
                engine,
                f"engine {kill}",
                feed,
                lambda: _committed_trades(client, kafka_bootstrap, prefix),
                open_outputs if exactly_once else None,
            )
            engine.name = f"engine-killed-{kill}"
            engine = Service(f"engine-{kill}", engine_args(tmp_path, flag), env, tmp_path)
            services.append(engine)
        kills_done.set()  # the rest of the session at the source's full speed
        _port(engine)  # the fourth engine runs (and its signal handlers are installed)
        feed.join(300)
        ends = partition_ends(kafka_bootstrap, prefix + "md.trades")
        assert sum(ends.values()) == sum(1 for r in session if r.topic == "md.trades")  # each trade once
        wait_consumed(kafka_bootstrap, group, {prefix + "md.trades": ends}, [engine], 600)
        assert engine.stop() == 0, engine.tail()
    finally:
        kills_done.set()
        for s in services:
            s.kill()
        client.close()
    for s in services:
        if s.name.startswith("engine"):  # every (re)started engine checked its restored state
            assert "engine state not restored" not in s.log(), s.tail()

    outputs = read_replay_outputs(kafka_bootstrap, prefix, read_topic)  # read_committed (librdkafka's default)
    print("\n" + ", ".join(f"{t} {len(v)}" for t, v in outputs.items()))
    if exactly_once:
        _no_duplicates(outputs)
    else:
        outputs = {t: list(distinct(t, [(None, 0, 0, v) for v in values]).values()) for t, values in outputs.items()}
        outputs = canonical(outputs)
    assert_same(outputs, want, f"killed 3 times vs uninterrupted ({guarantee})")
    if not exactly_once:
        return
    # the kills hit open transactions: their records are in the log, aborted, invisible above
    uncommitted = sum(
        len(read_session_topic(kafka_bootstrap, prefix + t, serde, idle_s=1.0, isolation_level="read_uncommitted"))
        for t in OUTPUTS
    )
    assert uncommitted > sum(len(v) for v in outputs.values())


def engine_args(workdir, flag: str = "--exactly-once") -> list[str]:
    """`start_engine`'s arguments (its strategy file is already written) with ``flag``, the guarantee."""
    return [
        "engine",
        "--strategy",
        str(workdir / "strategy.yaml"),
        "--metrics-port",
        "0",
        "--prime-hours",
        "0",
        "--wait-for-progress",
        "--signal-max-age-s",
        "1e9",
        flag,
    ]


#: the paused engine's session: 40 minutes (the strategies' 30-min window and 10-min warm-up, then
#: signals of both) at 10 trades/s per symbol: 55,000 records, the same 9,596 features as at 60/s (one
#: evaluation per symbol and second that has trades) and as many signals, a sixth of the records
BACKLOG_TRADES_PER_S = 10.0
#: the zombie's stays at 60/s (295,000 records): with a sixth, 2 of 5 runs failed, B idle for minutes
#: with every partition assigned (A, whose commits of 6 transactions took seconds under load, likely
#: stopped inside one with the group's offsets in it), and B's table recovery ending early when A came
#: back seconds after B's takeover (the engine's StateIncomplete guard)
ZOMBIE_TRADES_PER_S = 60.0


@pytest.mark.timeout(600)
def test_a_zombie_engine_is_fenced_and_writes_nothing(
    kafka_bootstrap, topic_prefix, tmp_path, strategy_files, serde, workers
):
    """Engine A catches up on a backlog; SIGSTOP while it works; engine B joins the same group, takes
    every partition (A's session expires), fences A's transactional ids and processes everything;
    SIGCONT A. A's late outputs never become visible: read committed, every output is there once and
    equals the engine core's; A learns it was fenced and exits."""
    config = make_config(kafka_bootstrap, topic_prefix, tmp_path, strategy_files, processing_guarantee="exactly_once")
    ensure_engine_topics(config)
    session = synthetic_session(duration_ms=40 * MIN, trades_per_s=ZOMBIE_TRADES_PER_S, seed=23)
    SessionProducer(kafka_bootstrap, serde, topic_prefix, **{"batch.num.messages": 200}).produce_all(session)
    want = reference(session, strategy_files)
    total = len(session)

    a = Worker(config, tmp_path, "a")
    workers.append(a)
    a.wait_ready()
    # mid-catch-up: records flowing, far from the end
    wait_until(
        lambda: _metric(a.port, "tapeflow_engine_input_records_total") >= total * 0.1, 120, "A processing", interval=0.2
    )
    os.kill(a.proc.pid, signal.SIGSTOP)
    try:
        b = Worker(config.model_copy(update={"datadir": tmp_path / "faust-b"}), tmp_path, "b")
        workers.append(b)
        b.wait_ready()
        # B owns every partition once A's session expired, and has processed the whole backlog
        wait_until(
            lambda: _metric(b.port, "tapeflow_engine_input_records_total") >= total * 0.5,
            180,
            "B processing",
            interval=0.2,
        )
    finally:
        os.kill(a.proc.pid, signal.SIGCONT)
    # A wakes up with fetched records and open transactions of ids B now holds
    try:
        a_done = a.proc.wait(120)
    except subprocess.TimeoutExpired:
        a_done = None
    log_a = a.log()
    assert "ProducerFenced" in log_a or "fenced" in log_a.lower(), log_a[-4000:]
    assert a_done is not None, f"A still running after it was fenced\n{log_a[-4000:]}"

    wait_for_distinct(
        kafka_bootstrap, topic_prefix + "features", serde, "evaluation_id", len(want["features"]), 120, [b]
    )
    assert b.metric("tapeflow_engine_forced_releases_total") == 0  # else parity cannot hold (make_config)
    assert b.stop() == 0
    outputs = read_outputs(kafka_bootstrap, topic_prefix, serde, isolation_level="read_committed")
    _no_duplicates(_values(outputs), " (A's late writes?)")
    assert_matches_reference(outputs, want)


@pytest.mark.timeout(600)
def test_an_engine_paused_past_its_session_resumes_without_writing_anything_twice(
    kafka_bootstrap, topic_prefix, tmp_path, strategy_files, serde, workers
):
    """One engine catching up on a backlog is SIGSTOPped past its group session (until the group is
    empty: 6 s and the broker's next expiry check) and resumes in the same process: the group took its partitions away and gives them back. Outputs it
    had written into its open transactions for inputs whose offsets it never committed must not stay
    there: it reads those inputs again from the committed offsets and writes their outputs again
    (before the fix: 80 and 116 feature ids twice in two runs, the stale copy committed with the new one)."""
    config = make_config(kafka_bootstrap, topic_prefix, tmp_path, strategy_files, processing_guarantee="exactly_once")
    ensure_engine_topics(config)
    session = synthetic_session(duration_ms=40 * MIN, trades_per_s=BACKLOG_TRADES_PER_S, seed=29)
    want = reference(session, strategy_files)
    total = len(session)
    head = total // 5
    # every record as a replay publishes it: in steps, each followed by its progress marker (what a
    # source promises; without them the engine cannot tell a step's end from the data's)
    feed = SessionFeed(kafka_bootstrap, serde, topic_prefix, session)
    step = max(1, (total - head) // 200)  # the engine works in small steps: ~3 per 0.5-s commit

    feed.publish(0, head, step)
    a = Worker(config, tmp_path, "a")
    workers.append(a)
    a.wait_ready()
    wait_until(lambda: _metric(a.port, "tapeflow_engine_input_records_total") >= head, 120, "A caught up", interval=0.2)

    # the rest arrives in small steps (so the engine works in small steps and its open transactions
    # hold outputs at any moment), and the pause lands in the middle of it
    def rest() -> None:
        feed.publish(head, total, step, lambda: time.sleep(0.05))
        feed.finish()

    feeder = threading.Thread(target=rest, daemon=True)
    feeder.start()
    wait_until(
        lambda: _metric(a.port, "tapeflow_engine_input_records_total") >= head + (total - head) // 5,
        120,
        "A processing the live part",
        interval=0.2,
    )
    os.kill(a.proc.pid, signal.SIGSTOP)
    try:
        # the pause itself is the fault: past the 6-s session, until the group has dropped A and its
        # partitions (a fixed 9 s on a loaded broker could end before that, or wait longer than needed)
        wait_until(lambda: _group_empty(kafka_bootstrap, config.app_id), 60, "A's session expired", interval=0.5)
    finally:
        os.kill(a.proc.pid, signal.SIGCONT)
    feeder.join(120)
    assert not feeder.is_alive()

    wait_for_distinct(
        kafka_bootstrap, topic_prefix + "features", serde, "evaluation_id", len(want["features"]), 120, [a]
    )
    assert a.stop() == 0
    assert "open transaction of revoked partitions aborted" in a.log()  # the pause did cost it its partitions
    outputs = read_outputs(kafka_bootstrap, topic_prefix, serde, isolation_level="read_committed")
    _no_duplicates(_values(outputs))
    assert_matches_reference(outputs, want)
