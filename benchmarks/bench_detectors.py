"""Throughput of the microstructure detectors (VPIN, Kyle's lambda, Amihud).

Three numbers:

1. the detectors alone (``MicrostructureDetectors.update``) per VPIN classification, on one stream
   cut into batches of several sizes (the compiled loop's cost per trade plus the per-call overhead);
2. the incremental engine path (``SymbolState.apply_trades``, 4 symbols) without and with detectors:
   the cost of keeping the state, where the detectors' share is largest;
3. the full engine (``Engine.process``, the three shipped strategies, every closed second + every
   15 s) without and with a ``detectors`` section added to every strategy: the ratio the issue asks
   for (target >= 0.7);
4. the flow detectors (CVD–price divergence, OI spikes, liquidations): the divergence loop alone,
   then the full engine fed trades, an open-interest point per symbol every 5 minutes and about 10
   liquidations per symbol per minute, three ways: detectors off, the microstructure section alone,
   and that section with ``divergence``, ``oi_spike`` and ``liquidations`` added (ratio to off, and
   of the flow parts to the section without them);
5. the book detectors (walls, icebergs): reading a record's levels into columns (``book_levels``,
   what the engine does with a plain record), the live worker's md.book decode two ways (below),
   then ``BookDetectors.update`` alone per
   snapshot (20 levels a side, the trades between) fed those columns and fed the records' dicts, then
   the full engine fed trades and a 20-level snapshot per symbol every 250 ms (``md.book``'s live
   cadence) at 20 (about BTCUSDT's average), 50 and 500 trades/s a symbol, four ways: off,
   microstructure, and that with walls + icebergs compared once a second (``book_sample: 1s``, the
   default) and at every snapshot (``book_sample: 0``); once with the levels as ``BookLevels``
   columns (what the live worker's md.book decoder and the database, topics, recording and generated
   sources give) and once as the records' dicts (records without columns: read inside the engine). Also
   the live worker's decode of an md.book record: fastavro + ``book_from_record`` against
   ``book_decode`` (columns straight from the Avro bytes).

6. every detector at once (``--only all``): the microstructure, flow and book parts at their
   defaults, fed trades, the flow inputs and the snapshots as columns, against no detectors.

Times are the process's CPU time (``time.process_time``; everything here runs on one thread), not
wall time: on the shared 2-core machine other work takes turns with the benchmark, and CPU time
leaves out the turns it waited. Off and on runs alternate and the best of ``--repeat`` is kept. Generated
data (``stream_apps.core.synthetic``), at least a million trades per measurement. VPIN buckets are
set per symbol to 1/500 of its quote volume over the run, so each run closes about 500 buckets per
symbol (the paper's sizing is a fiftieth of a day's volume).

Run: ``.venv/bin/python -m benchmarks.bench_detectors [--quick] [--repeat 3] [--only flow|book]``. The clock is
read only here.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from schemas.registry import FileSchemaRegistry
from schemas.serde import AvroSerde
from stream_apps.book_decode import BookDecoder
from stream_apps.core.detectors import (
    BookDetectors,
    BookParams,
    DetectorParams,
    FlowDetectors,
    FlowParams,
    MicrostructureDetectors,
)
from stream_apps.core.engine import Engine
from stream_apps.core.events import (
    BookUpdate,
    IndicatorUpdate,
    LiquidationEvent,
    TradeBatch,
    book_from_record,
    book_levels,
)
from stream_apps.core.strategy import (
    Cascade,
    Detectors,
    Divergence,
    Icebergs,
    Liquidations,
    OiSpike,
    PerSymbol,
    Vpin,
    Walls,
    default_strategy_dir,
    load_strategies,
)
from stream_apps.core.symbol_state import SymbolState
from stream_apps.core.synthetic import synthetic_trades
from stream_apps.core.units import qty_to_units

SYMBOLS = (("BTCUSDT", 30_000.0), ("ETHUSDT", 2_000.0), ("SOLUSDT", 60.0), ("XRPUSDT", 0.6))
START = 1_700_006_400_000


def streams(duration_ms: int, rate_per_s: float) -> list[TradeBatch]:
    return [
        synthetic_trades(symbol, start_ms=START, duration_ms=duration_ms, rate_per_s=rate_per_s, price0=price, seed=i)
        for i, (symbol, price) in enumerate(SYMBOLS)
    ]


def section(batches: list[TradeBatch], classification: str = "bvc") -> Detectors:
    volumes = {b.symbol: float(np.sum(b.price * b.qty)) / 500 for b in batches}
    return Detectors(vpin=Vpin(bucket_volume=PerSymbol(symbols=volumes), classification=classification))


def bench_alone(stream: TradeBatch, classification: str, batch_size: int) -> float:
    params = DetectorParams(
        vpin_bucket_volume=float(np.sum(stream.price * stream.qty)) / 500, vpin_classification=classification
    )
    detectors = MicrostructureDetectors(params)
    chunks = [stream.take(slice(i, i + batch_size)) for i in range(0, len(stream), batch_size)]
    began = time.process_time()
    for chunk in chunks:
        detectors.update_batch(chunk)
    return time.process_time() - began


def bench_incremental(batches: list[TradeBatch], detectors: Detectors | None, batch_size: int) -> float:
    states = [
        SymbolState("binance", b.symbol, detectors=detectors.params_for(b.symbol) if detectors else None)
        for b in batches
    ]
    chunks = [
        (state, b.take(slice(i, i + batch_size)))
        for state, b in zip(states, batches)
        for i in range(0, len(b), batch_size)
    ]
    chunks.sort(key=lambda item: int(item[1].time_ms[0]))
    began = time.process_time()
    for state, chunk in chunks:
        state.apply_trades(chunk)
    return time.process_time() - began


def bench_engine(
    batches: list[TradeBatch],
    duration_ms: int,
    detectors: Detectors | None,
    batch_ms: int = 60_000,
    events: list | None = None,
) -> tuple[float, int]:
    strategies = load_strategies(default_strategy_dir())
    if detectors is not None:
        strategies = [cfg.model_copy(update={"detectors": detectors}) for cfg in strategies]
    engine = Engine(strategies)
    event_times = np.array([e.time_ms for e in events or []], dtype=np.int64)
    slices = []
    for begin in range(START, START + duration_ms, batch_ms):
        part = []
        for b in batches:
            lo, hi = int(b.time_ms.searchsorted(begin)), int(b.time_ms.searchsorted(begin + batch_ms))
            if hi > lo:
                part.append(b.take(slice(lo, hi)))
        lo, hi = int(event_times.searchsorted(begin)), int(event_times.searchsorted(begin + batch_ms))
        slices.append((part, (events or [])[lo:hi], begin + batch_ms))
    evaluations = 0
    began = time.process_time()
    for part, inputs, now in slices:
        evaluations += engine.process(part, inputs, now_ms=now).evaluations
    return time.process_time() - began, evaluations


def flow_section(batches: list[TradeBatch]) -> Detectors:
    """``section`` (aggressor VPIN) with the three flow parts: 30-bar divergence, OI z over 288 periods
    (a day of 5-minute points), 5-minute liquidation windows with 30 s cascades."""
    return section(batches, "aggressor").model_copy(
        update={
            "divergence": Divergence(window=1_800_000),
            "oi_spike": OiSpike(window=288),
            "liquidations": Liquidations(window=300_000, cascade=Cascade(window=30_000, min_count=5, min_usd=1e6)),
        }
    )


def market_events(batches: list[TradeBatch], duration_ms: int, per_min: float = 10.0, seed: int = 3) -> list:
    """Per symbol: an open-interest point every 5 minutes (known 30 s after its period) and
    ``per_min`` liquidations a minute at random times; time-ordered."""
    rng = np.random.default_rng(seed)
    events: list = []
    for b in batches:
        value = 1e6
        for start in range(START, START + duration_ms, 300_000):
            value *= 1 + rng.normal(0.0, 0.003)
            t = start + 330_000
            events.append(IndicatorUpdate("binance", b.symbol, t, "open_interest_hist", value, start))
        n = int(per_min * duration_ms / 60_000)
        for t in np.sort(rng.integers(START, START + duration_ms, n)).tolist():
            side = "LONG" if rng.random() < 0.5 else "SHORT"
            events.append(LiquidationEvent("binance", b.symbol, t, side, float(rng.lognormal(10.0, 1.5))))
    events.sort(key=lambda e: e.time_ms)
    return events


def bench_divergence_alone(stream: TradeBatch, batch_size: int) -> float:
    flow = FlowDetectors(FlowParams(divergence_bars=30))
    units = qty_to_units(stream.qty)
    chunks = [
        (stream.take(slice(i, i + batch_size)), units[i : i + batch_size]) for i in range(0, len(stream), batch_size)
    ]
    began = time.process_time()
    for chunk, chunk_units in chunks:
        flow.update(chunk.time_ms, chunk.price, chunk_units, chunk.taker_sell)
    return time.process_time() - began


def run_flow(args: argparse.Namespace, scale: float) -> None:
    FlowDetectors(FlowParams(divergence_bars=2)).update(
        np.array([START, START + 60_000]), np.array([1.0, 1.0]), np.ones(2, dtype=np.int64), np.zeros(2, dtype=bool)
    )
    stream = synthetic_trades(duration_ms=int(4 * 3_600_000 * scale), rate_per_s=200.0)
    print(f"divergence alone (FlowDetectors.update, 30 bars), {len(stream):,} trades of one symbol")
    for batch_size in (len(stream), 10_000, 100):
        best = min(bench_divergence_alone(stream, batch_size) for _ in range(args.repeat))
        print(f"  batch {batch_size:>9,}: {len(stream) / best:>13,.0f} trades/s")

    print(
        "full engine (Engine.process, 3 shipped strategies), 4 symbols, trades + OI + liquidations:"
        " off / microstructure / microstructure + flow"
    )
    engine_three_ways(args, scale, ((50.0, 2.0), (500.0, 0.25)), market_events, "flow", flow_section)


def engine_three_ways(args: argparse.Namespace, scale: float, runs, make_events, part: str, part_section) -> None:
    """The full engine per (trades/s/symbol, hours) of ``runs`` fed trades and ``make_events``' inputs,
    three ways alternating: off, the microstructure section, and ``part_section`` (it plus ``part``)."""
    for rate, hours in runs:
        duration = int(hours * 3_600_000 * scale)
        batches = streams(duration, rate)
        events = make_events(batches, duration)
        total = sum(len(b) for b in batches)
        sections = {"off": None, "micro": section(batches, "aggressor"), part: part_section(batches)}
        best = dict.fromkeys(sections, float("inf"))
        evaluations = 0
        for _ in range(args.repeat):
            for name, detectors in sections.items():  # alternate, so load swings hit all three alike
                elapsed, evaluations = bench_engine(batches, duration, detectors, events=events)
                best[name] = min(best[name], elapsed)
        print(
            f"  {rate:>4.0f} trades/s/symbol, {total:>9,} trades, {len(events):>6,} events,"
            f" {evaluations:>7,} evaluations: off {total / best['off']:>10,.0f} trades/s,"
            f" micro {total / best['micro']:>10,.0f} ({best['off'] / best['micro']:.2f}),"
            f" micro+{part} {total / best[part]:>10,.0f} ({best['off'] / best[part]:.2f});"
            f" {part} parts alone {best['micro'] / best[part]:.2f}"
        )


def book_updates(
    batches: list[TradeBatch], duration_ms: int, every_ms: int = 250, seed: int = 5, columns: bool = False
) -> list:
    """Per symbol a snapshot every ``every_ms``: 20 levels a side one tick (1 bp) apart around the last
    trade price, sizes lognormal, now and then a level 10x (a wall); time-ordered ``BookUpdate``s, their
    levels as ``book_from_record`` gives them (the records' dicts) or, with ``columns``, ``BookLevels``."""
    rng = np.random.default_rng(seed)
    out: list = []
    steps = np.arange(1, 21)
    for b in batches:
        times = np.arange(START + 97, START + duration_ms, every_ms)
        last = b.price[np.maximum(np.searchsorted(b.time_ms, times, side="right") - 1, 0)]
        sizes = rng.lognormal(0.0, 0.5, (len(times), 2, 20)) * (1e5 / last[:, None, None])
        sizes[rng.random((len(times), 2, 20)) < 0.02] *= 10
        for t, mid, size in zip(times.tolist(), last.tolist(), sizes.tolist()):
            tick = mid * 1e-4
            bids = [{"price": mid - tick * k, "qty": q} for k, q in zip(steps.tolist(), size[0])]
            asks = [{"price": mid + tick * k, "qty": q} for k, q in zip(steps.tolist(), size[1])]
            out.append(BookUpdate("binance", b.symbol, t, 0.0, book_levels((bids, asks)) if columns else (bids, asks)))
    out.sort(key=lambda e: e.time_ms)
    return out


def book_section(batches: list[TradeBatch]) -> Detectors:
    """``section`` (aggressor VPIN) with walls (5x the median within 25 bps) and icebergs (3 refills)."""
    return section(batches, "aggressor").model_copy(update={"walls": Walls(), "icebergs": Icebergs()})


def run_book(args: argparse.Namespace, scale: float) -> None:
    duration = int(3_600_000 * scale)
    batches = streams(duration, 50.0)
    records = book_updates(batches[:1], duration)
    params = BookParams(wall_multiple=5.0, iceberg_min_refills=3)
    b = batches[0]
    units = qty_to_units(b.qty)
    BookDetectors(params).update(
        np.array([START]), [records[0].levels], b.time_ms[:2], b.price[:2], units[:2], b.taker_sell[:2]
    )  # compile (or load the cache) outside the clocks
    best = float("inf")
    for _ in range(args.repeat):
        began = time.process_time()
        books = [BookUpdate(u.exchange, u.symbol, u.time_ms, u.obi, book_levels(u.levels)) for u in records]
        best = min(best, time.process_time() - began)
    print(
        f"reading a record's levels into columns (book_levels, the engine's reading of dicts):"
        f" {best / len(records) * 1e6:6.1f} µs per 20-level snapshot"
    )
    serde = AvroSerde(FileSchemaRegistry())
    encoded = [
        serde.encode(
            "md.book",
            {
                "exchange": "binance",
                "symbol": u.symbol,
                "last_update_id": u.time_ms,
                "event_time": u.time_ms,
                "receive_time": u.time_ms + 20,
                "bids": u.levels[0],
                "asks": u.levels[1],
                "obi_10": 0.0,
            },
        )
        for u in records[:20_000]
    ]
    decoder = BookDecoder(serde)
    for name, read in (
        ("fastavro + book_from_record (dicts)", lambda v: book_from_record(serde.decode(v))),
        ("book_decode (columns)", decoder),
    ):
        best = float("inf")
        for _ in range(args.repeat):
            began = time.process_time()
            for value in encoded:
                read(value)
            best = min(best, time.process_time() - began)
        print(f"the live worker's md.book decode, {name}: {best / len(encoded) * 1e6:6.1f} µs per 20-level record")
    print(
        f"book detectors alone (BookDetectors.update), {len(books):,} snapshots of 20 levels a side and"
        f" {len(b):,} trades of one symbol"
    )
    for form, updates in (("columns", books), ("dicts", records)):
        for per_call in (len(updates), 240, 1):
            best = float("inf")
            for _ in range(args.repeat):
                detectors = BookDetectors(params)
                cuts = [(k, min(k + per_call, len(updates))) for k in range(0, len(updates), per_call)]
                ends = np.searchsorted(b.time_ms, [updates[hi - 1].time_ms for _, hi in cuts], side="right")
                chunks, lo_trade = [], 0
                for (lo, hi), end in zip(cuts, ends.tolist()):
                    chunks.append(
                        (
                            np.array([u.time_ms for u in updates[lo:hi]]),
                            [u.levels for u in updates[lo:hi]],
                            slice(lo_trade, end),
                        )
                    )
                    lo_trade = end
                began = time.process_time()
                for times, levels, part in chunks:
                    detectors.update(times, levels, b.time_ms[part], b.price[part], units[part], b.taker_sell[part])
                best = min(best, time.process_time() - began)
            print(
                f"  levels as {form:>7}, {per_call:>6,} snapshots a call: {best / len(updates) * 1e6:6.1f} µs"
                f" per snapshot"
            )

    print(
        "full engine (Engine.process, 3 shipped strategies), 4 symbols, trades + a 20-level snapshot per symbol"
        " every 250 ms (md.book's live cadence): off / microstructure / + walls + icebergs compared once a"
        " second (book_sample: 1s, the default) / + walls + icebergs compared at every snapshot (book_sample: 0)"
    )
    for form, columns in (
        ("BookLevels columns (the live worker's decoder; the database, topics, recording and generated sources)", True),
        ("the records' dicts (records without columns: read inside the engine)", False),
    ):
        print(f" levels as {form}:")
        for rate, hours in ((20.0, 1.0), (50.0, 1.0), (500.0, 0.25)):
            duration = int(hours * 3_600_000 * scale)
            batches = streams(duration, rate)
            events = book_updates(batches, duration, columns=columns)
            total = sum(len(b) for b in batches)
            book = book_section(batches)
            sections = {
                "off": None,
                "micro": section(batches, "aggressor"),
                "1s": book,
                "every": book.model_copy(update={"book_sample": 0}),
            }
            best = dict.fromkeys(sections, float("inf"))
            for _ in range(args.repeat):
                for name, detectors in sections.items():  # alternate, so load swings hit all alike
                    best[name] = min(best[name], bench_engine(batches, duration, detectors, events=events)[0])
            print(
                f"  {rate:>4.0f} trades/s/symbol, {total:>9,} trades, {len(events):>6,} snapshots:"
                f" off {total / best['off']:>10,.0f} trades/s, micro {total / best['micro']:>10,.0f}"
                f" ({best['off'] / best['micro']:.2f}), + book 1s {total / best['1s']:>10,.0f}"
                f" (**{best['off'] / best['1s']:.2f}**), + book every {total / best['every']:>10,.0f}"
                f" ({best['off'] / best['every']:.2f}); ratios to off, target >= 0.7"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller data sets (under a million trades)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the best is kept")
    parser.add_argument("--only", choices=("microstructure", "flow", "book", "all"), help="one part of the benchmark")
    args = parser.parse_args()
    scale = 0.25 if args.quick else 1.0
    if args.only in (None, "microstructure"):
        run_microstructure(args, scale)
    if args.only in (None, "flow"):
        run_flow(args, scale)
    if args.only in (None, "book"):
        run_book(args, scale)
    if args.only in (None, "all"):
        run_all(args, scale)


def run_all(args: argparse.Namespace, scale: float) -> None:
    """Every detector at once (the issue's "new features on"): microstructure, divergence, OI spikes,
    liquidations, walls and icebergs at their defaults, fed trades, the flow inputs and a 20-level
    snapshot every 250 ms as columns, against the engine with no detectors on the same inputs."""
    print(
        "full engine (Engine.process, 3 shipped strategies), 4 symbols, trades + OI + liquidations + a 20-level"
        " snapshot per symbol every 250 ms (columns): off / every detector (micro, flow, walls, icebergs)"
    )
    for rate, hours in ((20.0, 1.0), (50.0, 1.0), (500.0, 0.25)):
        duration = int(hours * 3_600_000 * scale)
        batches = streams(duration, rate)
        events = sorted(
            book_updates(batches, duration, columns=True) + market_events(batches, duration), key=lambda e: e.time_ms
        )
        total = sum(len(b) for b in batches)
        every = flow_section(batches).model_copy(update={"walls": Walls(), "icebergs": Icebergs()})
        best = {"off": float("inf"), "all": float("inf")}
        for _ in range(args.repeat):
            for name, detectors in (("off", None), ("all", every)):
                best[name] = min(best[name], bench_engine(batches, duration, detectors, events=events)[0])
        print(
            f"  {rate:>4.0f} trades/s/symbol, {total:>9,} trades, {len(events):>6,} events: off"
            f" {total / best['off']:>10,.0f} trades/s, every detector {total / best['all']:>10,.0f}"
            f" (**{best['off'] / best['all']:.2f}**, target >= 0.7)"
        )


def run_microstructure(args: argparse.Namespace, scale: float) -> None:
    MicrostructureDetectors().update(
        np.array([START, START + 60_000]), np.array([1.0, 1.0]), np.ones(2), np.zeros(2, dtype=bool)
    )  # compile (or load the cache) outside the clocks

    stream = synthetic_trades(duration_ms=int(4 * 3_600_000 * scale), rate_per_s=200.0)
    print(f"detectors alone (MicrostructureDetectors.update), {len(stream):,} trades of one symbol")
    for classification in ("bvc", "aggressor", "tick"):
        for batch_size in (len(stream), 10_000, 100):
            best = min(bench_alone(stream, classification, batch_size) for _ in range(args.repeat))
            print(f"  {classification:>9} batch {batch_size:>9,}: {len(stream) / best:>13,.0f} trades/s")

    batches = streams(int(3_600_000 * scale), 100.0)
    total = sum(len(b) for b in batches)
    print(f"incremental path (SymbolState.apply_trades), 4 symbols, {total:,} trades: off vs on (bvc)")
    for batch_size in (10_000, 1_000):
        off = on = float("inf")
        for _ in range(args.repeat):
            off = min(off, bench_incremental(batches, None, batch_size))
            on = min(on, bench_incremental(batches, section(batches), batch_size))
        print(
            f"  batch {batch_size:>6,}: off {total / off:>11,.0f} trades/s, on {total / on:>11,.0f} trades/s,"
            f" ratio {off / on:.2f}"
        )

    print("full engine (Engine.process, 3 shipped strategies), 4 symbols: off vs on")
    for rate, hours in ((50.0, 2.0), (500.0, 0.25)):
        duration = int(hours * 3_600_000 * scale)
        batches = streams(duration, rate)
        total = sum(len(b) for b in batches)
        for classification in ("bvc", "aggressor"):
            off = on = float("inf")
            evaluations = 0
            for _ in range(args.repeat):
                elapsed, evaluations = bench_engine(batches, duration, None)
                off = min(off, elapsed)
                on = min(on, bench_engine(batches, duration, section(batches, classification))[0])
            print(
                f"  {rate:>4.0f} trades/s/symbol, {total:>9,} trades, {evaluations:>7,} evaluations, {classification}:"
                f" off {total / off:>10,.0f} trades/s, on {total / on:>10,.0f} trades/s, ratio {off / on:.2f}"
            )


if __name__ == "__main__":
    main()
