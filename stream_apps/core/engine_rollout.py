"""Which revision of each strategy evaluates which symbol at which evaluation time: the engine's side of
a rollout (``stream_apps.core.rollout``).

A switch names a strategy, the rollout state it applies (its seq on config.rollouts), the active
revision, the canary revision and its symbols, and ``applied_from``: the first evaluation time that
uses them. Evaluations before it use what was there before. The engine's worker chooses
``applied_from`` itself (``Engine.switch_point``: the first evaluation boundary after everything it
has evaluated, so no evaluation in flight changes revision) and records it, in the same transaction as
its outputs, on config.applied; a replay that reads those records schedules the same switches at the
same times and so produces the same outputs. The schedule and the current revisions are part of the
engine's plain-data state, so a restarted engine continues it.

An evaluation is one strategy on one symbol at one time, so it is made by exactly one revision: there
is no mixed evaluation. In a canary by size (``Canary.size_pct``) both revisions evaluate every symbol
they apply to, each its own evaluation (``Revisions.legs``): the candidate's after the active's, with
its own cooldown book (a copy of the active's at the switch: ``start_candidate_books``), so neither
revision's signals change the other's decisions. A revision whose state-shaping keys differ from the running one is refused
(``rollout.restart_reason``): the engine must restart on it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .cooldown import CooldownBook
from .rollout import CANARY_LEG_SUFFIX, Canary, Revision, restart_reason, size_shares
from .strategy import StrategyConfig


@dataclass(frozen=True)
class Leg:
    """One revision evaluating a symbol: its config, the share of the normal size its signals take
    (None: the whole, no canary by size) and whether it is a canary by size's candidate (whose signals
    hold their own position slot and cooldown book)."""

    config: StrategyConfig
    size_share: float | None = None
    candidate: bool = False

    @property
    def book(self) -> str:
        """The name of the cooldown book the leg decides with (the candidate's is its own)."""
        return self.config.name + CANARY_LEG_SUFFIX if self.candidate else self.config.name

    def signal(self, record: dict[str, Any]) -> dict[str, Any]:
        """``record`` (a signal of this leg) with the leg's share of the size (``factors["size_share"]``,
        which the executor multiplies into ``size_mult``) and, for the candidate, its own slot (its id
        ends with ``CANARY_LEG_SUFFIX``); unchanged outside a canary by size."""
        if self.size_share is None:
            return record
        record["factors"]["size_share"] = self.size_share
        if self.candidate:
            record["signal_id"] += CANARY_LEG_SUFFIX
        return record


class SwitchRefused(ValueError):
    """A switch the running engine cannot make (another strategy, state-shaping keys changed, a hash
    that does not match its content)."""


@dataclass(frozen=True)
class Switch:
    strategy: str
    seq: int
    applied_from: int
    active: Revision
    canary: Canary | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "seq": self.seq,
            "applied_from": self.applied_from,
            "active": self.active.as_record(),
            "canary": None if self.canary is None else self.canary.as_record(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Switch:
        a, c = d["active"], d.get("canary")
        canary = None if c is None else Canary.from_record(c)
        return cls(
            d["strategy"], d["seq"], d["applied_from"], Revision(a["rev"], a["config_hash"], a["content"]), canary
        )


def _config(revision: Revision, strategy: str) -> StrategyConfig:
    cfg = revision.config(f"{strategy} rev {revision.rev}").at_rev(revision.rev)
    if cfg.config_hash != revision.config_hash:
        raise SwitchRefused(
            f"{strategy} rev {revision.rev}: its content hashes to {cfg.config_hash[:12]}, not "
            f"{revision.config_hash[:12]}"
        )
    return cfg


def start_candidate_books(reached: Sequence[Switch], books: dict[str, CooldownBook]) -> None:
    """At the switch point of a canary by size, its candidate's cooldown book starts as a copy of the
    active revision's: the candidate goes on from the cooldowns in force (it does not re-take at once
    a trade the active revision has just taken), then decides on its own. Done where the engine reaches
    the switch, before any evaluation at or after it, so the copy is the same however the input is
    batched; a restart restores the book itself from the engine's state."""
    for s in reached:
        if s.canary is not None and s.canary.size_pct is not None and s.strategy in books:
            books[s.strategy + CANARY_LEG_SUFFIX] = CooldownBook.from_dict(books[s.strategy].to_dict())


class Revisions:
    """The revisions in force per strategy and the switches scheduled but not yet reached."""

    def __init__(self, strategies: Sequence[StrategyConfig]) -> None:
        self._base = {cfg.name: cfg for cfg in strategies}  # what the engine started on: the state's shape
        self.active: dict[str, StrategyConfig] = dict(self._base)
        self.canary: dict[str, tuple[StrategyConfig, frozenset[str]]] = {}
        self.size_pct: dict[str, float] = {}  # strategies in a canary by size -> the candidate's share, %
        self.seq: dict[str, int] = {}
        self.pending: list[Switch] = []
        self.applied: list[Switch] = []  # every switch reached, in order (state: what a restart continues)

    def runs(self, name: str) -> bool:
        return name in self._base

    def config(self, name: str, symbol: str) -> StrategyConfig:
        """The revision of strategy ``name`` that evaluates ``symbol`` now."""
        canary = self.canary.get(name)
        if canary is not None and name not in self.size_pct and symbol in canary[1]:
            return canary[0]
        return self.active[name]

    def legs(self, name: str, symbol: str) -> tuple[Leg, ...]:
        """The revisions of strategy ``name`` that evaluate ``symbol`` now: the one of ``config``, or in
        a canary by size on one of its symbols the active revision at its share, then the candidate."""
        pct = self.size_pct.get(name)
        canary = self.canary.get(name)
        if pct is None or canary is None or symbol not in canary[1]:
            return (Leg(self.config(name, symbol)),)
        active_share, candidate_share = size_shares(pct)
        return Leg(self.active[name], active_share), Leg(canary[0], candidate_share, candidate=True)

    def known_seq(self, name: str) -> int:
        """The newest rollout state of ``name`` scheduled or applied (0: none)."""
        seqs = [s.seq for s in self.pending if s.strategy == name]
        return max([self.seq.get(name, 0), *seqs])

    def schedule(self, switch: Switch) -> None:
        """Add ``switch``, after checking that the running engine can make it; an older or repeated
        state of the same strategy (a re-read of config.rollouts) is ignored."""
        base = self._base.get(switch.strategy)
        if base is None:
            raise SwitchRefused(f"{switch.strategy} is not a strategy this engine runs")
        if switch.seq <= self.known_seq(switch.strategy):
            return
        for revision in (switch.active, switch.canary):
            if revision is None:
                continue
            why = restart_reason(base, _config(revision, switch.strategy))
            if why is not None:
                raise SwitchRefused(f"{switch.strategy} rev {revision.rev}: a restart is needed: {why}")
        self.pending.append(switch)
        self.pending.sort(key=lambda s: (s.applied_from, s.strategy, s.seq))

    def next_switch(self) -> int | None:
        """The earliest ``applied_from`` still pending."""
        return self.pending[0].applied_from if self.pending else None

    def reach(self, point: int) -> list[Switch]:
        """Put in force every pending switch with ``applied_from`` at or before ``point``; returns them."""
        reached: list[Switch] = []
        while self.pending and self.pending[0].applied_from <= point:
            s = self.pending.pop(0)
            self.active[s.strategy] = _config(s.active, s.strategy)
            self.size_pct.pop(s.strategy, None)
            if s.canary is None:
                self.canary.pop(s.strategy, None)
            else:
                self.canary[s.strategy] = (_config(s.canary, s.strategy), frozenset(s.canary.symbols))
                if s.canary.size_pct is not None:
                    self.size_pct[s.strategy] = s.canary.size_pct
            self.seq[s.strategy] = s.seq
            self.applied.append(s)
            reached.append(s)
        return reached

    def to_dict(self) -> dict[str, Any]:
        return {"applied": [s.to_dict() for s in self.applied], "pending": [s.to_dict() for s in self.pending]}

    def restore(self, data: dict[str, Any] | None) -> None:
        """Continue from ``to_dict``: the applied switches are put in force again in order, the pending
        ones stay scheduled. A switch this engine's strategies can no longer take is dropped (the engine
        was restarted on other files: those are now the truth)."""
        if not data:
            return
        for d in data.get("applied", []):
            switch = Switch.from_dict(d)
            try:
                self.schedule(switch)
            except SwitchRefused:
                continue
            self.reach(switch.applied_from)
        for d in data.get("pending", []):
            try:
                self.schedule(Switch.from_dict(d))
            except SwitchRefused:
                continue
