"""Risk guard: fail-closed rules in the executor's path, with state that is plain data in the stream.

Rules (limits from `RiskLimits`, DESIGN §5):
- daily loss: when the UTC day's net P&L reaches -daily_loss_limit_r (account R: a heavy trade counts
  1.5x), decision `flatten`: close everything, no entries until the next UTC day (then `resume`);
- consecutive losses (net pnl_r <= 0, the complement of a win): at max_consecutive_losses, `pause`
  entries for pause_min; when it ends, `resume` and the streak restarts at 0;
- stale market data (newest trade or book of the symbol older than stale_market_data_s, or none yet),
  venue unreachable, our own output topics failing, or another executor sharing our input
  partitions (two writers): no new entries;
- max open positions over all strategies and symbols;
- kill switch (`tapeflow kill-switch on|off`, a `kill_switch` record on risk.events): no entries,
  open entry orders cancelled; `--flatten` also closes every position.
Exits are never blocked: closing reduces risk. Every decision is returned as a `RiskDecision` with the
rule that fired; the executor publishes each one to risk.events with a snapshot of the guard state.

Why the state is in the stream: the old guard kept it in /tmp/risk_guard_state.json, which only worked
when both processes shared a host (F3). risk.events is compacted and keyed `<mode>:<scope>`; every
`global` record carries the full counters (day from its event time, daily_pnl_r, consecutive_losses,
paused_until), so the latest one per mode is enough to resume after a restart, and `kill_switch` records
carry the switch, `daily_loss` records the daily halt (flatten) and its reset. Paper and live use
different keys, so compaction never lets one overwrite the other. The `state` field of a record is
informational; restore reads the counters, the day and the switch, so nothing can disagree with them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from execution.config import RiskLimits

DAY_MS = 86_400_000
GLOBAL = "global"
KILL_SWITCH = "kill_switch"
DAILY_LOSS = "daily_loss"


def utc_day(ms: int) -> int:
    """Days since 1970-01-01 (UTC) of a time in ms: the daily-loss bucket."""
    return ms // DAY_MS


def symbol_scope(exchange: str, symbol: str) -> str:
    return f"symbol:{exchange}:{symbol}"


def slot_scope(strategy: str, exchange: str, symbol: str) -> str:
    """Scope of a signal decision: the strategy x market slot that holds at most one position."""
    return f"strategy:{strategy}:{exchange}:{symbol}"


def risk_key(mode: str, scope: str) -> str:
    """Compaction key of risk.events: one durable record per mode and scope."""
    return f"{mode}:{scope}"


@dataclass(frozen=True, slots=True)
class RiskDecision:
    decision: str  # allow | block | pause | halt | flatten | resume (the RiskDecision enum)
    scope: str
    reason: str
    event_time: int

    @property
    def allowed(self) -> bool:
        return self.decision in ("allow", "resume")


@dataclass(slots=True)
class GuardState:
    day: int
    daily_pnl_r: float = 0.0
    consecutive_losses: int = 0
    paused_until: int | None = None
    halted_day: int | None = None  # the UTC day the daily loss limit stopped trading (sticky all day)
    kill_switch: bool = False
    kill_switch_flatten: bool = False  # restored: the switch asked to flatten (applied to restored positions)


class RiskGuard:
    def __init__(self, limits: RiskLimits, mode: str, state: GuardState) -> None:
        self.limits = limits
        self.mode = mode
        self.state = state
        self._stale: dict[str, bool] = {}  # market key -> currently flagged stale (for transitions only)
        self._venue_up = True

    @classmethod
    def fresh(cls, limits: RiskLimits, mode: str, now_ms: int) -> RiskGuard:
        return cls(limits, mode, GuardState(day=utc_day(now_ms)))

    # --- derived state --------------------------------------------------------------------------------
    @property
    def halted(self) -> bool:
        """Stopped by the daily loss limit: for the rest of the UTC day, even if later closes win back."""
        return self.state.halted_day is not None and self.state.halted_day == self.state.day

    def paused(self, now_ms: int) -> bool:
        return self.state.paused_until is not None and now_ms < self.state.paused_until

    def state_name(self, now_ms: int) -> str:
        if self.state.kill_switch or self.halted:
            return "halted"
        return "paused" if self.paused(now_ms) else "active"

    # --- entries ----------------------------------------------------------------------------------------
    def check_entry(
        self,
        *,
        now_ms: int,
        scope: str,
        market_data_age_ms: float | None,
        venue_up: bool,
        output_up: bool,
        open_positions: int,
        sole_writer: bool = True,
    ) -> RiskDecision:
        """Allow or block one new entry; the first rule that fires is the reason."""
        stale_ms = self.limits.stale_market_data_s * 1000

        def block(reason: str) -> RiskDecision:
            return RiskDecision("block", scope, reason, now_ms)

        if self.state.kill_switch:
            return block("kill_switch")
        if self.halted:
            return block("daily_loss_limit")
        if self.paused(now_ms):
            return block("consecutive_losses")
        if not venue_up:
            return block("exchange_down")
        if not output_up:
            return block("output_unavailable")
        if not sole_writer:
            return block("not_sole_writer")
        if market_data_age_ms is None or market_data_age_ms > stale_ms:
            return block("stale_market_data")
        if open_positions >= self.limits.max_open_positions:
            return block("max_open_positions")
        return RiskDecision("allow", scope, "checks_passed", now_ms)

    def check_add_on(
        self,
        *,
        now_ms: int,
        scope: str,
        market_data_age_ms: float | None,
        venue_up: bool,
        output_up: bool,
        exposure_usd: float,
        sole_writer: bool = True,
    ) -> RiskDecision:
        """Allow or block an add-on to an open position: every entry rule but the count of open
        positions (it opens none), then `max_exposure_usd` against the open notional after it."""
        decision = self.check_entry(
            now_ms=now_ms,
            scope=scope,
            market_data_age_ms=market_data_age_ms,
            venue_up=venue_up,
            output_up=output_up,
            open_positions=0,
            sole_writer=sole_writer,
        )
        cap = self.limits.max_exposure_usd
        if decision.allowed and cap is not None and exposure_usd > cap:
            return RiskDecision("block", scope, "max_exposure", now_ms)
        return decision

    # --- outcomes -----------------------------------------------------------------------------------------
    def record_close(self, net_r_account: float, close_time: int, now_ms: int) -> list[RiskDecision]:
        """A position closed with `net_r_account` (net pnl_r x its tier multiplier) at `close_time`."""
        out = self._roll_day(close_time)
        self.state.daily_pnl_r += net_r_account
        self.state.consecutive_losses = 0 if net_r_account > 0 else self.state.consecutive_losses + 1
        if not self.halted and self.state.daily_pnl_r <= -self.limits.daily_loss_limit_r:
            self.state.halted_day = self.state.day
            out.append(RiskDecision("flatten", DAILY_LOSS, "daily_loss_limit", now_ms))
        if self.state.consecutive_losses >= self.limits.max_consecutive_losses and not self.paused(now_ms):
            self.state.paused_until = now_ms + self.limits.pause_min * 60_000
            out.append(RiskDecision("pause", GLOBAL, "consecutive_losses", now_ms))
        if not out:
            out.append(RiskDecision("allow", GLOBAL, "position_closed", now_ms))
        return out

    def tick(self, now_ms: int) -> list[RiskDecision]:
        """Time-driven transitions: the end of a pause and the UTC day change."""
        out = self._roll_day(now_ms)
        if self.state.paused_until is not None and now_ms >= self.state.paused_until:
            self.state.paused_until = None
            self.state.consecutive_losses = 0
            out.append(RiskDecision("resume", GLOBAL, "pause_over", now_ms))
        return out

    def tick_quiet(self, now_ms: int) -> bool:
        """Whether ``tick(now_ms)`` would change nothing: the UTC day is the guard's and no pause ends."""
        return utc_day(now_ms) <= self.state.day and (
            self.state.paused_until is None or now_ms < self.state.paused_until
        )

    def tick_quiet_until(self) -> float:
        """The end of the time in which ``tick_quiet`` is true (for a time it is true at): the next UTC
        day or the pause's end."""
        until = (self.state.day + 1) * DAY_MS
        return until if self.state.paused_until is None else min(until, self.state.paused_until)

    def _roll_day(self, t_ms: int) -> list[RiskDecision]:
        day = utc_day(t_ms)
        if day <= self.state.day:
            return []
        was_halted, had_pnl = self.halted, self.state.daily_pnl_r != 0
        self.state.day = day
        self.state.daily_pnl_r = 0.0
        self.state.halted_day = None
        if was_halted:
            return [RiskDecision("resume", DAILY_LOSS, "daily_loss_reset", t_ms)]
        return [RiskDecision("allow", GLOBAL, "utc_day_reset", t_ms)] if had_pnl else []

    def set_kill_switch(self, on: bool, flatten: bool, now_ms: int) -> list[RiskDecision]:
        changed = on != self.state.kill_switch
        self.state.kill_switch = on
        if on and flatten:
            return [RiskDecision("flatten", GLOBAL, KILL_SWITCH, now_ms)]
        if not changed:
            return []
        return [
            RiskDecision("halt", GLOBAL, KILL_SWITCH, now_ms)
            if on
            else RiskDecision("resume", GLOBAL, "kill_switch_off", now_ms)
        ]

    def market_data(self, key: str, scope: str, age_ms: float | None, now_ms: int) -> RiskDecision | None:
        """Report a symbol going stale or fresh again (transitions only)."""
        stale = age_ms is None or age_ms > self.limits.stale_market_data_s * 1000
        before = self._stale.get(key)
        self._stale[key] = stale
        if stale and before is False:
            return RiskDecision("block", scope, "stale_market_data", now_ms)
        if not stale and before is True:
            return RiskDecision("resume", scope, "market_data_fresh", now_ms)
        return None

    def market_data_quiet(self, key: str, age_ms: float | None) -> bool:
        """Whether ``market_data`` would change nothing because the key is flagged fresh and is still
        fresh at ``age_ms``. Also true for any younger age: a caller that has not passed the newest data
        of a market yet (so ``age_ms`` is too old) may rely on it. A key flagged stale or never flagged
        is never quiet (newer data could change it)."""
        return (
            self._stale.get(key) is False and age_ms is not None and not age_ms > self.limits.stale_market_data_s * 1000
        )

    def venue(self, up: bool, now_ms: int) -> RiskDecision | None:
        before, self._venue_up = self._venue_up, up
        if before and not up:
            return RiskDecision("block", GLOBAL, "exchange_down", now_ms)
        if up and not before:
            return RiskDecision("resume", GLOBAL, "exchange_up", now_ms)
        return None

    def venue_quiet(self, up: bool) -> bool:
        """Whether ``venue(up)`` would change nothing."""
        return up == self._venue_up

    # --- the stream ---------------------------------------------------------------------------------------
    def to_record(self, decision: RiskDecision) -> dict[str, Any]:
        """The RiskEvent record of `decision` with the guard state it leaves behind."""
        return {
            "scope": decision.scope,
            "mode": self.mode,
            "decision": decision.decision,
            "state": self.state_name(decision.event_time),
            "reason": decision.reason,
            "daily_pnl_r": self.state.daily_pnl_r,
            "consecutive_losses": self.state.consecutive_losses,
            "paused_until": self.state.paused_until if self.paused(decision.event_time) else None,
            "event_time": decision.event_time,
        }

    @classmethod
    def restore(cls, limits: RiskLimits, mode: str, records: Iterable[Mapping[str, Any]], now_ms: int) -> RiskGuard:
        """Resume from risk.events records (any order; the latest per scope by event time wins)."""
        last: dict[str, Mapping[str, Any]] = {}
        for rec in records:
            if rec.get("mode") != mode or rec.get("scope") not in (GLOBAL, KILL_SWITCH, DAILY_LOSS):
                continue
            prev = last.get(rec["scope"])
            if prev is None or rec["event_time"] >= prev["event_time"]:
                last[rec["scope"]] = rec
        state = GuardState(day=utc_day(now_ms))
        glob = last.get(GLOBAL)
        if glob is not None and glob.get("daily_pnl_r") is not None:
            state.day = utc_day(int(glob["event_time"]))
            state.daily_pnl_r = float(glob["daily_pnl_r"])
            state.consecutive_losses = int(glob.get("consecutive_losses") or 0)
            state.paused_until = glob.get("paused_until")
        halt = last.get(DAILY_LOSS)
        if halt is not None and halt["decision"] == "flatten":
            state.halted_day = utc_day(int(halt["event_time"]))
            state.day = max(state.day, state.halted_day)
        switch = last.get(KILL_SWITCH)
        state.kill_switch = switch is not None and switch["decision"] in ("halt", "flatten", "block")
        state.kill_switch_flatten = switch is not None and switch["decision"] == "flatten"
        return cls(limits, mode, state)
