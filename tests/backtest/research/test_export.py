"""`tapeflow research export` end to end through the real CLI on the offline synthetic source.

Two UTC days of two symbols are exported through `tapeflow research export`. While the export replays,
every slice it reads is also given to a second engine of this test (each slice in two calls, so other
segments, and every record as one event object, as the research store feeds it, where the export passes
books and marks as columns): the files must hold exactly that engine's evaluations, every number of its feature records,
and labels recomputed here trade by trade from the same trades. Then the schema file against the
files, re-runs (skip, overwrite, what a crash leaves), `research labels` on the same data, and one-line
errors.

CPU: the source is the real synthetic generator at 0.5 trades/s with a book every 10 s (its default
rates and a book every 2 s cost seconds of Python per symbol-day on this shared 2-core machine); the
generator's data reach the export and this test's engine alike.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import backtest.research.export as export_module
import backtest.sources as sources
import backtest.sources.synthetic as synthetic
from backtest.inputs import ENGINE_TIME
from backtest.research.cli import ResearchError
from backtest.research.export import METADATA_KEY, arrow_schema, export_columns, to_table, write_atomic
from stream_apps.core.detectors import DETECTOR_FIELDS
from stream_apps.core.engine import Engine
from stream_apps.core.events import (
    book_from_record,
    indicator_from_record,
    liquidation_from_record,
    mark_from_record,
)
from stream_apps.core.frame import SCALAR_FIELDS
from stream_apps.core.params import StateParams
from stream_apps.core.strategy import default_strategy_dir, load_strategy, parse_strategy

D1, D2 = "2024-01-01", "2024-01-02"
D3 = "2024-01-03"  # a --to is excluded: D1 and D2 are --from D1 --to D3
T1 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
DAY = 86_400_000
HOUR = 3_600_000
T_END = T1 + 2 * DAY
SYMBOLS = ("BTCUSDT", "XRPUSDT")
LABELS = ("y_binary_60m", "fwd_return_5m", "fwd_return_15m", "fwd_return_60m")
CFG = load_strategy(default_strategy_dir() / "v53.yaml")
REAL_OPEN_SOURCE = sources.open_source
ADAPTERS = {
    "books": book_from_record,
    "marks": mark_from_record,
    "liquidations": liquidation_from_record,
    "indicators": indicator_from_record,
}


class Spy:
    """``open_source`` for the CLI: the real synthetic source (at 0.5 trades/s), optionally giving each
    slice to this test's own engine per symbol and keeping the trades."""

    def __init__(self, feeding: bool = False) -> None:
        self.feeding = feeding
        self.opened: list[tuple[str, ...]] = []
        self.engines: dict[str, Engine] = {}
        self.times: dict[str, list[np.ndarray]] = defaultdict(list)  # every evaluation time
        self.records: dict[str, list[dict]] = defaultdict(list)  # 20 feature records of each block
        self.rng = np.random.default_rng(5)
        self.trades: dict[str, list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)

    def open_source(self, spec, symbols, from_ms, to_ms, **options):
        self.opened.append(tuple(symbols))
        source = REAL_OPEN_SOURCE(spec, symbols, from_ms, to_ms, **{**options, "trades_per_s": 0.5})
        spy = self

        class Source:
            def slices(self):
                for piece in source.slices():
                    if spy.feeding:
                        spy.feed(symbols[0], piece)
                    yield piece

        return Source()

    def feed(self, symbol: str, piece) -> None:
        engine = self.engines.get(symbol)
        if engine is None:
            engine = self.engines[symbol] = Engine([CFG], state_params=StateParams.for_replay)
        batch = next(iter(piece.trades.values()), None)
        # every record as one event object (the research store's form; the export gives books and marks
        # as columns, as the backtest runner does)
        events = [
            (record[ENGINE_TIME[kind]], adapt(record))
            for kind, adapt in ADAPTERS.items()
            for record in getattr(piece, kind)
        ]
        middle = (piece.start_ms + piece.end_ms) // 2
        for lo, hi in ((piece.start_ms, middle), (middle, piece.end_ms)):
            given = [event for t, event in events if lo <= t < hi]
            trades = None if batch is None else batch.take((batch.time_ms >= lo) & (batch.time_ms < hi))
            out = engine.process([trades] if trades is not None and len(trades) else (), given)
            for block in (b for table in out.tables for b in table.blocks if len(b)):
                self.times[symbol].append(block.frame.time_ms)
                rows = self.rng.choice(len(block), size=min(len(block), 20), replace=False)
                self.records[symbol] += block.records(np.sort(rows))
        if batch is not None and len(batch):
            self.trades[symbol].append((batch.time_ms.copy(), batch.price.copy()))


@pytest.fixture
def spy(monkeypatch):
    spy = Spy()
    monkeypatch.setattr(sources, "open_source", spy.open_source)
    monkeypatch.setattr(synthetic, "BOOK_INTERVAL_MS", 10_000)
    return spy


def run(*args: str, command: str = "export"):
    from tapeflow.cli import app

    extra = ["--no-progress"] if command == "export" else []
    return CliRunner().invoke(app, ["research", command, *args, *extra])


def ok(result) -> str:
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def day_path(out, day: str, symbol: str):
    return out / "v53" / f"date={day}" / f"{symbol}.parquet"


def ms(column) -> np.ndarray:
    return column.cast(pa.int64()).to_numpy()


# -- the export of two days and two symbols ----------------------------------------------------------------


def test_export_end_to_end(spy, tmp_path):
    out = tmp_path / "export"
    spy.feeding = True
    output = ok(run("--from", D1, "--to", D3, "--symbols", ",".join(SYMBOLS), "--out", str(out)))
    spy.feeding = False
    assert "export: 4 symbol-days written" in output and "0 already done" in output
    assert spy.opened == [("BTCUSDT",), ("XRPUSDT",)]  # one replay per symbol

    # files where promised; the folder is one Hive-partitioned dataset (pyarrow skips _schema.json)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == ["v53/_schema.json"] + [
        f"v53/date={d}/{s}.parquet" for d in (D1, D2) for s in SYMBOLS
    ]
    dataset = ds.dataset(out / "v53", format="parquet", partitioning="hive").to_table(columns=["date"])
    assert dataset.num_rows == sum(pq.read_metadata(day_path(out, d, s)).num_rows for d in (D1, D2) for s in SYMBOLS)
    assert sorted(set(dataset.column("date").to_pylist())) == [D1, D2]

    for symbol in SYMBOLS:
        check_rows(out, spy, symbol)
        check_labels(out, spy, symbol)
    check_schema_file(out)

    # a re-run skips every finished day without replaying; so does a later start (these files had more
    # warm-up: they were replayed from D1)
    before = {p: os.stat(p) for p in out.rglob("*.parquet")}
    assert "0 symbol-days written" in ok(
        run("--from", D1, "--to", D3, "--symbols", ",".join(SYMBOLS), "--out", str(out))
    )
    assert "1 already done" in ok(run("--from", D2, "--to", D3, "--symbols", "XRPUSDT", "--out", str(out)))
    assert spy.opened == [("BTCUSDT",), ("XRPUSDT",)]
    assert {p: (os.stat(p).st_ino, os.stat(p).st_mtime_ns) for p in before} == {
        p: (s.st_ino, s.st_mtime_ns) for p, s in before.items()
    }


def check_rows(out, spy, symbol: str) -> None:
    """Every evaluation of the engine, in time order, each in its UTC day's file; every number of a
    sample of rows equal to the engine's feature record (the dicts the live worker publishes)."""
    table = pa.concat_tables([pq.read_table(day_path(out, d, symbol)) for d in (D1, D2)])
    times = np.concatenate(spy.times[symbol])
    eval_ms = ms(table.column("eval_time"))
    assert len(eval_ms) > 50_000 and np.array_equal(eval_ms, times[times < T_END])
    for d, day in enumerate((D1, D2)):
        day_ms = ms(pq.read_table(day_path(out, day, symbol), columns=["eval_time"]).column("eval_time"))
        assert day_ms.min() >= T1 + d * DAY and day_ms.max() < T1 + (d + 1) * DAY
    in_columns = [c for c in table.column_names if c.startswith("in_")]
    records = [r for r in spy.records[symbol] if r["eval_time"] < T_END]
    sample = table.take(np.searchsorted(eval_ms, [r["eval_time"] for r in records])).to_pylist()
    assert len(records) > 400
    for record, row in zip(records, sample):
        assert int(row["eval_time"].timestamp() * 1000) == record["eval_time"]
        for name in (
            "evaluation_id",
            "strategy",
            "strategy_version",
            "config_hash",
            "exchange",
            "symbol",
            "direction",
            "gate",
            "block_reason",
            "score",
        ):
            assert row[name] == record[name], name
        for name, value in record["layer_scores"].items():
            assert row[f"layer_{name}"] == value, name
        for name, value in record["inputs"].items():
            assert row[f"in_{name}"] == value, name
        # an input the record leaves out (not available) is null in the file
        assert all(row[c] is None for c in in_columns if c[3:] not in record["inputs"])


def labels_by_hand(t: int, entry: float, atr: float | None, direction: str | None, times, prices, end_ms: int):
    """The label definitions, trade by trade: +2 ATR before -1 ATR within the hour; the last trade
    price before t + h."""
    returns = {}
    for name, h in (("5m", 300_000), ("15m", 900_000), ("60m", HOUR)):
        before = np.flatnonzero(times < t + h)
        returns[f"fwd_return_{name}"] = None if t + h > end_ms else float(prices[before[-1]] / entry - 1.0)
    y = None
    if direction is not None and atr is not None and atr > 0:
        sign = 1 if direction == "LONG" else -1
        target, stop = entry + sign * 2.0 * atr, entry - sign * 1.0 * atr
        y = 0 if t + HOUR <= end_ms else None
        for price in prices[(times >= t) & (times < t + HOUR)].tolist():
            if (price >= target) if sign > 0 else (price <= target):
                y = 1
                break
            if (price <= stop) if sign > 0 else (price >= stop):
                y = 0
                break
    return y, returns


def check_labels(out, spy, symbol: str) -> None:
    times = np.concatenate([t for t, _ in spy.trades[symbol]])
    prices = np.concatenate([p for _, p in spy.trades[symbol]])
    assert times.max() >= T_END + HOUR - 60_000  # the export read the hour after --to, for the labels
    outcomes = set()
    for day in (D1, D2):
        table = pq.read_table(day_path(out, day, symbol))
        directed = np.flatnonzero(table.column("direction").is_valid().to_numpy(zero_copy_only=False)).tolist()
        n = table.num_rows
        # directed rows through the day, undirected ones, and the day's last minutes (labels across
        # midnight, and on day 2 into the hour after --to)
        picks = directed[:: len(directed) // 8][:8] + [0, n // 2] + list(range(n - 3, n))
        for i, row in zip(picks, table.take(picks).to_pylist()):
            t = int(row["eval_time"].timestamp() * 1000)
            entry = row["in_last_price"]
            assert entry == prices[np.flatnonzero(times < t)[-1]]  # the last trade before eval_time
            y, returns = labels_by_hand(t, entry, row["in_atr"], row["direction"], times, prices, T_END + HOUR)
            assert row["y_binary_60m"] == y, (symbol, day, i)
            for name, value in returns.items():
                assert row[name] == (None if value is None else pytest.approx(value, rel=1e-12, abs=1e-15)), name
            outcomes.add(y)
    assert outcomes == {0, 1, None}


def check_schema_file(out) -> None:
    document = json.loads((out / "v53" / "_schema.json").read_text())
    assert document["config_hash"] == CFG.config_hash and document["source"] == "synthetic:7"
    columns = document["columns"]
    assert all(set(c) == {"name", "type", "unit", "meaning"} and c["meaning"] and c["type"] for c in columns)
    for day in (D1, D2):
        for symbol in SYMBOLS:
            schema = pq.read_schema(day_path(out, day, symbol))
            assert [(f.name, str(f.type)) for f in schema] == [(c["name"], c["type"]) for c in columns]
            assert json.loads(schema.metadata[METADATA_KEY]) == {
                "format": document["format"],
                "config_hash": CFG.config_hash,
                "source": "synthetic:7",
                "replay_from": T1,
            }
    names = {c["name"] for c in columns}
    # every field of Features is a column by itself (a new field needs no change to the export)
    assert {f"in_{n}" for n in SCALAR_FIELDS if n not in DETECTOR_FIELDS} <= names
    assert not any(f"in_{n}" in names for n in DETECTOR_FIELDS)  # v53 has no detectors section
    types = {c["name"]: c["type"] for c in columns}
    assert types["eval_time"] == "timestamp[ms, tz=UTC]" and types["y_binary_60m"] == "int8"
    assert types["in_last_trade_ms"] == types["in_atr_bars"] == "int64" and types["in_atr"] == "double"
    assert {c["name"]: c["unit"] for c in columns}["in_atr"] == "quote currency"


# -- one symbol: crash leftovers, overwrite, and `research labels` on the same data -------------------------


def test_rerun_after_a_crash_overwrite_and_the_labels_command(spy, tmp_path):
    out = tmp_path / "export"
    ok(run("--from", D1, "--to", D2, "--symbols", "XRPUSDT", "--out", str(out)))
    day1 = day_path(out, D1, "XRPUSDT")
    good = day1.read_bytes()

    # what a killed run (no clean-up) or a writer without a rename could leave: a temporary file and a
    # truncated file under the day's own name. The re-run must not take the latter for a finished day.
    (day1.parent / f".{day1.name}.424242.tmp").write_bytes(good[:1000])
    day1.write_bytes(good[: len(good) // 2])
    assert "1 symbol-days written" in ok(run("--from", D1, "--to", D2, "--symbols", "XRPUSDT", "--out", str(out)))
    assert day1.read_bytes() == good  # the same inputs give the same file
    assert [p.name for p in day1.parent.iterdir()] == [day1.name]

    # --overwrite rewrites a finished day (a new file, the same bytes)
    inode = os.stat(day1).st_ino
    assert "1 symbol-days written" in ok(
        run("--from", D1, "--to", D2, "--symbols", "XRPUSDT", "--out", str(out), "--overwrite")
    )
    assert os.stat(day1).st_ino != inode and day1.read_bytes() == good
    assert len(spy.opened) == 3

    # `research labels` (its replay is the export's): the same evaluations and every input; labels equal
    # wherever their hour ends inside its range (it does not read past --to)
    ok(
        run(
            "--from",
            D1,
            "--to",
            D2,
            "--symbols",
            "XRPUSDT",
            "--strategy",
            str(default_strategy_dir() / "v53.yaml"),
            "--output",
            str(tmp_path / "labels.parquet"),
            command="labels",
        )
    )
    labels = pq.read_table(tmp_path / "labels.parquet")
    labels = labels.filter(pc.less(labels.column("eval_time"), pa.scalar(T1 + DAY, pa.timestamp("ms", tz="UTC"))))
    ours = pq.read_table(day1)
    assert labels.num_rows == ours.num_rows > 20_000 and set(labels.column_names) == set(ours.column_names)
    for name in set(ours.column_names) - set(LABELS):
        assert labels.column(name).equals(ours.column(name).cast(labels.schema.field(name).type)), name
    inside = np.flatnonzero(ms(ours.column("eval_time")) + HOUR <= T1 + DAY)
    for name in LABELS:
        assert labels.column(name).take(inside).to_pylist() == ours.column(name).take(inside).to_pylist(), name


def test_a_failed_write_leaves_no_file_under_the_days_name(tmp_path, monkeypatch):
    table = pa.table({"x": [1.0, 2.0]})
    path = tmp_path / "date=2024-01-01" / "XRPUSDT.parquet"
    real = export_module.pq.write_table

    def dying(data, where, **kwargs):
        where.write(b"PAR1 half a file")
        raise KeyboardInterrupt  # Ctrl-C mid-write

    monkeypatch.setattr(export_module.pq, "write_table", dying)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(table, path)
    assert list(path.parent.iterdir()) == []
    path.write_bytes(b"an older file")
    with pytest.raises(KeyboardInterrupt):
        write_atomic(table, path)
    assert path.read_bytes() == b"an older file" and list(path.parent.iterdir()) == [path]
    monkeypatch.setattr(export_module.pq, "write_table", real)
    write_atomic(table, path)
    assert pq.read_table(path).equals(table)


def test_a_day_replayed_from_a_later_start_is_not_done(tmp_path):
    schema = arrow_schema(CFG)
    empty = {name: np.empty(0) for name in schema.names}
    provenance = {
        "format": export_module.FORMAT,
        "config_hash": CFG.config_hash,
        "source": "synthetic:7",
        "replay_from": T1 + DAY,
    }
    path = tmp_path / "day.parquet"
    write_atomic(to_table(empty, schema, provenance), path)
    done = export_module._is_done  # noqa: SLF001 - the rule itself
    assert done(path, provenance, schema)
    assert done(path, provenance | {"replay_from": T1 + 2 * DAY}, schema)  # it had more warm-up
    assert not done(path, provenance | {"replay_from": T1}, schema)  # less: replay it
    assert not done(path, provenance | {"source": "synthetic:8"}, schema)
    assert not done(path, provenance | {"config_hash": "other"}, schema)
    assert not done(path, provenance, pa.schema(list(schema) + [pa.field("in_new_feature", pa.float64())]))
    assert not done(tmp_path / "missing.parquet", provenance, schema)


def test_detector_columns_when_the_strategy_has_detectors():
    data = CFG.model_dump(mode="json") | {"detectors": {}}
    cfg = parse_strategy(data)
    names = [c.name for c in export_columns(cfg)]
    assert {f"in_{n}" for n in SCALAR_FIELDS} <= set(names) and arrow_schema(cfg).names == names
    assert len(names) == len(set(names))


def test_bad_input_is_one_clear_error(tmp_path):
    out = tmp_path / "o"
    other = tmp_path / "v53.yaml"
    other.write_text((default_strategy_dir() / "v53.yaml").read_text() + "\ndescription: edited\n")
    assert load_strategy(other).config_hash != CFG.config_hash
    (out / "v53").mkdir(parents=True)
    (out / "v53" / "_schema.json").write_text(json.dumps({"config_hash": CFG.config_hash, "source": "synthetic:7"}))
    shipped = ", ".join(sorted(p.stem for p in default_strategy_dir().glob("*.yaml")))
    for args, message in (
        (("--strategy", "v99"), f"--strategy 'v99': not a file or a shipped strategy ({shipped})"),
        (("--strategy", str(tmp_path / "missing.yaml")), "missing.yaml: no such file"),
        (("--from", D2, "--to", D1), f"empty range: --to {D1} is not after --from {D2}"),
        (("--from", D1, "--to", D1), f"empty range: --to {D1} is not after --from {D1}"),  # --to is excluded
        (("--from", "2024-02-30"), "--from '2024-02-30': expected a date (2024-01-01)"),
        (("--source", f"recording:{tmp_path / 'nowhere'}"), "nowhere"),
        (("--source", "kafka"), "the export reads synthetic[:SEED]"),
        (("--strategy", str(other), "--out", str(out)), "holds an export with config_hash"),  # same name, other config
    ):
        given = {"--from": D1, "--to": D2, "--symbols": "XRPUSDT", "--out": str(tmp_path / "fresh")}
        given |= dict(zip(args[::2], args[1::2]))
        result = run(*[x for item in given.items() for x in item])
        assert isinstance(result.exception, ResearchError), (args, result.output, result.exception)
        assert message in str(result.exception) and "\n" not in str(result.exception), (args, str(result.exception))
    # as the user sees it: one line on stderr, exit 1
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "tapeflow",
            "research",
            "export",
            "--from",
            D1,
            "--to",
            D2,
            "--strategy",
            "v99",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 1 and res.stderr.startswith("error: --strategy 'v99'") and res.stderr.count("\n") == 1
