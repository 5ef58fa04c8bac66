"""Outcome labels: what every signal (taken or vetoed) and every trade earned 12, 24 and 36 hours after it.

Distinct from the research barrier labels of ``backtest.research.labels`` (``feature_labels``: a price
path after every *evaluation*, in ATR, for fitting weights): an outcome label is money, from the
fills, fees and funding of a real, paper or backtest position, written back per sample and horizon
(table ``outcome_labels``).

Samples (per executor mode: ``paper`` or ``live``; a backtest run is one more source):

- a **signal**, ``sample_id`` = its signal id, ``t0`` = its ``eval_time``. *Taken* when the mode opened
  a position for it (the position's id derives from the signal id, ``execution.client_ids``); its
  P&L is that position's, from its fills. *Vetoed* otherwise (risk guard, slot occupied, stale...):
  its P&L is a hypothetical position entered at ``t0`` at the signal's price, long or short as the
  signal says, with the size the executor would have given it (``execution.sizing``: the tier's R in
  money over the signal's risk distance, the strategy's multiplier when the signal carries one) and
  the taker fee on that entry; it is never exited, so at every horizon it is open. A vetoed signal
  the executor could not have sized (no positive risk distance, an unknown tier) has no label.
- a **trade**, ``sample_id`` = its position id, ``t0`` = its entry time (the position's ``opened``
  event: its last entry fill). Every opened position is one; its labels depend only on what happened
  up to ``t0 + h``, so a label written while the position was still open stays right after it closes.

At horizon ``h`` (end ``T = t0 + h``), with the position's fills up to ``T`` (time <= T) in time order:

- ``realized_pnl``: each exit fill (side opposite to the entry) realises ``sign x (price - average
  entry price) x qty`` (sign +1 LONG, -1 SHORT; average cost over the entry fills before it);
- ``unrealized_pnl``: the quantity still open at ``T`` marked at the **price at T**, the last trade
  price at or before ``T``: ``sign x (price at T - average entry price) x open qty``;
- ``gross_pnl`` = realized + unrealized;
- ``fees``: the commission of those fills (a rebate is negative); the hypothetical entry's is
  ``taker fee x price x qty``; closing the open quantity is not charged (it is marked, not sold);
- ``funding``: every funding settlement at a time ``F`` with ``t0 < F <= T`` charges the quantity open
  at ``F`` (fills before ``F``) ``sign x qty x mark price x rate`` (``execution.pnl.funding_payment``:
  > 0 paid, < 0 received). A settlement's rate and mark price are those of the newest md.mark record
  before ``F`` that announced ``F``, as the executor settles it (``execution.market_state``); without
  mark data no funding is known and none is charged;
- ``net_pnl`` = gross_pnl - fees - funding (quote currency);
- ``net_roi`` = net_pnl / basis, basis = the entry notional (entry fills' price x qty; the
  hypothetical entry's) divided by the leverage when it is known (the margin); the directional
  executor's positions carry no leverage, so the basis is the notional there;
- ``label``: ``pos`` when net_roi >= +threshold, ``neg`` when net_roi <= -threshold, else ``neutral``;
  the threshold is the strategy's (``LabelParams.thresholds``), 0.5 % by default.

No label (nothing written, tried again later) while ``T`` is after the caller's ``now``, or while the
price data does not reach ``T`` (no trade of the symbol in the hour from ``T`` on, ``PRICE_LOOKBACK_MS``:
the price at ``T`` is not final yet, or the data ends or has a gap there), or when no trade in the
hour up to ``T`` is known (a gap in the data before ``T``). A taken signal whose entry had not filled by ``T`` is flat at ``T``: P&L 0, basis its later
entry (so it labels ``neutral``).

Pure and deterministic: every input (samples, prices, settlements, ``now_ms``) is an argument. The live
job (``review.label_job``) and the backtest (``backtest.outcome_labels``) turn their own records into
the same inputs (``samples_from_records``, ``settlements_from_marks``, ``PricePath``) and call
``label_sample``.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from execution.client_ids import signal_digest
from execution.config import ExecutorConfig
from execution.domain import direction_sign
from execution.pnl import funding_payment
from execution.sizing import SizingError, position_size, r_usd_for_tier, signal_multiplier

HOUR_MS = 3_600_000
DEFAULT_HORIZONS_H: tuple[int, ...] = (12, 24, 36)
DEFAULT_THRESHOLD = 0.005  # 0.5 % of the basis
# the price at T is the last trade at or before T no older than this; an older one means a data gap
PRICE_LOOKBACK_MS = HOUR_MS

SampleKind = Literal["signal", "trade"]
Label = Literal["pos", "neg", "neutral"]


@dataclass(frozen=True, slots=True)
class Fill:
    time_ms: int
    side: str  # BUY | SELL
    price: float
    qty: float
    fee: float  # quote currency, > 0 paid


@dataclass(frozen=True, slots=True)
class Settlement:
    """One funding settlement of a symbol: at ``time_ms``, ``rate`` on the ``mark_price``."""

    time_ms: int
    rate: float
    mark_price: float


@dataclass(frozen=True, slots=True)
class Sample:
    kind: SampleKind
    sample_id: str
    strategy: str
    config_hash: str
    exchange: str
    symbol: str
    direction: str  # LONG | SHORT
    t0_ms: int
    fills: tuple[Fill, ...]  # the position's fills (entries and exits), or the hypothetical entry
    taken: bool  # a trade, or a signal that opened a position; False: vetoed (hypothetical entry)
    position_id: str | None = None
    leverage: float | None = None
    config_rev: int = 0  # the strategy revision (0: a file never registered)

    @property
    def market(self) -> tuple[str, str]:
        return (self.exchange, self.symbol)


@dataclass(frozen=True, slots=True)
class LabelParams:
    horizons_h: tuple[int, ...] = DEFAULT_HORIZONS_H
    default_threshold: float = DEFAULT_THRESHOLD
    thresholds: Mapping[str, float] = field(default_factory=dict)  # per strategy, a fraction

    def __post_init__(self) -> None:
        if not self.horizons_h or any(h <= 0 for h in self.horizons_h):
            raise ValueError("horizons must be positive whole hours")
        for name, value in {"default": self.default_threshold, **self.thresholds}.items():
            if not 0 <= value < 1:
                raise ValueError(f"threshold of {name} must be a fraction in [0, 1), got {value}")

    def threshold(self, strategy: str) -> float:
        return self.thresholds.get(strategy, self.default_threshold)

    @property
    def max_horizon_ms(self) -> int:
        return max(self.horizons_h) * HOUR_MS


@dataclass(frozen=True, slots=True)
class OutcomeLabel:
    kind: SampleKind
    sample_id: str
    horizon_h: int
    strategy: str
    config_hash: str
    exchange: str
    symbol: str
    direction: str
    taken: bool
    position_id: str | None
    t0_ms: int
    price_at_horizon: float
    qty_open: float
    realized_pnl: float
    unrealized_pnl: float
    gross_pnl: float
    fees: float
    funding: float
    net_pnl: float
    basis: float
    net_roi: float
    threshold: float
    label: Label
    config_rev: int = 0


class PricePath:
    """Trade prices of one market in time order (ties in the exchange's order): ``at(T)``, the last
    trade at or before T; ``reaches(T)``, whether a trade at or after T (within ``PRICE_LOOKBACK_MS``)
    is known. A caller may pass only the trades these two answers depend on (``backtest.outcome_labels``
    keeps every price change and each minute's first and last trade; ``review.label_job`` reads the
    trade before and after each horizon end)."""

    __slots__ = ("_prices", "_times")

    def __init__(self, times: Sequence[int], prices: Sequence[float]) -> None:
        self._times = list(times)
        self._prices = list(prices)
        if any(b < a for a, b in zip(self._times, self._times[1:], strict=False)):
            raise ValueError("a price path must be in time order")

    def at(self, t_ms: int) -> tuple[int, float] | None:
        """(time, price) of the last trade at or before ``t_ms``; None before the first."""
        i = bisect.bisect_right(self._times, t_ms)
        return (self._times[i - 1], self._prices[i - 1]) if i else None

    def reaches(self, t_ms: int) -> bool:
        """A trade in ``[t_ms, t_ms + PRICE_LOOKBACK_MS)`` is known: the price at ``t_ms`` is final."""
        i = bisect.bisect_left(self._times, t_ms)
        return i < len(self._times) and self._times[i] < t_ms + PRICE_LOOKBACK_MS


def classify(net_roi: float, threshold: float) -> Label:
    if net_roi >= threshold:
        return "pos"
    if net_roi <= -threshold:
        return "neg"
    return "neutral"


def settlements_from_marks(marks: Iterable[Mapping[str, Any]]) -> list[Settlement]:
    """Funding settlements from md.mark records of one market (any order): per announced funding time
    F, the rate and mark price of the newest record before F that announced it."""
    newest: dict[int, tuple[int, float, float]] = {}
    for m in marks:
        f, t = int(m["next_funding_time"]), int(m["event_time"])
        if t < f and (f not in newest or t >= newest[f][0]):
            newest[f] = (t, float(m["funding_rate"]), float(m["mark_price"]))
    return [Settlement(f, rate, mark) for f, (_, rate, mark) in sorted(newest.items())]


def _entry_side(direction: str) -> str:
    return "BUY" if direction_sign(direction) > 0 else "SELL"


def _open_qty_before(fills: Sequence[Fill], entry_side: str, t_ms: int) -> float:
    """Quantity open just before ``t_ms`` (fills strictly before it)."""
    qty = 0.0
    for f in fills:
        if f.time_ms < t_ms:
            qty += f.qty if f.side == entry_side else -f.qty
    return max(qty, 0.0)


def label_sample(
    sample: Sample,
    horizon_h: int,
    prices: PricePath | None,
    settlements: Sequence[Settlement],
    params: LabelParams,
    now_ms: int,
) -> OutcomeLabel | None:
    """The sample's label at ``horizon_h`` (module docstring); None when it has none yet."""
    end = sample.t0_ms + horizon_h * HOUR_MS
    if end > now_ms or prices is None or not prices.reaches(end):
        return None
    point = prices.at(end)
    if point is None or end - point[0] > PRICE_LOOKBACK_MS:
        return None
    price = point[1]
    sign = direction_sign(sample.direction)
    entry_side = _entry_side(sample.direction)
    # a total order, so the sums do not depend on the order the caller read the fills in
    fills = sorted(sample.fills, key=lambda f: (f.time_ms, f.side, f.price, f.qty, f.fee))
    qty = cost = realized = fees = 0.0
    for f in fills:
        if f.time_ms > end:
            break
        fees += f.fee
        if f.side == entry_side:
            qty += f.qty
            cost += f.qty * f.price
        elif qty > 0:
            avg = cost / qty
            closed = min(f.qty, qty)
            realized += sign * (f.price - avg) * closed
            cost -= avg * closed
            qty -= closed
    unrealized = sign * (price - cost / qty) * qty if qty > 0 else 0.0
    funding = sum(
        funding_payment(sample.direction, _open_qty_before(fills, entry_side, s.time_ms), s.mark_price, s.rate)
        for s in settlements
        if sample.t0_ms < s.time_ms <= end
    )
    notional = sum(f.qty * f.price for f in fills if f.side == entry_side)
    basis = notional / sample.leverage if sample.leverage else notional
    gross = realized + unrealized
    net = gross - fees - funding
    roi = net / basis if basis > 0 else 0.0
    threshold = params.threshold(sample.strategy)
    return OutcomeLabel(
        sample.kind,
        sample.sample_id,
        horizon_h,
        sample.strategy,
        sample.config_hash,
        sample.exchange,
        sample.symbol,
        sample.direction,
        sample.taken,
        sample.position_id,
        sample.t0_ms,
        price,
        qty,
        realized,
        unrealized,
        gross,
        fees,
        funding,
        net,
        basis,
        roi,
        threshold,
        classify(roi, threshold),
        sample.config_rev,
    )


def label_samples(
    samples: Iterable[Sample],
    prices: Mapping[tuple[str, str], PricePath],
    settlements: Mapping[tuple[str, str], Sequence[Settlement]],
    params: LabelParams,
    now_ms: int,
) -> list[OutcomeLabel]:
    """Every label the samples have at ``params.horizons_h`` (those not yet due are left out)."""
    out = []
    for sample in samples:
        for h in params.horizons_h:
            label = label_sample(
                sample, h, prices.get(sample.market), settlements.get(sample.market, ()), params, now_ms
            )
            if label is not None:
                out.append(label)
    return out


# ------------------------------------------------------------------------------------------ samples
def fill_from_record(rec: Mapping[str, Any]) -> Fill:
    return Fill(int(rec["event_time"]), str(rec["side"]), float(rec["price"]), float(rec["qty"]), float(rec["fee"]))


def order_digest(client_order_id: str) -> str | None:
    """The signal digest a directional order id carries (``tf<digest>-<leg>``), else None."""
    head = client_order_id.split("-", 1)[0]
    return head[2:] if head.startswith("tf") and "-" in client_order_id else None


def hypothetical_entry(signal: Mapping[str, Any], config: ExecutorConfig) -> Fill | None:
    """The entry a vetoed signal would have had: at its price and eval time, the executor's size, the
    taker fee. None when the executor could not have sized it."""
    try:
        # the executor's own reading: the engine's size_mult (confidence model, canary share), else the tier's
        r_usd = r_usd_for_tier(config, str(signal["tier"]), signal_multiplier(signal))
        size = position_size(r_usd, float(signal["risk_distance"]))
    except SizingError:
        return None
    price = float(signal["price"])
    if not (math.isfinite(price) and price > 0):
        return None
    fee = config.fees.taker * price * size.qty
    return Fill(int(signal["eval_time"]), _entry_side(str(signal["direction"])), price, size.qty, fee)


def samples_from_records(
    signals: Iterable[Mapping[str, Any]],
    opened: Iterable[Mapping[str, Any]],
    fills: Iterable[Mapping[str, Any]],
    config: ExecutorConfig,
    *,
    trades: bool = True,
) -> list[Sample]:
    """Samples of one executor mode from its records (Avro-shaped dicts, times in ms): the signals, the
    positions' ``opened`` events and the fills. A fill belongs to the position whose id carries the
    same signal digest as its client order id. ``trades=False``: signals only."""
    by_digest: dict[str, list[Fill]] = {}
    for rec in fills:
        digest = order_digest(str(rec["client_order_id"]))
        if digest is not None:
            by_digest.setdefault(digest, []).append(fill_from_record(rec))
    positions = {str(p["signal_id"]): p for p in opened}
    out: list[Sample] = []
    for sig in signals:
        sid = str(sig["signal_id"])
        pos = positions.get(sid)
        if pos is not None:
            sample_fills = tuple(by_digest.get(signal_digest(sid), ()))
        else:
            entry = hypothetical_entry(sig, config)
            if entry is None:
                continue
            sample_fills = (entry,)
        out.append(
            Sample(
                "signal",
                sid,
                str(sig["strategy"]),
                str(sig["config_hash"]),
                str(sig["exchange"]),
                str(sig["symbol"]),
                str(sig["direction"]),
                int(sig["eval_time"]),
                sample_fills,
                pos is not None,
                None if pos is None else str(pos["position_id"]),
                config_rev=int(sig.get("config_rev") or 0),
            )
        )
    if trades:
        for pos in positions.values():
            out.append(_trade_sample(pos, tuple(by_digest.get(signal_digest(str(pos["signal_id"])), ()))))
    return out


def _trade_sample(pos: Mapping[str, Any], fills: tuple[Fill, ...]) -> Sample:
    return Sample(
        "trade",
        str(pos["position_id"]),
        str(pos["strategy"]),
        str(pos["config_hash"]),
        str(pos["exchange"]),
        str(pos["symbol"]),
        str(pos["direction"]),
        int(pos["event_time"]),
        fills,
        True,
        str(pos["position_id"]),
        config_rev=int(pos.get("config_rev") or 0),
    )
