"""`tapeflow backtest` over Binance Vision files on disk, as a user runs it: the whole command, cold and warm.

Generates the Vision tree a user downloads (``data/futures/um/daily/aggTrades``, daily ``metrics``,
monthly ``fundingRate``, 1-minute ``markPriceKlines`` and spot ``klines``; zipped CSV with headers and
``.CHECKSUM`` files) for ``--symbols`` x ``--days``, then runs ``python -m tapeflow backtest --source
vision:DIR`` as a subprocess with the three shipped strategies, twice on one ``TAPEFLOW_HOME``:

* cold: the columnar cache (``TAPEFLOW_HOME/cache/columns``) empty, every aggTrades file parsed;
* warm: the cache filled by the cold run, the files memory-mapped.

Prints, per run, the wall clock of the whole command, trades/s end to end, the peak RSS of the
process tree (sampled every 0.1 s) and the ratios to the targets (warm 3,000,000 trades/s, cold
1,000,000) and to the baseline: the row-at-a-time reader's measurement, 285,189 trades/s
(2 days x 4 symbols, 13.8 M trades, second run). Trades are a random walk on a tick grid with
log-normal clustered arrivals, so the strategies evaluate, signal and trade.

    .venv/bin/python -m benchmarks.bench_backtest_files --days 2 --trades-per-day 1300000
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import psutil

SYMBOLS = {"BTCUSDT": (42_000.0, 0.1), "ETHUSDT": (2_300.0, 0.01), "SOLUSDT": (100.0, 0.001), "XRPUSDT": (0.6, 0.0001)}
BASELINE = 285_189
WARM_TARGET, COLD_TARGET = 3_000_000, 1_000_000
DAY_MS = 86_400_000


def write_zip(root: Path, rel: str, header: str, body: bytes) -> None:
    path = root / "data" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as z:
        z.writestr(path.with_suffix(".csv").name, header.encode() + b"\n" + body)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    path.with_name(path.name + ".CHECKSUM").write_text(f"{digest}  {path.name}\n")


def csv_body(columns: list[np.ndarray], formats: list[str]) -> bytes:
    """Rows of ``columns`` as CSV text, built with numpy's vectorised string formatting."""
    parts = [np.char.mod(fmt, col) for col, fmt in zip(columns, formats, strict=True)]
    rows = parts[0]
    for part in parts[1:]:
        rows = np.char.add(np.char.add(rows, ","), part)
    return "\n".join(rows.tolist()).encode() + b"\n"


def generate(root: Path, symbols: list[str], days: list[date], trades_per_day: int, seed: int) -> int:
    rng = np.random.default_rng(seed)
    total = 0
    for symbol in symbols:
        price0, tick = SYMBOLS[symbol]
        ticks = round(price0 / tick)
        agg = 1_000_000
        for day in days:
            start = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
            # clustered arrivals: per-minute intensity log-normal, trades spread inside the minute
            weights = np.exp(rng.normal(0, 1, 1440))
            counts = rng.multinomial(trades_per_day, weights / weights.sum())
            minute = np.repeat(np.arange(1440), counts)
            times = start + minute * 60_000 + np.sort(rng.integers(0, 60_000, trades_per_day))
            times.sort()
            steps = rng.choice([-1, 0, 0, 0, 1], trades_per_day)
            path = ticks + np.cumsum(steps)
            ticks = int(path[-1])
            n = trades_per_day
            ids = np.arange(agg, agg + n)
            agg += n
            firsts = ids * 2
            decimals = max(0, round(-np.log10(tick)))
            body = csv_body(
                [
                    ids,
                    path * tick,
                    rng.integers(1, 5000, n) / 1000,
                    firsts,
                    firsts + 1,
                    times,
                    np.where(rng.random(n) < 0.5, "true", "false"),
                ],
                ["%d", f"%.{decimals}f", "%.3f", "%d", "%d", "%d", "%s"],
            )
            write_zip(
                root,
                f"futures/um/daily/aggTrades/{symbol}/{symbol}-aggTrades-{day}.zip",
                "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker",
                body,
            )
            total += n
            last = np.searchsorted(minute, np.arange(1440), "right") - 1  # the minute's last trade (or the previous)
            minute_close = path[np.clip(last, 0, n - 1)] * tick
            opens = start + np.arange(1440) * 60_000
            kl = csv_body(
                [
                    opens,
                    minute_close,
                    minute_close,
                    minute_close,
                    minute_close,
                    np.zeros(1440),
                    opens + 59_999,
                    np.zeros(1440),
                    np.zeros(1440),
                    np.zeros(1440),
                    np.zeros(1440),
                    np.zeros(1440),
                ],
                ["%d"] + [f"%.{decimals}f"] * 4 + ["%d", "%d", "%d", "%d", "%d", "%d", "%d"],
            )
            header = (
                "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,"
                "taker_buy_quote_volume,ignore"
            )
            write_zip(root, f"futures/um/daily/markPriceKlines/{symbol}/1m/{symbol}-1m-{day}.zip", header, kl)
            write_zip(root, f"spot/daily/klines/{symbol}/1m/{symbol}-1m-{day}.zip", header, kl)
            five = np.arange(1, 288)
            stamps = [
                (datetime.fromtimestamp((start + k * 300_000) / 1000, tz=UTC)).strftime("%Y-%m-%d %H:%M:%S")
                for k in five
            ]
            metrics = (
                "\n".join(
                    f"{s},{symbol},{80_000 + k},{(80_000 + k) * price0},1.1,{1 + k / 1000},{2 - k / 1000},0.9"
                    for s, k in zip(stamps, five, strict=True)
                ).encode()
                + b"\n"
            )
            write_zip(
                root,
                f"futures/um/daily/metrics/{symbol}/{symbol}-metrics-{day}.zip",
                "create_time,symbol,sum_open_interest,sum_open_interest_value,count_toptrader_long_short_ratio,"
                "sum_toptrader_long_short_ratio,count_long_short_ratio,sum_taker_long_short_vol_ratio",
                metrics,
            )
        for month in sorted({(d.year, d.month) for d in days}):
            first = datetime(month[0], month[1], 1, tzinfo=UTC)
            settle = [int((first + timedelta(hours=8 * k)).timestamp() * 1000) for k in range(3 * 32)]
            rows = "\n".join(f"{t},8,{0.0001 * (1 + k % 3)}" for k, t in enumerate(settle)).encode() + b"\n"
            write_zip(
                root,
                f"futures/um/monthly/fundingRate/{symbol}/{symbol}-fundingRate-{month[0]:04d}-{month[1]:02d}.zip",
                "calc_time,funding_interval_hours,last_funding_rate",
                rows,
            )
    return total


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, float, subprocess.CompletedProcess]:
    """(wall s, peak RSS MiB of the process tree, result)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0.0
    ps = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            rss = ps.memory_info().rss + sum(c.memory_info().rss for c in ps.children(recursive=True))
            peak = max(peak, rss / 2**20)
        except psutil.Error:
            pass
        time.sleep(0.1)
    out, err = proc.communicate()
    return time.monotonic() - t0, peak, subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=2)
    ap.add_argument("--trades-per-day", type=int, default=1_300_000, help="per symbol")
    ap.add_argument("--symbols", default=",".join(SYMBOLS))
    ap.add_argument("--start", default="2024-03-01")
    ap.add_argument("--dir", type=Path, help="keep the generated tree here (default: a temp dir)")
    args = ap.parse_args()
    symbols = [s.strip().upper() for s in args.symbols.split(",") if s.strip()]
    first = date.fromisoformat(args.start)
    days = [first + timedelta(days=i) for i in range(args.days)]
    root = args.dir or Path(tempfile.mkdtemp(prefix="tapeflow-vision-"))
    t0 = time.monotonic()
    total = generate(root, symbols, days, args.trades_per_day, seed=5)
    print(
        f"generated {total:,} trades ({len(symbols)} symbols x {len(days)} days) in {root} "
        f"({time.monotonic() - t0:.0f}s)",
        flush=True,
    )
    home = Path(tempfile.mkdtemp(prefix="tapeflow-bt-home-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAPEFLOW_")} | {"TAPEFLOW_HOME": str(home)}
    cmd = [
        sys.executable,
        "-m",
        "tapeflow",
        "backtest",
        "--source",
        f"vision:{root}",
        "--symbols",
        ",".join(symbols),
        "--from",
        str(days[0]),
        "--to",
        str(days[-1]),
        "--no-progress",
        "--format",
        "json",
    ]
    for name, target in (("cold", COLD_TARGET), ("warm", WARM_TARGET)):
        wall, peak, res = run([*cmd, "--out", str(home / f"report-{name}")], env)
        if res.returncode != 0:
            print(res.stdout[-2000:], res.stderr[-3000:])
            raise SystemExit(f"{name} run failed ({res.returncode})")
        rate = total / wall
        print(
            f"{name}: {wall:.1f}s wall for {total:,} trades = {rate:,.0f} trades/s end to end; peak RSS {peak:,.0f} MiB; "
            f"{rate / target:.2f}x the {target:,} target, {rate / BASELINE:.1f}x the row reader's {BASELINE:,}",
            flush=True,
        )
    cache = sum(p.stat().st_size for p in (home / "cache" / "columns").glob("*.arrow"))
    print(f"cache: {cache / 2**20:,.0f} MiB in {home / 'cache' / 'columns'}")


if __name__ == "__main__":
    main()
