"""What leg latency costs the shipped watchlist strategy.

The shipped strategy (``stream_apps/watchlist/strategies/xv_convergence.yaml``) is backtested on one
generated multi-venue session (``backtest.watchlist.synthetic``: BTC, ETH and SOL on Binance, Bybit and
OKX) with the instant model (both legs fill at the signal's books: the baseline the watchlist had) and
with the leg fill model (``execution.leg_fills``) at every venue's latency set to 0, 50, 150 and 500 ms
(``tapeflow watchlist backtest --leg-latency-ms N``). Each run prints its pairs and the parts of its
pnl, and its difference to the instant model and to the 0 ms run, attributed by cause: the price the
legs were decided at (gross), fees, the sweep, leg latency (the touch moving while a leg travels),
funding, liquidation. The 0 ms run has the fill model's IOC limits, retries and unwinds without any
travel time (a retry meets the very book its leg missed on).

Also timed (the clock is read only here): CPU seconds per run (``time.process_time``: the machine is
shared, wall time mostly measures the neighbours) and the ratio to the instant model's run (the
baseline) and to the target, a 4 h session of three coins backtested in under a minute of CPU.

Run: ``.venv/bin/python -m benchmarks.bench_leg_latency [--minutes 240] [--coins BTC,ETH,SOL] [--seed 1]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from backtest.watchlist.runner import PNL_PARTS, run_backtest
from backtest.watchlist.synthetic import session
from stream_apps.watchlist.strategy import load_watchlist_strategy

STRATEGY = Path(__file__).resolve().parents[1] / "stream_apps/watchlist/strategies/xv_convergence.yaml"
LATENCIES = (None, 0, 50, 150, 500)
TARGET_S = 60.0
CAUSES = {
    "gross_usd": "price at decision",
    "fees_usd": "fees",
    "slippage_usd": "sweep",
    "leg_latency_usd": "leg latency",
    "funding_usd": "funding",
    "liquidation_usd": "liquidation",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=240.0)
    parser.add_argument("--coins", default="BTC,ETH,SOL")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    strategy = load_watchlist_strategy(STRATEGY)
    coins = tuple(c.strip().upper() for c in args.coins.split(","))
    events = session(args.seed, args.minutes, coins, tuple(strategy.venues))
    print(
        f"{strategy.name} {strategy.version} (config {strategy.config_hash[:12]}) on synthetic:{args.seed}, "
        f"{args.minutes:g} min, {','.join(coins)} on {','.join(strategy.venues)}: {len(events):,} inputs"
    )
    runs = {}
    for latency in LATENCIES:
        start = time.process_time()
        result = run_backtest(strategy, events, leg_latency_ms=latency)
        runs[latency] = (time.process_time() - start, result)
    base_s = runs[None][0]
    print(
        f"{'leg latency':<12} {'pairs':>5} {'closed':>6} {'failed':>6} {'partial':>7} "
        + " ".join(f"{k.removesuffix('_usd'):>12}" for k in PNL_PARTS)
        + f" {'CPU s':>8} {'x instant':>9} "
        f"{'x target':>8}"
    )
    for latency, (seconds, result) in runs.items():
        s = result.summary
        partial = sum(o.get("status") == "PARTIAL" for o in result.orders)
        name = "instant" if latency is None else f"{latency} ms"
        print(
            f"{name:<12} {s['pairs']:>5} {s['closed']:>6} {s['failed']:>6} {partial:>7} "
            + " ".join(f"{s[k]:>+12.2f}" for k in PNL_PARTS)
            + f" {seconds:>8.1f} {seconds / base_s:>9.2f} {seconds / TARGET_S:>8.2f}"
        )
    for base, title in ((None, "the instant model (no leg latency)"), (0, "0 ms (the same fill model, no travel)")):
        ref = runs[base][1].summary
        print(f"difference to {title}, by cause (USDT; + = more profit):")
        for latency in [x for x in LATENCIES if x not in (None, base) and (base is None or x > base)]:
            s = runs[latency][1].summary
            parts = {cause: (s[k] - ref[k]) * (1 if k == "gross_usd" else -1) for k, cause in CAUSES.items()}
            name = f"{latency} ms"
            print(
                f"  {name:>6}: net {s['net_usd'] - ref['net_usd']:+.2f} = "
                + ", ".join(f"{cause} {v:+.2f}" for cause, v in parts.items())
            )


if __name__ == "__main__":
    main()
