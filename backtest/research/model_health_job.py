"""Judging the models that run: ``judge`` one strategy's model over its last labelled trades, ``store``
the judgement in ``model_health``, and ``ModelHealthJob``, which the stack's labels service runs after
each hourly pass (``review.label_service.LabelService.after_pass``) for every running strategy whose
revision names a model: the active revision's and, during a canary, the canary's.

Which revision runs is read from the rollout audit (``strategy_rollouts_audit``: the newest promote,
finish, rollback or canary step of each strategy) and the revision's file from ``strategy_revisions``;
a strategy never promoted runs the file the stack was started on. The metrics (gauges, labels
``strategy`` and ``role``): ``tapeflow_model_auc``, ``tapeflow_model_brier``,
``tapeflow_model_health_samples`` and ``tapeflow_model_unhealthy`` (1 when the verdict is unhealthy);
deploy/prometheus/model_alerts.yml alerts on them. A model that cannot be judged (its file missing or
changed) is logged and counted in ``tapeflow_model_health_errors_total``; the other strategies are still
judged.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from .model_health import (
    LIVE_SOURCES,
    Health,
    HealthThresholds,
    ModelCache,
    ModelFile,
    ModelHealthError,
    ModelRef,
    model_ref,
    probabilities,
    read_samples,
    revisions_running,
    rolling_health,
)

if TYPE_CHECKING:
    import psycopg
    from prometheus_client import CollectorRegistry

log = structlog.get_logger("model_health")


@dataclass(frozen=True)
class Judgement:
    strategy: str
    role: str  # active, canary or candidate
    config_rev: int | None
    model_sha256: str
    sources: tuple[str, ...]
    thresholds: HealthThresholds
    health: Health
    missing_features: int = 0

    def line(self) -> str:
        rev = "" if self.config_rev is None else f" rev {self.config_rev}"
        return f"{self.strategy}{rev} ({self.role}) model {self.model_sha256[:12]}: {self.health.status}, {self.health.reason}"


def judge(
    conn: psycopg.Connection,
    strategy: str,
    model: ModelFile,
    thresholds: HealthThresholds,
    *,
    role: str,
    config_rev: int | None = None,
    sources: Sequence[str] = LIVE_SOURCES,
) -> Judgement:
    """The health of ``model`` over ``strategy``'s last ``thresholds.window`` labelled trades."""
    revs = revisions_running(conn, strategy, model.digests)
    samples = read_samples(
        conn,
        strategy,
        model.model.features,
        horizon_h=thresholds.horizon_h,
        sources=sources,
        limit=thresholds.window,
        p_win_revs=revs,
    )
    health = rolling_health(samples.y, probabilities(model.model, samples), thresholds)
    return Judgement(
        strategy, role, config_rev, model.sha256, tuple(sources), thresholds, health, samples.missing_features
    )


def store(conn: psycopg.Connection, judgements: Sequence[Judgement], now_ms: int) -> int:
    """One ``model_health`` row per judgement at ``now_ms`` (a second judgement of the same strategy and
    role at the same instant replaces the first). In the caller's transaction."""
    with conn.cursor() as cur:
        for j in judgements:
            h = j.health
            cur.execute(
                "INSERT INTO model_health (time, strategy, role, config_rev, model_sha256, sources, horizon_h,"
                " window_trades, samples, positives, auc, brier, log_loss, status, reason)"
                " VALUES (to_timestamp(%s / 1000.0), %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (strategy, role, time) DO UPDATE SET config_rev = EXCLUDED.config_rev,"
                " model_sha256 = EXCLUDED.model_sha256, sources = EXCLUDED.sources, horizon_h = EXCLUDED.horizon_h,"
                " window_trades = EXCLUDED.window_trades, samples = EXCLUDED.samples,"
                " positives = EXCLUDED.positives, auc = EXCLUDED.auc, brier = EXCLUDED.brier,"
                " log_loss = EXCLUDED.log_loss, status = EXCLUDED.status, reason = EXCLUDED.reason",
                (
                    now_ms,
                    j.strategy,
                    j.role,
                    j.config_rev,
                    j.model_sha256,
                    ",".join(j.sources),
                    j.thresholds.horizon_h,
                    j.thresholds.window,
                    h.samples,
                    h.positives,
                    h.auc,
                    h.brier,
                    h.log_loss,
                    h.status,
                    h.reason,
                ),
            )
    return len(judgements)


# -- which models run --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Running:
    """A model that runs: the strategy, its role, the revision (None: the file the stack started on)."""

    strategy: str
    role: str
    config_rev: int | None
    ref: ModelRef


_LATEST_STEPS = """
SELECT DISTINCT ON (a.strategy) a.strategy, a.action, a.from_rev, a.to_rev
FROM strategy_rollouts_audit a
WHERE a.action IN ('promote', 'canary', 'finish', 'rollback', 'auto_rollback')
ORDER BY a.strategy, a.id DESC
"""


def _content(conn: psycopg.Connection, strategy: str, rev: int | None) -> str | None:
    if rev is None:
        return None
    with conn.cursor() as cur:
        cur.execute("SELECT content FROM strategy_revisions WHERE name = %s AND rev = %s", (strategy, rev))
        row = cur.fetchone()
    return None if row is None else str(row[0])


def running_models(conn: psycopg.Connection, files: Mapping[str, Path]) -> list[Running]:
    """The models of the revisions that run now (module docstring); ``files``: the strategy files the
    stack was started on, by strategy name."""
    with conn.cursor() as cur:
        cur.execute(_LATEST_STEPS)
        steps = {str(r[0]): (str(r[1]), r[2], r[3]) for r in cur.fetchall()}
    out: list[Running] = []
    for name in sorted(set(files) | set(steps)):
        step = steps.get(name)
        revs: list[tuple[str, int | None]] = []
        if step is None:
            revs.append(("active", None))
        else:
            action, from_rev, to_rev = step
            revs.append(("active", from_rev if action == "canary" else to_rev))
            if action == "canary":
                revs.append(("canary", to_rev))
        for role, rev in revs:
            path = files.get(name)
            if rev is None and path is None:
                continue
            content = _content(conn, name, rev) if rev is not None else path.read_text(encoding="utf-8")  # type: ignore[union-attr]
            try:
                ref = model_ref(content)
            except ModelHealthError as exc:
                log.warning("model health: strategy file unreadable", strategy=name, rev=rev, error=str(exc))
                continue
            if ref is not None:
                out.append(Running(name, role, rev, ref))
    return out


# -- the job of the labels service ---------------------------------------------------------------------------


@dataclass
class ModelHealthJob:
    """After each labels pass: judge every running model, store the rows, set the gauges."""

    conninfo: str
    files: Callable[[], Mapping[str, Path]]
    registry: CollectorRegistry
    thresholds: HealthThresholds = field(default_factory=HealthThresholds)
    sources: Sequence[str] = LIVE_SOURCES
    cache: ModelCache = field(default_factory=ModelCache)

    def __post_init__(self) -> None:
        from prometheus_client import Counter, Gauge

        labels = ["strategy", "role"]
        r = self.registry
        self.auc = Gauge(
            "tapeflow_model_auc", "Rolling AUC of the model over its last labelled trades", labels, registry=r
        )
        self.brier = Gauge("tapeflow_model_brier", "Rolling Brier score of the model", labels, registry=r)
        self.samples = Gauge(
            "tapeflow_model_health_samples", "Labelled trades the health is computed on", labels, registry=r
        )
        self.unhealthy = Gauge(
            "tapeflow_model_unhealthy", "1 when the model health verdict is unhealthy", labels, registry=r
        )
        self.errors = Counter(
            "tapeflow_model_health_errors", "Models that could not be judged", ["strategy"], registry=r
        )

    def __call__(self, now_ms: int) -> str:
        import psycopg

        with psycopg.connect(self.conninfo) as conn:
            judgements, failed = self.judge_all(conn)
            store(conn, judgements, now_ms)
            conn.commit()
        self.export(judgements)
        for j in judgements:
            (log.error if j.health.unhealthy else log.info)(
                "ALERT model unhealthy" if j.health.unhealthy else "model health", judgement=j.line()
            )
        return f"models judged {len(judgements)} ({sum(j.health.unhealthy for j in judgements)} unhealthy, {failed} failed)"

    def judge_all(self, conn: psycopg.Connection) -> tuple[list[Judgement], int]:
        judgements, failed = [], 0
        for run in running_models(conn, self.files()):
            try:
                model = self.cache.load(run.ref)
            except ModelHealthError as exc:
                failed += 1
                self.errors.labels(run.strategy).inc()
                log.warning("model health: model not judged", strategy=run.strategy, role=run.role, error=str(exc))
                continue
            judgements.append(
                judge(
                    conn,
                    run.strategy,
                    model,
                    self.thresholds,
                    role=run.role,
                    config_rev=run.config_rev,
                    sources=self.sources,
                )
            )
        return judgements, failed

    def export(self, judgements: Sequence[Judgement]) -> None:
        """The gauges of exactly these judgements (a strategy no longer running a model drops out)."""
        nan = float("nan")
        for gauge in (self.auc, self.brier, self.samples, self.unhealthy):
            gauge.clear()
        for j in judgements:
            key = (j.strategy, j.role)
            self.auc.labels(*key).set(nan if j.health.auc is None else j.health.auc)
            self.brier.labels(*key).set(nan if j.health.brier is None else j.health.brier)
            self.samples.labels(*key).set(j.health.samples)
            self.unhealthy.labels(*key).set(1.0 if j.health.unhealthy else 0.0)


def now_ms() -> int:
    return int(time.time() * 1000)


def judgement_dict(j: Judgement) -> dict[str, Any]:
    return {
        "strategy": j.strategy,
        "role": j.role,
        "config_rev": j.config_rev,
        "model_sha256": j.model_sha256,
        "sources": list(j.sources),
        "horizon_h": j.thresholds.horizon_h,
        "window": j.thresholds.window,
        **j.health.as_dict(),
    }


def gate(
    conn: psycopg.Connection,
    strategy: str,
    content: str,
    thresholds: HealthThresholds,
    *,
    role: str,
    config_rev: int | None = None,
    cache: ModelCache | None = None,
    now: int | None = None,
) -> Judgement | None:
    """The judgement of the model a strategy file names (None: it names none), stored as a
    ``model_health`` row of ``role`` and committed: `strategy promote` refuses a candidate, and the
    guardrail controller rolls a canary back, when it is unhealthy. A model file that cannot be read is
    an error (``ModelHealthError``): nothing is promoted on a model nobody can check."""
    ref = model_ref(content)
    if ref is None:
        return None
    model = (cache or ModelCache()).load(ref)
    j = judge(conn, strategy, model, thresholds, role=role, config_rev=config_rev)
    store(conn, [j], now if now is not None else now_ms())
    conn.commit()
    return j
