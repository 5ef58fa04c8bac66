"""`tapeflow watchlist`: the live ranking of venue pairs by executable spread, from ``xv_features``.

The ranking is taken at the newest evaluation in the table (event time, so a replay's is shown as
well as a live one): per coin its latest evaluation within ``window_s`` before that, every ordered
pair ranked by ``spread_sweep`` (selling the notional on the rich venue and buying it on the cheap
one, before fees), with the touch spread, its z-score against the last hour
(``(spread_sweep - mean) / σ`` of the 1 h window) and the funding difference on 8 h. Pairs whose swept
spread is missing are listed after it with the reason.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import psycopg

QUERY = """
WITH newest AS (SELECT eval_time AS t FROM xv_features ORDER BY eval_time DESC LIMIT 1),
latest AS (SELECT f.coin, max(f.eval_time) AS t FROM xv_features f, newest n
           WHERE f.eval_time > n.t - make_interval(secs => %(window_s)s) GROUP BY f.coin)
SELECT f.coin, f.eval_time, f.sell_venue, f.buy_venue, f.spread_sweep, f.spread_top, f.funding_diff_8h,
       (f.stats->>'sweep_1h_mean')::float8, (f.stats->>'sweep_1h_std')::float8, f.sweep_notional_usd,
       f.missing->>'spread_sweep'
FROM xv_features f JOIN latest l ON f.coin = l.coin AND f.eval_time = l.t
ORDER BY f.spread_sweep DESC NULLS LAST, f.coin, f.sell_venue, f.buy_venue
"""


@dataclass(frozen=True)
class RankedPair:
    coin: str
    eval_time: datetime
    sell_venue: str
    buy_venue: str
    spread_sweep: float | None
    spread_top: float | None
    funding_diff_8h: float | None
    sweep_1h_mean: float | None
    sweep_1h_std: float | None
    sweep_notional_usd: float
    missing: str | None  # why spread_sweep is missing

    @property
    def z_1h(self) -> float | None:
        if self.spread_sweep is None or self.sweep_1h_mean is None or not self.sweep_1h_std:
            return None
        return (self.spread_sweep - self.sweep_1h_mean) / self.sweep_1h_std

    def as_dict(self) -> dict:
        return {**asdict(self), "eval_time": self.eval_time.isoformat(), "z_1h": self.z_1h}


def ranking(conn: psycopg.Connection, window_s: float = 300.0) -> list[RankedPair] | None:
    """Every pair at its coin's latest evaluation, best swept spread first; None when the table does
    not exist (the database was not migrated since the watchlist was added)."""
    if conn.execute("SELECT to_regclass('xv_features')").fetchone()[0] is None:
        return None
    rows = conn.execute(QUERY, {"window_s": window_s}).fetchall()
    return [RankedPair(row[0], row[1].astimezone(UTC), *row[2:]) for row in rows]


def _bp(value: float | None) -> str:
    return "-" if value is None else f"{value * 10_000:.2f}"


def render(pairs: list[RankedPair], limit: int = 20) -> str:
    if not pairs:
        return (
            "no cross-venue features yet: the watchlist service (`tapeflow cross-venue`, run by `tapeflow up`) "
            "writes them to xv_features once a coin has books from two venues (add venues with "
            "`tapeflow produce --exchange bybit|okx`)"
        )
    ready = [p for p in pairs if p.spread_sweep is not None]
    missing = [p for p in pairs if p.spread_sweep is None]
    newest = max(p.eval_time for p in pairs)
    notional = pairs[0].sweep_notional_usd
    lines = [
        f"cross-venue watchlist at {newest:%Y-%m-%d %H:%M:%S} UTC: {len(ready)} pair(s) executable, "
        f"{len(missing)} missing; spreads in bp before fees, swept for {notional:,.0f} USD",
        f"{'#':>3}  {'coin':<8} {'sell -> buy':<20} {'swept':>8} {'top':>8} {'z 1h':>6} {'fund 8h':>8}  at",
    ]
    for i, p in enumerate(ready[:limit], 1):
        z = "-" if p.z_1h is None else f"{p.z_1h:.1f}"
        lines.append(
            f"{i:>3}  {p.coin:<8} {p.sell_venue + ' -> ' + p.buy_venue:<20} {_bp(p.spread_sweep):>8} "
            f"{_bp(p.spread_top):>8} {z:>6} {_bp(p.funding_diff_8h):>8}  {p.eval_time:%H:%M:%S}"
        )
    if len(ready) > limit:
        lines.append(f"     ... {len(ready) - limit} more")
    for p in missing[:limit]:
        lines.append(f"  missing {p.coin} {p.sell_venue} -> {p.buy_venue}: {p.missing or 'unknown'}")
    if len(missing) > limit:
        lines.append(f"  ... {len(missing) - limit} more missing")
    return "\n".join(lines)
