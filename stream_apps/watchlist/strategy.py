"""Watchlist strategy files (``kind: watchlist``, YAML or JSON): which cross-venue pairs to trade as
hedged pairs, when (triggers), how big, and when to close. Validated like the directional strategies
(``stream_apps.core.strategy``: unknown keys, wrong types and contradictions are one-line errors naming
the field) and hashed the same way, with the model file's content in the hash, so a refitted model is
a new ``config_hash``.

Units: spreads and expected pnl in basis points of notional (``min_net_spread_bp: 5`` = 0.05 %), fees
as fractions (0.0005 = 0.05 % per fill), funding differences as fractions per 8 h, durations as "30m"
or integer ms. Every threshold left out (null) is not checked; at least one trigger must be set.
"""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from stream_apps.core.durations import parse_duration_ms
from stream_apps.core.exits import TAKER_FEE
from stream_apps.core.strategy import StrategyConfigError, _format_errors, read_strategy_file

Duration = Annotated[int, BeforeValidator(parse_duration_ms)]
DurationOrZero = Annotated[int, BeforeValidator(lambda v: 0 if v in (0, "0") else parse_duration_ms(v))]
KIND = "watchlist"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Fees(_Model):
    """Taker fee per fill, per venue (a venue not listed pays ``default``)."""

    default: float = Field(
        default=TAKER_FEE,
        ge=0,
        lt=0.01,
        description="taker fee per fill as a fraction of notional (0.0005 = 0.05 %) on a venue not listed under venues",
    )
    venues: dict[str, Annotated[float, Field(ge=0, lt=0.01)]] = Field(
        default_factory=dict,
        description="taker fee per fill by venue name, each from 0 to below 0.01; overrides default",
    )

    def of(self, venue: str) -> float:
        return self.venues.get(venue, self.default)


class Triggers(_Model):
    """A pair fires when every trigger that is set holds at an evaluation (all, never any).

    - ``min_z``: z-score of the swept spread against its 1 h window, ``(s - mean) / std``, needing at
      least ``min_window_samples`` samples in the window.
    - ``min_net_spread_bp``: the executable spread after fees on both legs: the swept spread for the
      order notional minus four taker fees (entry and exit on each leg), in bp. Checked on the
      features and again on the books at the moment of entry (``recheck``).
    - ``min_funding_diff_8h``: what the hedge receives per 8 h (sell venue's rate minus buy venue's).
    """

    min_z: float | None = Field(
        default=None,
        description="minimum z-score of the swept spread against its 1 h "
        "window (null: not checked); raising it fires on rarer spreads only",
    )
    min_window_samples: int = Field(
        default=30,
        ge=2,
        description="samples the 1 h spread window needs before its z-score exists; with fewer, min_z does not fire",
    )
    min_net_spread_bp: float | None = Field(
        default=None,
        description="minimum executable spread after four taker "
        "fees, bp of notional; re-checked on the books at entry (null: not "
        "checked)",
    )
    min_funding_diff_8h: float | None = Field(
        default=None,
        description="minimum funding the hedge receives per 8 h, "
        "sell venue's rate minus buy venue's, fraction (null: not checked)",
    )

    @model_validator(mode="after")
    def _check(self) -> Triggers:
        if self.min_z is None and self.min_net_spread_bp is None and self.min_funding_diff_8h is None:
            raise ValueError("set at least one of min_z, min_net_spread_bp, min_funding_diff_8h")
        return self


class ModelRef(_Model):
    """The expected-pnl / win-probability model (``tapeflow watchlist fit`` writes the file)."""

    file: Path = Field(description="model JSON, relative to the strategy file")
    min_expected_pnl_bp: float | None = Field(
        default=None, description="minimum predicted expected pnl, bp of notional (null: not checked)"
    )
    min_win_prob: float | None = Field(
        default=None, ge=0, le=1, description="minimum predicted win probability, 0 to 1 (null: not checked)"
    )
    missing: Literal["impute", "skip"] = Field(
        default="impute", description="a missing factor: impute the training mean (recorded) or give no prediction"
    )
    max_imputed: int = Field(default=2, ge=0, description="more missing factors than this: no prediction")


class Exits(_Model):
    """The hedged pair's exits (``execution.hedged``)."""

    exit_spread_bp: float = Field(default=0.0, description="convergence: the closable spread at or below this (bp)")
    max_holding: Duration = Field(default=7 * 86_400_000, description="a pair open this long closes (max_holding)")
    funding_lead: Duration = Field(
        default=600_000, description="the funding exit looks at settlements due within this long"
    )
    funding_exit_threshold: float = Field(
        default=0.0005,
        ge=0,
        description="close before the settlements within "
        "funding_lead when they would cost the pair more than this fraction of "
        "notional",
    )
    leverage: float = Field(
        default=1.0,
        ge=1,
        description="each leg's leverage in the liquidation-price "
        "approximation (initial margin = notional / leverage); more brings liquidation nearer",
    )
    min_liquidation_distance: float = Field(
        default=0.1,
        ge=0,
        lt=1,
        description="close the pair when a leg's liquidation price is nearer than this fraction of the mark",
    )


class Legs(_Model):
    """How the legs travel and fill (``execution.leg_fills``); without this section both legs fill at
    the signal's books at once (the instant model)."""

    latency_ms: dict[str, int] = Field(
        default_factory=dict,
        description="one-way latency per venue, 0 to 60000 (send -> matching engine; the answer takes as long again)",
    )
    default_latency_ms: int = Field(
        default=50,
        ge=0,
        le=60_000,
        description="a venue not in latency_ms; 50: the "
        "producers' receive-minus-exchange time, median 46 ms in the recorded Binance frames",
    )
    min_entry_spread_bp: float | None = Field(
        default=None,
        description="IOC limits keep the net spread after four fees at or above this; "
        "null: triggers.min_net_spread_bp, or 0 (break-even)",
    )
    retries: int = Field(default=1, ge=0, le=10, description="IOC retries of the leg that filled less")
    retry_step_bp: float = Field(default=5.0, ge=0, le=1_000, description="each retry's limit this much worse")
    sequential: bool = Field(
        default=False,
        description="send the thinner book's leg first and the hedge for what "
        "it filled, limited by its actual price (one more round trip)",
    )
    liquidation_fee: float = Field(default=0.005, ge=0, lt=0.1, description="venue penalty on a liquidated leg")

    @model_validator(mode="after")
    def _check(self) -> Legs:
        bad = {venue: ms for venue, ms in self.latency_ms.items() if not 0 <= ms <= 60_000}
        if bad:
            raise ValueError(f"latency_ms: each from 0 to 60000 ms, not {bad}")
        return self

    def latency(self, venue: str) -> int:
        return self.latency_ms.get(venue, self.default_latency_ms)


class WatchlistStrategy(_Model):
    kind: Literal["watchlist"] = Field(description="always watchlist: marks the file as a watchlist strategy")
    name: str = Field(
        pattern=r"^[a-z][a-z0-9_]{0,47}$", description="the strategy's name (lower case, digits, _); in every signal id"
    )
    version: str = Field(min_length=1, max_length=32, description="a version label, in every signal id")
    description: str = Field(default="", description="free text for people; part of the config_hash")
    coins: list[str] = Field(default_factory=list, description="empty = every coin")
    venues: list[str] = Field(
        default_factory=lambda: ["binance", "bybit", "okx"],
        description="the venues whose "
        "books are compared, at least two, each once: a pair sells on one and buys on another",
    )
    notional_usd: float = Field(default=10_000.0, gt=0, description="per leg")
    eval_interval: Duration = Field(default=15_000, description="evaluate on this grid of event time")
    max_book_age: Duration = Field(default=2_000, description="a leg's book older than this is not traded")
    max_leg_skew: Duration = Field(default=1_000, description="the two books at most this far apart")
    cooldown: Duration = Field(default=1_800_000, description="per coin and pair of venues after a signal")
    fees: Fees = Field(default=Fees(), description="taker fee per fill, per venue")
    triggers: Triggers = Field(description="when a pair fires: every trigger set must hold")
    model: ModelRef | None = Field(
        default=None, description="a fitted expected-pnl / win-probability model the signal must pass; none when absent"
    )
    exits: Exits = Field(default=Exits(), description="when an open pair closes")
    legs: Legs | None = Field(
        default=None, description="leg latency and IOC fills; absent: both legs fill at the signal's books at once"
    )
    max_opens_per_minute: int | None = Field(
        default=None,
        ge=1,
        description="signals (pairs opened) per 60 s of event time over every coin; more are rejected",
    )
    reentry_cooldown: DurationOrZero = Field(
        default=0, ge=0, description="a pair key does not signal again this long after its last pair closed or failed"
    )
    _model_file: Path | None = PrivateAttr(default=None)  # resolved against the strategy file's directory
    _model_digest: str | None = PrivateAttr(default=None)  # sha256 of the model file's bytes

    @model_validator(mode="after")
    def _check(self) -> WatchlistStrategy:
        if len(self.venues) < 2 or len(set(self.venues)) != len(self.venues):
            raise ValueError("venues: at least two, each once")
        if self.eval_interval % 1000:
            raise ValueError("eval_interval must be a whole number of seconds")
        if self.model is not None and self.model.min_expected_pnl_bp is None and self.model.min_win_prob is None:
            raise ValueError("model: set min_expected_pnl_bp and/or min_win_prob")
        if self.triggers.min_net_spread_bp is not None:
            # hysteresis: the entry needs the swept spread at min_net_spread_bp + four fees; an exit band at or
            # above that would close a pair at the spread it was opened at, and reopen it, and close it ...
            four = min(self.four_fees(a, b) for a in self.venues for b in self.venues if a != b) / 1e-4
            if self.exits.exit_spread_bp >= self.triggers.min_net_spread_bp + four:
                raise ValueError(
                    f"exits.exit_spread_bp {self.exits.exit_spread_bp:g} must be below the entry's spread "
                    f"{self.triggers.min_net_spread_bp + four:g} bp (min_net_spread_bp + four fees): "
                    "the exit band and the entry must not overlap"
                )
        return self

    def applies_to(self, coin: str) -> bool:
        return not self.coins or coin in self.coins

    def four_fees(self, sell_venue: str, buy_venue: str) -> float:
        """Entry and exit taker fee on both legs, as a fraction of notional."""
        return 2 * (self.fees.of(sell_venue) + self.fees.of(buy_venue))

    @cached_property
    def config_hash(self) -> str:
        """sha256 of the canonical JSON of the validated model, plus the model file's bytes when set
        (loaded from a path: ``model_digest``); key order, YAML vs JSON, "30m" vs 1800000 do not count."""
        data = self.model_dump(mode="json")
        for key, default in _ADDED_DEFAULTS.items():  # added later: at their default, the hash stays what it was
            if data.get(key) == default:
                del data[key]
        data["model_digest"] = self._model_digest
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    @property
    def version_hash(self) -> str:
        """What a signal id carries: the name, version and the first 12 hex of the config hash."""
        return f"{self.name}:{self.version}:{self.config_hash[:12]}"


#: fields added after strategies were hashed: left out of config_hash while at these values
_ADDED_DEFAULTS: dict[str, Any] = {"legs": None, "max_opens_per_minute": None, "reentry_cooldown": 0}


def is_watchlist(data: Any) -> bool:
    return isinstance(data, dict) and data.get("kind") == KIND


def parse_watchlist_strategy(data: Any, source: str = "<strategy>", base_dir: Path | None = None) -> WatchlistStrategy:
    """Validate parsed data; a model file is resolved against `base_dir` and must exist (its bytes
    enter the hash). Raises ``StrategyConfigError`` naming the field and the reason."""
    if not isinstance(data, dict):
        raise StrategyConfigError(f"{source}: a strategy file must contain a mapping at the top level")
    try:
        strategy = WatchlistStrategy.model_validate(data)
    except ValidationError as error:
        raise StrategyConfigError(f"{source}: {_format_errors(error)}") from None
    if strategy.model is not None:
        path = strategy.model.file if base_dir is None else (base_dir / strategy.model.file)
        try:
            raw = path.read_bytes()
        except OSError as error:
            raise StrategyConfigError(f"{source}: model.file: cannot read {path}: {error.strerror or error}") from None
        strategy._model_file = path
        strategy._model_digest = hashlib.sha256(raw).hexdigest()
    return strategy


def model_path(strategy: WatchlistStrategy) -> Path | None:
    """The model file as resolved when the strategy was loaded."""
    return strategy._model_file


def load_watchlist_strategy(path: str | Path) -> WatchlistStrategy:
    """Load one ``.yaml``/``.yml``/``.json`` watchlist strategy file."""
    path = Path(path)
    data = read_strategy_file(path)
    if isinstance(data, dict) and data.get("kind") != KIND:
        raise StrategyConfigError(
            f"{path}: kind: expected 'watchlist' (a watchlist strategy), got {data.get('kind')!r}"
        )
    return parse_watchlist_strategy(data, str(path), path.parent)
