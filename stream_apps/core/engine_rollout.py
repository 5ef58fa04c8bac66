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
is no mixed evaluation. A revision whose state-shaping keys differ from the running one is refused
(``rollout.restart_reason``): the engine must restart on it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .rollout import Canary, Revision, restart_reason
from .strategy import StrategyConfig


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
        canary = None if c is None else Canary(c["rev"], c["config_hash"], c["content"], tuple(c["symbols"]))
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


class Revisions:
    """The revisions in force per strategy and the switches scheduled but not yet reached."""

    def __init__(self, strategies: Sequence[StrategyConfig]) -> None:
        self._base = {cfg.name: cfg for cfg in strategies}  # what the engine started on: the state's shape
        self.active: dict[str, StrategyConfig] = dict(self._base)
        self.canary: dict[str, tuple[StrategyConfig, frozenset[str]]] = {}
        self.seq: dict[str, int] = {}
        self.pending: list[Switch] = []
        self.applied: list[Switch] = []  # every switch reached, in order (state: what a restart continues)

    def runs(self, name: str) -> bool:
        return name in self._base

    def config(self, name: str, symbol: str) -> StrategyConfig:
        """The revision of strategy ``name`` that evaluates ``symbol`` now."""
        canary = self.canary.get(name)
        if canary is not None and symbol in canary[1]:
            return canary[0]
        return self.active[name]

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

    def reach(self, point: int) -> None:
        """Put in force every pending switch with ``applied_from`` at or before ``point``."""
        while self.pending and self.pending[0].applied_from <= point:
            s = self.pending.pop(0)
            self.active[s.strategy] = _config(s.active, s.strategy)
            if s.canary is None:
                self.canary.pop(s.strategy, None)
            else:
                self.canary[s.strategy] = (_config(s.canary, s.strategy), frozenset(s.canary.symbols))
            self.seq[s.strategy] = s.seq
            self.applied.append(s)

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
