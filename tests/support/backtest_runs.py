"""Builders of plausible `RunResult`s for the report tests (no tests in this module).

`make_trade` builds one closed position whose pnl columns follow the execution model's arithmetic
(DESIGN §5: gross by exit reason, fees and slippage as a rate × price / R per side, funding as rate ×
mark / R at each funding time the position spans, net = gross − fees − slippage − funding).
`make_run` draws a seeded run of several strategies, symbols, tiers and every exit reason, with a
funding payment, partial coverage, missing days and bad rows; `hostile=True` gives names full of
HTML/Markdown/mathtext specials.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import replace

from backtest.model import BacktestTrade, CoverageRow, RunResult, StrategyInfo

T0 = 1_709_251_200_000  # 2024-03-01T00:00:00Z
HOUR = 3_600_000
DAY = 24 * HOUR
FUNDING_EVERY = 8 * HOUR
TAKER, SLIPPAGE = 0.0005, 0.0002
BASE_PRICE = {"BTCUSDT": 62_000.0, "ETHUSDT": 3_400.0, "SOLUSDT": 130.0, "XRPUSDT": 0.62}
HOSTILE_STRATEGY = "</script><img src=x onerror=alert(1)>&amp;\"'$x$"
HOSTILE_SYMBOL = "X|Y<b>&$"


def make_trade(
    *,
    strategy: str = "v53",
    symbol: str = "BTCUSDT",
    direction: str = "LONG",
    tier: str = "standard",
    score: float = 80.0,
    entry_time: int = T0,
    duration_ms: int = HOUR,
    entry: float = 100.0,
    risk: float = 1.0,
    exit_reason: str = "sl",
    move_r: float = 0.0,
    tp1_r: float = 1.0,
    tp2_r: float = 2.0,
    funding_rate: float = 0.0,
    r_usd: float | None = None,
    position_id: str | None = None,
    fees: bool = True,
) -> BacktestTrade:
    sign = 1 if direction == "LONG" else -1
    tp1_hit = exit_reason in ("sl_be", "tp")
    gross = {"sl": -1.0, "sl_be": 0.5 * tp1_r, "tp": 0.5 * tp1_r + 0.5 * tp2_r}.get(exit_reason, move_r)
    exit_price = {"sl": entry - sign * risk, "sl_be": entry, "tp": entry + sign * tp2_r * risk}.get(
        exit_reason, entry + sign * move_r * risk
    )
    fees_r = TAKER * (entry + exit_price) / risk if fees else 0.0
    slippage_r = SLIPPAGE * (entry + exit_price) / risk if fees else 0.0
    exit_time = entry_time + duration_ms
    fundings = sum(
        1
        for k in range(entry_time // FUNDING_EVERY + 1, exit_time // FUNDING_EVERY + 1)
        if entry_time < k * FUNDING_EVERY <= exit_time
    )
    funding_r = fundings * sign * funding_rate * entry / risk  # positive rate: longs pay
    pid = position_id or f"{strategy}:{symbol}:{entry_time}:{direction}"
    return BacktestTrade(
        position_id=pid,
        signal_id=f"sig:{pid}",
        strategy=strategy,
        strategy_version="1.0",
        config_hash=f"hash-{strategy}",
        exchange="binance",
        symbol=symbol,
        direction=direction,
        tier=tier,
        score=score,
        entry_time=entry_time,
        exit_time=exit_time,
        entry_price=entry,
        exit_price=exit_price,
        sl_price=entry - sign * risk,
        tp1_price=entry + sign * tp1_r * risk,
        tp2_price=entry + sign * tp2_r * risk,
        risk_distance=risk,
        exit_reason=exit_reason,
        tp1_hit=tp1_hit,
        r_usd=r_usd if r_usd is not None else (300.0 if tier == "heavy" else 200.0),
        pnl_r_gross=gross,
        fees_r=fees_r,
        slippage_r=slippage_r,
        funding_r=funding_r,
        pnl_r_net=gross - fees_r - slippage_r - funding_r,
    )


def make_result(
    trades: list[BacktestTrade],
    *,
    strategies: list[str] | None = None,
    from_ms: int = T0,
    to_ms: int = T0 + DAY,
    partial: bool = False,
    **kw,
) -> RunResult:
    names = strategies or sorted({t.strategy for t in trades}) or ["v53"]
    symbols = sorted({t.symbol for t in trades}) or ["BTCUSDT"]
    base = dict(
        run_id="run-test",
        source="synthetic:1",
        exchange="binance",
        symbols=symbols,
        from_ms=from_ms,
        to_ms=to_ms,
        strategies=[StrategyInfo(n, "1.0", f"hash-{n}", {"name": n}) for n in names],
        trades=trades,
        initial_balance=10_000.0,
        started_at_ms=T0 + 10 * DAY,
        finished_at_ms=T0 + 10 * DAY + 42_000,
        partial=partial,
    )
    base.update(kw)
    return RunResult(**base)


def make_run(
    seed: int = 7,
    *,
    strategies: tuple[str, ...] = ("v53", "v54_tight"),
    symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT", "SOLUSDT"),
    days: int = 3,
    trades: int = 60,
    partial: bool = False,
    hostile: bool = False,
    run_id: str = "bt-20240301-demo",
) -> RunResult:
    rng = random.Random(seed)
    strategies = tuple(HOSTILE_STRATEGY if hostile and i == 1 else s for i, s in enumerate(strategies))
    symbols = tuple(HOSTILE_SYMBOL if hostile and i == len(symbols) - 1 else s for i, s in enumerate(symbols))
    to_ms = T0 + days * DAY
    out: list[BacktestTrade] = []
    reasons = ["sl", "sl_be", "tp", "timeout", "signal_flip"]
    for si, strat in enumerate(strategies):
        edge = 0.06 * si  # the second strategy trades a little better
        for i in range(trades):
            sym = symbols[i % len(symbols)]
            price = BASE_PRICE.get(sym, 10.0) * (1 + rng.uniform(-0.03, 0.03))
            heavy = rng.random() < 0.25
            reason = (
                reasons[i % len(reasons)]
                if i < len(reasons)
                else rng.choices(reasons, weights=[0.42 - edge, 0.18, 0.14 + edge, 0.18, 0.08])[0]
            )
            entry_time = T0 + int(rng.uniform(0.05, days - 0.25) * DAY) // 1000 * 1000
            out.append(
                make_trade(
                    strategy=strat,
                    symbol=sym,
                    direction=rng.choice(["LONG", "SHORT"]),
                    tier="heavy" if heavy else "standard",
                    score=round(rng.uniform(85, 99) if heavy else rng.uniform(75, 84.9), 1),
                    entry_time=entry_time,
                    duration_ms=int(rng.uniform(4, 230) * 60_000),
                    entry=price,
                    risk=price * rng.uniform(0.003, 0.008),
                    exit_reason=reason,
                    move_r=round(rng.uniform(-0.9, 1.1), 3),
                    funding_rate=0.0,
                    position_id=f"{strat}:{sym}:{i}",
                )
            )
    # one position held across a funding time (08:00 UTC on the first day), rate 0.01 %: a LONG pays
    out.append(
        make_trade(
            strategy=strategies[0],
            symbol=symbols[0],
            direction="LONG",
            score=81.5,
            entry_time=T0 + 7 * HOUR,
            duration_ms=2 * HOUR,
            entry=BASE_PRICE.get(symbols[0], 10.0),
            risk=BASE_PRICE.get(symbols[0], 10.0) * 0.004,
            exit_reason="timeout",
            move_r=0.4,
            funding_rate=0.0001,
            position_id=f"{strategies[0]}:funded",
        )
    )
    stop = T0 + DAY + 13 * HOUR if partial else None  # interrupted on day 2: nothing closes after the stop
    if stop is not None:
        out = [t for t in out if t.exit_time <= stop]
    hashes = {s: hashlib.sha256(f"{s}:{seed}".encode()).hexdigest()[:12] for s in strategies}
    evals = 17_280 * days
    coverage = []
    for sym in symbols:
        coverage += [
            CoverageRow("direction", sym, "aggTrades", evals, evals),
            CoverageRow("crowding", sym, "long_short_ratio", evals, evals - 288),
            CoverageRow("environment", sym, "open_interest", evals, evals),
            CoverageRow(
                "gates",
                sym,
                "book (OBI)",
                evals,
                evals // 3,
                "OBI approximated from bookTicker top of book; bookDepth missing for 2 days",
            ),
        ]
    coverage.append(
        CoverageRow("auxiliary", symbols[0], "coinbase_premium", evals, 0, "no public history (Coinbase premium)")
    )
    return RunResult(
        run_id=run_id,
        source="synthetic:7",
        exchange="binance",
        symbols=list(symbols),
        from_ms=T0,
        to_ms=to_ms,
        strategies=[StrategyInfo(s, "1.0", hashes[s], {"name": s, "entry": 75}) for s in strategies],
        trades=[replace(t, config_hash=hashes[t.strategy]) for t in out],
        initial_balance=10_000.0,
        started_at_ms=T0 + 30 * DAY,
        finished_at_ms=T0 + 30 * DAY + 84_500,
        partial=partial,
        events_processed=4_812_331,
        trades_processed=4_700_102,
        evaluations=evals * len(symbols),
        signals=len(out) + 11,
        coverage=coverage,
        missing=[f"2024-03-02 {symbols[-1]} metrics: no file (404)", f"2024-03-02 {symbols[0]} bookDepth: no file"],
        bad_rows=[f"{symbols[1]}-aggTrades-2024-03-01.csv:1042: quantity is not a number"],
        params={"fees": {"taker": TAKER, "maker": 0.0002}, "slippage_bps": 2.0, "funding": "fundingRate history"},
        processed_to_ms=stop,
    )


def with_trades(result: RunResult, trades: list[BacktestTrade]) -> RunResult:
    return replace(result, trades=trades)
