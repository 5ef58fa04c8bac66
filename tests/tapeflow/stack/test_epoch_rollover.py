"""The embedded stack rolls its topics over to new epochs while live, and loses or doubles nothing,
even with the draining services SIGKILLed in the middle of a rollover (issue 21).

The whole stack as `tapeflow up` runs it (supervisor, Tansu, PostgreSQL, sink, engine, executor, the
producer live against the fake exchange) with the rollover threshold lowered so that a one-minute
session at 300 trades/s (one record batch per trade or two) rolls over several times."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from fake_exchange.synthetic import SyntheticSpec
from schemas.catalogue import all_topics
from tapeflow.stack.epochs import EPOCH_GROUPS
from tapeflow.stack.supervisor import stack_status
from tapeflow_runtime.epochs import slot_prefix
from tapeflow_runtime.kafka_client import admin_client
from tests.support.endurance import expected_trades, live_stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

SYMBOL = "BTCUSDT"


def wait_for(condition, timeout_s: float, what: str, poll_s: float = 1.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def cli(env, *args, timeout=300):
    return subprocess.run([sys.executable, "-m", "tapeflow", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def minute(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M", time.gmtime(seconds))


def epochs_status(stack):
    return next(c for c in stack_status(stack.sup.settings, stack.sup.paths) if c.name == "epochs")


def list_groups(bootstrap: str) -> list[str]:
    """The broker's consumer groups, asked up to three times: in a loaded suite run one ListGroups was
    never answered and `.result()` without a timeout held the test until its 900 s timeout."""
    for attempt in range(3):
        try:
            listed = admin_client(bootstrap).list_consumer_groups(request_timeout=10).result(20)
            return [g.group_id for g in listed.valid]
        except Exception:  # noqa: BLE001 - a timeout or a broker error: ask again, the last one raises
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


@pytest.fixture
def home():
    """A short path (PostgreSQL's socket path has a length limit), removed afterwards: every suite run
    left its 71 MB here before."""
    root = Path(tempfile.mkdtemp(prefix="tapeflow-epochs-"))
    try:
        yield root / "home"
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_live_stack_rolls_over_and_stores_every_trade_once_through_sigkills(home):
    spec = SyntheticSpec(seed=21, symbols=(SYMBOL,), duration_s=60.0, trades_per_s=300.0,
                         start_time=time.time() + 25)
    count, first, last = expected_trades(spec)[SYMBOL]
    limit = 3_000
    with live_stack(home, spec, max_batches=limit) as stack:
        # the first rollover: once its engine step runs, kill the engine (draining epoch 0 or moving
        # on) and the sink; every consumer follows the segments in-process
        wait_for(lambda: stack.epochs().step == "engine", 120, "the first rollover's engine step", 0.1)
        rolling = epochs_status(stack)
        killed = {name: stack.service_pid(name) for name in ("engine", "sink")}
        for pid in killed.values():
            os.killpg(pid, signal.SIGKILL)
        # restarted by the supervisor; from then on no rollover starts or stops any of them
        pids = wait_for(lambda: (now := {n: stack.service_pid(n) for n in ("engine", "sink", "executor")})
                        and all(now[n] not in (None, killed[n]) for n in killed) and now, 120, "the restarts")
        rollovers_then = stack.epochs().rollovers

        def done():
            # the session is over and the last count (every epoch_check_s, after it) is below the
            # limit: no rollover can start any more, so what is read next is one steady state
            state = stack.epochs()
            return (time.time() > spec.start_time + spec.duration_s + 8 and not state.rolling
                    and stack.sup.roller.max_seen < limit and stack.trades_stored(SYMBOL)[0] >= count)
        wait_for(done, spec.duration_s + 400, "every trade stored and no rollover in progress")
        rows, distinct, low, high = stack.trades_stored(SYMBOL)
        state = stack.epochs()
        pids_after = {n: stack.service_pid(n) for n in pids}
        steady = epochs_status(stack)
        log = "\n".join(stack.log)
        topics = admin_client(stack.bootstrap).list_topics(timeout=10).topics
        groups = list_groups(stack.bootstrap)
        features = [r[0] for r in stack.query(
            "SELECT eval_time FROM features WHERE symbol = %s AND strategy = "
            "(SELECT min(strategy) FROM features) ORDER BY eval_time", SYMBOL)]
        # the topic history is one logical topic over the kept segments: every trade once, in order
        env = {k: v for k, v in os.environ.items() if not k.startswith("TAPEFLOW_")}
        env.update(TAPEFLOW_HOME=str(home))
        tailed = cli(env, "topics", "tail", "md.trades", "--from-beginning", "--timeout", "10", "--json")
        window = ["--symbols", SYMBOL, "--from", minute(spec.start_time), "--to", minute(spec.start_time + spec.duration_s + 60),
                  "--no-progress"]
        from_topics = cli(env, "backtest", "--source", "topics", *window, "--out", str(home.parent / "topics"))
        from_db = cli(env, "backtest", "--source", "db", *window, "--out", str(home.parent / "db"))

    assert (rows, distinct, low, high) == (count, count, first, last), log
    # no service was stopped or started by the rollovers after the restarts (the same processes all along)
    assert state.rollovers > rollovers_then and pids_after == pids, (rollovers_then, state.rollovers, pids, log)
    # `tapeflow status` shows the epoch and the rollover in progress
    assert rolling.healthy and rolling.state == "rolling" and "rolling over to epoch 1: step engine" in rolling.detail
    current = slot_prefix("", state.current_slot)
    assert steady.state == "steady" and f"epoch {state.epoch} ({current or 'plain topic names'})" in steady.detail
    assert f"{state.rollovers} rollover(s) done" in steady.detail
    assert state.rollovers >= 2, log
    assert "engine exited with code" in log and "sink exited with code" in log  # restarted what was killed
    for step in ("open", "switch", "engine", "executor", "sink", "delete"):
        assert f"epochs     {step} done" in log
    # the finished epochs are kept as segments (retention 24 h), each under a name slot of its own;
    # the engine's own topics and the epoch's consumer groups went at its rollover
    assert [s.epoch for s in state.segments] == list(range(state.epoch))
    assert len({s.slot for s in state.segments} | {state.current_slot}) == state.epoch + 1
    assert f"{current}md.trades" in topics
    for segment in state.segments:
        old = slot_prefix("", segment.slot)
        assert f"{old}md.trades" in topics and not [t for t in topics if t.startswith(f"{old}tapeflow-")]
        assert f"deleted 2 topics and {len(EPOCH_GROUPS)} consumer groups of epoch {segment.epoch}; its {len(all_topics())} " \
               "catalogue topics are kept as a segment" in log, log
        # no group of an old epoch holds committed offsets any more (Tansu lists only groups that do,
        # and answers DescribeGroups "Empty" for any name, so a deleted group cannot be told apart)
        assert not [g for g in groups if g.startswith(f"{old}tapeflow-")], groups
    assert f"history: {len(state.segments)} finished segment(s) kept" in steady.detail
    # `topics tail --from-beginning`: every trade of the session exactly once, in agg-id order
    assert tailed.returncode == 0, tailed.stderr
    agg_ids = [json.loads(line)["value"]["agg_id"] for line in tailed.stdout.splitlines()]
    assert agg_ids == list(range(first, last + 1)), (len(agg_ids), count)
    offsets = [json.loads(line)["offset"] for line in tailed.stdout.splitlines()]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)  # logical positions, one partition
    # and the backtest from the topics equals the backtest from the database over the session
    assert from_topics.returncode == 0 and from_db.returncode == 0, from_topics.stderr + from_db.stderr
    by_topics = json.loads((home.parent / "topics" / "result.json").read_text())
    by_db = json.loads((home.parent / "db" / "result.json").read_text())
    assert by_topics["trades_processed"] == by_db["trades_processed"] == count
    assert by_topics["signals"] == by_db["signals"]
    # features flowed through every rollover: no hole of more than 60 s of event time, up to the end
    assert features, "no features stored"
    gaps = [(b - a).total_seconds() for a, b in zip(features, features[1:])]
    assert max(gaps) <= 60, (max(gaps), log)
    assert features[-1].timestamp() >= spec.start_time + spec.duration_s - 60
