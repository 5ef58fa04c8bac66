"""Venue instrument rules: each perpetual's lot step, minimum order size and minimum
notional, in coins, from the venues' public instruments endpoints, for the hedged pair model.

Why a module of its own: a paper pair that trades 0.123456 BTC on a venue whose step is 0.001 is a
pair the venue would refuse, so the hedged model (``execution.hedged``) rounds each pair's equal
quantity down to both venues' steps and refuses a leg below the venue's minimum; the numbers come
from here. Pure and venue-neutral: parsed from the bodies, no I/O (``execution.instrument_rules_fetch``
downloads them; the JSON file form is ``InstrumentRules.to_dict`` / ``load``).

Where each number comes from (market orders: the paper fills are taker sweeps):

- Binance USD-M ``GET /fapi/v1/exchangeInfo`` (``execution.exchange_filters``): ``MARKET_LOT_SIZE``
  ``stepSize`` and ``minQty`` (``LOT_SIZE`` when there is no market filter), ``MIN_NOTIONAL``
  ``notional``; perpetuals only (``contractType`` PERPETUAL; quarterlies are left out).
- Bybit v5 ``GET /v5/market/instruments-info?category=linear``: ``lotSizeFilter.qtyStep``,
  ``minOrderQty``, ``minNotionalValue``; ``LinearPerpetual`` only (USDC-settled ``BTCPERP`` has a
  name tapeflow does not read and is left out like dated futures).
- OKX ``GET /api/v5/public/instruments?instType=SWAP``: ``lotSz`` and ``minSz`` count *contracts* of
  ``ctVal`` (× ``ctMult``) base coin each, so the coin step is ``lotSz × ctVal`` and the minimum
  ``minSz × ctVal``; OKX swaps have no minimum notional (0). Linear swaps with ``ctValCcy`` the base
  coin only (as ``producers.okx.parse.parse_instruments``).

Units: every rule is in **coins** (the base coin, ``instrument(venue, symbol).coin``), whatever the
venue quotes. Binance and Bybit list low-priced coins per 1,000 (``1000SHIBUSDT``: a quantity of 1 is
1,000 SHIB), so their step is ``stepSize × 1000`` coins. The books the hedged model trades against are
in the units of the symbol they carry (the cross-venue state divides *prices* by the multiplier;
quantities stay in the symbol's units, and the OKX producer publishes ``PEPE-USDT-SWAP`` under
``1000PEPEUSDT`` with quantities ÷ 1000), so a step is converted back per leg:
``in_symbol_units(step, venue, symbol) = step / instrument(venue, symbol).multiplier``.

A rule is looked up by the venue and the symbol of the book (``for_symbol``: OKX's ``1000PEPEUSDT`` is
its ``PEPE-USDT-SWAP``) or by the coin (``for_coin``: the one listing of that coin and quote on the
venue; two listings, e.g. ``SHIBUSDT`` and ``1000SHIBUSDT``, are ambiguous and give None).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, DecimalException
from pathlib import Path
from typing import Any

from execution.exchange_filters import ExchangeInfoError, parse_exchange_info, plain
from schemas.symbols import okx_swap_inst_id
from stream_apps.cross_venue.symbols import SymbolError, instrument

FORMAT_VERSION = 1
VENUES = ("binance", "bybit", "okx")


class InstrumentRulesError(ValueError):
    """A body or file that does not hold usable rules (the message says which venue and why)."""


@dataclass(frozen=True, slots=True)
class InstrumentRule:
    """One venue listing's order rules, in coins of ``coin`` (see the module docstring)."""

    venue: str
    symbol: str  # the venue's own name: BTCUSDT, 1000SHIBUSDT, BTC-USDT-SWAP
    coin: str
    quote: str
    lot_step: Decimal  # coins; every order quantity is a multiple of it
    min_qty: Decimal  # coins; 0: none
    min_notional: Decimal  # quote currency (USDT); 0: none
    contract_value: Decimal | None = None  # OKX: coins per contract (ctVal × ctMult); None elsewhere

    def __post_init__(self) -> None:
        for name in ("lot_step", "min_qty", "min_notional", "contract_value"):
            value = getattr(self, name)
            if value is not None and not (value.is_finite() and value >= 0):
                raise InstrumentRulesError(f"{self.venue} {self.symbol}: {name} {value} is not a finite number >= 0")
        if self.lot_step <= 0:
            raise InstrumentRulesError(f"{self.venue} {self.symbol}: lot step {self.lot_step} is not positive")

    def hedged_params(self) -> dict[str, float]:
        """The fields of ``execution.hedged.VenueParams`` this rule sets (coins, quote currency)."""
        return {
            "lot_step": float(self.lot_step),
            "min_qty": float(self.min_qty),
            "min_notional_usd": float(self.min_notional),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "venue": self.venue,
            "symbol": self.symbol,
            "coin": self.coin,
            "quote": self.quote,
            "lot_step": plain(self.lot_step),
            "min_qty": plain(self.min_qty),
            "min_notional": plain(self.min_notional),
            "contract_value": None if self.contract_value is None else plain(self.contract_value),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InstrumentRule:
        try:
            cv = data.get("contract_value")
            return cls(
                str(data["venue"]),
                str(data["symbol"]),
                str(data["coin"]),
                str(data["quote"]),
                Decimal(str(data["lot_step"])),
                Decimal(str(data["min_qty"])),
                Decimal(str(data["min_notional"])),
                None if cv is None else Decimal(str(cv)),
            )
        except (KeyError, TypeError, DecimalException) as exc:
            raise InstrumentRulesError(f"instrument rule {dict(data)!r:.200}: {type(exc).__name__}: {exc}") from None


def in_symbol_units(coins: Decimal, venue: str, symbol: str) -> Decimal:
    """A quantity in coins as a quantity of `symbol`'s book on `venue` (÷ its multiplier, exact)."""
    return coins / instrument(venue, symbol).multiplier


class InstrumentRules:
    """Rules by (venue, venue symbol), with lookups by a book's symbol or by coin."""

    def __init__(self, rules: Iterable[InstrumentRule] = ()) -> None:
        self.rules: dict[tuple[str, str], InstrumentRule] = {}
        for rule in rules:
            self.rules[(rule.venue, rule.symbol)] = rule
        self._by_coin: dict[tuple[str, str, str], list[InstrumentRule]] = {}
        for rule in self.rules.values():
            self._by_coin.setdefault((rule.venue, rule.coin, rule.quote), []).append(rule)

    def __len__(self) -> int:
        return len(self.rules)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, InstrumentRules) and self.rules == other.rules

    def __repr__(self) -> str:
        return f"InstrumentRules({len(self.rules)} rules, {self.digest()})"

    def venues(self) -> list[str]:
        return sorted({venue for venue, _ in self.rules})

    def for_symbol(self, venue: str, symbol: str) -> InstrumentRule | None:
        """The rule of the listing a `venue` book of `symbol` (tapeflow's or the venue's name) trades."""
        name = symbol.strip().upper()
        if venue == "okx" and "-" not in name:
            try:
                name = okx_swap_inst_id(name)
            except ValueError:
                return None
        return self.rules.get((venue, name))

    def for_coin(self, venue: str, coin: str, quotes: Iterable[str] = ("USDT",)) -> InstrumentRule | None:
        """The one listing of `coin` in one of `quotes` on `venue`; None when there is none or several."""
        found = [r for q in quotes for r in self._by_coin.get((venue, coin, q), [])]
        return found[0] if len(found) == 1 else None

    def merged(self, other: InstrumentRules) -> InstrumentRules:
        """These rules with `other`'s added (other's win for the same listing)."""
        return InstrumentRules([*self.rules.values(), *other.rules.values()])

    # -- plain data ----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"version": FORMAT_VERSION, "rules": [self.rules[key].to_dict() for key in sorted(self.rules)]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InstrumentRules:
        if (
            not isinstance(data, Mapping)
            or data.get("version") != FORMAT_VERSION
            or not isinstance(data.get("rules"), list)
        ):
            raise InstrumentRulesError(
                f"instrument rules: expected an object with version {FORMAT_VERSION} and a rules list"
            )
        return cls(InstrumentRule.from_dict(item) for item in data["rules"])

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> InstrumentRules:
        if not Path(path).is_file():
            raise InstrumentRulesError(
                f"instrument rules file {path} does not exist (write one with `tapeflow watchlist rules --out {path}`)"
            )
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InstrumentRulesError(f"instrument rules file {path}: {exc}") from None
        return cls.from_dict(data)

    def digest(self) -> str:
        """A short hash of the rules (shown in ``repr``)."""
        picked = [self.rules[k].to_dict() for k in sorted(self.rules)]
        return hashlib.sha256(json.dumps(picked, sort_keys=True).encode()).hexdigest()[:16]


# -- parsers ---------------------------------------------------------------------------------------
def _decimal(raw: Any, venue: str, symbol: str, name: str, default: str | None = None) -> Decimal:
    if raw in (None, "") and default is not None:
        raw = default
    try:
        if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
            raise TypeError(type(raw).__name__)
        return Decimal(str(raw).strip())
    except (TypeError, DecimalException):
        raise InstrumentRulesError(f"{venue} {symbol}: {name}={raw!r} is not a number") from None


def _coin(venue: str, symbol: str) -> tuple[str, str, int] | None:
    try:
        inst = instrument(venue, symbol)
    except SymbolError:
        return None
    return (inst.coin, inst.quote, inst.multiplier) if inst.kind == "perp" else None


def parse_binance(body: Any) -> list[InstrumentRule]:
    """Rules of the perpetuals in a USD-M ``exchangeInfo`` body."""
    try:
        filters = parse_exchange_info(body)
    except ExchangeInfoError as exc:
        raise InstrumentRulesError(f"binance {exc}") from None
    out = []
    for info in body.get("symbols", []):
        if info.get("contractType") != "PERPETUAL":
            continue
        symbol = info["symbol"]
        named = _coin("binance", symbol)
        f = filters.get(symbol)
        if named is None or f is None or f.market_step_size <= 0:
            continue
        coin, quote, m = named
        out.append(
            InstrumentRule("binance", symbol, coin, quote, f.market_step_size * m, f.market_min_qty * m, f.min_notional)
        )
    return out


def parse_bybit(body: Any) -> list[InstrumentRule]:
    """Rules of the linear perpetuals in a v5 ``instruments-info?category=linear`` body (one page)."""
    if (
        not isinstance(body, Mapping)
        or body.get("retCode") != 0
        or not isinstance(body.get("result"), Mapping)
        or not isinstance(body["result"].get("list"), list)
    ):
        code = body.get("retCode") if isinstance(body, Mapping) else None
        raise InstrumentRulesError(f"bybit instruments-info: not a successful answer (retCode={code!r})")
    out = []
    for row in body["result"]["list"]:
        if not isinstance(row, Mapping) or row.get("contractType") != "LinearPerpetual":
            continue
        symbol = str(row.get("symbol", ""))
        named = _coin("bybit", symbol)
        lot = row.get("lotSizeFilter")
        if named is None or not isinstance(lot, Mapping):
            continue
        coin, quote, m = named
        step = _decimal(lot.get("qtyStep"), "bybit", symbol, "qtyStep")
        if step <= 0:
            raise InstrumentRulesError(f"bybit {symbol}: qtyStep {step} is not positive")
        out.append(
            InstrumentRule(
                "bybit",
                symbol,
                coin,
                quote,
                step * m,
                _decimal(lot.get("minOrderQty"), "bybit", symbol, "minOrderQty", "0") * m,
                _decimal(lot.get("minNotionalValue"), "bybit", symbol, "minNotionalValue", "0"),
            )
        )
    return out


def bybit_next_cursor(body: Mapping[str, Any]) -> str:
    """The cursor of the next page of an instruments-info answer ("" on the last page)."""
    return str(body.get("result", {}).get("nextPageCursor") or "")


def parse_okx(body: Any) -> list[InstrumentRule]:
    """Rules of the linear swaps in a ``public/instruments?instType=SWAP`` body (contracts → coins)."""
    if not isinstance(body, Mapping) or str(body.get("code")) != "0" or not isinstance(body.get("data"), list):
        code = body.get("code") if isinstance(body, Mapping) else None
        raise InstrumentRulesError(f"okx instruments: not a successful answer (code={code!r})")
    out = []
    for row in body["data"]:
        if not isinstance(row, Mapping) or row.get("instType") != "SWAP" or row.get("ctType") != "linear":
            continue
        inst_id = str(row.get("instId", ""))
        named = _coin("okx", inst_id)
        if named is None or row.get("ctValCcy") not in ("", None, named[0]):
            continue
        coin, quote, _ = named
        ct_val = _decimal(row.get("ctVal"), "okx", inst_id, "ctVal") * _decimal(
            row.get("ctMult"), "okx", inst_id, "ctMult", "1"
        )
        lot = _decimal(row.get("lotSz"), "okx", inst_id, "lotSz")
        if ct_val <= 0 or lot <= 0:
            raise InstrumentRulesError(f"okx {inst_id}: ctVal × ctMult {ct_val} and lotSz {lot} must be positive")
        out.append(
            InstrumentRule(
                "okx",
                inst_id,
                coin,
                quote,
                lot * ct_val,
                _decimal(row.get("minSz"), "okx", inst_id, "minSz", "0") * ct_val,
                Decimal(0),
                ct_val,
            )
        )
    return out


PARSERS = {"binance": parse_binance, "bybit": parse_bybit, "okx": parse_okx}
