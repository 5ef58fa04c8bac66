"""Executor configuration: sizing, fees, paper fill model, exits, entry policy, risk limits, and for
`--mode testnet|live` the exchange endpoints and the reconciliation policy.

Why its own file (YAML or JSON, `--executor-config FILE`) rather than more `TAPEFLOW_*` settings: these
are trading parameters that users tune and review like strategy files, and the whole model is echoed
in the log at start so the operator confirms what will trade. Unknown keys are rejected (a typo such as
`daly_loss_limit_r` must not silently fall back to a default). Defaults come from DESIGN §5 and the old
system: 10,000 USDT paper balance, 2 % risk per 1R, tiers standard 1.0 / heavy 1.5, taker 0.05 % and
maker 0.02 % per side, timeout 240 min, daily loss -5R, pause after 5 losses for 60 min, stale data 30 s,
reconciliation every 5 min. The timeout is only a default: a signal carries its strategy's
`exits.timeout_min` (`timeout_ms`) and that is what its position runs with; `timeout_min` and
`timeout_min_by_strategy` apply to signals without one (written before signals carried it).
Exchange keys are never part of this file: they are secrets and come from the settings
(`TAPEFLOW_BINANCE_API_KEY`/`_SECRET` or their `*_FILE`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from execution.management import Management
from stream_apps.core.exits import MAKER_FEE, TAKER_FEE
from stream_apps.core.routing_table import RoutingTable
from tapeflow_runtime.config_model import StrictModel as _Model  # the base shared with routing and management
from tapeflow_runtime.errors import TapeflowError


class ExecutorConfigError(TapeflowError, ValueError):
    """An executor config file that cannot be used (message names the field)."""


class Fees(_Model):
    """Commission per fill as a fraction of notional, by liquidity."""

    taker: float = Field(
        default=TAKER_FEE,
        ge=0,
        lt=0.01,
        description="fee of a taker fill (market order) as a fraction of notional, 0.0005 = 0.05 %",
    )
    maker: float = Field(
        default=MAKER_FEE,
        ge=-0.001,
        lt=0.01,
        description="fee of a maker fill (resting limit order) as a fraction of notional; negative = rebate",
    )


class PaperFills(_Model):
    """How the paper broker fills orders (paper mode and backtests alike).

    `fills: book` (the default) fills against the stored book where there is one: limit orders queue
    behind the size resting at their price and fill, partially, from the trades that exhaust that
    queue or print through their price; market orders walk the book's levels (partially when it is
    thinner; the rest at the next snapshot). See `execution.paper_broker`, `tapeflow_runtime.matching`.
    With `fills: tape` (whole fills at the next trade: the model before the book one, e.g. to compare
    with results from before it or for data without md.book), and under `book` where there is no book
    (no snapshot at placement, none fresh for a market order):
    Market orders fill at the first trade after submission, moved against us by `slippage_bps`; with
    `slippage_model: book` and an md.book snapshot at most `book_max_age_ms` older than that trade,
    also by what the order would have paid crossing that book: half the spread plus the walk of its
    quantity through the snapshot's levels on the other side (the part beyond the levels shown at the
    last one). Without a fresh book the fixed model applies.
    Limit orders fill at their price when the tape crosses it. Queue position is unknowable from
    aggregated trades, so it is an explicit assumption: `through` (default, conservative) assumes we
    sit at the back of the queue and fill only when a trade prints strictly beyond our price;
    `touch` assumes the front and fills on a trade at our price. These tape fills are never partial.
    """

    slippage_bps: float = Field(
        default=0.0,
        ge=0,
        le=500,
        description="every market fill moved this many bp against the order from the trade price",
    )
    slippage_model: Literal["fixed", "book"] = Field(
        default="fixed",
        description="tape fills: fixed = slippage_bps only; book = also half the spread and the walk "
        "through a fresh md.book (book fills walk the book anyway)",
    )
    book_max_age_ms: int = Field(
        default=5_000,
        gt=0,
        description="a market order walks (book fills) or is charged (slippage_model book) the snapshot at "
        "most this much older than the filling trade (ms); older: the trade price",
    )
    fills: Literal["book", "tape"] = Field(
        default="book",
        description="book: fill against the stored book (queue position, level walk, partial fills) "
        "where one exists, else the tape rules; tape: the tape rules only (whole fills at the next trade)",
    )
    limit_queue: Literal["through", "touch"] = Field(
        default="through",
        description="a resting limit fills on a trade strictly beyond its price (through) or at it (touch)",
    )


class EntryPolicy(_Model):
    """`taker`: market entry. `maker_first`: post-only limit at the touch (best bid for LONG, best ask
    for SHORT), cancelled after `maker_timeout_ms`, then a market order for the whole size if the mid
    moved at most `fallback_slippage_cap_bps` from the signal price, otherwise no trade. `routed` (the
    default: paper, backtest and live work orders as the plan's router does): by the routing table of
    the signal's strategy (its `routing:` section, else this config's `routing`): by notional a maker
    wait, then TWAP taker slices for what is left, after a liquidity probe (`execution.routing`); when
    the maker wait ends below theta, the taker slices start only within `fallback_slippage_cap_bps` and
    with the risk guard's leave, as `maker_first`'s fallback."""

    kind: Literal["taker", "maker_first", "routed"] = Field(
        default="routed",
        description="routed (the default): by the routing table (maker wait, TWAP slices, liquidity probe); "
        "taker: market entry; maker_first: post-only limit at the touch, then the market fallback",
    )
    maker_timeout_ms: int = Field(
        default=4000, gt=0, description="maker_first: the limit is cancelled this long after it was sent (ms)"
    )
    fallback_slippage_cap_bps: float = Field(
        default=10.0,
        ge=0,
        description="maker_first: the market fallback only "
        "when the mid moved at most this many bp from the signal price",
    )


class RiskLimits(_Model):
    daily_loss_limit_r: float = Field(default=5.0, gt=0, description="flatten and stop for the UTC day")
    max_consecutive_losses: int = Field(
        default=5, ge=1, description="this many losing trades in a row (net pnl_r <= 0) pause new entries for pause_min"
    )
    pause_min: int = Field(
        default=60,
        gt=0,
        description="minutes new entries are paused after max_consecutive_losses; the streak then restarts at 0",
    )
    stale_market_data_s: float = Field(
        default=30.0,
        gt=0,
        description="no new entry on a symbol whose newest trade "
        "or book is older than this many seconds, or that has none yet",
    )
    max_open_positions: int = Field(default=12, ge=1, description="over all strategies and symbols")
    max_signal_age_s: float = Field(default=60.0, gt=0, description="older signals are not traded")
    max_exposure_usd: float | None = Field(
        default=None,
        gt=0,
        description="an add-on is refused when the open notional of every position (at the last "
        "price) would exceed this, in quote currency (null: no cap)",
    )


# Binance USD-M endpoints per mode (REST base, websocket base; the user-data stream is `<ws>/ws/<listenKey>`).
DEFAULT_ENDPOINTS: dict[str, tuple[str, str]] = {
    "testnet": ("https://testnet.binancefuture.com", "wss://stream.binancefuture.com"),
    "live": ("https://fapi.binance.com", "wss://fstream.binance.com"),
}


class ExchangeVenue(_Model):
    """Where testnet/live orders go and how long to wait for the exchange.

    `rest_url`/`ws_url` unset = Binance's endpoints for the mode (`DEFAULT_ENDPOINTS`); set them to
    point the executor at the fake exchange or a proxy. A slow answer is never taken as "not sent":
    after `request_timeout_s` the order is looked up by its client id (`execution.binance_broker`).
    """

    rest_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^/\s]+",
        description="REST base URL (unset: Binance's for the mode); TAPEFLOW_BINANCE_REST_URL wins over it",
    )
    ws_url: str | None = Field(
        default=None,
        pattern=r"^wss?://[^/\s]+",
        description="websocket base URL (unset: Binance's for the mode); TAPEFLOW_BINANCE_WS_URL wins over it",
    )
    request_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=120,
        description="seconds to wait for a REST answer; an order without one is then looked up by its client id",
    )
    connect_timeout_s: float = Field(
        default=10.0, gt=0, le=300, description="start-up: clock sync, exchangeInfo, user-data stream"
    )
    probe_interval_s: float = Field(
        default=5.0, gt=0, description="while the exchange is unreachable, how often to check it again"
    )


class Reconciliation(_Model):
    """Exchange positions and open orders against the executor's state (`execution.reconcile`).

    Runs after the state is restored on start, then every `interval_s`; after a failed run (exchange
    unreachable) again after `retry_s`, with new entries blocked until a run succeeds. Orphans (on the
    exchange, not ours): `flatten` cancels orphan orders and closes orphan positions with a reduce-only
    market order; `adopt` leaves them and reports them once. Either way every finding is published.
    """

    orphans: Literal["adopt", "flatten"] = Field(
        default="flatten",
        description="positions and orders on the exchange that are not ours: flatten (cancel, close) or adopt (report)",
    )
    interval_s: float = Field(default=300.0, gt=0, description="seconds between reconciliation runs")
    retry_s: float = Field(
        default=10.0,
        gt=0,
        description="seconds to the next run after a failed one; new entries are blocked until one succeeds",
    )


class ExecutorConfig(_Model):
    balance: float = Field(default=10_000.0, gt=0, description="account balance in quote currency")
    risk_pct: float = Field(default=2.0, gt=0, le=100, description="percent of balance per 1R")
    tier_multipliers: dict[str, float] = Field(
        default_factory=lambda: {"standard": 1.0, "heavy": 1.5},
        description="1R multiplier per tier for signals that carry none (a "
        "signal carries its strategy's sizing.tier_multipliers)",
    )
    fees: Fees = Field(default=Fees(), description="the paper broker's fees per fill (on an exchange its own apply)")
    paper: PaperFills = Field(
        default=PaperFills(), description="how the paper broker fills orders (paper mode, backtests)"
    )
    entry: EntryPolicy = Field(
        default=EntryPolicy(), description="how an entry order is placed: market, or maker first"
    )
    routing: RoutingTable = Field(
        default=RoutingTable(),
        description="entry.kind routed: the routing table of signals whose strategy file has no routing section",
    )
    timeout_min: int = Field(
        default=240,
        gt=0,
        description="default position timeout for signals that carry none (signals "
        "carry their strategy's exits.timeout_min as timeout_ms)",
    )
    timeout_min_by_strategy: dict[str, int] = Field(
        default_factory=dict, description="per-strategy default timeout for signals that carry none"
    )
    breakeven_offset_r: float = Field(
        default=0.0, ge=0, lt=1, description="after TP1 the stop moves to entry + this many R"
    )
    management: Management = Field(
        default=Management(),
        description="position management by ROE (add-ons, trailing stop, partial take-profit): off by default",
    )
    management_by_strategy: dict[str, Management] = Field(
        default_factory=dict, description="per-strategy position management, in place of management"
    )
    risk: RiskLimits = Field(default=RiskLimits(), description="the risk guard's limits")
    exchange: ExchangeVenue = Field(
        default=ExchangeVenue(), description="testnet/live: exchange endpoints and timeouts"
    )
    reconcile: Reconciliation = Field(
        default=Reconciliation(), description="testnet/live: when and how exchange state is checked against ours"
    )

    @model_validator(mode="after")
    def _check(self) -> ExecutorConfig:
        for tier in ("standard", "heavy"):
            if self.tier_multipliers.get(tier, 0) <= 0:
                raise ValueError(f"tier_multipliers.{tier} must be a positive number")
        for name, minutes in self.timeout_min_by_strategy.items():
            if minutes <= 0:
                raise ValueError(f"timeout_min_by_strategy.{name} must be positive")
        return self

    @property
    def base_r_usd(self) -> float:
        """1R of the account at tier multiplier 1 (10,000 x 2 % = 200 by default)."""
        return self.balance * self.risk_pct / 100

    def management_for(self, strategy: str) -> Management:
        """The position management of `strategy`'s positions: its own entry, else `management`."""
        return self.management_by_strategy.get(strategy, self.management)

    def timeout_ms(self, strategy: str, signal_timeout_ms: int | None = None) -> int:
        """A position's timeout: its signal's (the strategy's ``exits.timeout_min``) when the signal
        carries one, else this configuration's default for the strategy."""
        if signal_timeout_ms is not None:
            return signal_timeout_ms
        return self.timeout_min_by_strategy.get(strategy, self.timeout_min) * 60_000


def load_executor_config(path: Path | str | None) -> ExecutorConfig:
    """The config in `path` (YAML or JSON), or the defaults when `path` is None."""
    if path is None:
        return ExecutorConfig()
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ExecutorConfigError(f"{path}: {exc}".splitlines()[0]) from None
    try:
        return ExecutorConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "config"
        msg = "unknown setting" if first["type"] == "extra_forbidden" else first["msg"].removeprefix("Value error, ")
        raise ExecutorConfigError(f"{path}: {where}: {msg}") from None
