"""Performance metrics of closed backtest trades, in R and USDT: the numbers every report format shows.

Why a module of its own: the JSON, Markdown, PNG and HTML reports and the `backtest_runs` row all
show the same numbers, so they are computed once, here, by small pure functions that the unit tests
check against hand-computed values. Definitions (docs/concepts/backtest.md, "Backtest report", repeats them):

- net R of a trade = gross − fees − slippage − funding (all in R of that trade, as `BacktestTrade`
  carries them). Totals add R across trades as the old system did (a heavy trade's 1R is 1.5 × a
  standard one's in USDT; the USDT columns weigh that).
- win: net pnl_r > 0; loss: net pnl_r < 0; a trade at exactly 0 is break-even (neither).
- profit factor = Σ net R of wins / |Σ net R of losses|; None when there is no loss (undefined).
- expectancy = mean net R per trade; average win / loss = mean net R of wins / of losses.
- equity = cumulative net R over trades ordered by exit time (starting at 0); drawdown = equity −
  its running peak (≤ 0, the peak includes the starting 0); max drawdown = the largest such fall,
  reported as a positive number of R.
- Sharpe: the daily series is net R realised per UTC day (by exit time) over every day of the run's
  range, days without a closed trade counted as 0. Sharpe per day = mean / sample standard deviation
  (n − 1) of that series; annualised = Sharpe per day × √365 (crypto trades every day). None with
  fewer than two days or a constant series.
- UTC hour = the hour of the entry time; score band = the score rounded down to a multiple of
  `SCORE_BAND_WIDTH` ("80–85" holds 80 ≤ score < 85).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from backtest.model import BacktestTrade

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
TRADING_DAYS_PER_YEAR = 365
SCORE_BAND_WIDTH = 5.0


def by_exit(trades: Iterable[BacktestTrade]) -> list[BacktestTrade]:
    """Trades in the order they closed (ties by entry time, then position id, so the order is stable)."""
    return sorted(trades, key=lambda t: (t.exit_time, t.entry_time, t.position_id))


def profit_factor(pnls: Iterable[float]) -> float | None:
    won = lost = 0.0
    for p in pnls:
        if p > 0:
            won += p
        elif p < 0:
            lost -= p
    return won / lost if lost > 0 else None


def equity_curve(pnls: Iterable[float]) -> list[float]:
    """Cumulative sum after each trade (the equity before the first trade is 0 and not listed)."""
    out, total = [], 0.0
    for p in pnls:
        total += p
        out.append(total)
    return out


def drawdowns(equity: Iterable[float]) -> list[float]:
    """Equity minus its running peak (≤ 0); the peak starts at 0, the equity before any trade."""
    out, peak = [], 0.0
    for e in equity:
        peak = max(peak, e)
        out.append(e - peak)
    return out


def max_drawdown(pnls: Iterable[float]) -> float:
    """The largest peak-to-trough fall of the cumulative net R, as a positive number (0 without a fall)."""
    return -min(drawdowns(equity_curve(pnls)), default=0.0) or 0.0


def utc_day(ms: int) -> int:
    """Days since 1970-01-01 (UTC) of a Unix-millisecond time."""
    return ms // DAY_MS


def day_label(day: int) -> str:
    return datetime.fromtimestamp(day * DAY_MS / 1000, UTC).strftime("%Y-%m-%d")


def daily_net_r(trades: Iterable[BacktestTrade], from_ms: int, to_ms: int) -> list[tuple[int, float]]:
    """(UTC day, net R closed that day) for every day of [from_ms, to_ms), zero days included.

    A trade closing outside the range (it should not) widens the range rather than vanish.
    """
    per_day: dict[int, float] = {}
    for t in trades:
        d = utc_day(t.exit_time)
        per_day[d] = per_day.get(d, 0.0) + t.pnl_r_net
    first = utc_day(from_ms)
    last = utc_day(max(to_ms - 1, from_ms))
    if per_day:
        first, last = min(first, min(per_day)), max(last, max(per_day))
    return [(d, per_day.get(d, 0.0)) for d in range(first, last + 1)]


@dataclass(frozen=True, slots=True)
class Sharpe:
    days: int
    mean_r: float | None
    std_r: float | None
    per_day: float | None
    annualised: float | None


def sharpe(daily: Sequence[float]) -> Sharpe:
    n = len(daily)
    if n < 2:
        return Sharpe(n, daily[0] if n else None, None, None, None)
    mean = sum(daily) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in daily) / (n - 1))
    if std <= 1e-12 * max(1.0, abs(mean)):
        return Sharpe(n, mean, std, None, None)
    per_day = mean / std
    return Sharpe(n, mean, std, per_day, per_day * math.sqrt(TRADING_DAYS_PER_YEAR))


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


@dataclass(frozen=True, slots=True)
class Summary:
    """Headline numbers of a set of trades; USDT values are the R values × each trade's 1R in USDT."""

    trades: int
    wins: int
    losses: int
    breakeven: int
    win_rate: float | None
    gross_r: float
    fees_r: float
    slippage_r: float
    funding_r: float
    net_r: float
    gross_usd: float
    fees_usd: float
    slippage_usd: float
    funding_usd: float
    net_usd: float
    profit_factor: float | None
    expectancy_r: float | None
    avg_win_r: float | None
    avg_loss_r: float | None
    max_drawdown_r: float

    def as_dict(self) -> dict:
        return asdict(self)


def summarise(trades: Iterable[BacktestTrade]) -> Summary:
    ordered = by_exit(trades)
    net = [t.pnl_r_net for t in ordered]
    wins = [p for p in net if p > 0]
    losses = [p for p in net if p < 0]
    n = len(ordered)
    return Summary(
        trades=n,
        wins=len(wins),
        losses=len(losses),
        breakeven=n - len(wins) - len(losses),
        win_rate=len(wins) / n if n else None,
        gross_r=sum(t.pnl_r_gross for t in ordered),
        fees_r=sum(t.fees_r for t in ordered),
        slippage_r=sum(t.slippage_r for t in ordered),
        funding_r=sum(t.funding_r for t in ordered),
        net_r=sum(net),
        gross_usd=sum(t.pnl_r_gross * t.r_usd for t in ordered),
        fees_usd=sum(t.fees_r * t.r_usd for t in ordered),
        slippage_usd=sum(t.slippage_r * t.r_usd for t in ordered),
        funding_usd=sum(t.funding_r * t.r_usd for t in ordered),
        net_usd=sum(t.pnl_r_net * t.r_usd for t in ordered),
        profit_factor=profit_factor(net),
        expectancy_r=_mean(net),
        avg_win_r=_mean(wins),
        avg_loss_r=_mean(losses),
        max_drawdown_r=max_drawdown(net),
    )


def utc_hour(t: BacktestTrade) -> str:
    return f"{(t.entry_time // HOUR_MS) % 24:02d}"


def score_band(t: BacktestTrade, width: float = SCORE_BAND_WIDTH) -> str:
    low = math.floor(t.score / width) * width
    return f"{low:g}–{low + width:g}"


def _band_low(label: str) -> float:
    return float(label.split("–", 1)[0])


DIMENSIONS: dict[str, Callable[[BacktestTrade], str]] = {
    "strategy": lambda t: t.strategy,
    "symbol": lambda t: t.symbol,
    "tier": lambda t: t.tier,
    "utc_hour": utc_hour,
    "exit_reason": lambda t: t.exit_reason,
    "score_band": score_band,
}
_SORT: dict[str, Callable[[str], object]] = {"score_band": _band_low}


def breakdown(trades: Iterable[BacktestTrade], dimension: str) -> list[tuple[str, str, Summary]]:
    """(strategy, key, summary) per strategy × value of `dimension`, so A/B strategies stay apart.

    Rows are ordered by strategy, then key (score bands numerically).
    """
    key_of = DIMENSIONS[dimension]
    groups: dict[tuple[str, str], list[BacktestTrade]] = {}
    for t in trades:
        groups.setdefault((t.strategy, key_of(t)), []).append(t)
    sort_key = _SORT.get(dimension, lambda k: k)
    ordered = sorted(groups, key=lambda sk: (sk[0], sort_key(sk[1])))
    return [(s, k, summarise(groups[(s, k)])) for s, k in ordered]
