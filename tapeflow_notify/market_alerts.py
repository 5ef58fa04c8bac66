"""Market alerts from the engine's feature records: OI spikes, CVD–price divergences,
liquidation cascades and pulled walls, one message per symbol and kind per episode.

Pure and deterministic: `MarketAlerts.notes_for(record)` reads a `features` record (FeatureEvaluation:
`exchange`, `symbol`, `eval_time`, `inputs`) and returns the Notes it is worth; time is the record's
`eval_time`, never the wall clock, so the same records in the same order give the same alerts.

Rules, on the detector fields of `inputs` (stream_apps/core/detectors/flow.py and book.py):

| kind | condition | setting (default) |
|---|---|---|
| `oi_spike` | `abs(oi_spike_z)` ≥ threshold | `oi_spike_z` (3.0) |
| `divergence` | `cvd_divergence` is ±1 and `cvd_divergence_price` ≥ threshold | `divergence_price` (0.001) |
| `liquidation_cascade` | `liq_cascade_long` or `_short` is 1, that side's `liq_*_usd` ≥ threshold | `liquidation_usd` (0) |
| `wall_pulled` | `wall_pulled_bid + wall_pulled_ask` ≥ threshold | `wall_pulled` (1) |

Deduplication per (exchange, symbol, kind): an alert opens an episode, and while the condition stays
true nothing more is sent; it re-arms once a record shows the condition false. A new episode alerts
only when at least `cooldown_s` (300) have passed since the kind's last alert for the symbol (if it is
still true when the cooldown ends, it alerts then). A record without the fields a rule needs (detector
off, value not available yet) changes nothing: it neither alerts nor clears an episode. The engine
writes one feature record per strategy and tick, so the same tick arriving once per strategy is one
held condition, not several alerts. What passes goes through the dispatcher's rate limit like any note.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from tapeflow_notify.messages import Note


@dataclass(frozen=True)
class AlertRules:
    """Thresholds of the market alerts (reaching a threshold fires)."""

    oi_spike_z: float = 3.0  # |z-score of the 5-minute OI change|
    divergence_price: float = 0.001  # how far price made its new high/low (relative: 0.001 = 10 bps)
    liquidation_usd: float = 0.0  # least USD of the cascading side over the detector's window
    wall_pulled: float = 1.0  # walls pulled (both sides) over the detector's window
    cooldown_s: float = 300.0  # per symbol and kind, between two alerts

    @classmethod
    def from_mapping(cls, values: Mapping[str, float]) -> AlertRules:
        """Defaults with `values` applied (e.g. TAPEFLOW_NOTIFY_ALERT_THRESHOLDS); ValueError on an unknown
        name or a negative value."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown alert threshold(s) {', '.join(unknown)}: expected some of {', '.join(sorted(known))}"
            )
        parsed = {k: float(v) for k, v in values.items()}
        negative = sorted(k for k, v in parsed.items() if not v >= 0)
        if negative:
            raise ValueError(f"alert threshold(s) {', '.join(negative)} must be a number >= 0")
        return replace(cls(), **parsed)


def _get(inputs: Mapping[str, Any], name: str) -> float | None:
    value = inputs.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _fmt(value: float, digits: int = 4) -> str:
    return f"{value:.{digits}g}"


# Each rule: (inputs, rules) -> None when its fields are missing, "" when the condition is false,
# otherwise the message's detail text.
Rule = Callable[[Mapping[str, Any], AlertRules], str | None]


def _oi_spike(inputs: Mapping[str, Any], rules: AlertRules) -> str | None:
    z = _get(inputs, "oi_spike_z")
    if z is None:
        return None
    if abs(z) < rules.oi_spike_z:
        return ""
    change = _get(inputs, "oi_change_5m")
    moved = f", OI {change * 100:+.2f}% in 5 min" if change is not None else ""
    return f"open interest {'up' if z > 0 else 'down'}, z {z:+.2f}{moved}"


def _divergence(inputs: Mapping[str, Any], rules: AlertRules) -> str | None:
    sign, price = _get(inputs, "cvd_divergence"), _get(inputs, "cvd_divergence_price")
    if sign is None:
        return None
    if sign == 0:
        return ""
    if price is None:
        return None
    if price < rules.divergence_price:
        return ""
    cvd = _get(inputs, "cvd_divergence_cvd")
    if sign < 0:
        text = f"bearish: price {price * 100:.2f}% above its high, CVD not"
    else:
        text = f"bullish: price {price * 100:.2f}% below its low, CVD not"
    return text + (f" (CVD {_fmt(cvd)} short of it)" if cvd is not None else "")


def _liquidation_cascade(inputs: Mapping[str, Any], rules: AlertRules) -> str | None:
    known, parts = False, []
    for side in ("long", "short"):
        flag, usd = _get(inputs, f"liq_cascade_{side}"), _get(inputs, f"liq_{side}_usd")
        if flag is None:
            continue
        known = True
        if flag >= 1 and (usd or 0.0) >= rules.liquidation_usd:
            count = _get(inputs, f"liq_{side}_count")
            parts.append(
                f"{side}s liquidated: {'' if count is None else f'{count:.0f}, '}"
                f"{'-' if usd is None else f'{usd:,.0f}'} USD"
            )
    if not known:
        return None
    return "; ".join(parts) + " (at least: one liquidation a second is reported)" if parts else ""


def _wall_pulled(inputs: Mapping[str, Any], rules: AlertRules) -> str | None:
    bid, ask = _get(inputs, "wall_pulled_bid"), _get(inputs, "wall_pulled_ask")
    if bid is None and ask is None:
        return None
    total = (bid or 0.0) + (ask or 0.0)
    if total < rules.wall_pulled:
        return ""
    sides = [f"{n:.0f} {side}" for side, n in (("bid", bid), ("ask", ask)) if n]
    return f"wall{'s' if total != 1 else ''} pulled: {', '.join(sides)}"


RULES: dict[str, Rule] = {
    "oi_spike": _oi_spike,
    "divergence": _divergence,
    "liquidation_cascade": _liquidation_cascade,
    "wall_pulled": _wall_pulled,
}


@dataclass
class _Episode:
    open: bool = False  # alerted for the condition that holds now
    last_alert_ms: int | None = None


class MarketAlerts:
    """The market-alert rules with their per (exchange, symbol, kind) episode state."""

    def __init__(self, rules: AlertRules | None = None) -> None:
        self.rules = rules or AlertRules()
        self.cooldown_ms = int(round(self.rules.cooldown_s * 1000))
        self.state: dict[tuple[str, str, str], _Episode] = {}

    def notes_for(self, record: Mapping[str, Any]) -> list[Note]:
        """The alerts a feature record is worth (usually none)."""
        inputs = record.get("inputs")
        symbol, exchange, t = record.get("symbol"), record.get("exchange"), record.get("eval_time")
        if not isinstance(inputs, Mapping) or not symbol or not isinstance(t, int) or isinstance(t, bool):
            return []
        exchange = exchange or "-"
        out: list[Note] = []
        for kind, rule in RULES.items():
            detail = rule(inputs, self.rules)
            if detail is None:  # not known: the episode stays as it is
                continue
            key = (exchange, symbol, kind)
            episode = self.state.get(key)
            if not detail:
                if episode is not None:
                    episode.open = False
                continue
            if episode is None:
                episode = self.state[key] = _Episode()
            if episode.open:
                continue
            if episode.last_alert_ms is not None and t - episode.last_alert_ms < self.cooldown_ms:
                continue  # still armed: alerts once the cooldown is over if the condition holds
            episode.open, episode.last_alert_ms = True, t
            out.append(
                Note(
                    kind,
                    f"{kind.replace('_', ' ')} {symbol} ({exchange}): {detail}",
                    {
                        "exchange": exchange,
                        "symbol": symbol,
                        "eval_time": t,
                        "kind": kind,
                        "inputs": {k: v for k, v in inputs.items() if k in _FIELDS[kind]},
                    },
                )
            )
        return out


_FIELDS: dict[str, frozenset[str]] = {
    "oi_spike": frozenset({"oi_spike_z", "oi_change_5m"}),
    "divergence": frozenset({"cvd_divergence", "cvd_divergence_price", "cvd_divergence_cvd"}),
    "liquidation_cascade": frozenset(
        {"liq_cascade_long", "liq_cascade_short", "liq_long_usd", "liq_short_usd", "liq_long_count", "liq_short_count"}
    ),
    "wall_pulled": frozenset({"wall_pulled_bid", "wall_pulled_ask"}),
}
