"""The autopsy's plain sentences: built from its numbers only, in a fixed order, so the same trade
always reads the same (no clock, no randomness).

1. what was traded, what drove the signal (its strongest score layers, a gate that fired) and what
   closed it after how long;
   then, when a confidence model took part, its p and the features that moved it most (their SHAP
   contributions in log-odds, largest first);
2. where the money went (gross, fees, slippage, funding, net in R) and the verdict;
3. the fills against the mid at send (when the orders carried it);
4. the peers (when there are any);
5. the best counterfactual, or that none did better.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

EXIT_WORDS = {
    "sl": "its stop",
    "sl_be": "its break-even stop after TP1",
    "tp": "its second take-profit",
    "timeout": "the timeout",
    "signal_flip": "an opposite signal",
    "risk_flatten": "the risk guard",
    "kill_switch": "the kill switch",
}
KNOB_WORDS = {"tp": "take-profit", "sl": "stop", "size": "size"}
COSTS = ("fees", "slippage", "funding")


def duration(ms: float) -> str:
    minutes = ms / 60_000
    if minutes < 1:
        return f"{ms / 1000:.0f} s"
    if minutes < 120:
        return f"{minutes:.0f} min"
    return f"{minutes / 60:.1f} h"


def verdict(gross_r: float, fees_r: float, slippage_r: float, funding_r: float) -> str:
    """One phrase for where the money went: a win (costs' share of it when they took over half), the
    largest cost when costs turned a positive gross into a loss, or the market when the gross lost."""
    costs = {"fees": fees_r, "slippage": slippage_r, "funding": funding_r}
    total = fees_r + slippage_r + funding_r
    net = gross_r - total
    if net > 0:
        if total > 0.5 * gross_r:
            return f"a win, but costs took {100 * total / gross_r:.0f} % of the gross"
        return "a win"
    if gross_r > 0:
        largest = max(COSTS, key=lambda c: (costs[c], -COSTS.index(c)))
        return f"the {largest} took the trade"
    extra = f"; costs added {total:.2f}R" if total > 0 else ""
    return f"the market took the trade: the price went against it{extra}"


def _drivers(layers: Mapping[str, Any] | None, gate: str | None) -> str:
    parts = []
    if layers:
        top = sorted(
            ((k, float(v)) for k, v in layers.items() if isinstance(v, int | float) and v > 0),
            key=lambda kv: (-kv[1], kv[0]),
        )[:2]
        if top:
            parts.append(" and ".join(f"{k} ({v:.0f})" for k, v in top) + " scored most")
    if gate:
        parts.append(f"the {gate} gate fired")
    return "; " + ", ".join(parts) if parts else ""


def _number(value: float) -> str:
    """A feature value in few characters: 3 significant digits, no exponent for everyday sizes."""
    return f"{value:.3g}" if 1e-3 <= abs(value) < 1e6 or value == 0 else f"{value:.2e}"


def model_sentence(m: Mapping[str, Any] | None) -> str | None:
    """The confidence model's part (``Autopsy.confidence_model``): its p, where the p came from, and its
    largest SHAP contributions."""
    if not m or not m.get("contributions"):
        return None
    parts = []
    for c in m["contributions"]:
        value = "missing" if c.get("value") is None else _number(float(c["value"]))
        parts.append(f"{c['feature']} = {value} ({float(c['shap']):+.2f})")
    listed = ", ".join(parts[:-1]) + f" and {parts[-1]}" if len(parts) > 1 else parts[0]
    source = "" if m.get("p_source") != "signal" else ", as the signal carried it"
    return (
        f"The confidence model ({m.get('learner', 'model')}) gave p(win) {float(m['p_win']):.2f}{source}; "
        f"its largest SHAP contributions (log-odds): {listed}."
    )


def sentences(a: Mapping[str, Any]) -> list[str]:
    """The narrative of an autopsy dict (``review.autopsy.Autopsy.as_dict``)."""
    t, costs = a["trade"], a["costs"]
    score = f", score {t['score']:.0f}" if t.get("score") is not None else ""
    out = [
        f"{t['direction']} {t['symbol']} ({t['strategy']}, {t['tier']} tier{score})"
        f"{_drivers(a.get('layers'), a.get('gate'))}; closed by {EXIT_WORDS.get(t['exit_reason'], t['exit_reason'])}"
        f" after {duration(t['exit_time'] - t['entry_time'])}."
    ]
    told = model_sentence(a.get("confidence_model"))
    if told is not None:
        out.append(told)
    g, f, s, u = costs["gross_r"], costs["fees_r"], costs["slippage_r"], costs["funding_r"]
    out.append(
        f"Gross {g:+.2f}R, fees {f:.2f}R, slippage {s:.2f}R, funding {u:+.2f}R: net {costs['net_r']:+.2f}R, "
        f"{verdict(g, f, s, u)}."
    )
    tca = a.get("tca") or {}
    if tca.get("entry_slip_bps") is not None or tca.get("exit_slip_bps") is not None:
        legs = [
            f"the {name} filled {tca[key]:+.1f} bp from the mid at send"
            for name, key in (("entry", "entry_slip_bps"), ("exits", "exit_slip_bps"))
            if tca.get(key) is not None
        ]
        maker = (
            f"; {100 * tca['maker_share']:.0f} % of the quantity was maker"
            if tca.get("maker_share") is not None
            else ""
        )
        out.append(" and ".join(legs).capitalize() + maker + ".")
    p = a.get("peers") or {}
    if p.get("count"):
        out.append(
            f"Among {p['count']} peers ({p['group']}) its net R is at the {p['net_r_percentile']:.0f}th percentile;"
            f" they won {100 * p['win_rate']:.0f} % of the time."
        )
    best = (a.get("counterfactuals") or {}).get("best")
    if best is not None and best["delta_net_r"] > 1e-9:
        out.append(
            f"Best alternative: {KNOB_WORDS[best['knob']]} x{best['scale']:g} would have made "
            f"{best['net_r']:+.2f}R ({best['delta_net_r']:+.2f}R against the replay as traded)."
        )
    elif best is not None:
        out.append("No take-profit or stop between x0.5 and x1.5 would have done better.")
    return out
