"""The Binance Vision source against a local HTTP server on loopback serving generated archives in
Vision's layout with `.CHECKSUM` files: downloads verified and cached, a missing day and a bad row
listed, every archive kind turned into the records the report's notes describe."""

from __future__ import annotations

import hashlib
import threading
import zipfile
from datetime import UTC, datetime
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from backtest.runner import BacktestRunner
from backtest.sources import SourceError, open_source
from backtest.sources.vision import INDICATOR_DELAY_MS, VisionSource
from stream_apps.core.strategy import default_strategy_dir, load_strategies

SYM = "BTCUSDT"
D1 = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp() * 1000)
H = 3_600_000
M = 60_000
FUNDING = {D1: 0.0001, D1 + 8 * H: 0.0002, D1 + 16 * H: -0.0001, D1 + 24 * H: 0.0003, D1 + 32 * H: 0.0001}


def write_zip(root: Path, rel: str, lines: list[str]) -> Path:
    path = root / "data" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(path.with_suffix(".csv").name, "\n".join(lines) + "\n")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    path.with_name(path.name + ".CHECKSUM").write_text(f"{digest}  {path.name}\n")
    return path


def stamp(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def price_at(minute: int) -> float:
    return 42_000.0 + minute  # mark close of the kline opening at that minute of the day


def build_archive(root: Path) -> None:
    trades = ["agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker"]
    for i in range(1440):
        trades.append(
            f"{100 + i},{price_at(i)},0.5,{1000 + i},{1000 + i},{D1 + i * M + 30_000},{'true' if i % 2 else 'false'}"
        )
    trades.insert(10, "109,not-a-price,0.5,1,1,1704067800000,true")  # physical line 11
    write_zip(root, f"futures/um/daily/aggTrades/{SYM}/{SYM}-aggTrades-2024-01-01.zip", trades)
    metrics = [
        "create_time,symbol,sum_open_interest,sum_open_interest_value,count_toptrader_long_short_ratio,"
        "sum_toptrader_long_short_ratio,count_long_short_ratio,sum_taker_long_short_vol_ratio"
    ]
    for k in range(1, 288):
        metrics.append(
            f"{stamp(D1 + k * 300_000)},{SYM},{80_000 + k},{(80_000 + k) * 42_000},1.1,{1 + k / 1000},"
            f"{2 - k / 1000},0.9"
        )
    write_zip(root, f"futures/um/daily/metrics/{SYM}/{SYM}-metrics-2024-01-01.zip", metrics)
    klines = [
        "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,"
        "taker_buy_quote_volume,ignore"
    ]
    spot = []
    for i in range(1440):
        t = D1 + i * M
        p = price_at(i)
        klines.append(f"{t},{p},{p},{p},{p},0,{t + M - 1},0,0,0,0,0")
        spot.append(f"{t * 1000},{p},{p},{p},{p - 4.2},0,{(t + M) * 1000 - 1},0,0,0,0,0")  # 2025-style microseconds
    write_zip(root, f"futures/um/daily/markPriceKlines/{SYM}/1m/{SYM}-1m-2024-01-01.zip", klines)
    write_zip(root, f"spot/daily/klines/{SYM}/1m/{SYM}-1m-2024-01-01.zip", spot)
    depth = ["timestamp,percentage,depth,notional"]
    for k in range(0, 1440, 30):  # every 30 minutes
        t = D1 + k * M + 8_000
        for pct in (-5, -3, -2, -1, 1, 2, 3, 5):
            depth.append(f"{stamp(t)},{pct},{300 + k if pct == -1 else 100 if pct == 1 else 999},0")
    write_zip(root, f"futures/um/daily/bookDepth/{SYM}/{SYM}-bookDepth-2024-01-01.zip", depth)
    funding = ["calc_time,funding_interval_hours,last_funding_rate"]
    funding += [f"{t},8,{r}" for t, r in FUNDING.items()]
    write_zip(root, f"futures/um/monthly/fundingRate/{SYM}/{SYM}-fundingRate-2024-01.zip", funding)


class CountingHandler(SimpleHTTPRequestHandler):
    requests: ClassVar[list[str]] = []

    def do_GET(self):
        CountingHandler.requests.append(self.path)
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def vision_server(tmp_path):
    root = tmp_path / "mirror"
    build_archive(root)
    CountingHandler.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(CountingHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


def read_all(source: VisionSource) -> dict:
    out = {"trades": 0, "books": [], "marks": [], "indicators": [], "liquidations": []}
    for piece in source.slices():
        out["trades"] += piece.trade_count
        for kind in ("books", "marks", "indicators", "liquidations"):
            out[kind] += getattr(piece, kind)
    return out


def test_download_verify_cache_and_records(vision_server, tmp_path):
    url, _ = vision_server
    cache = tmp_path / "cache"
    source = VisionSource([SYM], D1, D1 + 2 * 24 * H, cache_dir=cache, base_url=url)
    got = read_all(source)

    assert got["trades"] == 1440  # the bad row is not a trade
    assert source.report.bad_rows == [
        "BTCUSDT-aggTrades-2024-01-01.zip:11: not a number (could not convert string to float: 'not-a-price'): "
        "'109,not-a-price,0.5,1,1,1704067800000,true'"
    ]
    assert (
        f"BTCUSDT 2024-01-02 aggTrades: not found at {url}/data/futures/um/daily/aggTrades/BTCUSDT/"
        f"BTCUSDT-aggTrades-2024-01-02.zip" in source.report.missing
    )
    assert source.report.notes["coinbase_premium"] == "no public history (Coinbase premium)"

    marks = {m["event_time"]: m for m in got["marks"]}
    five = marks[D1 + 5 * H]  # the close of the 04:59 kline, known at 05:00
    assert (five["mark_price"], five["funding_rate"], five["next_funding_time"]) == (price_at(299), 0.0001, D1 + 8 * H)
    settle = marks[D1 + 8 * H - 1]  # just before 08:00: the rate that settlement charged, the newest mark
    assert (settle["mark_price"], settle["funding_rate"], settle["next_funding_time"]) == (
        price_at(478),
        0.0002,
        D1 + 8 * H,
    )
    assert marks[D1 + 16 * H - 1]["funding_rate"] == -0.0001
    assert marks[D1 + 9 * H]["funding_rate"] == 0.0002  # after 08:00 the engine knows 08:00's rate

    oi = [i for i in got["indicators"] if i["kind"] == "open_interest_hist"]
    assert len(oi) == 287 and oi[0]["event_time"] == D1 + 300_000
    assert oi[0]["receive_time"] == D1 + 300_000 + INDICATOR_DELAY_MS and oi[0]["value"] == 80_001
    top = next(i for i in got["indicators"] if i["kind"] == "top_trader_position_ratio")
    assert top["value"] == pytest.approx(1.001) and top["extra"]["long_account"] == pytest.approx(1.001 / 2.001)
    div = next(i for i in got["indicators"] if i["kind"] == "spot_perp_divergence")
    assert div["event_time"] == D1 + 300_000  # every 5 minutes, as the live poller
    assert div["value"] == pytest.approx(4.2 / (price_at(4) - 4.2))
    books = got["books"]
    assert len(books) == 48 and books[0]["event_time"] == D1 + 8_000
    assert books[0]["obi_10"] == pytest.approx((300 - 100) / (300 + 100))  # within -1 % vs within +1 %
    assert books[0]["bids"] == [] and got["liquidations"] == []

    zips = [r for r in CountingHandler.requests if r.endswith(".zip")]
    assert len(zips) == 6  # every archive that exists, downloaded once
    CountingHandler.requests.clear()
    again = read_all(VisionSource([SYM], D1, D1 + 24 * H, cache_dir=cache, base_url=url))
    assert again["trades"] == 1440
    assert CountingHandler.requests == [] or all(not r.endswith(".zip") for r in CountingHandler.requests)


def test_checksum_mismatch_stops_with_the_file_named(vision_server, tmp_path):
    url, root = vision_server
    path = root / "data" / "futures/um/daily/metrics/BTCUSDT/BTCUSDT-metrics-2024-01-01.zip"
    path.with_name(path.name + ".CHECKSUM").write_text(f"{'0' * 64}  {path.name}\n")
    source = VisionSource([SYM], D1, D1 + 24 * H, cache_dir=tmp_path / "cache", base_url=url)
    with pytest.raises(SourceError, match="BTCUSDT-metrics-2024-01-01.zip: downloaded SHA-256 .* does not match"):
        read_all(source)


def test_local_directory_in_the_vision_tree_and_coverage(vision_server):
    _, root = vision_server
    source = open_source(f"vision:{root}", [SYM], D1, D1 + 24 * H)
    result = BacktestRunner(load_strategies(default_strategy_dir())).run(source)
    assert result.trades_processed == 1440 and result.missing == []
    assert not CountingHandler.requests  # read in place
    rows = {(c.layer, c.input): c for c in result.coverage if c.symbol == SYM}
    premium = rows[("auxiliary", "coinbase_premium")]
    assert premium.evaluations > 0 and premium.present == 0
    assert premium.note == "no public history (Coinbase premium)"
    obi = rows[("gate:obi_against", "obi")]
    assert 0 < obi.present < obi.evaluations and obi.note.startswith("approximated from bookDepth")
    assert rows[("direction", "trades")].present == rows[("direction", "trades")].evaluations


def test_the_columnar_reader_gives_the_same_run_as_the_row_reader(tmp_path, monkeypatch):
    """Clean aggTrades files are parsed by pyarrow (no Python per row); the run over them (trades,
    positions, counts, coverage) is the one the backfill's row reader gives on the same files."""
    import dataclasses

    import backtest.sources.vision_trades as vision  # the day files are parsed there

    root = tmp_path / "mirror"
    build_archive(root)
    clean = ["agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker"]
    for i in range(20_000):  # a trade every 4.32 s, prices with 1-3 decimals, quantities down to 0.001
        clean.append(
            f"{100 + i},{42_000 + (i * 37 % 1000) / 10 ** (1 + i % 3)},{(1 + i * 13 % 997) / 1000},"
            f"{1000 + 2 * i},{1001 + 2 * i},{D1 + i * 4_320 + 1},{'true' if i * 7 % 3 else 'FALSE'}"
        )
    write_zip(root, f"futures/um/daily/aggTrades/{SYM}/{SYM}-aggTrades-2024-01-01.zip", clean)
    calls = []
    real = vision.read_agg_trade_columns
    monkeypatch.setattr(vision, "read_agg_trade_columns", lambda raw: calls.append(1) or real(raw))

    def run():
        result = BacktestRunner(load_strategies(default_strategy_dir())).run(
            open_source(f"vision:{root}", [SYM], D1, D1 + 24 * H)
        )
        return {
            k: v
            for k, v in dataclasses.asdict(result).items()
            if k not in ("run_id", "started_at_ms", "finished_at_ms")
        }

    columnar = run()
    assert calls and columnar["trades_processed"] == 20_000 and columnar["bad_rows"] == []
    monkeypatch.setattr(vision, "read_agg_trade_columns", lambda raw: None)  # every file by row
    assert run() == columnar


def test_the_column_cache_serves_later_runs_and_follows_file_changes(tmp_path, monkeypatch):
    """First run: parsed and cached. Second: from the cache (the parser is not called). The file
    replaced: parsed again, the stale entry gone. A file with a bad row is never cached (each run's
    report must name its bad rows). `tapeflow cache ls|clear` list and empty it."""
    import os
    import subprocess
    import sys

    import backtest.sources.vision_trades as vision  # the day files are parsed there
    from backtest.sources.column_cache import ColumnCache

    root = tmp_path / "mirror"
    build_archive(root)  # its aggTrades file has a bad row
    rel = f"futures/um/daily/aggTrades/{SYM}/{SYM}-aggTrades-2024-01-01.zip"
    home = tmp_path / "home"
    cache = ColumnCache(home / "cache" / "columns")
    calls = []
    real = vision.read_agg_trade_columns
    monkeypatch.setattr(vision, "read_agg_trade_columns", lambda raw: calls.append(1) or real(raw))

    def trades():
        source = VisionSource([SYM], D1, D1 + 24 * H, directory=root, column_cache=cache)
        out: dict[str, tuple[list, ...]] = {}  # per market, the hourly blocks' trades joined
        for block in source.blocks():
            for key, t in block.trades.items():
                for col, values in zip(
                    out.setdefault(key, ([], [], [], [], [])),
                    (t.agg_id, t.price, t.qty, t.time_ms, t.taker_sell),
                    strict=True,
                ):
                    col.extend(values.tolist())
        return list(out.values()), source.report.bad_rows

    first, bad = trades()
    assert len(first[0][0]) == 1440 and bad and cache.entries() == []  # a bad row: row reader, not cached

    def write(n: int, price: float) -> None:
        write_zip(
            root,
            rel,
            [
                f"{100 + i},{price + i / 10},0.25,{1000 + i},{1000 + i},{D1 + i * 60_000 + 7},"
                f"{'true' if i % 3 else 'false'}"
                for i in range(n)
            ],
        )

    write(500, 41_000.0)
    calls.clear()
    parsed, bad = trades()
    assert calls == [1] and not bad and len(parsed[0][0]) == 500 and parsed[0][1][1] == 41_000.1
    assert [e.rows for e in cache.entries()] == [500]
    monkeypatch.setattr(vision, "read_agg_trade_columns", lambda raw: pytest.fail("parsed although cached"))
    assert trades() == (parsed, [])

    time_ns = (root / "data" / rel).stat().st_mtime_ns
    write(700, 40_000.0)
    os.utime(root / "data" / rel, ns=(time_ns + 10**9, time_ns + 10**9))
    monkeypatch.setattr(vision, "read_agg_trade_columns", lambda raw: calls.append(2) or real(raw))
    changed, _ = trades()
    assert calls[-1] == 2 and len(changed[0][0]) == 700 and changed[0][1][0] == 40_000.0
    assert [e.rows for e in cache.entries()] == [700]  # the stale entry is gone

    env = {k: v for k, v in os.environ.items() if not k.startswith("TAPEFLOW_")} | {"TAPEFLOW_HOME": str(home)}
    ls = subprocess.run([sys.executable, "-m", "tapeflow", "cache", "ls"], capture_output=True, text=True, env=env)
    assert ls.returncode == 0 and f"{SYM}-aggTrades-2024-01-01.zip" in ls.stdout and "700 rows" in ls.stdout
    clear = subprocess.run(
        [sys.executable, "-m", "tapeflow", "cache", "clear"], capture_output=True, text=True, env=env
    )
    assert clear.returncode == 0 and "removed 1 file(s)" in clear.stdout and cache.entries() == []


def test_a_cached_day_is_read_an_hour_at_a_time_and_an_old_cache_layout_is_replaced(tmp_path, monkeypatch):
    """Memory bounded by an hour per symbol: the source yields one block per hour and reads a symbol's
    cached hour only when that block is made (not the day, not the next day); each block holds exactly
    the trades of its hour, and the cached day has 24 record batches. An entry written in the first
    cache layout (file order, one batch) is not used: it is parsed again and replaced."""
    import pyarrow as pa

    import backtest.sources.column_cache as column_cache
    from backtest.sources.column_cache import CachedDay, ColumnCache

    root = tmp_path / "mirror"
    build_archive(root)
    rel = f"futures/um/daily/aggTrades/{SYM}/{SYM}-aggTrades-2024-01-01.zip"
    # 3 trades per hour, written out of time order, two of them in the same millisecond
    rows = [
        f"{500 + i},{40_000 + i},0.5,{900 + i},{900 + i},{D1 + (71 - i) // 3 * H + (i % 3) // 2 * 1000},true"
        for i in range(72)
    ]
    write_zip(root, rel, rows)
    cache = ColumnCache(tmp_path / "columns")

    monkeypatch.setattr(column_cache, "FORMAT", 1)  # an entry of the first layout: one batch for the file
    from producers.backfill.agg_trades_csv import AggTradeColumns, open_archive, read_agg_trade_columns

    with open_archive(root / "data" / rel) as (raw, _):
        cols = read_agg_trade_columns(raw)
    assert isinstance(cols, AggTradeColumns)
    old = cache.put(root / "data" / rel, cols)
    monkeypatch.undo()
    assert pa.ipc.open_file(str(old)).num_record_batches == 1

    read: list[int] = []
    real_hour = CachedDay.hour
    monkeypatch.setattr(CachedDay, "hour", lambda self, i: read.append(i) or real_hour(self, i))
    source = VisionSource([SYM], D1, D1 + 24 * H, directory=root, column_cache=cache)
    blocks = source.blocks()
    first = next(blocks)
    assert (first.start_ms, first.end_ms) == (D1, D1 + H) and read == [0]  # the parse wrote the new layout
    assert not old.exists() and [e.rows for e in cache.entries()] == [72]
    (entry,) = cache.entries()
    assert pa.ipc.open_file(str(entry.path)).num_record_batches == 24
    seen = [first, *blocks]
    assert [b.start_ms for b in seen] == [D1 + h * H for h in range(24)] and read == list(range(24))
    for block in seen:
        (batch,) = block.trades.values()
        assert len(batch) == 3 and all(block.start_ms <= t < block.end_ms for t in batch.time_ms.tolist())
        pairs = list(zip(batch.time_ms.tolist(), batch.agg_id.tolist(), strict=True))
        assert pairs == sorted(pairs)  # time order, ties by aggregate id

    read.clear()  # a second run: served by the cache, still an hour at a time
    again = VisionSource([SYM], D1 + 5 * H, D1 + 7 * H, directory=root, column_cache=cache)
    assert [b.start_ms for b in again.blocks()] == [D1 + 5 * H, D1 + 6 * H] and read == [5, 6]


def test_the_default_source_says_it_downloads_and_where_it_keeps_the_archives(vision_server, tmp_path):
    """`tapeflow backtest` without --source reads Binance's archives over the network: it says so (how
    much, from where, kept where, and how to run offline) before it downloads anything."""
    import os
    import subprocess
    import sys

    url, _ = vision_server
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAPEFLOW_")}
    env["TAPEFLOW_HOME"] = str(tmp_path / "home")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tapeflow",
            "backtest",
            "--vision-url",
            url,
            "--symbols",
            SYM,
            "--strategy",
            "v53",
            "--from",
            "2024-01-01",
            "--to",
            "2024-01-02",
            "--out",
            str(tmp_path / "out"),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    said = proc.stderr.splitlines()
    first = next(i for i, line in enumerate(said) if line.startswith("source vision: "))
    assert (
        f"1 symbol(s) x 1 day(s), downloaded from {url} on first use and kept in {tmp_path / 'home' / 'vision'}"
        in said[first]
    )
    assert "--source synthetic runs offline" in said[first]
    assert CountingHandler.requests, "the archives were downloaded"
