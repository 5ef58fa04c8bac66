"""A strategy's rollout state, as config.rollouts carries it: the active revision every symbol trades
and, during a canary, the candidate revision a few symbols trade instead (a canary by symbols) or, in a
canary by size, the candidate beside the active revision on every symbol at a share of the size.

A canary by size (``Canary.size_pct``): both revisions evaluate every symbol; the candidate's signals
are sized at ``size_pct`` % of normal and the active revision's at ``100 - size_pct`` %
(``size_shares``), so when both take the same trade the total risk is what the active revision alone
would take. Each signal carries its revision's config_rev and its share (``factors["size_share"]``,
which ``execution.sizing`` multiplies into the signal's size multiplier), and the candidate's signals
hold their own position slot (``CANARY_LEG_SUFFIX`` on their signal id), so the two revisions' trades
never block or flip each other; the guardrails judge the candidate's closed trades (its revision) as
for a canary by symbols, over every symbol it evaluates (``Canary.symbols``).

Pure code shared by the engine (which follows the state) and the operator's commands (which publish
it): the record form of a state, the deterministic choice of a canary's symbols from a share, and
whether a revision can replace another in a running engine at all.

A running engine keeps per-symbol state shaped by the union of its strategies (``Engine.__init__``:
the CVD windows it accumulates, the slope windows, the detectors each symbol's state runs). A revision
that changes those keys would need state the engine never kept (a new window has no history), so it
cannot be switched in at an evaluation boundary: ``restart_reason`` says why and the operator restarts
the engine on the new file instead."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from stream_apps.core.strategy import StrategyConfig, parse_strategy

#: the steps that change a rollout state; ``register`` only adds a revision
ACTIONS = ("promote", "canary", "finish", "rollback", "auto_rollback")

#: ends the signal id of a canary-by-size candidate's signal: the executor gives such a signal (and the
#: position it opens) a slot of its own beside the active revision's (``execution.domain.slot_of``)
CANARY_LEG_SUFFIX = ":canary"


@dataclass(frozen=True)
class Revision:
    """One registered revision of a strategy file: its number, hash and text."""

    rev: int
    config_hash: str
    content: str

    def config(self, source: str = "<revision>") -> StrategyConfig:
        return parse_content(self.content, source)

    def as_record(self) -> dict[str, Any]:
        return {"rev": self.rev, "config_hash": self.config_hash, "content": self.content}


@dataclass(frozen=True)
class Canary(Revision):
    """A candidate revision and the symbols it trades instead of the active revision; with ``size_pct``
    (a canary by size) the symbols it trades beside the active revision, at that share of the size."""

    symbols: tuple[str, ...] = ()
    size_pct: float | None = None

    def __post_init__(self) -> None:
        if self.size_pct is not None and not 0 < self.size_pct < 100:
            raise ValueError(f"a canary by size is a share in (0, 100) %, got {self.size_pct:g}")

    def as_record(self) -> dict[str, Any]:
        return {**super().as_record(), "symbols": list(self.symbols), "size_pct": self.size_pct}

    @classmethod
    def from_record(cls, c: Mapping[str, Any]) -> Canary:
        size_pct = c.get("size_pct")  # absent in states written before canaries by size
        return cls(
            int(c["rev"]),
            c["config_hash"],
            c["content"],
            tuple(c["symbols"]),
            None if size_pct is None else float(size_pct),
        )


def size_shares(size_pct: float) -> tuple[float, float]:
    """(active's, candidate's) share of the normal size in a canary by size of ``size_pct`` %: they add
    up to 1, so two signals of the same trade risk what one would."""
    candidate = size_pct / 100
    return 1.0 - candidate, candidate


@dataclass(frozen=True)
class Guardrails:
    """The limits a canary is held to over its closed trades (tapeflow.rollout_guard evaluates them)."""

    max_drawdown_r: float = 3.0
    min_net_r: float = -3.0
    window_trades: int = 20
    min_win_rate: float = 0.25
    min_trades: int = 10

    def __post_init__(self) -> None:
        if not self.max_drawdown_r > 0:
            raise ValueError(f"max drawdown must be above 0 R, got {self.max_drawdown_r:g}")
        if self.window_trades < 1 or self.min_trades < 1:
            raise ValueError("the rolling window and the trades before the win rate counts must be at least 1")
        if not 0 <= self.min_win_rate <= 1:
            raise ValueError(f"the minimum win rate is a share in [0, 1], got {self.min_win_rate:g}")

    def as_record(self) -> dict[str, Any]:
        return {
            "max_drawdown_r": self.max_drawdown_r,
            "min_net_r": self.min_net_r,
            "window_trades": self.window_trades,
            "min_win_rate": self.min_win_rate,
            "min_trades": self.min_trades,
        }


@dataclass(frozen=True)
class RolloutState:
    """The value of config.rollouts for one strategy (its key)."""

    strategy: str
    seq: int
    active: Revision
    canary: Canary | None
    action: str
    actor: str
    reason: str
    requested_time: int
    guardrails: Guardrails | None = None

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown rollout action {self.action!r}: one of {', '.join(ACTIONS)}")

    def rev_for(self, symbol: str) -> Revision:
        """The revision that trades ``symbol`` alone: the canary's on its symbols, else the active one
        (in a canary by size both trade every symbol: ``Canary.size_pct``)."""
        if self.canary is not None and self.canary.size_pct is None and symbol in self.canary.symbols:
            return self.canary
        return self.active

    def as_record(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "seq": self.seq,
            "active": self.active.as_record(),
            "canary": None if self.canary is None else self.canary.as_record(),
            "action": self.action,
            "actor": self.actor,
            "reason": self.reason,
            "requested_time": self.requested_time,
            "guardrails": None if self.guardrails is None else self.guardrails.as_record(),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> RolloutState:
        a, c = record["active"], record.get("canary")
        canary, g = None, record.get("guardrails")
        if c is not None:
            canary = Canary.from_record(c)
        return cls(
            strategy=record["strategy"],
            seq=int(record["seq"]),
            active=Revision(int(a["rev"]), a["config_hash"], a["content"]),
            canary=canary,
            action=record["action"],
            actor=record["actor"],
            reason=record["reason"],
            requested_time=int(record["requested_time"]),
            guardrails=None if g is None else Guardrails(**g),
        )


def parse_content(content: str, source: str = "<revision>") -> StrategyConfig:
    """A registered file's text as the engine validates it (YAML; JSON is YAML too)."""
    from stream_apps.core.strategy import StrategyConfigError

    try:
        data = yaml.safe_load(content)
    except yaml.YAMLError as error:
        raise StrategyConfigError(f"{source}: not valid YAML: {' '.join(str(error).split())}") from None
    return parse_strategy(data, source)


def canary_symbols(symbols: Iterable[str], share_pct: float, salt: str) -> tuple[str, ...]:
    """The symbols a canary of ``share_pct`` percent trades: ceil(share x n) of them (at least one),
    chosen by a hash of ``salt`` (the candidate's config hash) and the symbol, so the same candidate
    over the same symbols always gets the same ones and a different candidate usually others.
    Returned sorted."""
    pool = sorted(set(symbols))
    if not pool:
        raise ValueError("no symbols to choose a canary from")
    if not 0 < share_pct <= 100:
        raise ValueError(f"a canary share is a percentage in (0, 100], got {share_pct:g}")
    count = max(1, math.ceil(len(pool) * share_pct / 100 - 1e-9))
    ranked = sorted(pool, key=lambda s: hashlib.sha256(f"{salt}:{s}".encode()).hexdigest())
    return tuple(sorted(ranked[:count]))


def parse_share(text: str, option: str = "--canary", *, whole: bool = True) -> float:
    """``10%`` or ``10`` as 10.0, in (0, 100] (``whole``: all the symbols is a share) or (0, 100) (a
    canary by size: at 100 % the active revision would trade nothing); a ValueError names what is wrong."""
    raw = text.strip().removesuffix("%").strip()
    try:
        share = float(raw)
    except ValueError:
        raise ValueError(f"{option} {text!r}: a percentage such as 10%") from None
    if math.isnan(share) or not 0 < share <= 100 or (share == 100 and not whole):
        raise ValueError(f"{option} {text!r}: a percentage in (0, {'100]' if whole else '100)'}")
    return share


def _state_shape(cfg: StrategyConfig) -> dict[str, Any]:
    """What of a strategy shapes the engine's per-symbol state (see the module docstring)."""
    return {
        "windows.cvd_fast": cfg.windows.cvd_fast,
        "windows.cvd_mid": cfg.windows.cvd_mid,
        "detectors": None if cfg.detectors is None else cfg.detectors.model_dump(mode="json"),
        "symbols": sorted(cfg.symbols) if cfg.detectors is not None else None,
    }


def restart_reason(current: StrategyConfig, candidate: StrategyConfig) -> str | None:
    """None when ``candidate`` can replace ``current`` in a running engine; otherwise why a restart is
    needed (the keys that differ)."""
    if current.name != candidate.name:
        return f"the candidate is strategy {candidate.name!r}, not {current.name!r}"
    old, new = _state_shape(current), _state_shape(candidate)
    changed = [key for key in old if old[key] != new[key]]
    if not changed:
        return None
    return (
        f"{', '.join(changed)} differ from the running revision: they shape the per-symbol state the engine "
        "has kept since it started (windows and detectors accumulate history), so the engine must restart "
        "on the new file"
    )
