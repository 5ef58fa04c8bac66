"""The same output at any speed: a recording replayed at 1x, 60x and `max` gives the same bars, features
and signals, equal to the engine core called directly on what the producer published.

Run as `tapeflow up --source replay:DIR --replay-speed S` runs it, one process each: fake exchange →
producer (`--replay-control-url`: the recording's clock, lockstep REST, progress markers) → engine
(`--wait-for-progress`, started first, so it reads while the producer is still writing, the case
where fetch interleaving used to change the result). Nothing here gives the engine any lateness.

Two references: the engine core called once over the published `md.*` records in event-time order
(bars, features, signals), and `tapeflow backtest --source topics` over the same records (its runner
and source; it exposes signals). `tapeflow backtest --source recording:DIR` is not compared: it
emulates the producer on the recording's receive clock and has no REST indicators (the fake exchange's
generated answers exist only in a replay), so its book and indicator inputs differ by construction.

The strategy is a test strategy (1m/5m CVD, 2-minute warm-up, direction layer only) so a 4-minute
session has signals; the two-hour session checks a long replay at max against the engine core and the
backtest (a 1x replay of it would take two hours), and that the producer's summary of the max run is
true (it was test_replay_lossless's own two-hour replay). Every run's md.trades holds exactly
the session's agg ids, each once.
"""

from __future__ import annotations

import os

import pytest

from stream_apps.core.strategy import parse_strategy
from tests.support.engine_reference import (
    canonical,
    direct_engine_outputs,
    session_records,
)
from tests.support.load import cpu_hog
from tests.support.replay_runs import (
    STRATEGY,
    SYMBOLS,
    assert_every_trade_once,
    assert_same,
    assert_summary_true,
    backtest_signals,
    paper_positions,
    replay,
)

pytestmark = pytest.mark.integration


@pytest.mark.timeout(1800)
def test_replay_output_is_identical_at_1x_60x_and_max(kafka_bootstrap, read_topic, tmp_path):
    runs, prefixes = {}, {}
    for speed in ("max", "60", "1"):
        prefix = prefixes[speed] = f"rp{os.getpid()}{speed}{tmp_path.name[-6:]}."
        runs[speed] = replay(
            kafka_bootstrap, prefix, read_topic, tmp_path / speed, seed=21, duration_s=240, speed=speed
        )
    outputs, inputs, summary = runs["max"]
    print(f"\nmax: {summary}\n" + ", ".join(f"{t} {len(v)}" for t, v in outputs.items()))
    assert len(outputs["bars.1m"]) >= 6 and len(outputs["features"]) > 300 and outputs["signals"], outputs["signals"]
    for speed in ("max", "60", "1"):
        assert_every_trade_once(21, 240, runs[speed][1]["md.trades"])
    for speed in ("60", "1"):
        assert_same(runs[speed][0], outputs, f"{speed}x vs max")
        # the same trades in the same order per symbol (receive_time is the producer's wall clock)
        for sym in SYMBOLS:
            assert [{**t, "receive_time": 0} for t in runs[speed][1]["md.trades"] if t["symbol"] == sym] == [
                {**t, "receive_time": 0} for t in inputs["md.trades"] if t["symbol"] == sym
            ], sym
    # and the engine core called directly on what the producer published (what the backtest does)
    reference = canonical(direct_engine_outputs(session_records(inputs), [parse_strategy(STRATEGY)]))
    assert_same(outputs, reference, "streaming vs engine core")
    assert backtest_signals(kafka_bootstrap, prefixes["max"], inputs) == outputs["signals"]


#: the two-hour session's depth every 500 ms instead of 100: 116,000 subscribed frames instead of
#: 230,000 (72,000 trades either way), half the CPU of each run in a suite that is CPU-bound
TWO_HOURS_ARGS = ("--synthetic-depth-interval-ms", "500")


@pytest.mark.timeout(1800)
def test_a_two_hour_replay_at_max_equals_the_engine_core_and_loses_no_frame(kafka_bootstrap, read_topic, tmp_path):
    """A long replay at `max` (the fake has sent its last frame while the producer is still minutes of
    event time behind) equals the engine core and the backtest on what it published; every trade is on
    md.trades once, in agg-id order per symbol, and the producer's summary is true.

    Not replayed at 60x as well any more: that run cost 120 s and ~170 CPU-s alone, most of it the
    embedded broker's (0.9 CPU-s/s: paced writes make one small batch after another, and each fetch
    walks the partition's batch list), and speed independence is what the 4-minute 1x/60x/max test and
    the loaded 20-minute max/60x test check."""
    prefix = f"rq{os.getpid()}max{tmp_path.name[-6:]}."
    outputs, inputs, summary = replay(
        kafka_bootstrap,
        prefix,
        read_topic,
        tmp_path / "max",
        seed=22,
        duration_s=2 * 3600,
        speed="max",
        fake_args=TWO_HOURS_ARGS,
    )
    print(f"\nmax: {summary}\n" + ", ".join(f"{t} {len(v)}" for t, v in outputs.items()))
    assert len(outputs["bars.1m"]) >= 2 * 119 and outputs["signals"]
    # the exact agg-id set of the session: nothing lost at max, nothing twice
    assert_every_trade_once(22, 2 * 3600, inputs["md.trades"], TWO_HOURS_ARGS)
    for sym in SYMBOLS:
        ids = [t["agg_id"] for t in inputs["md.trades"] if t["symbol"] == sym]
        assert ids == sorted(ids), sym
    assert_summary_true(
        summary,
        kafka_bootstrap,
        prefix,
        read_topic,
        seed=22,
        duration_s=2 * 3600,
        fake_args=TWO_HOURS_ARGS,
        inputs=inputs,
    )
    reference = canonical(direct_engine_outputs(session_records(inputs), [parse_strategy(STRATEGY)]))
    assert_same(outputs, reference, "streaming vs engine core")
    assert backtest_signals(kafka_bootstrap, prefix, inputs) == outputs["signals"]


def _positions_key(p: dict) -> tuple:
    return (p["symbol"], p["position_id"], p["event"], p.get("event_time") or 0)


LOADED_S = 600


@pytest.mark.timeout(1800)
def test_two_speeds_on_a_loaded_machine_give_the_same_features_signals_and_positions(
    kafka_bootstrap, read_topic, tmp_path
):
    """The same 10-minute session at max and at 60x (paced writes: 10 s; 20x took 60 s of the broker's
    most expensive regime, many small batches; 20 minutes, until 2026-11-26, cost 364 CPU-s in a loaded
    suite, the most of any test) while every core is kept busy by a CPU hog
    (stress-ng, or busy Python processes): what the engine sees must not depend on how late anything
    arrives. Identical bars, features and signals at both speeds, equal to the engine core on the
    published inputs, and identical paper positions from the executor over each run's topics. (A
    loaded run once differed in one book: the producer's connection had been cut by a 20 s ping
    timeout and the depth in flight was lost; such a loss now fails the replay loudly.)"""
    runs, positions = {}, {}
    with cpu_hog():
        for speed in ("max", "60"):
            prefix = f"rl{os.getpid()}{speed}{tmp_path.name[-6:]}."
            runs[speed] = replay(
                kafka_bootstrap, prefix, read_topic, tmp_path / speed, seed=23, duration_s=LOADED_S, speed=speed
            )
            positions[speed] = sorted(
                paper_positions(kafka_bootstrap, prefix, read_topic, tmp_path / f"x{speed}"), key=_positions_key
            )
    outputs, inputs, summary = runs["max"]
    print(
        f"\nmax: {summary}\n"
        + ", ".join(f"{t} {len(v)}" for t, v in outputs.items())
        + f", positions {len(positions['max'])}"
    )
    assert outputs["signals"] and any(p["event"] == "closed" for p in positions["max"]), positions["max"][:3]
    for speed in ("max", "60"):
        assert_every_trade_once(23, LOADED_S, runs[speed][1]["md.trades"])
    assert_same(runs["60"][0], outputs, "60x vs max, loaded")
    reference = canonical(direct_engine_outputs(session_records(inputs), [parse_strategy(STRATEGY)]))
    assert_same(outputs, reference, "streaming vs engine core, loaded")
    assert positions["60"] == positions["max"]
