"""The canary guardrail controller (`tapeflow strategy guard`, the stack's `guardrail` service): every
10 minutes, each running canary's closed trades (positions of its strategy, revision and symbols
closed since the canary started) are held to its guardrails (``stream_apps.core.rollout.Guardrails``:
max drawdown in R, rolling net R, win rate); a breach rolls the canary back by itself: the rollback
state on config.rollouts, an ``auto_rollback`` audit row (actor ``guardrail``, the breach as reason)
and an alert in the log. A canary whose revision names a confidence model is also held to that model's
health (``model_check``, ``canary_model_breach``): its rolling AUC and Brier score over the strategy's
last labelled trades (``backtest.research.model_health``), rolled back the same way when unhealthy
(the reason says "model health: ..."). Each such judgement is a ``model_health`` row (role canary).

Where it runs, and why a service of its own: the controller needs the registry and the control topic
(``tapeflow.rollout``, the top layer), so neither the executor nor the sink may host it, and the
supervisor of `tapeflow up` must not run database work in its own process (a stuck query there would
stall the whole stack's supervision). As a separate process it has its own `/health` and restarts with
backoff like every other service, and it is light: it sleeps on one timer to the next 10-minute
boundary (no wakeup in between, so the stack's idle CPU does not move), and a pass reads the small
compacted config.rollouts and, only when a canary runs, one query per canary."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from stream_apps.core.rollout import Guardrails, RolloutState
from tapeflow.rollout import Publisher, RolloutError, apply_step, plan_rollback

if TYPE_CHECKING:
    import psycopg

    from backtest.research.model_health import HealthThresholds, ModelCache

#: the model health of a canary: its breach as the audit's reason, or None (healthy, not judged, no model)
ModelCheck = Callable[["psycopg.Connection", RolloutState], "str | None"]

log = structlog.get_logger("guardrail")
EVERY_MS = 10 * 60_000
ACTOR = "guardrail"


def drawdown_r(net_rs: Sequence[float]) -> float:
    """Largest fall of the cumulative net R from its running peak, the peak starting at 0 (before any
    trade), in R (>= 0)."""
    peak = total = worst = 0.0
    for r in net_rs:
        total += r
        peak = max(peak, total)
        worst = max(worst, peak - total)
    return worst


def breach(net_rs: Sequence[float], g: Guardrails) -> str | None:
    """The first guard ``net_rs`` (the canary's closed trades in exit order) breaks, as the audit's
    reason, or None."""
    dd = drawdown_r(net_rs)
    if dd > g.max_drawdown_r:
        return f"max drawdown {dd:.2f}R > {g.max_drawdown_r:g}R over {len(net_rs)} trades"
    if len(net_rs) >= g.window_trades:
        rolling = sum(net_rs[-g.window_trades :])
        if rolling < g.min_net_r:
            return f"net R of the last {g.window_trades} trades {rolling:+.2f}R < {g.min_net_r:+g}R"
    if len(net_rs) >= g.min_trades:
        rate = sum(1 for r in net_rs if r > 0) / len(net_rs)
        if rate < g.min_win_rate:
            return f"win rate {100 * rate:.0f} % < {100 * g.min_win_rate:.0f} % over {len(net_rs)} trades"
    return None


def canary_trades(conn: psycopg.Connection, state: RolloutState) -> list[float]:
    """Net R of the canary's closed trades in exit order: positions of its strategy and revision on its
    symbols closed since the canary started (a revision canaried before starts afresh)."""
    assert state.canary is not None
    with conn.cursor() as cur:
        cur.execute(
            "SELECT pnl_r_net FROM positions WHERE event = 'closed' AND strategy = %s AND config_rev = %s"
            " AND symbol = ANY(%s) AND event_time >= to_timestamp(%s / 1000.0) AND pnl_r_net IS NOT NULL"
            " ORDER BY event_time, position_id",
            (state.strategy, state.canary.rev, list(state.canary.symbols), state.requested_time),
        )
        return [float(row[0]) for row in cur.fetchall()]


@dataclass
class GuardResult:
    checked: list[str] = field(default_factory=list)  # strategies with a canary
    rolled_back: dict[str, str] = field(default_factory=dict)  # strategy -> breach


def canary_model_breach(
    conn: psycopg.Connection,
    state: RolloutState,
    limits: HealthThresholds | None = None,
    cache: ModelCache | None = None,
    now_ms: int | None = None,
) -> str | None:
    """The canary's model health as a breach (module docstring), or None. A model file that cannot be
    read is a breach too: a canary must not trade on a model nobody can check."""
    from backtest.research.model_health import HealthThresholds, ModelHealthError
    from backtest.research.model_health_job import gate

    assert state.canary is not None
    try:
        judged = gate(
            conn,
            state.strategy,
            state.canary.content,
            limits or HealthThresholds(),
            role="canary",
            config_rev=state.canary.rev,
            cache=cache,
            now=now_ms,
        )
    except ModelHealthError as exc:
        conn.rollback()
        return f"model health: the canary's model cannot be checked: {exc}"
    if judged is None or not judged.health.unhealthy:
        return None
    return f"model health: {judged.health.reason} (model {judged.model_sha256[:12]})"


def check_once(
    conn: psycopg.Connection,
    states: dict[str, RolloutState],
    publisher: Publisher,
    now_ms: int,
    model_check: ModelCheck | None = None,
) -> GuardResult:
    """One pass over every running canary; a breaching one (its trades, or its model's health when
    ``model_check`` is given) is rolled back (module docstring)."""
    result = GuardResult()
    for name, state in sorted(states.items()):
        if state.canary is None:
            continue
        result.checked.append(name)
        why = breach(canary_trades(conn, state), state.guardrails or Guardrails())
        if why is None and model_check is not None:
            why = model_check(conn, state)
        conn.commit()  # the read's transaction ends before the rollback's starts
        if why is None:
            continue
        after = plan_rollback(state, name, None, ACTOR, why, now_ms, automatic=True)
        apply_step(conn, publisher, state, after)
        result.rolled_back[name] = why
        log.error(
            "ALERT canary rolled back",
            strategy=name,
            canary_rev=state.canary.rev,
            active_rev=state.active.rev,
            symbols=list(state.canary.symbols),
            breach=why,
        )
    return result


def next_run_ms(now_ms: int, every_ms: int = EVERY_MS) -> int:
    """The next boundary of the period strictly after ``now_ms``."""
    return (now_ms // every_ms + 1) * every_ms


@dataclass
class GuardService:
    """The controller as a long-running service: a pass at start and at every 10-minute boundary."""

    run_pass: Callable[[int], GuardResult]
    every_ms: int = EVERY_MS
    status: str = "starting"
    detail: str = ""
    last_run_ms: int | None = None

    def health(self) -> dict[str, Any]:
        return {"status": self.status, "detail": self.detail, "last_run_ms": self.last_run_ms}

    def run_once(self, now_ms: int) -> None:
        import psycopg

        from tapeflow_runtime.errors import TapeflowError

        try:
            result = self.run_pass(now_ms)
        except (psycopg.Error, TapeflowError, RolloutError) as exc:
            self.status, self.detail = "failing", str(exc).strip().splitlines()[0] if str(exc).strip() else "error"
            log.warning("guardrail pass failed", error=self.detail)
            return
        self.status, self.last_run_ms = "running", now_ms
        self.detail = f"{len(result.checked)} canaries checked, {len(result.rolled_back)} rolled back at the last pass"
        log.info("guardrail pass", checked=result.checked, rolled_back=result.rolled_back)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.to_thread(self.run_once, int(time.time() * 1000))
            now = int(time.time() * 1000)
            try:
                await asyncio.wait_for(stop.wait(), timeout=max((next_run_ms(now, self.every_ms) - now) / 1000, 1.0))
            except TimeoutError:
                pass


async def serve_guard(service: GuardService, metrics_host: str, metrics_port: int) -> int:
    from prometheus_client import CollectorRegistry

    from tapeflow_runtime.service_http import build_app, run_until_signalled

    return await run_until_signalled(
        service.run,
        build_app(CollectorRegistry(), service.health, frozenset({"running", "starting"})),
        metrics_host,
        metrics_port,
        lambda port: log.info("guardrail controller started", metrics_port=port, every_min=service.every_ms // 60_000),
    )
