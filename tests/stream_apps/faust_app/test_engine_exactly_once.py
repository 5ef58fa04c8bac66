"""Exactly-once engine: outputs, state snapshots and input offsets in one Kafka transaction
per input partition and commit, against the real embedded Kafka and real worker processes.

What users rely on: however often the engine dies (SIGKILL mid-batch) or hangs and comes back after
another worker took over (a zombie), ``bars.1m``, ``features`` and ``signals`` read committed hold
every record once and are what an uninterrupted run writes. Without the transactions a killed worker's
outputs past its last snapshot were written again by its successor (same ids, so the database sink
absorbed them, but every other reader saw them twice).

The uninterrupted run is represented by the engine core called directly on the same inputs:
``tests/test_replay_parity.py`` proves a replay's outputs equal it, record for record.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter

import pytest

from schemas.catalogue import ENGINE_INPUTS
from stream_apps.core.strategy import parse_strategy
from stream_apps.faust_app.session import SessionProducer, synthetic_session
from stream_apps.faust_app.session import read_topic as read_session_topic
from stream_apps.faust_app.worker import ensure_engine_topics
from tapeflow_runtime.kafka_client import ensure_topics
from tapeflow_runtime.progress import ProgressMarkers
from tapeflow_runtime.publisher import Publisher, PublishMetrics
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
from tests.support.engine_reference import canonical, direct_engine_outputs, session_records
from tests.support.kafka import committed_offsets
from tests.support.replay_runs import (
    INPUTS,
    OUTPUTS,
    STRATEGY,
    assert_same,
    service_env,
    start_engine,
    synthetic_args,
)
from tests.support.replay_runs import (
    read_outputs as read_replay_outputs,
)
from tests.support.services import Service, metrics_text, record_counts, wait_consumed
from tests.support.waiting import services_alive, wait_until

pytestmark = pytest.mark.integration
DEPTH_ARGS = ("--synthetic-depth-interval-ms", "500")  # as the parity test's two-hour session: half the frames


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


def _no_duplicates(outputs: dict[str, list[dict]], hint: str = "") -> None:
    for topic, values in outputs.items():
        repeated = [k for k, n in Counter(record_id(topic, v) for v in values).items() if n > 1]
        assert not repeated, f"{topic}: {len(repeated)} records twice{hint}, e.g. {repeated[:3]}"


def _values(outputs: dict[str, list[tuple]]) -> dict[str, list[dict]]:
    """`read_outputs`' rows (key, partition, timestamp, value) as their values."""
    return {topic: [row[3] for row in rows] for topic, rows in outputs.items()}


@pytest.mark.timeout(900)
@pytest.mark.parametrize("guarantee", ["exactly_once", "at_least_once"])
def test_three_sigkills_mid_batch_during_a_max_replay_leave_no_duplicate_and_no_gap(
    kafka_bootstrap, read_topic, tmp_path, guarantee
):
    """A max-speed replay (fake exchange -> producer -> `tapeflow engine`); the engine is SIGKILLed three
    times while it is processing (its input counter rising, its transactions open), restarted each time
    in the same group; a fourth one finishes. Every restarted engine first restores the state its group's
    committed offsets correspond to (Faust's table recovery once ended early with exactly-once and a
    restart went on from empty state: `ShortWaitConsumerThread._highwaters`).

    Exactly once, read committed: the outputs hold no record twice and equal the uninterrupted run's;
    read uncommitted they hold the aborted transactions' records too (the kills did land mid-batch).
    At least once: a record may be written again after a kill, identical; by id the outputs equal the
    uninterrupted run's."""
    exactly_once = guarantee == "exactly_once"
    flag = "--exactly-once" if exactly_once else "--at-least-once"
    prefix = f"eo{os.getpid()}{tmp_path.name[-6:]}."
    seed, duration_s = 31, 4 * 3600  # long enough at max for kills while the producer still writes
    ensure_topics(kafka_bootstrap, prefix=prefix)
    env = service_env(kafka_bootstrap, prefix, tmp_path)
    services: list[Service] = []
    try:
        engine = start_engine(env, tmp_path, flag)
        services.append(engine)
        fake = Service(
            "fake-exchange",
            [
                "fake-exchange",
                *synthetic_args(seed, duration_s, DEPTH_ARGS),
                "--speed",
                "max",
                "--rest-clock",
                "recording",
            ],
            env,
            tmp_path,
        )
        services.append(fake)
        urls = json.loads(fake.wait_for_line(r"\{\"ws_url\".*\}", 120).group(0))
        rest = urls["rest_url"]
        producer = Service(
            "producer",
            [
                "produce",
                "--ws-url",
                urls["ws_url"],
                "--rest-url",
                rest,
                "--spot-url",
                rest,
                "--coinbase-url",
                rest,
                "--replay-control-url",
                rest,
                "--metrics-port",
                "0",
            ],
            env,
            tmp_path,
        )
        services.append(producer)
        group = prefix + "tapeflow-engine"
        committed = 0
        during_replay = 0
        for kill in range(1, 4):
            port = _port(engine)
            before = committed
            # this engine has committed a transaction of its own (the group's offsets moved) and is
            # processing (records flowing through it): it is killed with its next transaction open
            wait_until(
                lambda: (
                    sum(committed_offsets(kafka_bootstrap, group, prefix + "md.trades").values()) > before  # noqa: B023 - called within this iteration
                    and _metric(port, "tapeflow_engine_input_records_total") > 0  # noqa: B023 - called within this iteration
                ),
                300,
                lambda: f"engine {kill} committing and processing\n{engine.tail()}",  # noqa: B023 - called within this iteration
                interval=0.2,
                alive=services_alive([engine]),
            )
            committed = sum(committed_offsets(kafka_bootstrap, group, prefix + "md.trades").values())
            during_replay += producer.proc.poll() is None
            engine.proc.send_signal(signal.SIGKILL)
            engine.proc.wait(30)
            engine.name = f"engine-killed-{kill}"
            engine = Service(f"engine-{kill}", engine_args(tmp_path, flag), env, tmp_path)
            services.append(engine)
        print(f"\n{during_replay} of 3 kills while the producer was replaying")
        _port(engine)  # the fourth engine runs (and its signal handlers are installed)
        assert producer.proc.wait(900) == 0, producer.tail()
        assert engine.proc.poll() is None, engine.tail()
        trades = read_topic(kafka_bootstrap, prefix + "md.trades", settled=True)
        wait_consumed(
            kafka_bootstrap, prefix + "tapeflow-engine", {prefix + "md.trades": record_counts(trades)}, [engine], 600
        )
        assert engine.stop() == 0, engine.tail()
        inputs = {t: [r["value"] for r in read_topic(kafka_bootstrap, prefix + t, settled=True)] for t in INPUTS}
    finally:
        for s in services:
            s.kill()
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
    assert len(outputs["bars.1m"]) >= 2 * 239 and len(outputs["features"]) > 1000 and outputs["signals"]
    want = canonical(direct_engine_outputs(session_records(inputs), [parse_strategy(STRATEGY)]))
    assert_same(outputs, want, f"killed 3 times vs uninterrupted ({guarantee})")
    if not exactly_once:
        return
    # the kills hit open transactions: their records are in the log, aborted, invisible above
    from schemas.registry import FileSchemaRegistry
    from schemas.serde import AvroSerde

    any_serde = AvroSerde(FileSchemaRegistry())
    uncommitted = sum(
        len(read_session_topic(kafka_bootstrap, prefix + t, any_serde, idle_s=1.0, isolation_level="read_uncommitted"))
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
    session = synthetic_session(duration_ms=40 * MIN, trades_per_s=60.0, seed=23)
    SessionProducer(kafka_bootstrap, serde, topic_prefix, **{"batch.num.messages": 200}).produce_all(session)
    want = reference(session, strategy_files)
    total = len(session)

    a = Worker(config, tmp_path, "a")
    workers.append(a)
    a.wait_ready()
    # mid-catch-up: records flowing, far from the end
    wait_until(
        lambda: a.metric("tapeflow_engine_input_records_total") >= total * 0.1, 120, "A processing", interval=0.2
    )
    os.kill(a.proc.pid, signal.SIGSTOP)
    try:
        b = Worker(config.model_copy(update={"datadir": tmp_path / "faust-b"}), tmp_path, "b")
        workers.append(b)
        b.wait_ready()
        # B owns every partition once A's session expired, and has processed the whole backlog
        wait_until(
            lambda: b.metric("tapeflow_engine_input_records_total") >= total * 0.5, 180, "B processing", interval=0.2
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

    from tests.stream_apps.faust_app.test_engine_app import wait_for_features

    wait_for_features(kafka_bootstrap, topic_prefix, serde, len(want["features"]), workers=[b])
    assert b.metric("tapeflow_engine_forced_releases_total") == 0  # else parity cannot hold (make_config)
    assert b.stop() == 0
    outputs = read_outputs(kafka_bootstrap, topic_prefix, serde, isolation_level="read_committed")
    _no_duplicates(_values(outputs), " (A's late writes?)")
    assert_matches_reference(outputs, want)


@pytest.mark.timeout(600)
def test_an_engine_paused_past_its_session_resumes_without_writing_anything_twice(
    kafka_bootstrap, topic_prefix, tmp_path, strategy_files, serde, workers
):
    """One engine catching up on a backlog is SIGSTOPped past its group session (9 s against 6 s) and
    resumes in the same process: the group took its partitions away and gives them back. Outputs it
    had written into its open transactions for inputs whose offsets it never committed must not stay
    there: it reads those inputs again from the committed offsets and writes their outputs again
    (before the fix: 80 and 116 feature ids twice in two runs, the stale copy committed with the new one)."""
    config = make_config(kafka_bootstrap, topic_prefix, tmp_path, strategy_files, processing_guarantee="exactly_once")
    ensure_engine_topics(config)
    session = synthetic_session(duration_ms=40 * MIN, trades_per_s=60.0, seed=29)
    want = reference(session, strategy_files)
    total = len(session)
    head = total // 5
    # every record as a replay publishes it: in steps, each followed by its progress marker (what a
    # source promises; without them the engine cannot tell a step's end from the data's)
    publisher = Publisher(kafka_bootstrap, serde, PublishMetrics(), topic_prefix=topic_prefix)
    markers = ProgressMarkers(publisher, "test-feed", ENGINE_INPUTS)
    keys = sorted({r.key for r in session})
    step = max(1, (total - head) // 400)

    def publish(start: int, stop: int, pause_s: float) -> None:
        for i in range(start, stop, step):
            for r in session[i : min(i + step, stop)]:
                publisher.publish(r.topic, r.key, r.value)
            if i + step < total:  # the session is in time order: all before the next step's first time is out
                for key in keys:
                    markers.mark(key, session[min(i + step, stop)].time_ms - 1)
            publisher.flush(30)
            markers.publish_ready()
            time.sleep(pause_s)

    publish(0, head, 0.0)
    a = Worker(config, tmp_path, "a")
    workers.append(a)
    a.wait_ready()
    wait_until(lambda: a.metric("tapeflow_engine_input_records_total") >= head, 120, "A caught up", interval=0.2)

    # the rest arrives in small steps (so the engine works in small steps and its open transactions
    # hold outputs at any moment), and the pause lands in the middle of it
    def feed() -> None:
        publish(head, total, 0.05)
        markers.finish(keys)
        publisher.flush(30)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    wait_until(
        lambda: a.metric("tapeflow_engine_input_records_total") >= head + (total - head) // 5,
        120,
        "A processing the live part",
        interval=0.2,
    )
    os.kill(a.proc.pid, signal.SIGSTOP)
    try:
        time.sleep(9.0)  # the pause itself is the fault: past the 6-s session
    finally:
        os.kill(a.proc.pid, signal.SIGCONT)
    feeder.join(120)
    assert not feeder.is_alive()

    from tests.stream_apps.faust_app.test_engine_app import wait_for_features

    wait_for_features(kafka_bootstrap, topic_prefix, serde, len(want["features"]), workers=[a])
    assert a.stop() == 0
    assert "open transaction of revoked partitions aborted" in a.log()  # the pause did cost it its partitions
    outputs = read_outputs(kafka_bootstrap, topic_prefix, serde, isolation_level="read_committed")
    _no_duplicates(_values(outputs))
    assert_matches_reference(outputs, want)
