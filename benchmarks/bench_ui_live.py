"""The UI's live follower (``tapeflow_ui.live``) on the embedded broker: what it costs the broker with
no page open and with one, and how long a bar takes from the topic to a page's queue.

The embedded Apache Kafka (as `tapeflow up` starts it) holds every catalogue topic under one prefix,
with ``--history`` single-record batches in ``bars.1m`` (and ``xv.pairs`` for the desk) before the
run. The follower is the one `tapeflow ui` builds. Three phases:
``--seconds`` with no page (the follower must hold no consumer), ``--seconds`` with one page listening
and nothing published (the idle fetches it costs), then ``--samples`` bars published one at a time,
each timed from ``produce()`` to the page's queue. Broker CPU from ``/proc/<pid>/stat``
(utime + stime of the broker process). Target: no broker CPU from the UI with no page open.

``--view`` says which pages listen (``tapeflow_ui.live.VIEWS``, joined by ``+``): ``chart`` (one
symbol's bars and signals; samples: a bar), ``overview`` (every signal, bars as changes; samples: a
signal), ``desk`` (the watchlist's four topics as changes, ``--history`` batches in ``xv.pairs`` too;
samples: an ``xv.pairs`` record to the queue's ``changed``, before the page's throttle).

Run: ``.venv/bin/python -m benchmarks.bench_ui_live [--seconds 60] [--samples 10] [--fetch-wait-ms 500]
[--view chart|overview|desk|overview+desk]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
import time
from pathlib import Path

from confluent_kafka import Producer

from benchmarks.embedded_broker import broker
from schemas.registry import FileSchemaRegistry
from schemas.serde import AvroSerde
from tapeflow_runtime.kafka_client import ensure_topics, producer_config
from tapeflow_runtime.paths import StackPaths
from tapeflow_runtime.process_records import ProcessRecord
from tapeflow_ui.live import VIEWS, LiveFollower
from tests.support.ui_session import pair_event_record, signal_record

PREFIX = "bench."
T0 = 1_714_996_800_000


def cpu_s(pid: int) -> float:
    """utime + stime of ``pid`` in seconds, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bar(i: int, symbol: str = "BTCUSDT") -> dict:
    return {
        "exchange": "binance",
        "symbol": symbol,
        "open_time": T0 + i * 60_000,
        "close_time": T0 + (i + 1) * 60_000,
        "open": 100.0,
        "high": 101.0,
        "low": 99.0,
        "close": 100.5,
        "volume": 3.0,
        "buy_volume": 2.0,
        "sell_volume": 1.0,
        "quote_volume": 301.5,
        "vwap": 100.5,
        "trade_count": 3,
        "first_agg_id": i,
        "last_agg_id": i,
    }


async def measure(args, bootstrap: str, pid: int) -> None:
    serde = AvroSerde(FileSchemaRegistry())
    producer = Producer(producer_config(bootstrap, **{"linger.ms": 0}))
    for i in range(args.history):  # one batch each: flushed one at a time
        producer.produce(PREFIX + "bars.1m", key=b"binance:ETHUSDT", value=serde.encode("bars.1m", bar(i, "ETHUSDT")))
        producer.flush(10)
    views = args.view.split("+")
    if "desk" in views:
        for i in range(args.history):
            producer.produce(
                PREFIX + "xv.pairs",
                key=b"ETH",
                value=serde.encode("xv.pairs", pair_event_record(f"h{i}", "ETH", T0, 1.0)),
            )
            producer.flush(10)
    follower = LiveFollower(lambda: bootstrap, serde, PREFIX, linger_s=2.0, fetch_wait_ms=args.fetch_wait_ms)

    def window(label: str) -> float:
        before, t = cpu_s(pid), time.monotonic()
        time.sleep(args.seconds)
        pct = 100.0 * (cpu_s(pid) - before) / (time.monotonic() - t)
        print(
            f"{label}: broker {pct:.2f} % of a core over {args.seconds:.0f} s "
            f"(consumer open: {follower.consumer_open}, polls so far {follower.polls})",
            flush=True,
        )
        return pct

    none = await asyncio.to_thread(window, "no page open")
    async with contextlib.AsyncExitStack() as stack:
        pages = {
            v: await stack.enter_async_context(follower.listen("BTCUSDT" if v == "chart" else None, VIEWS[v]))
            for v in views
        }
        for page in pages.values():
            kind, _ = await asyncio.wait_for(page.queue.get(), 30)
            assert kind == "live", kind
        print(f"reading: {follower.reading}", flush=True)
        one = await asyncio.to_thread(window, f"{args.view} open, nothing published")
        latencies = []
        for i in range(args.samples):
            if "overview" in views:
                page, topic, record = (
                    pages["overview"],
                    "signals",
                    signal_record("BTCUSDT", T0 + i * 1000, "LONG", 100.0, i),
                )
                key, want = b"binance:BTCUSDT", ("signal", record["signal_id"])
            elif "chart" in views:
                page, topic, record = pages["chart"], "bars.1m", bar(10_000 + i)
                key, want = b"binance:BTCUSDT", ("bar", (T0 + (10_000 + i) * 60_000) // 1000)
            else:
                page, topic, record = pages["desk"], "xv.pairs", pair_event_record(f"s{i}", "BTC", T0, 1.0)
                key, want = b"BTC", ("changed", "xv.pairs")
            sent = time.monotonic()
            producer.produce(PREFIX + topic, key=key, value=serde.encode(topic, record))
            producer.flush(10)
            while True:
                kind, item = await asyncio.wait_for(page.queue.get(), 30)
                if kind == "changed":
                    page.seen(item)
                got = item["signal_id"] if kind == "signal" else item["time"] if kind == "bar" else item
                if (kind, got) == want:
                    break
            latencies.append(1000 * (time.monotonic() - sent))
            await asyncio.sleep(0.37)  # samples fall at different points of the fetch cycle
    print(
        f"{topic} record published -> page queue, {len(latencies)} samples, ms: "
        f"{', '.join(f'{v:.0f}' for v in latencies)}; median {statistics.median(latencies):.0f}, "
        f"max {max(latencies):.0f}",
        flush=True,
    )
    deadline = time.monotonic() + 30
    while follower.consumer_open and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    after = await asyncio.to_thread(window, "page closed again")
    print(
        f"broker CPU, % of a core: none {none:.2f}, {args.view} {one:.2f} (+{one - none:.2f}), after {after:.2f}; "
        f"fetch wait {args.fetch_wait_ms} ms",
        flush=True,
    )
    follower.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--history", type=int, default=2000, help="single-record batches in bars.1m before the run")
    ap.add_argument("--fetch-wait-ms", type=int, default=500)
    ap.add_argument("--view", default="chart", help="the pages listening: chart, overview, desk, joined by +")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ui-live-") as tmp, broker(None, Path(tmp)) as bootstrap:
        ensure_topics(bootstrap, prefix=PREFIX)
        pid = ProcessRecord.load(StackPaths(Path(tmp)).state_file("broker")).pid
        asyncio.run(measure(args, bootstrap, pid))


if __name__ == "__main__":
    main()
