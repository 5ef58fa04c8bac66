"""The same output at any speed: a recording replayed at 1x, 60x and `max` gives the same bars, features
and signals, equal to the engine core called directly on what the producer published.

Run as `tapeflow up --source replay:DIR --replay-speed S` runs it, one process each: fake exchange →
producer (`--replay-control-url`: the recording's clock, lockstep REST, progress markers) → engine
(`--wait-for-progress`, started first, so it reads while the producer is still writing, the case
where fetch interleaving used to change the result). Nothing here gives the engine any lateness.

The comparison with the engine core over the published `md.*` records (one call, event-time order)
is what `tapeflow backtest` does with the same core. `tapeflow backtest --source recording:DIR`
itself (issue 12) is not on main yet: `test_replay_equals_tapeflow_backtest_on_the_same_recording`
is the hook for it and skips until the command exists.

The strategy is a test strategy (1m/5m CVD, 2-minute warm-up, direction layer only) so a 4-minute
session has signals; the two-hour session checks a long replay at max against 60x.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from stream_apps.core.strategy import parse_strategy
from tapeflow_runtime.kafka_client import ensure_topics
from tests.support.engine_reference import (
    canonical,
    direct_engine_outputs,
    session_records,
)
from tests.support.services import Service, record_counts, wait_consumed

pytestmark = pytest.mark.integration

SYMBOLS = ("BTCUSDT", "ETHUSDT")
FAR_PAST_S = 1e9  # generated sessions are from 2023; the engine's wall-clock signal age must not filter them
STRATEGY = {
    "name": "replay_parity", "version": "1", "windows": {"cvd_fast": "1m", "cvd_mid": "5m"}, "warmup": "2m",
    "weights": {"direction": 55, "crowding": 0, "environment": 0, "auxiliary": 0},
    "thresholds": {"entry": 40, "heavy": 50, "flip": 50}, "cooldown": "1m",
    "exits": {"sl_atr_mult": 0.5, "tp1_r": 0.5, "tp2_r": 1.0, "timeout_min": 3},
}
OUTPUTS = ("bars.1m", "features", "signals")
INPUTS = ("md.trades", "md.book", "md.mark", "md.liquidations", "md.indicators")


def replay(kafka_bootstrap: str, prefix: str, read_topic, workdir: Path, *, seed: int, duration_s: int,
           speed: str) -> tuple[dict[str, list[dict]], dict[str, list[dict]], str]:
    """One replay through the three processes; (engine outputs, md.* inputs, producer summary)."""
    ensure_topics(kafka_bootstrap, prefix=prefix)
    workdir.mkdir(parents=True, exist_ok=True)
    strategy_file = workdir / "strategy.yaml"
    strategy_file.write_text(yaml.safe_dump(STRATEGY))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAPEFLOW_")}
    env.update({"TAPEFLOW_HOME": str(workdir / "home"), "TAPEFLOW_BROKER": kafka_bootstrap,
                "TAPEFLOW_TOPIC_PREFIX": prefix, "TAPEFLOW_SYMBOLS": ",".join(SYMBOLS), "PYTHONUNBUFFERED": "1"})
    services: list[Service] = []

    def start(name: str, *args: str) -> Service:
        services.append(Service(name, list(args), env, workdir))
        return services[-1]

    try:
        engine = start("engine", "engine", "--strategy", str(strategy_file), "--metrics-port", "0", "--prime-hours",
                       "0", "--wait-for-progress", "--signal-max-age-s", str(FAR_PAST_S))
        engine.wait_for_line(r"engine worker ready", 120)
        fake = start("fake-exchange", "fake-exchange", "--synthetic-seed", str(seed), "--synthetic-symbols",
                     ",".join(SYMBOLS), "--synthetic-duration", str(duration_s), "--speed", speed,
                     "--rest-clock", "recording")
        urls = json.loads(fake.wait_for_line(r"\{\"ws_url\".*\}", 120).group(0))
        rest = urls["rest_url"]
        producer = start("producer", "produce", "--ws-url", urls["ws_url"], "--rest-url", rest, "--spot-url", rest,
                         "--coinbase-url", rest, "--replay-control-url", rest, "--metrics-port", "0")
        wall = duration_s / (1.0 if speed == "max" else float(speed))
        try:
            assert producer.proc.wait(wall + 600) == 0, producer.tail()
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the replay did not finish\n{producer.tail()}\n{fake.tail()}") from None
        summary = producer.wait_for_line(r"replay-finished: .*", 5).group(0)
        inputs = {t: [r["value"] for r in read_topic(kafka_bootstrap, prefix + t, idle_s=1.0)] for t in INPUTS}
        trades = read_topic(kafka_bootstrap, prefix + "md.trades", idle_s=1.0)
        wait_consumed(kafka_bootstrap, prefix + "tapeflow-engine", {prefix + "md.trades": record_counts(trades)},
                      [engine], 600)
        assert engine.stop() == 0, engine.tail()
        assert "no progress marker for" not in engine.log(), engine.tail()
    finally:
        for s in services:
            s.kill()
    outputs = {t: [r["value"] for r in read_topic(kafka_bootstrap, prefix + t, idle_s=1.0)] for t in OUTPUTS}
    return canonical(outputs), inputs, summary


def assert_same(a: dict[str, list[dict]], b: dict[str, list[dict]], label: str) -> None:
    for topic in OUTPUTS:
        assert len(a[topic]) == len(b[topic]), f"{label}: {topic} {len(a[topic])} vs {len(b[topic])} records"
        for x, y in zip(a[topic], b[topic], strict=True):
            assert x == y, f"{label}: first difference in {topic}:\n{x}\n{y}"


@pytest.mark.timeout(1800)
def test_replay_output_is_identical_at_1x_60x_and_max(kafka_bootstrap, read_topic, tmp_path):
    runs = {}
    for speed in ("max", "60", "1"):
        prefix = f"rp{os.getpid()}{speed}{tmp_path.name[-6:]}."
        runs[speed] = replay(kafka_bootstrap, prefix, read_topic, tmp_path / speed, seed=21, duration_s=240,
                             speed=speed)
    outputs, inputs, summary = runs["max"]
    print(f"\nmax: {summary}\n" + ", ".join(f"{t} {len(v)}" for t, v in outputs.items()))
    assert len(outputs["bars.1m"]) >= 6 and len(outputs["features"]) > 300 and outputs["signals"], outputs["signals"]
    for speed in ("60", "1"):
        assert_same(runs[speed][0], outputs, f"{speed}x vs max")
        # the same trades in the same order per symbol (receive_time is the producer's wall clock)
        for sym in SYMBOLS:
            assert [{**t, "receive_time": 0} for t in runs[speed][1]["md.trades"] if t["symbol"] == sym] == \
                [{**t, "receive_time": 0} for t in inputs["md.trades"] if t["symbol"] == sym], sym
    # and the engine core called directly on what the producer published (what the backtest does)
    reference = canonical(direct_engine_outputs(session_records(inputs), [parse_strategy(STRATEGY)]))
    assert_same(outputs, reference, "streaming vs engine core")


@pytest.mark.timeout(1800)
def test_a_two_hour_replay_at_max_equals_60x(kafka_bootstrap, read_topic, tmp_path):
    runs = {}
    for speed in ("max", "60"):
        prefix = f"rq{os.getpid()}{speed}{tmp_path.name[-6:]}."
        runs[speed] = replay(kafka_bootstrap, prefix, read_topic, tmp_path / speed, seed=22, duration_s=2 * 3600,
                             speed=speed)
    outputs, inputs, summary = runs["max"]
    print(f"\nmax: {summary}\n" + ", ".join(f"{t} {len(v)}" for t, v in outputs.items()))
    assert len(outputs["bars.1m"]) >= 2 * 119 and outputs["signals"]
    assert_same(runs["60"][0], outputs, "60x vs max")
    reference = canonical(direct_engine_outputs(session_records(inputs), [parse_strategy(STRATEGY)]))
    assert_same(outputs, reference, "streaming vs engine core")
