"""A generated session replayed through tapeflow's own processes (fake exchange, producer, engine), and
the comparison of engine outputs: what the replay tests share.

`replay` runs `tapeflow fake-exchange`, `tapeflow produce --replay-control-url` and `tapeflow engine
--wait-for-progress` (started first, so it reads while the producer writes) in one topic namespace
and returns the engine's outputs in a canonical order, the `md.*` inputs and the producer's summary.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
from pathlib import Path

import yaml

from tapeflow_runtime.kafka_client import ensure_topics
from tests.support.engine_reference import canonical
from tests.support.services import Service, record_counts, wait_consumed

SYMBOLS = ("BTCUSDT", "ETHUSDT")
FAR_PAST_S = 1e9  # generated sessions are from 2023; the engine's wall-clock signal age must not filter them
STRATEGY = {
    "name": "replay_parity",
    "version": "1",
    "windows": {"cvd_fast": "1m", "cvd_mid": "5m"},
    "warmup": "2m",
    "weights": {"direction": 55, "crowding": 0, "environment": 0, "auxiliary": 0},
    "thresholds": {"entry": 40, "heavy": 50, "flip": 50},
    "cooldown": "1m",
    "exits": {"sl_atr_mult": 0.5, "tp1_r": 0.5, "tp2_r": 1.0, "timeout_min": 3},
}
OUTPUTS = ("bars.1m", "features", "signals")
INPUTS = ("md.trades", "md.book", "md.mark", "md.liquidations", "md.indicators")


def synthetic_args(seed: int, duration_s: float, fake_args: tuple[str, ...] = ()) -> list[str]:
    """`tapeflow fake-exchange` arguments of the generated session `replay` serves."""
    return [
        "--synthetic-seed",
        str(seed),
        "--synthetic-symbols",
        ",".join(SYMBOLS),
        "--synthetic-duration",
        str(duration_s),
        *fake_args,
    ]


@functools.lru_cache(maxsize=1)
def served_session(seed: int, duration_s: float, fake_args: tuple[str, ...] = ()):
    """The session `tapeflow fake-exchange` serves for these arguments (its own generator), kept for the
    next check of the same run: a two-hour session takes ~6 CPU-s to generate, and a test checks it
    after each of its runs and once more for the producer's summary."""
    from fake_exchange.cli import config_from_args

    return config_from_args(synthetic_args(seed, duration_s, fake_args)).load_session()


def assert_every_trade_once(seed: int, duration_s: float, trades: list[dict], fake_args: tuple[str, ...] = ()) -> None:
    """No trade lost, none twice: the (symbol, agg id)s on md.trades are exactly the session's (the fake
    exchange's own generator, from the same arguments)."""
    session = served_session(seed, duration_s, tuple(fake_args))
    recorded = {(f.payload["s"], f.payload["a"]) for f in session.frames if f.event == "aggTrade"}
    published = [(t["symbol"], t["agg_id"]) for t in trades]
    assert len(published) == len(set(published)), f"{len(published) - len(set(published))} trades published twice"
    missing, extra = recorded - set(published), set(published) - recorded
    assert not missing and not extra, f"{len(missing)} of {len(recorded)} trades missing, {len(extra)} not recorded"


def service_env(kafka_bootstrap: str, prefix: str, workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAPEFLOW_")}
    env.update(
        {
            "TAPEFLOW_HOME": str(workdir / "home"),
            "TAPEFLOW_BROKER": kafka_bootstrap,
            "TAPEFLOW_TOPIC_PREFIX": prefix,
            "TAPEFLOW_SYMBOLS": ",".join(SYMBOLS),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def start_engine(env: dict[str, str], workdir: Path, *extra: str, strategy: dict | None = None) -> Service:
    """`tapeflow engine` with the test strategy, waiting for progress markers, ready to read."""
    strategy_file = workdir / "strategy.yaml"
    strategy_file.write_text(yaml.safe_dump(strategy or STRATEGY))
    engine = Service(
        "engine",
        [
            "engine",
            "--strategy",
            str(strategy_file),
            "--metrics-port",
            "0",
            "--prime-hours",
            "0",
            "--wait-for-progress",
            "--signal-max-age-s",
            str(FAR_PAST_S),
            *extra,
        ],
        env,
        workdir,
    )
    engine.wait_for_line(r"engine worker ready", 120)
    return engine


def drain_engine(
    engine: Service, kafka_bootstrap: str, prefix: str, read_topic, trades: list[dict] | None = None
) -> None:
    """Until the engine (group of namespace `prefix`) has committed every trade, then stop it cleanly.

    `trades`: md.trades as `read_topic` returned it once every writer had stopped (its partitions and
    offsets give the ends to wait for), when the caller has just read it: read again, the same final
    topic cost the broker and the test a second full fetch of every trade (~72,000 in the two-hour replay)."""
    if trades is None:
        trades = read_topic(kafka_bootstrap, prefix + "md.trades", settled=True)
    wait_consumed(
        kafka_bootstrap, prefix + "tapeflow-engine", {prefix + "md.trades": record_counts(trades)}, [engine], 600
    )
    assert engine.stop() == 0, engine.tail()
    assert "no progress marker for" not in engine.log(), engine.tail()


def read_outputs(kafka_bootstrap: str, prefix: str, read_topic) -> dict[str, list[dict]]:
    return canonical({t: [r["value"] for r in read_topic(kafka_bootstrap, prefix + t, settled=True)] for t in OUTPUTS})


def replay(
    kafka_bootstrap: str,
    prefix: str,
    read_topic,
    workdir: Path,
    *,
    seed: int,
    duration_s: float,
    speed: str,
    fake_args: tuple[str, ...] = (),
    strategy: dict | None = None,
    engine: bool = True,
) -> tuple[dict[str, list[dict]] | None, dict[str, list[dict]], str]:
    """One replay through the three processes; (engine outputs, md.* inputs, producer summary). With
    ``engine=False`` only the fake exchange and the producer run (outputs None): for a reference the
    engine core computes from the inputs (``direct_engine_outputs``), which the parity tests prove equal."""
    ensure_topics(kafka_bootstrap, prefix=prefix)
    workdir.mkdir(parents=True, exist_ok=True)
    env = service_env(kafka_bootstrap, prefix, workdir)
    services: list[Service] = []
    worker = None
    try:
        if engine:
            worker = start_engine(env, workdir, strategy=strategy)
            services.append(worker)
        fake = Service(
            "fake-exchange",
            [
                "fake-exchange",
                *synthetic_args(seed, duration_s, fake_args),
                "--speed",
                speed,
                "--rest-clock",
                "recording",
            ],
            env,
            workdir,
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
            workdir,
        )
        services.append(producer)
        wall = duration_s / (1.0 if speed == "max" else float(speed))
        try:
            assert producer.proc.wait(wall + 600) == 0, producer.tail()
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the replay did not finish\n{producer.tail()}\n{fake.tail()}") from None
        summary = producer.wait_for_line(r"replay-finished: .*", 5).group(0)
        # the producer has exited: these are the topics' final contents
        records = {t: read_topic(kafka_bootstrap, prefix + t, settled=True) for t in INPUTS}
        inputs = {t: [r["value"] for r in recs] for t, recs in records.items()}
        if worker is not None:
            drain_engine(worker, kafka_bootstrap, prefix, read_topic, trades=records["md.trades"])
    finally:
        for s in services:
            s.kill()
    return (read_outputs(kafka_bootstrap, prefix, read_topic) if worker is not None else None), inputs, summary


def assert_summary_true(
    summary: str,
    kafka_bootstrap: str,
    prefix: str,
    read_topic,
    *,
    seed: int,
    duration_s: float,
    fake_args: tuple[str, ...] = (),
    inputs: dict[str, list[dict]] | None = None,
) -> None:
    """The producer's `replay-finished` line is true: frames in = every frame the fake sent on the
    subscribed streams, md.trades = the session's trades, records delivered = what the md.* topics
    hold, and nothing dropped, undelivered or dead-lettered. (The fake at `max` finishes sending long
    before the producer has read everything; the producer may end only once the fake's end marker's
    count has been read, processed and delivered.)

    `inputs`: the md.* topics `replay` returned (read after the producer exited, so final): counted
    from there instead of fetched and decoded a second time; the other topics are read here."""
    import re

    session = served_session(seed, duration_s, tuple(fake_args))
    counts = {label.strip(): int(n) for n, label in re.findall(r"(\d+) ([a-z][a-z ]*)", summary)}
    assert counts["frames in"] == sum(1 for f in session.frames if f.event != "bookTicker"), summary
    assert re.search(rf"\bmd\.trades {sum(1 for f in session.frames if f.event == 'aggTrade')}\b", summary), summary
    assert counts["duplicates dropped"] == counts["undelivered"] == counts["dead letters"] == 0, summary
    inputs = inputs or {}
    assert counts["records delivered"] == sum(
        len(inputs[t]) if t in inputs else len(read_topic(kafka_bootstrap, prefix + t, settled=True))
        for t in ("md.trades", "md.depth", "md.book", "md.mark", "md.liquidations", "md.indicators", "md.progress")
    ), summary


def assert_same(a: dict[str, list[dict]], b: dict[str, list[dict]], label: str) -> None:
    for topic in OUTPUTS:
        assert len(a[topic]) == len(b[topic]), f"{label}: {topic} {len(a[topic])} vs {len(b[topic])} records"
        for x, y in zip(a[topic], b[topic], strict=True):
            assert x == y, f"{label}: first difference in {topic}:\n{x}\n{y}"


def backtest_signals(kafka_bootstrap: str, prefix: str, inputs: dict[str, list[dict]]) -> list[dict]:
    """`tapeflow backtest --source topics` over what the replay published (the backtest's own runner and
    source, in one shared paper account as a stack trades): every signal its engine emitted."""
    from backtest.runner import BacktestRunner
    from backtest.sources.topics import TopicSource
    from stream_apps.core.strategy import parse_strategy

    times = [t["trade_time"] for t in inputs["md.trades"]]
    runner = BacktestRunner([parse_strategy(STRATEGY)], account="shared")
    runner.run(TopicSource(kafka_bootstrap, list(SYMBOLS), min(times), max(times) + 1, topic_prefix=prefix))
    return canonical({"signals": list(runner.signals)})["signals"]


#: the paper executor's settings for replayed sessions: generated data is years old, and a losing
#: streak of a random walk must not pause the account mid-run
EXECUTOR_CONFIG = {
    "timeout_min": 3,
    "risk": {
        "max_signal_age_s": FAR_PAST_S,
        "stale_market_data_s": FAR_PAST_S,
        "daily_loss_limit_r": 1000,
        "max_consecutive_losses": 1000,
    },
}


def paper_positions(
    kafka_bootstrap: str, prefix: str, read_topic, workdir: Path, executor_config: dict | None = None
) -> list[dict]:
    """`tapeflow execute --mode paper --from-beginning` over a finished replay's topics (the executor
    behind its inputs: it takes them in event-time order, as the backtest does); its `positions`.
    `executor_config`: the executor's settings (default `EXECUTOR_CONFIG`)."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "executor.yaml"
    config.write_text(yaml.safe_dump(EXECUTOR_CONFIG if executor_config is None else executor_config))
    env = service_env(kafka_bootstrap, prefix, workdir)
    executor = Service(
        "executor",
        ["execute", "--mode", "paper", "--from-beginning", "--executor-config", str(config), "--metrics-port", "0"],
        env,
        workdir,
    )
    try:
        ends = {
            prefix + t: record_counts(read_topic(kafka_bootstrap, prefix + t, settled=True))
            for t in ("signals", "md.trades")
        }
        wait_consumed(kafka_bootstrap, prefix + "tapeflow-executor-paper", ends, [executor], 600)
        assert executor.stop() == 0, executor.tail()
    finally:
        executor.kill()
    return [r["value"] for r in read_topic(kafka_bootstrap, prefix + "positions", settled=True)]
