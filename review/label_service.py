"""The running stack's outcome-label writer (`tapeflow labels serve`): ``review.label_job.run_due`` at
start and then at the top of every hour, with `/health` and `/metrics` on its own port. The same pass
then writes the autopsy of every closed trade whose price path is stored to its end
(``review.autopsy_db.write_pending_autopsies``) into ``trade_autopsies``.

Why a service of its own, rather than a job inside an existing process: the layers allow ``review``
only above ``execution``, so neither the sink (``sinks``) nor the executor (``execution``) may import
it, and the web UI, the one process above it, is optional and reads with the read-only role. The
service is light: one process that sleeps on a single timer until the next hour (no periodic
wakeups in between, so the stack's idle CPU does not move), and whose hourly pass reads a day or two
of samples with a few queries per market. A failed pass (database down, or a row it cannot read) is
logged and retried at the next hour; `/health` says `failing` meanwhile (so `tapeflow status` shows it)
and the process keeps running rather than crash-looping under the supervisor.

After the labels and autopsies, each job of ``after_pass`` runs (the confidence-model health job,
``backtest.research.model_health_job``, which ``tapeflow labels serve`` hands in: this layer may not
import it) and its one-line summary joins the `/health` detail. A job that fails makes the pass fail
like the labels would (logged, `failing`, retried at the next hour); the labels written stay.

Each pass labels a strategy by the threshold its active revision's file sets (``labels:
{roi_threshold: 0.005}``; ``review.label_job.strategy_thresholds``), read again at every pass so a
promoted revision's threshold applies from the next one; ``--strategy-threshold`` overrides it and a
strategy whose file sets none takes ``--threshold``.

The rows written are also produced to ``outcome.labels`` (keyed like the table, compacted) once their
transaction has committed, when the stack has a broker: the table is the record, the topic lets a
consumer follow new labels without polling it. A record the broker did not take is logged; the
next recompute (`tapeflow labels backfill`) produces it again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from execution.config import ExecutorConfig
from review.autopsy_db import Explainer, write_pending_autopsies
from review.label_job import label_key, label_record, run_due, with_strategy_thresholds
from review.labels import HOUR_MS, LabelParams, OutcomeLabel
from tapeflow_runtime.publisher import Publisher
from tapeflow_runtime.service_http import build_app, run_until_signalled

log = structlog.get_logger("labels")
TOPIC = "outcome.labels"


def next_run_ms(now_ms: int, every_ms: int = HOUR_MS) -> int:
    """The next top of the period strictly after ``now_ms``."""
    return (now_ms // every_ms + 1) * every_ms


@dataclass
class LabelService:
    conninfo: str
    modes: Sequence[str]
    params: LabelParams
    config: ExecutorConfig
    publisher: Publisher | None = None  # outcome.labels, when the stack has a broker
    after_pass: Sequence[Callable[[int], str]] = ()  # jobs run after each pass: now_ms -> a summary
    explain: Explainer | None = None  # the confidence model's part in a trade, for its autopsy's narrative
    # the strategy files the stack started on, by name: each pass labels a strategy by the threshold its
    # active revision's file sets (labels.roi_threshold) unless params.thresholds (the operator's) names it
    strategy_files: Callable[[], Mapping[str, Path]] | None = None
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    status: str = "starting"
    detail: str = ""
    last_run_ms: int | None = None

    def __post_init__(self) -> None:
        self.written = Counter(
            "tapeflow_outcome_labels_written", "Outcome label rows written", ["source"], registry=self.registry
        )
        self.pending = Gauge(
            "tapeflow_outcome_labels_pending",
            "Due (sample, horizon) pairs whose price data does not reach the horizon yet",
            ["source"],
            registry=self.registry,
        )
        self.autopsies = Counter("tapeflow_trade_autopsies_written", "Trade autopsies written", registry=self.registry)
        self.last_success = Gauge(
            "tapeflow_outcome_labels_last_success_seconds",
            "Unix time of the last successful pass",
            registry=self.registry,
        )

    def health(self) -> dict[str, Any]:
        return {"status": self.status, "detail": self.detail, "last_run_ms": self.last_run_ms}

    def run_once(self, now_ms: int, stop: Callable[[], bool] | None = None) -> None:
        def publish(source: str, labels: list[OutcomeLabel]) -> None:
            if self.publisher is not None:
                for lab in labels:
                    self.publisher.publish(TOPIC, label_key(source, lab), label_record(source, lab, now_ms))

        try:
            params = self.params
            if self.strategy_files is not None:  # read each pass: a promote changes the active revision
                params = with_strategy_thresholds(self.conninfo, params, self.strategy_files())
            results = run_due(
                self.conninfo,
                self.modes,
                params=params,
                config=self.config,
                now_ms=now_ms,
                stop=stop,
                on_written=publish,
            )
            autopsies = self._autopsies(now_ms)
            extra = [job(now_ms) for job in self.after_pass]
        except psycopg.Error as exc:
            self.status, self.detail = "failing", str(exc).strip().splitlines()[0] if str(exc).strip() else "error"
            log.warning("outcome labels failed", error=self.detail)
            return
        except Exception as exc:  # a bug or a row it cannot read: said in `status`, the next pass tries again
            self.status, self.detail = "failing", f"{type(exc).__name__}: {exc}".splitlines()[0]
            log.exception("outcome labels failed")
            return
        if self.publisher is not None and self.publisher.flush(30.0):
            log.warning("outcome labels not all delivered to the topic", topic=TOPIC)
        for mode, r in results.items():
            self.written.labels(mode).inc(r.written)
            self.pending.labels(mode).set(r.pending)
        self.last_run_ms = now_ms
        self.last_success.set(now_ms / 1000)
        written = {m: r.written for m, r in results.items()}
        self.autopsies.inc(autopsies)
        self.status = "running"
        self.detail = "; ".join(
            [f"labels written {sum(written.values())}, trade autopsies {autopsies} at the last pass", *extra]
        )
        log.info(
            "outcome labels", written=written, pending={m: r.pending for m, r in results.items()}, autopsies=autopsies
        )

    def _autopsies(self, now_ms: int) -> int:
        with psycopg.connect(self.conninfo) as conn:
            return write_pending_autopsies(conn, now_ms, explain=self.explain)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            now = int(time.time() * 1000)
            # a long first pass (a history never labelled) ends between day chunks when stopping
            await asyncio.to_thread(self.run_once, now, stop.is_set)
            wait_s = (next_run_ms(int(time.time() * 1000)) - int(time.time() * 1000)) / 1000
            try:
                await asyncio.wait_for(stop.wait(), timeout=max(wait_s, 1.0))
            except TimeoutError:
                pass


async def run_label_service(service: LabelService, metrics_host: str, metrics_port: int) -> int:
    return await run_until_signalled(
        service.run,
        build_app(service.registry, service.health, frozenset({"running", "starting"})),
        metrics_host,
        metrics_port,
        lambda port: log.info("outcome label service started", metrics_port=port, modes=list(service.modes)),
    )
