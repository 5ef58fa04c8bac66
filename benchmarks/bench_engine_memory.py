"""Memory per symbol with 24-h windows filled (issue "Signal engine" benchmark (d); DESIGN §7: bounded).

What runs: ``--symbols`` symbol states (the engine's per-symbol state: bucketed CVD windows up to 24 h,
1-minute bars, 5-minute bars + ATR + 288-bar percentile, the 24-h trade-size sketch, whale flow), each
fed 25 h of synthetic trades at ``--rate`` trades/s in batches of one minute, then the features
snapshot computed once (so lazily built structures exist). Evaluations are not run: they allocate
nothing that outlives them, and at one per second they would make a 24-h fill take minutes per symbol.

What is printed, per rate: resident set size growth of this process per symbol (psutil; the Python
heap does not return freed pages to the OS, so this is an upper bound), the state's own size as the
engine persists it (``to_dict`` → orjson → zlib, what the Faust table stores per symbol), and the
trade count. Bounded memory means the per-symbol numbers stay flat while the trade count grows 100x.

Run: ``.venv/bin/python -m benchmarks.bench_engine_memory [--symbols 20] [--rates 1,10,100]``.
Each rate runs in its own subprocess so one rate's heap does not inflate the next.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import zlib

import orjson
import psutil

from stream_apps.core.symbol_state import STANDARD_CVD_WINDOWS_MS, SymbolState
from stream_apps.core.synthetic import synthetic_trades

START = 1_700_006_400_000
HOURS = 25
MINUTE_MS = 60_000


def fill(symbols: int, rate: float) -> dict[str, float]:
    gc.collect()
    before = psutil.Process().memory_info().rss
    states = []
    trades = 0
    for i in range(symbols):
        state = SymbolState("binance", f"SYM{i}USDT")
        for hour in range(HOURS):  # generated an hour at a time: the input never sits in memory whole
            # agg ids continue across hours, so the state sees one unbroken stream
            batch = synthetic_trades(
                f"SYM{i}USDT",
                start_ms=START + hour * 3_600_000,
                duration_ms=3_600_000,
                rate_per_s=rate,
                price0=100.0 + i,
                seed=1000 * i + hour,
                first_agg_id=max(state.last_agg_id, 0) + 1,
            )
            for start in range(0, len(batch), max(int(rate * 60), 1)):
                state.apply_trades(batch.take(slice(start, start + max(int(rate * 60), 1))))
            trades += len(batch)
        end = START + HOURS * 3_600_000
        state.advance_to(end)
        state.snapshot(end, STANDARD_CVD_WINDOWS_MS, (1_800_000,))
        states.append(state)
    gc.collect()
    grown = psutil.Process().memory_info().rss - before
    persisted = [len(zlib.compress(orjson.dumps(s.to_dict()), 1)) for s in states]
    return {
        "rate": rate,
        "symbols": symbols,
        "trades_per_symbol": trades / symbols,
        "rss_per_symbol_mib": grown / symbols / 2**20,
        "persisted_kib": sum(persisted) / len(persisted) / 1024,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--rates", default="1,10,100", help="trades per second per symbol, comma-separated")
    parser.add_argument("--one", type=float, help=argparse.SUPPRESS)  # child mode: a single rate, JSON out
    args = parser.parse_args(argv)
    if args.one is not None:
        print(json.dumps(fill(args.symbols, args.one)))
        return 0
    print(f"{'trades/s/sym':>12} {'trades/sym (25 h)':>18} {'RSS MiB/sym':>12} {'persisted KiB/sym':>18}")
    for rate in (float(r) for r in args.rates.split(",")):
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.bench_engine_memory",
                "--symbols",
                str(args.symbols),
                "--one",
                str(rate),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        row = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"{row['rate']:>12g} {row['trades_per_symbol']:>18,.0f} {row['rss_per_symbol_mib']:>12.2f} "
            f"{row['persisted_kib']:>18.1f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
