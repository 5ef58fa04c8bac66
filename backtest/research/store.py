"""The feature store of a research run: every evaluation's features and per-second price bars, on disk.

Why: a parameter search scores hundreds of configurations over the same history. What a strategy
configuration can change — layer weights, thresholds, gates, exits — does not change a single feature
(windows are fixed for a search), so the engine runs once over the history and its ``FeatureFrame``
columns are kept; each configuration is then scored and decided with the engine's own
``score_frames`` / ``decide_frame`` on those columns (the numbers the engine would have produced
running that configuration: same evaluation times, same features, same rules). Scoring a hundred
configurations costs seconds per symbol-month instead of a hundred engine passes.

Layout: ``<dir>/<SYMBOL>/<YYYYMMDD>.npz`` per UTC day: ``time_ms``, every scalar feature, the CVD,
slope and acceleration windows (``cvd_<ms>`` ...), and per second of the day the bar columns the
exit simulation reads (``bar_open/high/low/close``, ``bar_high_first``, ``bar_traded``). Days are
written as they are computed, so memory stays bounded by one day; ``manifest.json`` records the
range, symbols, windows and seed (a store is reused only for the same inputs).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from stream_apps.core.engine import Engine
from stream_apps.core.frame import SCALAR_FIELDS, FeatureFrame
from stream_apps.core.params import StateParams
from stream_apps.core.strategy import StrategyConfig
from tapeflow_runtime.batch import batch_gc

DAY_MS = 86_400_000


@dataclass(frozen=True)
class StoreSpec:
    source: str  # a ``tapeflow backtest --source`` spec: synthetic[:SEED], vision[:DIR], db, topics, recording:DIR
    symbols: tuple[str, ...]
    from_ms: int
    to_ms: int
    cvd_fast: int
    cvd_mid: int
    detectors: str = ""  # the base strategy's detectors section as JSON ("" = off): they are features too

    def key(self) -> dict:
        d = asdict(self)
        d["symbols"] = list(self.symbols)
        if not self.detectors:
            del d["detectors"]  # off: the key of a store written before detectors existed, still reused
        return d


@dataclass
class SecondBars:
    """One symbol's trades as per-second bars (what the exit simulation reads)."""

    first_second: int
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    high_first: np.ndarray  # the second's high came before its low
    traded: np.ndarray  # the second has trades

    def __len__(self) -> int:
        return len(self.open)


def second_bars(times: np.ndarray, prices: np.ndarray, first_second: int, seconds: int) -> dict[str, np.ndarray]:
    """Per-second open/high/low/close (first/max/min/last trade price; NaN without trades) and whether
    the high came before the low, for the seconds ``first_second ..`` (trades in time order)."""
    out = {
        "bar_open": np.full(seconds, np.nan),
        "bar_high": np.full(seconds, np.nan),
        "bar_low": np.full(seconds, np.nan),
        "bar_close": np.full(seconds, np.nan),
        "bar_high_first": np.zeros(seconds, dtype=bool),
        "bar_traded": np.zeros(seconds, dtype=bool),
    }
    if len(times) == 0:
        return out
    sec = times // 1000 - first_second
    starts = np.concatenate(([0], np.flatnonzero(sec[1:] != sec[:-1]) + 1))
    ends = np.append(starts[1:], len(sec))
    slots = sec[starts]
    high = np.maximum.reduceat(prices, starts)
    low = np.minimum.reduceat(prices, starts)
    index = np.arange(len(prices))
    big = len(prices) + 1
    group = np.repeat(np.arange(len(starts)), ends - starts)
    first_high = np.minimum.reduceat(np.where(prices == high[group], index, big), starts)
    first_low = np.minimum.reduceat(np.where(prices == low[group], index, big), starts)
    out["bar_open"][slots] = prices[starts]
    out["bar_high"][slots] = high
    out["bar_low"][slots] = low
    out["bar_close"][slots] = prices[ends - 1]
    out["bar_high_first"][slots] = first_high < first_low
    out["bar_traded"][slots] = True
    return out


def _day_name(day_start_ms: int) -> str:
    return datetime.fromtimestamp(day_start_ms / 1000, tz=UTC).strftime("%Y%m%d")


def probe_strategy(base: StrategyConfig) -> StrategyConfig:
    """The strategy the engine runs while the store is built: only its windows matter (they decide
    which CVD windows, slopes and accelerations are computed); it applies to every symbol."""
    return base.model_copy(update={"symbols": []})


def build_symbol(
    directory: Path,
    spec: StoreSpec,
    symbol: str,
    base: StrategyConfig,
    options: dict | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Run the engine over one symbol's history from the backtest source ``spec.source`` (any of
    ``tapeflow backtest --source``: synthetic, vision, db, topics, recording) and write its days;
    returns the trades processed. Inputs reach the engine as in the backtest runner."""
    from backtest.inputs import DEFAULT_SLICE_MS
    from backtest.sources import open_source
    from stream_apps.core.events import (
        book_from_record,
        indicator_from_record,
        liquidation_from_record,
        mark_from_record,
    )

    source = open_source(spec.source, [symbol], spec.from_ms, spec.to_ms, slice_ms=DEFAULT_SLICE_MS, **(options or {}))
    engine = Engine([probe_strategy(base)], state_params=StateParams.for_replay)
    folder = directory / symbol
    folder.mkdir(parents=True, exist_ok=True)
    total = 0
    frames: list[FeatureFrame] = []
    day_trades: list[tuple[np.ndarray, np.ndarray]] = []
    day = spec.from_ms // DAY_MS * DAY_MS

    def flush(until: int) -> None:
        """Write every whole day before ``until`` (frames of a day may arrive with the next one)."""
        nonlocal day, frames, day_trades
        while day + DAY_MS <= until or (until >= spec.to_ms and day < spec.to_ms):
            end = min(day + DAY_MS, spec.to_ms)
            columns: dict[str, list[np.ndarray]] = {}
            for frame in [f for f in frames if f.time_ms[0] < end]:
                _append(columns, frame)
            frames = [f for f in frames if f.time_ms[0] >= end]
            times = np.concatenate([t for t, _ in day_trades]) if day_trades else np.empty(0, dtype=np.int64)
            prices = np.concatenate([p for _, p in day_trades]) if day_trades else np.empty(0)
            inside = times < end
            data = {name: np.concatenate(parts) for name, parts in columns.items()}
            data.update(second_bars(times[inside], prices[inside], day // 1000, (end - day) // 1000))
            day_trades = [(times[~inside], prices[~inside])] if (~inside).any() else []
            np.savez(folder / f"{_day_name(day)}.npz", **data)
            day = end

    adapters = (
        ("books", book_from_record),
        ("marks", mark_from_record),
        ("liquidations", liquidation_from_record),
        ("indicators", indicator_from_record),
    )
    for piece in source.slices():
        events = [adapt(record) for kind, adapt in adapters for record in getattr(piece, kind)]
        batch = next(iter(piece.trades.values()), None)
        out = engine.process([batch] if batch is not None else (), events)
        if batch is not None and len(batch):
            total += len(batch)
            day_trades.append((batch.time_ms, batch.price))
        for table in out.tables:
            frames += [block.frame for block in table.blocks]
        flush(piece.start_ms)
        if progress is not None and batch is not None:
            progress(len(batch))
    flush(spec.to_ms)
    return total


def _append(columns: dict[str, list[np.ndarray]], frame: FeatureFrame) -> None:
    columns.setdefault("time_ms", []).append(frame.time_ms)
    for name in SCALAR_FIELDS:
        columns.setdefault(name, []).append(frame.values[name])
    for prefix, pairs in (("cvd", frame.cvd), ("slope", frame.cvd_slope), ("accel", frame.cvd_accel)):
        for window, column in pairs.items():
            columns.setdefault(f"{prefix}_{window}", []).append(column)


class FeatureStore:
    """Read side of a store directory (see the module docstring)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.manifest = json.loads((self.directory / "manifest.json").read_text())
        self.spec = StoreSpec(**{**self.manifest["spec"], "symbols": tuple(self.manifest["spec"]["symbols"])})

    @staticmethod
    def matches(directory: Path, spec: StoreSpec) -> bool:
        path = directory / "manifest.json"
        return path.exists() and json.loads(path.read_text()).get("spec") == spec.key()

    @staticmethod
    def write_manifest(directory: Path, spec: StoreSpec, trades: int) -> None:
        (directory / "manifest.json").write_text(json.dumps({"spec": spec.key(), "trades": trades}, indent=2))

    def days(self, symbol: str) -> list[Path]:
        return sorted((self.directory / symbol).glob("*.npz"))

    def frames(self, symbol: str, rows: int = 14_400) -> Iterator[FeatureFrame]:
        """The symbol's evaluations in time order, ``rows`` at a time."""
        for path in self.days(symbol):
            with np.load(path) as data:
                columns = {name: data[name] for name in data.files if not name.startswith("bar_")}
            n = len(columns["time_ms"])
            for start in range(0, n, rows):
                part = slice(start, start + rows)
                yield FeatureFrame(
                    "binance",
                    symbol,
                    columns["time_ms"][part],
                    {
                        name: columns[name][part] if name in columns else np.full(len(columns["time_ms"][part]), np.nan)
                        for name in SCALAR_FIELDS
                    },  # a store written before a field existed: missing
                    _windows(columns, "cvd", part),
                    _windows(columns, "slope", part),
                    _windows(columns, "accel", part),
                )

    def bars(self, symbol: str) -> SecondBars:
        parts: dict[str, list[np.ndarray]] = {}
        for path in self.days(symbol):
            with np.load(path) as data:
                for name in ("bar_open", "bar_high", "bar_low", "bar_close", "bar_high_first", "bar_traded"):
                    parts.setdefault(name, []).append(data[name])
        c = {name: np.concatenate(p) for name, p in parts.items()}
        return SecondBars(
            self.spec.from_ms // 1000,
            c["bar_open"],
            c["bar_high"],
            c["bar_low"],
            c["bar_close"],
            c["bar_high_first"],
            c["bar_traded"],
        )


def _windows(columns: dict[str, np.ndarray], prefix: str, part: slice) -> dict[int, np.ndarray]:
    out = {
        int(name.split("_", 1)[1]): column[part]
        for name, column in columns.items()
        if name.startswith(prefix + "_") and name.split("_", 1)[1].isdigit()
    }
    return dict(sorted(out.items()))


def _build_task(args: tuple[str, StoreSpec, str, StrategyConfig, dict]) -> tuple[str, int]:
    directory, spec, symbol, base, options = args
    with batch_gc():
        return symbol, build_symbol(Path(directory), spec, symbol, base, options)


def build_store(
    directory: str | Path,
    spec: StoreSpec,
    base: StrategyConfig,
    workers: int | None = None,
    show_progress: bool = True,
    options: dict | None = None,
) -> FeatureStore:
    """Compute the store (one process per symbol, up to ``workers`` at a time) unless ``directory``
    already holds one for the same inputs; ``options`` go to ``backtest.sources.open_source``."""
    import multiprocessing
    import os
    import shutil

    from tqdm import tqdm

    directory = Path(directory)
    if FeatureStore.matches(directory, spec):
        return FeatureStore(directory)
    if directory.exists():
        for symbol in spec.symbols:
            shutil.rmtree(directory / symbol, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    tasks = [(str(directory), spec, symbol, base, options or {}) for symbol in spec.symbols]
    workers = min(workers or os.cpu_count() or 1, len(tasks))
    total = 0
    with tqdm(total=len(tasks), desc="features", unit="symbol", disable=not show_progress) as bar:
        if workers <= 1:
            for task in tasks:
                total += _build_task(task)[1]
                bar.update()
        else:
            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                for _, trades in pool.imap_unordered(_build_task, tasks):
                    total += trades
                    bar.update()
    FeatureStore.write_manifest(directory, spec, total)
    return FeatureStore(directory)
