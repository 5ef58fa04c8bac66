"""The embedded stack fed *live* by the fake exchange, for the fault tests and
``benchmarks/bench_endurance.py``: the same supervisor, services and setup steps as `tapeflow up`,
only the exchange is the local fake playing a synthetic session in real time (no replay control, so
the producer runs as against Binance: one record batch per trade or two at these rates).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from fake_exchange.synthetic import SyntheticSpec, generate_session
from tapeflow.stack.app_services import HOST, FakeExchangeService, ProducerService
from tapeflow.stack.postgres import EmbeddedPostgres
from tapeflow.stack.service import Launch
from tapeflow.stack.supervisor import Supervisor, default_steps
from tapeflow_runtime.paths import StackPaths
from tapeflow_runtime.settings import Settings


def synthetic_argv(s: SyntheticSpec, ws_port: int, rest_port: int) -> list[str]:
    """The fake exchange's command line for the synthetic session ``s`` on these ports."""
    return [
        sys.executable,
        "-m",
        "fake_exchange",
        "--synthetic-seed",
        str(s.seed),
        "--synthetic-symbols",
        ",".join(s.symbols),
        "--synthetic-duration",
        str(s.duration_s),
        "--synthetic-trades-per-s",
        str(s.trades_per_s),
        "--synthetic-burstiness",
        str(s.burstiness),
        "--synthetic-depth-interval-ms",
        str(s.depth_interval_ms),
        *(["--synthetic-rates", ",".join(f"{k}={v:g}" for k, v in s.rates.items())] if s.rates else []),
        "--synthetic-start",
        str(s.start_time),
        "--ws-port",
        str(ws_port),
        "--rest-port",
        str(rest_port),
    ]


#: ``dated_at_launch``: the session's first event time this far after the fake exchange's launch, about
#: when the producer (launched next, once the exchange answers) subscribes and the play begins
LAUNCH_TO_PLAY_S = 2.0


class SyntheticExchange(FakeExchangeService):
    """The fake exchange playing a synthetic session at real-time speed, starting now; its REST
    aggTrades show only the trades already played, as Binance's do (a restarted producer's catch-up
    must not see the future).

    ``dated_at_launch``: the session's event times start at the exchange's launch (`LAUNCH_TO_PLAY_S`
    after it) instead of the spec's ``start_time``, so the trades the producer hears are dated about
    when it hears them, as a live exchange's are. A live producer's first start anchors its chain at the
    first trade dated at or after its own start (`TradeRepairs.anchor`) and holds every trade until REST
    shows one: with a spec dated when the test began, a stack that took 70 s to start under load found
    the whole 50-s session dated before it, held it 60 s (the anchor's timeout) and delivered it at once,
    after the session had ended and before any fault. Agg ids do not depend on the date."""

    def __init__(
        self, settings, paths, spec: SyntheticSpec, start: str = "first_subscriber", dated_at_launch: bool = False
    ) -> None:
        super().__init__(settings, paths)
        self.spec, self.start, self.dated_at_launch = spec, start, dated_at_launch

    def prepare(self) -> Launch:
        spec = self.spec
        if self.dated_at_launch:
            spec = spec.model_copy(update={"start_time": time.time() + LAUNCH_TO_PLAY_S})
        return Launch(
            argv=[
                *synthetic_argv(spec, self.ws_port, self.rest_port),
                "--speed",
                "1",
                "--start",
                self.start,
                "--aggtrades-visibility",
                "replayed",
                "--log-level",
                "WARNING",
            ],
            address=f"{HOST}:{self.rest_port}",
        )


class SyntheticReplay(FakeExchangeService):
    """The fake exchange replaying a synthetic session as `up --source replay:DIR --replay-speed S` replays
    a recording: paced by the producer's replay control, at ``speed`` (``max``: no sleeping)."""

    def __init__(self, settings, paths, spec: SyntheticSpec, speed: str) -> None:
        super().__init__(settings, paths)
        self.spec, self.speed = spec, speed

    def prepare(self) -> Launch:
        return Launch(
            argv=[
                *synthetic_argv(self.spec, self.ws_port, self.rest_port),
                "--speed",
                self.speed,
                "--rest-clock",
                "recording",
                "--log-level",
                "WARNING",
            ],
            address=f"{HOST}:{self.rest_port}",
        )


class SyntheticReplayProducer(ProducerService):
    """The producer under the replay control of a ``SyntheticReplay`` (its symbols from TAPEFLOW_SYMBOLS:
    there is no recording directory to read them from)."""

    def prepare(self) -> Launch:
        launch = super().prepare()
        return Launch(
            argv=[a for a in launch.argv if a != "--symbols-from-recording"], address=launch.address, env=launch.env
        )


class LiveProducer(ProducerService):
    """The producer in live mode against the fake exchange (it never hears of the session's end)."""

    def __init__(self, settings, paths, fake: SyntheticExchange) -> None:
        super().__init__(settings, paths, None)
        self.exchange = fake

    def prepare(self) -> Launch:
        launch = super().prepare()
        ws, rest = f"ws://{HOST}:{self.exchange.ws_port}", f"http://{HOST}:{self.exchange.rest_port}"
        return Launch(
            argv=[*launch.argv, "--ws-url", ws, "--rest-url", rest, "--spot-url", rest, "--coinbase-url", rest],
            address=launch.address,
            env=launch.env,
        )


@dataclass
class RunningStack:
    sup: Supervisor
    spec: SyntheticSpec
    conninfo: str
    log: list[str]

    @property
    def bootstrap(self) -> str:
        return self.sup.addresses["broker"]

    #: the test's own connection, kept between queries: the fault tests ask every 0.05-0.5 s, and a new
    #: connection each time cost ~9 ms of CPU (a backend forked, SCRAM on both sides) against 0.05 ms
    _conn: psycopg.Connection | None = field(default=None, init=False, repr=False)

    def query(self, sql: str, *args) -> list[tuple]:
        """The rows of ``sql``, on the kept connection; one that broke (the database restarted, its
        backends reset) is replaced by a new one, whose connect error, if any, is raised as a new
        connection's was (the fault tests take it for "the database does not answer")."""
        if self._conn is not None:
            try:
                return self._conn.execute(sql, args).fetchall()
            except (psycopg.OperationalError, psycopg.InterfaceError):
                self.close()  # broken by a fault: a new connection answers for the database as it is now
        self._conn = psycopg.connect(self.conninfo, autocommit=True)
        return self._conn.execute(sql, args).fetchall()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    def trades_stored(self, symbol: str) -> tuple[int, int, int | None, int | None]:
        """(rows, distinct agg ids, min agg id, max agg id) of ``symbol`` in the database."""
        return self.query(
            "SELECT count(*), count(DISTINCT agg_id), min(agg_id), max(agg_id) FROM trades WHERE symbol = %s", symbol
        )[0]

    def service_pid(self, name: str) -> int | None:
        run = self.sup.running.get(name)
        return run.proc.pid if run is not None else None


def expected_trades(spec: SyntheticSpec) -> dict[str, tuple[int, int, int]]:
    """Per symbol, the session's aggTrades as (count, first agg id, last agg id); ids are consecutive."""
    import orjson

    out: dict[str, tuple[int, int, int]] = {}
    for frame in generate_session(spec).frames:
        if "@aggTrade" in frame.stream:
            data = orjson.loads(frame.data)
            agg = (data.get("data") or data)["a"]
            sym = frame.stream.split("@")[0].upper()
            n, first, _ = out.get(sym, (0, agg, agg))
            out[sym] = (n + 1, first, agg)
    return out


@contextlib.contextmanager
def supervised(sup, poll_s: float):
    """``sup`` holding its home's lock, every service started and supervised on a thread (restarts as
    under `tapeflow up`); on leaving, the supervision stopped, every service stopped, the lock released."""
    sup.acquire_lock()
    thread = None
    try:
        sup.start_all()
        thread = threading.Thread(target=sup.supervise, kwargs={"poll_s": poll_s}, daemon=True)
        thread.start()
        yield sup
    finally:
        sup.stop_requested.set()
        if thread is not None:
            thread.join(120)
        sup.stop_all()
        sup.release()


@contextlib.contextmanager
def live_stack(
    home: Path,
    spec: SyntheticSpec,
    *,
    env: dict[str, str] | None = None,
    start: str = "first_subscriber",
    startup_timeout_s: float = 60.0,
    replay_speed: str | None = None,
    dated_at_launch: bool = False,
    without: tuple[str, ...] = (),
) -> Iterator[RunningStack]:
    """Start the stack (broker, database, sink, engine, executor, fake exchange, live producer) under
    ``home``; supervise it on a thread until the block ends.
    ``start="session_time"`` plays each frame at its own receive time (event times = the wall clock's).
    ``dated_at_launch``: the session dated from the fake exchange's launch (`SyntheticExchange`).
    ``without``: services `up` would run that are left out (a test whose faults and assertions do not
    touch them saves their start and stop: labels, guardrail and ui took 25 s to start at load 25).
    ``replay_speed`` (e.g. "max"): replay the session instead, as `up --source replay:DIR` does."""
    saved = {k: os.environ.get(k) for k in ("TAPEFLOW_SYMBOLS", "TAPEFLOW_WARM_START_HOURS", *(env or {}))}
    os.environ.update({"TAPEFLOW_SYMBOLS": ",".join(spec.symbols), "TAPEFLOW_WARM_START_HOURS": "0", **(env or {})})
    log: list[str] = []

    def say(line: str) -> None:
        log.append(f"{time.monotonic():.1f} {line}")

    try:
        paths = StackPaths(home)
        paths.ensure()
        settings = Settings(
            home=home,
            broker=None,
            database_url=None,
            symbols=list(spec.symbols),
            warm_start_hours=0,
            startup_timeout_s=startup_timeout_s,
        )
        probe = Supervisor(settings, paths, say=say)  # the services `up` would run
        services = [s for s in probe.services if s.name not in ("producer", "fake-exchange", *without)]
        if replay_speed is None:
            fake = SyntheticExchange(settings, paths, spec, start, dated_at_launch)
            services += [fake, LiveProducer(settings, paths, fake)]
        else:
            replay = SyntheticReplay(settings, paths, spec, replay_speed)
            services += [replay, SyntheticReplayProducer(settings, paths, replay)]
        sup = Supervisor(settings, paths, say=say, services=services, steps=default_steps(settings, paths))
        with supervised(sup, poll_s=0.25):
            pg = next(s for s in sup.services if isinstance(s, EmbeddedPostgres))
            conninfo = pg.admin_conninfo(sup.addresses["database"], "tapeflow")
            stack = RunningStack(sup, spec, conninfo, log)
            try:
                yield stack
            finally:
                stack.close()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
