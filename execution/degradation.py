"""What the execution SLOs (``execution.slo``) currently forbid, as one immutable value the order router
(``execution.routing``) consults before it works an order.

The plan's degradation rules: a maker fill ratio below 0.25 over the last hour sends entries as market
orders (``market_only``); an order round-trip p95 (send to acknowledgement) above 500 ms stops slicing and
resting (``no_twap_no_maker``: one market order). Kept apart from both modules so that neither imports the
other: the SLO monitors produce the flags (the maker rule on event time in paper and the backtest,
``execution.maker_fill_rule``; the service's wall-clock monitor in testnet and live), the router reads
them, and a test may pass a scripted sequence of flags (``execution.slo.FlagSchedule``) the same way."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DegradationFlags:
    """The degradations in force. The default, nothing degraded, is what a healthy venue gets."""

    market_only: bool = False  # maker fill ratio too low: entries go straight to market
    no_twap_no_maker: bool = False  # round trips too slow: no slices, no resting limit, one market order
    reason: str = ""  # the rule(s) that set the flags, for the order's reason and the audit row

    @property
    def degraded(self) -> bool:
        return self.market_only or self.no_twap_no_maker


NONE = DegradationFlags()
