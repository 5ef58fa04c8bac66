"""``--source recording:DIR``: a Binance USD-M websocket recording (the fake exchange's directory
format: ``ws_frames.txt`` and ``rest_responses.txt``, e.g. ``tests/data/binance_futures_ws``), turned
into the records the Binance producer would have published from it.

The frames go through the producer's own pieces, in receive order: ``producers.binance.parse`` for
every stream, ``AggTradeSequencer`` for agg-id order and duplicates, ``OrderBookSync`` with the
recording's REST depth snapshot, and ``book_snapshot_parts`` for ``md.book`` (the producer's record,
with its levels attached as columns for the book detectors: ``BookRecord``). What the producer
decides by wall clock is emulated on the recording's receive clock: a top-20 book is published every
250 ms when it changed (the producer's timer), the depth snapshot is applied at the first diff (the
producer asks for one then), and an agg-id hole is given up at once (the live producer would ask
REST ``aggTrades``, which a recording does not hold). md.indicators are REST-polled live, so a
recording has none: the report says so. ``--from``/``--to`` default to the recording's span.

Why the file format is read here and not with ``fake_exchange.recording``: the fake exchange is a
test tool no service may import (tests/test_layers.py); the two lines of format below are all the
backtest needs of it (frames are dispatched on their event type ``e``, as the producer's streams):

    ws_frames.txt:       "<ws url> <-> <time>" once, then "<receive unix time>: <frame JSON>"
    rest_responses.txt:  "<URL> -> <receive unix time>: <body JSON>"  (depth snapshots are used)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from backtest.inputs import DEFAULT_SLICE_MS, Block, MarketSlice, Record, SourceReport
from backtest.sources import SourceError
from backtest.sources.records import RecordSource
from producers.base.book import OrderBookSync
from producers.base.sequencer import AggTradeSequencer
from producers.base.venue import book_snapshot_parts
from producers.binance.parse import (
    EXCHANGE,
    FrameError,
    parse_agg_trade,
    parse_depth_diff,
    parse_depth_snapshot,
    parse_force_order,
    parse_mark_price,
)
from stream_apps.core.events import book_record

BOOK_INTERVAL_MS = 250  # producers.binance.producer.ProducerConfig.book_interval_ms
BOOK_DEPTH = 20
INDICATOR_NOTE = "REST-polled by the live producer; a websocket recording does not hold it"
INDICATOR_KINDS = (
    "open_interest_hist",
    "long_short_account_ratio",
    "top_trader_position_ratio",
    "taker_buy_sell_ratio",
    "coinbase_premium",
    "spot_perp_divergence",
)
EVENTS = {"aggTrade": "trades", "depthUpdate": "book", "markPriceUpdate": "mark", "forceOrder": "liquidations"}


@dataclass(frozen=True, slots=True)
class Frame:
    index: int
    receive_ms: int
    payload: dict[str, Any]

    @property
    def event(self) -> str | None:
        return self.payload.get("e")

    @property
    def symbol(self) -> str | None:
        inner = self.payload.get("o")
        return (inner.get("s") if isinstance(inner, dict) else self.payload.get("s")) or None


@dataclass
class Recording:
    frames: list[Frame]
    snapshots: dict[str, tuple[int, dict[str, Any]]]  # symbol -> (receive ms, first /fapi/v1/depth body)
    bad: list[str]

    @property
    def symbols(self) -> list[str]:
        return list(dict.fromkeys(f.symbol.upper() for f in self.frames if f.symbol and f.event in EVENTS))


def read_recording(directory: Path) -> Recording:
    ws = directory / "ws_frames.txt"
    if not ws.is_file():
        raise SourceError(f"recording {directory}: no ws_frames.txt")
    frames: list[Frame] = []
    bad: list[str] = []
    with ws.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            when, sep, text = line.rstrip("\r\n").partition(": ")
            if not sep or not when.replace(".", "", 1).isdigit():
                if lineno > 1 and line.strip():
                    bad.append(f"ws_frames.txt:{lineno}: expected '<time>: <frame>'")
                continue
            try:
                obj = orjson.loads(text)
            except orjson.JSONDecodeError:
                bad.append(f"ws_frames.txt:{lineno}: not JSON: {text[:80]!r}")
                continue
            payload = obj.get("data") if isinstance(obj, dict) and "stream" in obj else obj
            if isinstance(payload, dict):
                frames.append(Frame(len(frames), round(float(when) * 1000), payload))
    snapshots: dict[str, tuple[int, dict[str, Any]]] = {}
    for name in ("rest_responses.txt", "session_config_and_rest.txt"):
        path = directory / name
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            url, sep, rest = line.partition(" -> ")
            when, sep2, body = rest.partition(": ")
            parts = urlsplit(url.strip())
            if not (sep and sep2) or parts.path != "/fapi/v1/depth":
                continue
            symbol = dict(parse_qsl(parts.query)).get("symbol", "").upper()
            received = round(float(when) * 1000)
            if symbol and (symbol not in snapshots or received < snapshots[symbol][0]):
                snapshots[symbol] = (received, orjson.loads(body))
    return Recording(frames, snapshots, bad)


def recording_span(recording: Recording) -> tuple[int, int]:
    """[first, last + 1 s) of the frames' receive times, in ms."""
    if not recording.frames:
        return 0, 0
    return recording.frames[0].receive_ms, recording.frames[-1].receive_ms + 1000


class RecordingSource:
    exchange = EXCHANGE

    def __init__(
        self,
        directory: Path,
        symbols: list[str] | None,
        from_ms: int | None,
        to_ms: int | None,
        *,
        slice_ms: int = DEFAULT_SLICE_MS,
    ) -> None:
        try:
            self.recording = read_recording(directory)
        except (OSError, UnicodeError, ValueError) as exc:
            raise SourceError(f"recording {directory}: {exc}") from None
        available = self.recording.symbols
        chosen = symbols or available
        unknown = [s for s in chosen if s not in available]
        if unknown:
            raise SourceError(
                f"unknown symbol {', '.join(unknown)}: the recording {directory} has "
                f"{', '.join(available) or 'no symbols'}"
            )
        start, end = recording_span(self.recording)
        self.name = f"recording:{directory}"
        self.symbols = list(chosen)
        self.from_ms = start if from_ms is None else from_ms
        self.to_ms = end if to_ms is None else to_ms
        self.slice_ms = slice_ms
        self.report = SourceReport()
        for bad in self.recording.bad:
            self.report.add_bad_row(bad)
        for kind in (*INDICATOR_KINDS, "oi_change", "long_short_ratio", "top_trader_long_share"):
            self.report.notes[kind] = INDICATOR_NOTE
        self._records: dict[str, list[Record]] | None = None

    def inputs(self) -> set[str]:
        return {EVENTS[e] for e in {f.event for f in self.recording.frames} if e in EVENTS}

    def records(self) -> dict[str, list[Record]]:
        if self._records is None:
            self._records = _Producer(self.recording, set(self.symbols), self.report).run()
        return self._records

    def slices(self) -> Iterator[MarketSlice]:
        recs = self.records()
        inner = RecordSource(
            self.name,
            EXCHANGE,
            self.symbols,
            self.from_ms,
            self.to_ms,
            trades=recs["trades"],
            books=recs["books"],
            marks=recs["marks"],
            liquidations=recs["liquidations"],
            report=self.report,
            slice_ms=self.slice_ms,
        )
        return inner.slices()


class _Producer:
    """The Binance producer's record-making, replayed on the recording's receive clock."""

    def __init__(self, recording: Recording, symbols: set[str], report: SourceReport) -> None:
        self.recording = recording
        self.symbols = symbols
        self.report = report
        self.books = {s: OrderBookSync(s) for s in symbols}
        self.sequencers = {s: AggTradeSequencer(s) for s in symbols}
        self.snapshot_used: set[str] = set()
        self.published_u: dict[str, int] = {}
        self.last_mark: dict[str, int] = {}
        self.liquidations_seen: set[tuple] = set()
        self.out: dict[str, list[Record]] = {"trades": [], "books": [], "marks": [], "liquidations": []}
        self.ignored: set[str] = set()

    def run(self) -> dict[str, list[Record]]:
        next_tick: int | None = None
        for frame in self.recording.frames:
            received = frame.receive_ms
            if next_tick is None:
                next_tick = (received // BOOK_INTERVAL_MS + 1) * BOOK_INTERVAL_MS
            while received >= next_tick:
                self._publish_books(next_tick)
                next_tick += BOOK_INTERVAL_MS
            try:
                self._frame(frame, received)
            except FrameError as exc:
                self.report.add_bad_row(f"ws_frames.txt frame {frame.index} ({frame.event}): {exc}")
        for sym, seq in sorted(self.sequencers.items()):
            if seq.counters.ids_given_up:
                self.report.missing.append(
                    f"{sym}: {seq.counters.ids_given_up} agg ids missing from the recording "
                    f"({seq.counters.gaps_given_up} holes)"
                )
        for sym, book in sorted(self.books.items()):
            if book.resyncs or (
                sym not in self.snapshot_used and any(f.event == "depthUpdate" for f in self.recording.frames)
            ):
                self.report.notes[f"book:{sym}"] = (
                    "the recording's depth snapshot does not continue its diffs "
                    "(or there is none): no md.book from the point it broke"
                )
        if self.ignored:
            self.report.notes["ignored_streams"] = (
                f"{', '.join(sorted(self.ignored))}: not streams the producer subscribes to"
            )
        return self.out

    def _frame(self, frame: Frame, received: int) -> None:
        event, data = frame.event, frame.payload
        if event == "aggTrade":
            trade = parse_agg_trade(data, received)
            seq = self.sequencers.get(trade["symbol"])
            if seq is None:
                return
            released = seq.offer(trade)
            gap = seq.gap
            if gap is not None:  # no REST history in a recording: give the hole up at once
                released += seq.give_up(gap)[1]
            self.out["trades"] += released
        elif event == "depthUpdate":
            diff = parse_depth_diff(data, received)
            book = self.books.get(diff.symbol)
            if book is None:
                return
            book.on_diff(diff)
            if book.needs_snapshot and diff.symbol not in self.snapshot_used:
                self._snapshot(book, received)
        elif event == "markPriceUpdate":
            rec = parse_mark_price(data, received)
            if rec["symbol"] in self.symbols and rec["event_time"] > self.last_mark.get(rec["symbol"], -1):
                self.last_mark[rec["symbol"]] = rec["event_time"]
                self.out["marks"].append(rec)
        elif event == "forceOrder":
            rec = parse_force_order(data, received)
            ident = (rec["symbol"], rec["trade_time"], rec["side"], rec["qty"], rec["avg_price"])
            if rec["symbol"] in self.symbols and ident not in self.liquidations_seen:
                self.liquidations_seen.add(ident)
                self.out["liquidations"].append(rec)
        elif event:
            self.ignored.add(event)

    def _snapshot(self, book: OrderBookSync, received: int) -> None:
        found = self.recording.snapshots.get(book.symbol)
        if found is None:
            return
        self.snapshot_used.add(book.symbol)
        book.on_snapshot(parse_depth_snapshot(found[1], book.symbol, received))

    def _publish_books(self, now_ms: int) -> None:
        for sym in sorted(self.books):
            book = self.books[sym]
            if not book.is_live or self.published_u.get(sym) == book.last_update_id:
                continue
            self.published_u[sym] = book.last_update_id
            fields, bids, asks = book_snapshot_parts(EXCHANGE, book, BOOK_DEPTH, now_ms=now_ms)
            self.out["books"].append(
                book_record(
                    fields, [p for p, _ in bids], [q for _, q in bids], [p for p, _ in asks], [q for _, q in asks]
                )
            )


# ------------------------------------------------------------------------------------------------
# writing: a generated session as a recording the fake exchange can replay (parity tests, demos)
# ------------------------------------------------------------------------------------------------
def write_recording(blocks: Iterable[Block], directory: Path, latency_ms: int = 20) -> Path:
    """Write ``blocks`` (e.g. ``SyntheticSource.blocks()``) as ``ws_frames.txt`` + ``rest_responses.txt``.

    Trades, mark prices and liquidations become the frames they were parsed from (numbers written
    with ``repr``, so they parse back to the same floats); consecutive book snapshots become
    ``depthUpdate`` diffs chained by update id, and each symbol's first book the REST depth snapshot
    the producer syncs from. Frames are received ``latency_ms`` after their event time.
    """
    directory.mkdir(parents=True, exist_ok=True)
    writer = _RecordingWriter(latency_ms)
    for block in blocks:
        writer.add(block)
    writer.write(directory)
    return directory


class _RecordingWriter:
    """The frames and depth snapshots of a recording, collected block by block (frames at equal
    receive times keep the order they were made in)."""

    def __init__(self, latency_ms: int) -> None:
        self.latency_ms = latency_ms
        self.frames: list[tuple[int, int, str]] = []  # (receive ms, sequence, line text)
        self.symbols: dict[str, None] = {}  # trade symbols, in first-seen order
        self.books: dict[str, dict[str, dict[float, float]]] = {}  # last book per symbol
        self.last_u: dict[str, int] = {}
        self.chained: set[str] = set()  # symbols whose first diff is written
        self.snapshots: dict[str, tuple[int, dict[str, Any]]] = {}  # symbol -> (receive ms, REST depth body)

    def frame(self, stream: str, event_ms: int, payload: dict[str, Any]) -> None:
        text = orjson.dumps({"stream": stream, "data": payload}).decode()
        self.frames.append((event_ms + self.latency_ms, len(self.frames), text))

    def add(self, block: Block) -> None:
        for batch in block.trades.values():
            self.trades(batch)
        for m in block.records.get("marks", []):
            self.frame(f"{m['symbol'].lower()}@markPrice@1s", m["event_time"], _mark_payload(m))
        for liq in block.records.get("liquidations", []):
            self.frame("!forceOrder@arr", liq["event_time"], _force_order_payload(liq))
        for b in block.records.get("books", []):
            self.book(b)

    def trades(self, batch: Any) -> None:
        sym = batch.symbol
        self.symbols.setdefault(sym, None)
        stream = f"{sym.lower()}@aggTrade"
        for a, t, p, q, sell in zip(
            batch.agg_id.tolist(),
            batch.time_ms.tolist(),
            batch.price.tolist(),
            batch.qty.tolist(),
            batch.taker_sell.tolist(),
        ):
            self.frame(
                stream,
                t,
                {
                    "e": "aggTrade",
                    "E": t + 2,
                    "a": a,
                    "s": sym,
                    "p": _num(p),
                    "q": _num(q),
                    "f": a,
                    "l": a,
                    "T": t,
                    "m": sell,
                },
            )

    def book(self, b: Record) -> None:
        """A symbol's first book as its REST depth snapshot, each later one as the diff from the one before."""
        sym, t = b["symbol"], b["event_time"]
        state = {
            "bids": {lv["price"]: lv["qty"] for lv in b["bids"]},
            "asks": {lv["price"]: lv["qty"] for lv in b["asks"]},
        }
        if sym not in self.books:
            self.last_u[sym] = 1_000_000
            self.snapshots[sym] = (
                t + self.latency_ms,
                {
                    "lastUpdateId": self.last_u[sym],
                    "E": t,
                    "T": t - 5,
                    "bids": [[_num(p), _num(q)] for p, q in state["bids"].items()],
                    "asks": [[_num(p), _num(q)] for p, q in state["asks"].items()],
                },
            )
        else:
            self.frame(f"{sym.lower()}@depth@100ms", t, self._depth_update(sym, t, self.books[sym], state))
        self.books[sym] = state

    def _depth_update(
        self, sym: str, t: int, before: dict[str, dict[float, float]], state: dict[str, dict[float, float]]
    ) -> dict[str, Any]:
        diff = {
            side: [[_num(p), _num(q)] for p, q in state[side].items() if before[side].get(p) != q]
            + [[_num(p), "0"] for p in before[side] if p not in state[side]]
            for side in ("bids", "asks")
        }
        last_u = self.last_u
        if sym in self.chained:
            first, pu = last_u[sym] + 1, last_u[sym]
        else:  # the first diff straddles the snapshot's id (Binance's sync rule)
            first, pu = last_u[sym], last_u[sym] - 1
            self.chained.add(sym)
        last_u[sym] = first + 2
        return {
            "e": "depthUpdate",
            "E": t,
            "T": t - 5,
            "s": sym,
            "U": first,
            "u": last_u[sym],
            "pu": pu,
            "b": diff["bids"],
            "a": diff["asks"],
        }

    def write(self, directory: Path) -> None:
        frames = sorted(self.frames)
        streams = sorted(
            {orjson.loads(text)["stream"] for _, _, text in frames[:10_000]}
            | {f"{s.lower()}@{k}" for s in self.symbols for k in ("aggTrade", "depth@100ms", "markPrice@1s")}
        )
        start = frames[0][0] / 1000 if frames else 0.0
        with (directory / "ws_frames.txt").open("w", encoding="utf-8") as out:
            out.write(f"wss://fstream.binance.com/stream?streams={'/'.join(streams)} <-> {start:.6f}\n")
            for received, _, text in frames:
                out.write(f"{received / 1000:.6f}: {text}\n")
        with (directory / "rest_responses.txt").open("w", encoding="utf-8") as out:
            for sym, (received, body) in self.snapshots.items():
                out.write(
                    f"https://fapi.binance.com/fapi/v1/depth?symbol={sym}&limit=1000 -> {received / 1000:.6f}: "
                    f"{orjson.dumps(body).decode()}\n"
                )


def _mark_payload(m: Record) -> dict[str, Any]:
    return {
        "e": "markPriceUpdate",
        "E": m["event_time"],
        "s": m["symbol"],
        "p": _num(m["mark_price"]),
        "i": _num(m["index_price"]),
        "P": _num(m["index_price"]),
        "r": _num(m["funding_rate"]),
        "T": m["next_funding_time"],
    }


def _force_order_payload(liq: Record) -> dict[str, Any]:
    qty = _num(liq["qty"])
    return {
        "e": "forceOrder",
        "E": liq["event_time"],
        "o": {
            "s": liq["symbol"],
            "S": liq["side"],
            "o": "LIMIT",
            "f": "IOC",
            "q": qty,
            "p": _num(liq["price"]),
            "ap": _num(liq["avg_price"]),
            "X": "FILLED",
            "l": qty,
            "z": qty,
            "T": liq["trade_time"],
        },
    }


def _num(value: float) -> str:
    """A number as Binance writes it: a string that parses back to the same float."""
    return repr(float(value))
