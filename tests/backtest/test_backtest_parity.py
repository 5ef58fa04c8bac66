"""Parity, proven: the same multi-hour session through the streaming pipeline (fake exchange → producer →
engine → paper executor, one `python -m tapeflow` process each, real broker) and through the backtest
gives identical signals (ids, scores, tiers) and positions (entries, exits, exit reasons, pnl_r with
fees, slippage and funding).

The session: 3 hours of three symbols from the synthetic generator (`backtest.sources.synthetic`,
seed 5), crossing the 08:00 funding time, written as a websocket recording
(`backtest.sources.recording.write_recording`) that the fake exchange replays at max, paced by the
producer (`--replay-control-url`: the producer runs on the recording's clock, so what it polls and
samples does not depend on the speed; at 120x, as before, the broker spent minutes on the many small
batches of paced writes). Two strategies
run side by side in one paper account, as in a stack: `ws_only` scores only what the websocket streams
carry (trades, mark/funding, liquidations); `all_inputs` also the REST-polled indicators (crowding,
open interest, Coinbase premium) and an OBI gate (md.book). Together they close positions by every
exit reason (checked for `ws_only`; `all_inputs` must close positions too).

Order of the streaming run: the replay is published first, then the engine reads it, then the
executor trades the engine's signals. Each stage reads data already in the broker, so its inputs are
ordered by event time (the engine's and the executor's aligners) and the run is deterministic. Run
concurrently, the executor sees a signal when it arrives, after the trades that followed its
evaluation (docs/concepts/backtest.md, "Parity"). Engine and executor read a copy of md.* (the same records and keys,
written by one producer in large batches).

Run time on the 2-core machine (`benchmarks.cpu_alone`, 2026-11-29, load ~6): 95 s and 37 CPU-s with
about 20,800 trades at 0.2 of the earlier rates, a mark every 3 s and a book every 4 s (about 200 signals
and 80 closed positions, every exit reason of ws_only); 108 s and 65 CPU-s beside it with 102,454
trades, a mark every second, a book every 2 s and the stage copy read back whole. Before: 145 s
and 132 CPU-s alone
(2026-11-26, 3 hours: 102,454 trades, 201
signals, 82 closed positions, every exit reason for both strategies; 4 hours took 179 s and ~200 CPU-s
in a loaded suite, 277 signals, 115 closed, and added no exit reason); at 4 hours and at 120x it was 406 s at load 10 and 562 s at load 6-8 (2026-11-23); the executor stage takes
about 40 s for 135,618 trades, 43,200 marks, 21,597 books and 277 signals. Four stage failures seen under load and fixed in the services, not here: the
executor released a partition's signals before its trades when those had not been fetched yet
(`execution.service_inputs.InputGate.catching_up`); it waited for the partition EOFs of a partition
read to its end, which librdkafka queues behind every record already fetched (other partitions'), and
force-released it after 5 s without news (2 runs in 5 of a loaded suite; `InputGate.read_to_end`); the engine left its group while catching up and stayed
"rebalancing" (`EngineAppConfig.broker_max_poll_interval_s`); the engine counted the time it spent
on one large fetch as a partition's silence and force-released a key out of event-time order, so
signal scores differed (`EngineProcessor.stall_clock`).

Comparisons:
1. `tapeflow backtest --verify-against-topics` (backtest over the md.* the stack consumed) finds every
   signal and position identical, for both strategies; the test also compares them itself.
2. `--source recording:DIR` (the recording read through the producer's parsers, no broker) gives the
   identical `ws_only` signals, and the same trades, marks and liquidations as md.*; and `ws_only`
   alone gives the same positions from the recording as from the stack's md.* with `fills: tape`
   (with book fills, the default, the strategies of one account share the book's levels, and the
   recording source's md.book is emulated on the receive clock: see the comparison).
   `all_inputs` is not compared there: the live producer polls indicators and samples the book on its
   wall clock, so which values exist at which event time depends on the replay's speed.
3. Outcome labels (`review.labels`, at 1 h and 2 h: the session is 3 hours) computed from the stack's
   published signals, positions and fills with its md.trades and md.mark equal the labels the backtest
   of comparison 1 computes from its own fills and source (`backtest.outcome_labels`), taken and
   vetoed signals and trades alike, funding included.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from confluent_kafka import Consumer

from backtest.outcome_labels import LabelTape, run_labels
from backtest.runner import BacktestRunner
from backtest.sources.recording import RecordingSource, write_recording
from backtest.sources.synthetic import SyntheticSource
from execution.config import ExecutorConfig
from producers.metrics import ProducerMetrics
from review.labels import LabelParams, PricePath, label_samples, samples_from_records, settlements_from_marks
from schemas.registry import FileSchemaRegistry
from schemas.serde import AvroSerde
from stream_apps.core.strategy import parse_strategy
from tapeflow_runtime.kafka_client import consumer_config, end_offsets, ensure_topics, start_offsets
from tapeflow_runtime.publisher import Publisher
from tests.support.services import Service, record_counts, wait_consumed

# a multi-hour session through four processes, then the backtest: minutes on a loaded 2-core machine
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]

H = 3_600_000
START = 1_704_088_800_000  # 2024-01-01 06:00 UTC; the 08:00 funding time falls inside
END = START + 3 * H
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
#: trades/s: 0.2 of what the session had until 2026-11-29 (3.0/2.5/2.0): 20,835 trades instead of 102,454
#: through every stage (books and indicators unchanged), the same 200-odd signals (CVD direction and the
#: scores do not scale with the trade rate: 198 instead of 201, 83 closed positions instead of 82) and
#: every exit reason of ws_only (timeout the rarest: 2)
RATES = {"BTCUSDT": 0.6, "ETHUSDT": 0.5, "SOLUSDT": 0.4}
SEED = 5
SPEED = "max"  # the fake starts with the first subscription and paces to the producer (--replay-control-url)
FAR = 1e9  # the session is from 2024: the services' wall-clock age limits must not apply
STRATEGIES = [
    {
        "name": "ws_only",
        "version": "1",
        "windows": {"cvd_fast": "5m", "cvd_mid": "20m"},
        "warmup": "30m",
        "weights": {
            "direction": 55,
            "crowding": 0,
            "environment": 0,
            "confirmation": 15,
            "auxiliary": 0,
            "funding": 5,
            "liquidation": 5,
        },
        "thresholds": {"entry": 55, "heavy": 70, "flip": 55},
        "cooldown": "3m",
        "exits": {"sl_atr_mult": 1.0, "tp1_r": 0.6, "tp2_r": 1.2, "timeout_min": 20},
    },
    {
        "name": "all_inputs",
        "version": "1",
        "windows": {"cvd_fast": "5m", "cvd_mid": "30m"},
        "warmup": "30m",
        "weights": {"direction": 55, "crowding": 25, "environment": 15, "auxiliary": 5},
        "thresholds": {"entry": 50, "heavy": 75, "flip": 60},
        "cooldown": "5m",  # the replay polls indicators rarely
        "gates": {"obi_against": {"default": 0.5}, "on_missing_input": "pass"},
        "exits": {"sl_atr_mult": 1.0, "tp1_r": 0.5, "tp2_r": 1.0, "timeout_min": 30},
    },
]
EXECUTOR = {
    "timeout_min": 30,
    "timeout_min_by_strategy": {"ws_only": 20},
    "paper": {"slippage_bps": 1.0},
    "risk": {
        "max_signal_age_s": FAR,
        "stale_market_data_s": FAR,
        "daily_loss_limit_r": 1000,
        "max_consecutive_losses": 1000,
        "max_open_positions": 100,
    },
}
EXIT_REASONS = {"sl", "sl_be", "tp", "timeout", "signal_flip"}
MD = ("md.trades", "md.mark", "md.liquidations", "md.book", "md.indicators")


@pytest.fixture
def home():
    path = Path(tempfile.mkdtemp(prefix="tapeflow-parity-"))  # outside pytest's basetemp, as the e2e test
    yield path
    shutil.rmtree(path, ignore_errors=True)


def session() -> SyntheticSource:
    return SyntheticSource(list(SYMBOLS), START, END, seed=SEED, trades_per_s=RATES)


#: a mark price every 3 s, the cadence of Binance's `<symbol>@markPrice` stream (`@1s` is the faster
#: option the generator makes): 10,800 marks instead of 32,400 through every stage, the 08:00 mark
#: (funding) still there; and a book every 4 s instead of 2 (half the depth diffs and md.book). The
#: backtest of the session gives 197 signals and 80 closed positions with every exit reason, as with
#: every mark and book (198, 81)
MARK_EVERY_S, BOOK_EVERY_S = 3, 4


def session_blocks():
    """The session's blocks with its marks and books thinned (`MARK_EVERY_S`, `BOOK_EVERY_S`)."""
    for block in session().blocks():
        for kind, every in (("marks", MARK_EVERY_S), ("books", BOOK_EVERY_S)):
            kept = block.records.get(kind, [])
            block.records[kind] = [r for r in kept if r["event_time"] // 1000 % every == 0]
        yield block


def signal_view(signals: list[dict]) -> dict[str, tuple]:
    return {
        s["signal_id"]: (
            s["strategy"],
            s["symbol"],
            s["eval_time"],
            s["direction"],
            s["tier"],
            s["score"],
            s["price"],
            s["risk_distance"],
            s["is_flip"],
        )
        for s in signals
    }


def position_view(events: list[dict]) -> dict[tuple[str, str], tuple]:
    return {
        (e["position_id"], e["event"]): (
            e["signal_id"],
            e["event_time"],
            e["entry_price"],
            e["qty"],
            e["sl_price"],
            e["tp1_price"],
            e["tp2_price"],
            e["exit_price"],
            e["exit_reason"],
            e["pnl_r_gross"],
            e["fees_r"],
            e["slippage_r"],
            e["funding_r"],
            e["pnl_r_net"],
        )
        for e in events
    }


LABEL_PARAMS = LabelParams(horizons_h=(1, 2))


def label_key(label) -> tuple:
    return (label.kind, label.sample_id, label.horizon_h)


def stack_outcome_labels(signals, positions, fills, md, config) -> list:
    """The outcome labels of the stack's own records (`review.labels`, as the stack's label job computes
    them): its signals, opened positions and fills, prices from md.trades, settlements from md.mark."""
    trades: dict[tuple[str, str], list] = {}
    for r in md["md.trades"]:
        v = r["value"]
        trades.setdefault((v["exchange"], v["symbol"]), []).append((v["trade_time"], v["agg_id"], v["price"]))
    prices = {m: PricePath([t for t, _, _ in sorted(x)], [p for _, _, p in sorted(x)]) for m, x in trades.items()}
    marks: dict[tuple[str, str], list] = {}
    for r in md["md.mark"]:
        marks.setdefault((r["value"]["exchange"], r["value"]["symbol"]), []).append(r["value"])
    settlements = {m: settlements_from_marks(x) for m, x in marks.items()}
    opened = [p for p in positions if p["event"] == "opened"]
    samples = samples_from_records(signals, opened, fills, config)
    return label_samples(samples, prices, settlements, LABEL_PARAMS, END)


def written_ends(bootstrap: str, topic: str) -> tuple[dict[int, int], int]:
    """Per partition with records, the offset after its last one (what `record_counts` gives of the topic
    read whole), and how many records the topic holds: its end and start offsets (one ListOffsets
    request each), for a topic its one idempotent writer has flushed, so dense from its start. The
    stage copy was read back whole (decoded) for these until 2026-11-29: 65 s of a loaded run."""
    consumer = Consumer(consumer_config(bootstrap))
    try:
        partitions = [(topic, p) for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions]
        ends, starts = end_offsets(consumer, partitions, 30), start_offsets(consumer, partitions, 30)
    finally:
        consumer.close()
    assert len(ends) == len(starts) == len(partitions), f"{topic}: offsets of {len(ends)}/{len(starts)} partitions"
    return {p: end for (_, p), end in ends.items() if end > 0}, sum(ends[tp] - starts[tp] for tp in partitions)


def only(view: dict, strategy: str, signal_of) -> dict:
    return {k: v for k, v in view.items() if signal_of(k, v).startswith(f"{strategy}:")}


@pytest.mark.timeout(1800)
def test_streaming_pipeline_and_backtest_agree(kafka_bootstrap, topic_prefix, read_topic, home):
    recording = write_recording(session_blocks(), home / "recording")
    files = []
    for spec in STRATEGIES:
        path = home / f"{spec['name']}.yaml"
        path.write_text(yaml.safe_dump(spec))
        files.append(path)
    executor_file = home / "executor.yaml"
    executor_file.write_text(yaml.safe_dump(EXECUTOR))
    ensure_topics(kafka_bootstrap, prefix=topic_prefix)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("TAPEFLOW_")}
    base_env.update(
        {
            "TAPEFLOW_HOME": str(home / "home"),
            "TAPEFLOW_BROKER": kafka_bootstrap,
            "TAPEFLOW_TOPIC_PREFIX": topic_prefix,
            "TAPEFLOW_SYMBOLS": ",".join(SYMBOLS),
            "PYTHONUNBUFFERED": "1",
        }
    )
    services: list[Service] = []

    def start(name: str, *args: str, env: dict[str, str] | None = None) -> Service:
        services.append(Service(name, list(args), base_env | (env or {}), home))
        return services[-1]

    def topic(name: str, prefix: str, expected: int | None = None) -> list[dict]:
        """Every record of a topic: until `expected` records when known (read again while short), else
        until every partition has reported its end (every writer has stopped by then; 5 s of silence cost
        its 14 reads 70 s)."""
        began = time.monotonic()
        records = read_topic(kafka_bootstrap, prefix + name, settled=True)  # every writer has stopped
        while expected is not None and len(records) < expected and time.monotonic() - began < 900:
            records = read_topic(kafka_bootstrap, prefix + name)
        print(f"read {len(records)} records of {prefix + name} in {time.monotonic() - began:.1f} s")
        assert expected is None or len(records) == expected, f"{prefix + name}: {len(records)} of {expected}"
        return records

    stage = topic_prefix + "x."  # where engine and executor run (see the module docstring)
    try:
        # 1. the replay into md.*
        fake = start(
            "fake-exchange",
            "fake-exchange",
            "--recording",
            str(recording),
            "--speed",
            str(SPEED),
            "--rest-clock",
            "recording",
        )
        urls = json.loads(fake.wait_for_line(r"\{\"ws_url\".*\}", 90).group(0))
        rest = urls["rest_url"]
        producer = start(
            "producer",
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
        )
        assert producer.proc.wait(600) == 0, producer.tail()
        assert "replay-finished" in producer.log(), producer.tail()
        assert fake.stop() == 0, fake.tail()
        frames = (recording / "ws_frames.txt").read_text().splitlines()[1:]
        counts = {
            "md.trades": sum('"e":"aggTrade"' in f for f in frames),
            "md.mark": sum('"e":"markPriceUpdate"' in f for f in frames),
        }
        md = {name: topic(name, topic_prefix, counts.get(name)) for name in MD}

        # the same records, same keys and timestamps, written by one producer in large batches
        ensure_topics(kafka_bootstrap, prefix=stage)
        publisher = Publisher(kafka_bootstrap, AvroSerde(FileSchemaRegistry()), ProducerMetrics(), topic_prefix=stage)
        for name, recs in md.items():
            for r in recs:
                publisher.publish(name, r["key"], r["value"], r["value"]["receive_time"])
        assert publisher.flush(60) == 0 and not publisher.failed

        # 2. the engine reads all of it (a new group primed from far back: the beginning)
        strategy_args = [a for f in files for a in ("--strategy", str(f))]
        engine = start(
            "engine",
            "engine",
            *strategy_args,
            "--metrics-port",
            "0",
            "--prime-hours",
            "100000",
            "--signal-max-age-s",
            str(FAR),
            "--no-wait-for-progress",  # the copy has no md.progress
            env={"TAPEFLOW_TOPIC_PREFIX": stage},
        )
        # the copy is whole (as many records as md.*): its ends are what the engine and the executor wait for
        stage_ends = {}
        for name in md:
            stage_ends[name], held = written_ends(kafka_bootstrap, stage + name)
            assert held == len(md[name]), f"{stage + name}: {held} of {len(md[name])}"
        wait_consumed(
            kafka_bootstrap, stage + "tapeflow-engine", {stage + name: stage_ends[name] for name in md}, [engine], 600
        )
        assert engine.stop() == 0, engine.tail()
        signals_published = topic("signals", stage)

        # 3. the paper executor trades them from the beginning of its inputs
        executor = start(
            "executor",
            "execute",
            "--mode",
            "paper",
            "--executor-config",
            str(executor_file),
            "--metrics-port",
            "0",
            "--from-beginning",
            env={"TAPEFLOW_TOPIC_PREFIX": stage},
        )
        wait_consumed(
            kafka_bootstrap,
            stage + "tapeflow-executor-paper",
            {
                stage + "signals": record_counts(signals_published),
                # written once, by the test's publisher, before the engine started: the ends read above
                stage + "md.trades": stage_ends["md.trades"],
                stage + "md.mark": stage_ends["md.mark"],
            },
            [executor],
            600,
        )
        assert executor.stop() == 0, executor.tail()
        # no forced release (held inputs let go as they are after max_hold_s without news): every
        # partition with inputs has records in all four topics, and the executor (a new group) reads them
        # from the beginning, so a topic holding a partition back has records left to read (their news is
        # queued behind other partitions': the gate waits) or has been read to the high watermark of its
        # last fetch, which the gate takes as its end, as the partition EOF that librdkafka queues behind
        # every record already fetched says seconds later on a loaded machine. The gate forces a release
        # only on figures the consumer does not have (a topic-partition it has fetched nothing from), which
        # no partition here lacks for 5 s: one would mean the gate lost track of where a topic ends. The
        # positions compared below would show any input traded out of event-time order.
        forced = [line for line in executor.log().splitlines() if "inputs released without event-time order" in line]
        assert not forced, forced
    finally:
        for service in services:
            service.kill()

    stack_signals = [r["value"] for r in signals_published]
    stack_positions = [r["value"] for r in topic("positions", stage)]
    closed = [p for p in stack_positions if p["event"] == "closed"]
    reasons = Counter((p["strategy"], p["exit_reason"]) for p in closed)
    print(f"{len(md['md.trades'])} trades, {len(stack_signals)} signals, {len(closed)} closed: {dict(reasons)}")
    assert {r for s, r in reasons if s == "ws_only"} == EXIT_REASONS, f"not every exit reason: {reasons}"
    assert any(s == "all_inputs" for s, _ in reasons), f"all_inputs closed nothing: {reasons}"
    assert any(p["funding_r"] != 0 for p in closed), "no position paid funding"

    # --- 1. over the md.* the stack consumed: the command, then the test's own comparison -----------
    verify = subprocess.run(
        [
            sys.executable,
            "-m",
            "tapeflow",
            "backtest",
            "--verify-against-topics",
            *strategy_args,
            "--executor-config",
            str(executor_file),
            "--symbols",
            ",".join(SYMBOLS),
            "--from",
            "2024-01-01T06:00",
            "--to",
            "2024-01-01T10:00",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        env=base_env | {"TAPEFLOW_TOPIC_PREFIX": stage},
        cwd=home,
        timeout=900,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "identical: the backtest reproduces every signal and position the stack published" in verify.stdout
    assert f"signals compared: {len(stack_signals)}, positions compared: " in verify.stdout

    from backtest.sources.topics import TopicSource

    strategies = [parse_strategy(s) for s in STRATEGIES]
    config = ExecutorConfig.model_validate(EXECUTOR)
    runner = BacktestRunner(strategies, config, account="shared")
    # the originals, read once: the source keeps what it read, for the ws_only run below too
    originals = TopicSource(kafka_bootstrap, list(SYMBOLS), START, END, topic_prefix=topic_prefix)
    tape = LabelTape(originals)
    runner.run(tape)
    assert signal_view(runner.signals) == signal_view(stack_signals)
    assert position_view(runner.position_events()) == position_view(stack_positions)

    # outcome labels (1 h and 2 h: the session is 3 h) from the stack's fills and md.* equal the backtest's
    stack_fills = [r["value"] for r in topic("fills", stage)]
    live_labels = stack_outcome_labels(stack_signals, stack_positions, stack_fills, md, config)
    backtest_labels = run_labels(runner, tape, LABEL_PARAMS, END)
    assert {(x.kind, x.taken) for x in live_labels} == {("signal", True), ("signal", False), ("trade", True)}
    assert any(x.funding != 0 for x in live_labels), "no label charged the 08:00 funding"
    assert sorted(live_labels, key=label_key) == sorted(backtest_labels, key=label_key)

    # --- 2. the recording itself, through the producer's parsers ---------------------------------
    source = RecordingSource(recording, list(SYMBOLS), START, END)
    records = source.records()

    def trades(recs):
        return sorted((r["symbol"], r["agg_id"], r["trade_time"], r["price"], r["qty"], r["taker_side"]) for r in recs)

    assert trades(records["trades"]) == trades(r["value"] for r in md["md.trades"])
    for kind, name, fields in (
        ("marks", "md.mark", ("symbol", "event_time", "mark_price", "funding_rate", "next_funding_time")),
        ("liquidations", "md.liquidations", ("symbol", "trade_time", "side", "usd_value")),
    ):
        assert sorted(tuple(r[f] for f in fields) for r in records[kind]) == sorted(
            tuple(r["value"][f] for f in fields) for r in md[name]
        )
    # Signals as the stack's. Positions: ws_only alone from the recording against ws_only alone from the md.* the stack consumed,
    # with tape fills. Not against the stack's: with book fills (the default) the strategies of one paper
    # account take the same book levels, so ws_only's fills in the stack depend on all_inputs' orders,
    # and the md.book the live producer sampled on its wall clock is not the book the recording source
    # emulates on the receive clock (docstring above); comparison 1 covers book fills, stack = backtest.
    tape_fills = config.model_copy(update={"paper": config.paper.model_copy(update={"fills": "tape"})})
    from_recording = BacktestRunner([strategies[0]], tape_fills, account="shared")
    from_recording.run(source)
    assert signal_view(from_recording.signals) == only(signal_view(stack_signals), "ws_only", lambda k, v: k)
    from_topics = BacktestRunner([strategies[0]], tape_fills, account="shared")
    from_topics.run(originals)
    assert position_view(from_recording.position_events()) == position_view(from_topics.position_events())
    assert len(from_recording.position_events()) > 0
