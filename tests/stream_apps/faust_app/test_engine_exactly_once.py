"""Exactly-once engine (issue 50): outputs, state snapshots and input offsets in one Kafka transaction
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
import time
from collections import Counter

import pytest

from stream_apps.core.strategy import parse_strategy
from stream_apps.faust_app.session import SessionProducer, synthetic_session
from stream_apps.faust_app.session import read_topic as read_session_topic
from stream_apps.faust_app.worker import ensure_engine_topics
from tapeflow_runtime.kafka_client import ensure_topics
from tests.stream_apps.faust_app.test_engine_app import (  # noqa: F401 - fixtures
    MIN,
    Worker,
    assert_matches_reference,
    make_config,
    read_outputs,
    record_id,
    reference,
    serde,
    strategy_files,
    workers,
)
from tests.support.engine_reference import canonical, direct_engine_outputs, session_records
from tests.support.replay_runs import (
    INPUTS,
    OUTPUTS,
    STRATEGY,
    assert_same,
    read_outputs as read_replay_outputs,
    service_env,
    start_engine,
    synthetic_args,
)
from tests.support.kafka import committed_offsets
from tests.support.services import Service, metrics_text, record_counts, wait_consumed

pytestmark = pytest.mark.integration
DEPTH_ARGS = ("--synthetic-depth-interval-ms", "500")  # as the parity test's two-hour session: half the frames


def _metric(port: int, name: str) -> float:
    total = 0.0
    for line in metrics_text(port).splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _port(engine: Service) -> int:
    return int(engine.wait_for_line(r"engine worker ready .*metrics_port=(\d+)", 120).group(1))


def _wait(condition, timeout_s: float, what: str, services=()) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        for s in services:
            assert s.proc.poll() is None, f"{s.name} died\n{s.tail()}"
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout_s} s: {what}\n" + "\n".join(s.tail() for s in services))


def _no_duplicates(outputs: dict[str, list[dict]]) -> None:
    for topic, values in outputs.items():
        repeated = [k for k, n in Counter(record_id(topic, v) for v in values).items() if n > 1]
        assert not repeated, f"{topic}: {len(repeated)} records twice, e.g. {repeated[:3]}"


def engine_args(workdir) -> list[str]:
    """`start_engine`'s arguments (its strategy file is already written), exactly once."""
    return ["engine", "--strategy", str(workdir / "strategy.yaml"), "--metrics-port", "0", "--prime-hours", "0",
            "--wait-for-progress", "--signal-max-age-s", "1e9", "--exactly-once"]


@pytest.mark.timeout(600)
def test_a_zombie_engine_is_fenced_and_writes_nothing(kafka_bootstrap, topic_prefix, tmp_path, strategy_files,
                                                      serde, workers):
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
    _wait(lambda: a.metric("tapeflow_engine_input_records_total") >= total * 0.1, 120, "A processing")
    os.kill(a.proc.pid, signal.SIGSTOP)
    try:
        b = Worker(config.model_copy(update={"datadir": tmp_path / "faust-b"}), tmp_path, "b")
        workers.append(b)
        b.wait_ready()
        # B owns every partition once A's session expired, and has processed the whole backlog
        _wait(lambda: b.metric("tapeflow_engine_input_records_total") >= total * 0.5, 180, "B processing")
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
    assert b.stop() == 0
    outputs = read_outputs(kafka_bootstrap, topic_prefix, serde, isolation_level="read_committed")
    for topic, rows in outputs.items():
        ids = Counter(record_id(topic, row[3]) for row in rows)
        repeated = [k for k, n in ids.items() if n > 1]
        assert not repeated, f"{topic}: {len(repeated)} records twice (A's late writes?), e.g. {repeated[:3]}"
    assert_matches_reference(outputs, want)
