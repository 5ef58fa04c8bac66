"""The config service's registry and control topic: strategy revisions in PostgreSQL
(``strategy_revisions``), every rollout step in ``strategy_rollouts_audit``, and each strategy's
rollout state on the compacted topic config.rollouts, which the engine follows.

A step (promote, canary, finish, rollback, auto_rollback) is planned as a new ``RolloutState`` from
the current one (``plan_*``: pure, clock-injected), then ``apply_step`` writes its audit row and
publishes the state in one database transaction: the row commits only once the broker acknowledged
the state, so the audit never shows a step the engine could not see. (A crash between the
acknowledgement and the commit leaves a published state without its row; the next step's row still
names its from_rev.)"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from schemas.serde import AvroSerde
from stream_apps.core.rollout import Canary, Guardrails, Revision, RolloutState
from tapeflow_runtime.errors import TapeflowError

if TYPE_CHECKING:
    import psycopg

    from stream_apps.core.strategy import StrategyConfig

CONTROL_TOPIC = "config.rollouts"
APPLIED_TOPIC = "config.applied"


class RolloutError(TapeflowError):
    """A rollout step that cannot be taken; the message is one line for the operator."""


# --- registry -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Registered:
    name: str
    rev: int
    config_hash: str
    content: str
    created_at_ms: int
    created_by: str
    note: str
    new: bool = False

    def revision(self) -> Revision:
        return Revision(self.rev, self.config_hash, self.content)


def register(
    conn: psycopg.Connection, cfg: StrategyConfig, content: str, actor: str, now_ms: int, note: str = ""
) -> Registered:
    """The revision of ``cfg`` (whose file text is ``content``): the existing one when its config_hash is
    registered under its name, else the next number (with a ``register`` audit row). Serialised per
    name by an advisory lock, so two concurrent registrations never take the same number. Runs in the
    caller's transaction."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext('strategy_revisions:' || %s))", (cfg.name,))
        found = _revision_row(cur, "name = %s AND config_hash = %s", (cfg.name, cfg.config_hash))
        if found is not None:
            return found
        cur.execute("SELECT coalesce(max(rev), 0) + 1 FROM strategy_revisions WHERE name = %s", (cfg.name,))
        row = cur.fetchone()
        assert row is not None
        rev = int(row[0])
        cur.execute(
            "INSERT INTO strategy_revisions (name, rev, config_hash, content, created_at, created_by, note)"
            " VALUES (%s, %s, %s, %s, to_timestamp(%s / 1000.0), %s, %s)",
            (cfg.name, rev, cfg.config_hash, content, now_ms, actor, note),
        )
    audit(conn, now_ms, actor, "register", cfg.name, None, rev, "", note)
    return Registered(cfg.name, rev, cfg.config_hash, content, now_ms, actor, note, new=True)


_COLUMNS = "name, rev, config_hash, content, (extract(epoch FROM created_at) * 1000)::bigint, created_by, note"


def _revision_row(cur: Any, where: str, params: tuple[Any, ...]) -> Registered | None:
    cur.execute(f"SELECT {_COLUMNS} FROM strategy_revisions WHERE {where}", params)  # noqa: S608  # nosec B608 # this module's constant columns and clauses; values are bound
    row = cur.fetchone()
    return None if row is None else Registered(*row)


def revision(conn: psycopg.Connection, name: str, rev: int) -> Registered | None:
    with conn.cursor() as cur:
        return _revision_row(cur, "name = %s AND rev = %s", (name, rev))


def revisions(conn: psycopg.Connection, name: str | None = None) -> list[Registered]:
    """Every registered revision (of ``name``), by name and revision."""
    where, params = ("WHERE name = %s", (name,)) if name else ("", ())
    with conn.cursor() as cur:
        cur.execute(f"SELECT {_COLUMNS} FROM strategy_revisions {where} ORDER BY name, rev", params)  # noqa: S608  # nosec B608 # constant columns and clause; values are bound
        return [Registered(*row) for row in cur.fetchall()]


def audit(
    conn: psycopg.Connection,
    now_ms: int,
    actor: str,
    action: str,
    strategy: str,
    from_rev: int | None,
    to_rev: int | None,
    scope: str = "",
    reason: str = "",
    seq: int | None = None,
) -> None:
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO strategy_rollouts_audit (time, actor, action, strategy, from_rev, to_rev, scope, reason, seq)"
            " VALUES (to_timestamp(%s / 1000.0), %s, %s, %s, %s, %s, %s, %s, %s)",
            (now_ms, actor, action, strategy, from_rev, to_rev, scope, reason, seq),
        )


def audit_rows(conn: psycopg.Connection, strategy: str | None = None) -> list[dict[str, Any]]:
    """The audit rows (of ``strategy``) in the order they were written."""
    where, params = ("WHERE strategy = %s", (strategy,)) if strategy else ("", ())
    with conn.cursor() as cur:
        cur.execute(
            "SELECT (extract(epoch FROM time) * 1000)::bigint, actor, action, strategy, from_rev, to_rev, scope,"
            f" reason, seq FROM strategy_rollouts_audit {where} ORDER BY id",  # noqa: S608  # nosec B608 # a constant clause; values are bound
            params,
        )
        keys = ("time", "actor", "action", "strategy", "from_rev", "to_rev", "scope", "reason", "seq")
        return [dict(zip(keys, row, strict=True)) for row in cur.fetchall()]


# --- planning the steps (pure) --------------------------------------------------------------------
def _next(
    current: RolloutState | None, strategy: str, active: Revision, canary: Canary | None, **how: Any
) -> RolloutState:
    seq = 1 if current is None else current.seq + 1
    return RolloutState(strategy=strategy, seq=seq, active=active, canary=canary, **how)


def plan_promote(
    current: RolloutState | None,
    baseline: Revision,
    candidate: Revision,
    strategy: str,
    symbols: Iterable[str] | None,
    actor: str,
    reason: str,
    now_ms: int,
    guardrails: Guardrails | None = None,
    size_pct: float | None = None,
) -> RolloutState:
    """The state after promoting ``candidate``: as the canary on ``symbols`` held to ``guardrails``
    (the defaults when None), or active everywhere when ``symbols`` is None; with ``size_pct``, a canary
    by size: beside the active revision on ``symbols`` at that share of the size
    (``stream_apps.core.rollout``). ``baseline`` is the active revision when no state was published yet
    (the file the engine was started on)."""
    active = baseline if current is None else current.active
    if current is not None and current.canary is not None:
        raise RolloutError(
            f"{strategy}: a canary (rev {current.canary.rev}) is running: "
            f"`strategy promote {strategy} --finish` or `strategy rollback {strategy}` first"
        )
    if candidate.rev == active.rev:
        raise RolloutError(f"{strategy}: rev {candidate.rev} is already the active revision")
    how = {"actor": actor, "reason": reason, "requested_time": now_ms}
    if symbols is None:
        return _next(current, strategy, candidate, None, action="promote", **how)
    chosen = tuple(sorted(set(symbols)))
    if not chosen:
        raise RolloutError(f"{strategy}: a canary needs at least one symbol")
    try:
        canary = Canary(candidate.rev, candidate.config_hash, candidate.content, chosen, size_pct)
    except ValueError as exc:
        raise RolloutError(f"{strategy}: {exc}") from None
    return _next(current, strategy, active, canary, action="canary", guardrails=guardrails or Guardrails(), **how)


def plan_finish(current: RolloutState | None, strategy: str, actor: str, reason: str, now_ms: int) -> RolloutState:
    """The canary becomes the active revision on every symbol."""
    if current is None or current.canary is None:
        raise RolloutError(f"{strategy}: no canary to finish")
    c = current.canary
    how = {"actor": actor, "reason": reason, "requested_time": now_ms}
    return _next(current, strategy, Revision(c.rev, c.config_hash, c.content), None, action="finish", **how)


def plan_rollback(
    current: RolloutState | None,
    strategy: str,
    previous: Revision | None,
    actor: str,
    reason: str,
    now_ms: int,
    *,
    automatic: bool = False,
) -> RolloutState:
    """Drop the canary; without one, put ``previous`` (the revision active before the current one) back."""
    action = "auto_rollback" if automatic else "rollback"
    how = {"actor": actor, "reason": reason, "requested_time": now_ms}
    if current is None:
        raise RolloutError(f"{strategy}: nothing to roll back (no rollout was published)")
    if current.canary is not None:
        return _next(current, strategy, current.active, None, action=action, **how)
    if automatic:
        raise RolloutError(f"{strategy}: no canary to roll back")
    if previous is None:
        raise RolloutError(f"{strategy}: no canary and no earlier active revision to roll back to")
    return _next(current, strategy, previous, None, action=action, **how)


def step_revs(
    before: RolloutState | None, after: RolloutState, baseline: Revision | None = None
) -> tuple[int | None, int]:
    """(from_rev, to_rev) of the audit row of the step ``before`` -> ``after``."""
    old = before.active if before is not None else baseline
    if after.action == "canary":
        assert after.canary is not None
        return (None if old is None else old.rev), after.canary.rev
    if after.action in ("rollback", "auto_rollback") and before is not None and before.canary is not None:
        return before.canary.rev, after.active.rev
    return (None if old is None else old.rev), after.active.rev


def scope_of(state: RolloutState) -> str:
    """The audit's scope of a canary: its symbols, and in a canary by size the candidate's share."""
    if state.canary is None:
        return ""
    size = "" if state.canary.size_pct is None else f"size={state.canary.size_pct:g}%;"
    return size + "symbols=" + ",".join(state.canary.symbols)


# --- the control topic ----------------------------------------------------------------------------
def read_states(bootstrap: str, prefix: str, serde: AvroSerde, timeout_s: float = 10.0) -> dict[str, RolloutState]:
    """The latest rollout state per strategy: config.rollouts read from its start to its end now."""
    from confluent_kafka import Consumer, TopicPartition

    from tapeflow_runtime.kafka_client import _QUIET, HISTORY_FETCH_CONFIG, consumer_config, end_offsets

    name = prefix + CONTROL_TOPIC
    # librdkafka's own retries (a coordinator still loading) are not the operator's business: quiet
    consumer = Consumer(consumer_config(bootstrap, None, **HISTORY_FETCH_CONFIG, logger=_QUIET))
    states: dict[str, RolloutState] = {}
    try:
        end = end_offsets(consumer, [(name, 0)], timeout_s).get((name, 0))
        if end is None:
            raise RolloutError(f"cannot read {name}: the broker did not answer within {timeout_s:g} s")
        if end == 0:
            return states
        consumer.assign([TopicPartition(name, 0, -2)])
        deadline = time.monotonic() + timeout_s
        position = 0
        while position < end:
            if time.monotonic() > deadline:
                raise RolloutError(f"cannot read {name} to its end within {timeout_s:g} s")
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                position = max(position, _position(consumer, name))
                continue
            position = (msg.offset() or 0) + 1
            value = msg.value()
            if value is None:
                continue
            state = RolloutState.from_record(serde.decode(value))
            states[state.strategy] = state
    finally:
        consumer.close()
    return states


def _position(consumer: Any, name: str) -> int:
    """The consumer's position (past transaction markers, which carry no message)."""
    from confluent_kafka import TopicPartition

    (tp,) = consumer.position([TopicPartition(name, 0)])
    return max(tp.offset, 0)


class Publisher:
    """Publishes rollout states to config.rollouts and waits for the broker's acknowledgement."""

    def __init__(self, bootstrap: str, prefix: str, serde: AvroSerde, timeout_s: float = 10.0) -> None:
        from confluent_kafka import Producer

        from tapeflow_runtime.kafka_client import _QUIET, producer_config

        self.topic = prefix + CONTROL_TOPIC
        self.serde = serde
        self.timeout_s = timeout_s
        self._producer = Producer(
            producer_config(bootstrap, **{"message.timeout.ms": int(timeout_s * 1000), "logger": _QUIET})
        )

    def publish(self, state: RolloutState) -> None:
        errors: list[str] = []

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(err.str())

        self._producer.produce(
            self.topic,
            key=state.strategy.encode(),
            value=self.serde.encode(CONTROL_TOPIC, state.as_record()),
            on_delivery=delivered,
        )
        remaining = self._producer.flush(self.timeout_s + 1)
        if remaining or errors:
            raise RolloutError(
                f"{self.topic}: the rollout state was not acknowledged ({'; '.join(errors) or 'timeout'})"
            )


def apply_step(
    conn: psycopg.Connection,
    publisher: Publisher,
    before: RolloutState | None,
    after: RolloutState,
    baseline: Revision | None = None,
) -> None:
    """The audit row of ``before`` -> ``after`` and the published state, in one transaction (see the
    module docstring): the caller's open transaction commits after the broker acknowledged."""
    from_rev, to_rev = step_revs(before, after, baseline)
    audit(
        conn,
        after.requested_time,
        after.actor,
        after.action,
        after.strategy,
        from_rev,
        to_rev,
        scope_of(after) if after.action == "canary" else "",
        after.reason,
        after.seq,
    )
    publisher.publish(after)
    conn.commit()


def previous_active(conn: psycopg.Connection, strategy: str, active_rev: int) -> Registered | None:
    """The revision that was active before ``active_rev`` became so (its latest promote or finish)."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT from_rev FROM strategy_rollouts_audit WHERE strategy = %s AND to_rev = %s"
            " AND action IN ('promote', 'finish') AND from_rev IS NOT NULL ORDER BY id DESC LIMIT 1",
            (strategy, active_rev),
        )
        row = cur.fetchone()
    return None if row is None else revision(conn, strategy, int(row[0]))
