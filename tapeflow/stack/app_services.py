"""tapeflow's own processes as supervised services: sink, engine, executor, producer (and the fake
exchange for offline replays; the other venues' producers with the ``venues`` setting); the
cross-venue watchlist with the ``watchlist`` setting; the web UI with the ``ui`` setting (on by default).

Each runs as `python -m tapeflow <command>` with its own HTTP port for `/health` and `/metrics`, so
the supervisor, `status` and Prometheus see them the same way.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from pathlib import Path

import orjson

from tapeflow.stack.process import free_port
from tapeflow.stack.service import Launch, Service
from tapeflow_runtime.health import Health

HOST = "127.0.0.1"


def http_json(url: str, timeout: float = 2.0, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeout) as resp:  # nosec B310 # health URLs of the stack's own loopback services
            return resp.status, orjson.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, orjson.loads(exc.read() or b"{}")
        except orjson.JSONDecodeError:
            return exc.code, {}
    except (OSError, orjson.JSONDecodeError) as exc:
        return 0, {"error": str(exc)}


class HttpHealthService(Service):
    """A service whose health is `GET /health` == 200; `up` waits for it, or with
    `ready_when_answering` only for the endpoint to answer (any status)."""

    ready_when_answering = False

    def health_url(self, address: str) -> str:
        return f"http://{address}/health"

    def ready(self, address: str) -> Health:
        if not self.ready_when_answering:
            return self.health(address)
        code, body = http_json(self.health_url(address))
        return Health(code != 0, body.get("detail") or body.get("status") or body.get("error", ""))

    def health(self, address: str) -> Health:
        code, body = http_json(self.health_url(address))
        detail = body.get("detail") or body.get("status") or body.get("error") or f"HTTP {code}"
        return Health(code == 200, detail)


class FakeExchangeService(HttpHealthService):
    """The local fake Binance exchange replaying a recording (`--source replay:DIR`)."""

    name = "fake-exchange"

    def __init__(self, settings, paths) -> None:
        super().__init__(settings, paths)
        self.ws_port = free_port(HOST)
        self.rest_port = free_port(HOST)

    def prepare(self) -> Launch:
        return Launch(
            argv=[
                sys.executable,
                "-m",
                "tapeflow",
                "fake-exchange",
                "--recording",
                str(self.settings.replay_dir),
                "--ws-port",
                str(self.ws_port),
                "--rest-port",
                str(self.rest_port),
                "--speed",
                self.settings.replay_speed,
                "--rest-clock",
                "recording",
            ],
            address=f"{HOST}:{self.rest_port}",
        )

    def health_url(self, address: str) -> str:
        return f"http://{address}/_control/status"

    def health(self, address: str) -> Health:
        code, body = http_json(self.health_url(address))
        if code != 200:
            return Health(False, body.get("error", f"HTTP {code}"))
        sent = sum((body.get("frames_sent") or {}).values()) if isinstance(body.get("frames_sent"), dict) else "?"
        state = "replay finished" if body.get("finished") else "replaying"
        return Health(True, f"{state}, {sent} frames sent")


class ProducerService(HttpHealthService):
    """The Binance producer; in replay mode it ends by itself when the recording does."""

    name = "producer"

    def __init__(self, settings, paths, fake: FakeExchangeService | None = None) -> None:
        super().__init__(settings, paths)
        self.fake = fake
        self.finite = fake is not None  # a replay ends; exit 0 then means done, not crashed

    # up once its endpoint answers: without network a live producer is up but never healthy, and
    # `up` must still come up and let `status` say why (unreachable, with the hint)
    ready_when_answering = True

    def prepare(self) -> Launch:
        port = free_port(HOST)
        argv = [sys.executable, "-m", "tapeflow", "produce", "--metrics-port", str(port)]
        if self.fake is not None:
            ws = f"ws://{HOST}:{self.fake.ws_port}"
            rest = f"http://{HOST}:{self.fake.rest_port}"
            argv += [
                "--ws-url",
                ws,
                "--rest-url",
                rest,
                "--spot-url",
                rest,
                "--coinbase-url",
                rest,
                "--replay-control-url",
                rest,
                "--symbols-from-recording",
            ]
        return Launch(argv=argv, address=f"{HOST}:{port}")


class VenueProducerService(HttpHealthService):
    """Another venue's producer in a live stack (``venues``: `tapeflow produce --exchange bybit|okx`):
    the same symbols into the same md.* topics, for the cross-venue watchlist."""

    ready_when_answering = True  # as the Binance producer: up once it answers, `status` says how it runs

    def __init__(self, settings, paths, exchange: str) -> None:
        super().__init__(settings, paths)
        self.exchange = exchange
        self.name = f"producer-{exchange}"  # `producer*`: the supervisor reports its exchange's reachability

    def prepare(self) -> Launch:
        port = free_port(HOST)
        argv = [sys.executable, "-m", "tapeflow", "produce", "--exchange", self.exchange, "--metrics-port", str(port)]
        return Launch(argv=argv, address=f"{HOST}:{port}")


class ConsumerService(HttpHealthService):
    """A consumer of the stack's topics (sink, engine, executor): its topics and group carry the stack's
    prefix (``TAPEFLOW_TOPIC_PREFIX``), the same whether the broker is embedded or external."""

    concurrent = True

    def __init__(self, settings, paths) -> None:
        super().__init__(settings, paths)
        self.prefix = settings.topic_prefix

    def launch(self, argv: list[str]) -> Launch:
        port = free_port(HOST)
        return Launch(
            argv=[*argv, "--metrics-port", str(port)],
            address=f"{HOST}:{port}",
            env={"TAPEFLOW_TOPIC_PREFIX": self.prefix},
        )


class SinkService(ConsumerService):
    """Every topic into the database (runs before the producer so nothing waits in the topics long);
    its group is the stack's ``<prefix>tapeflow-sink``."""

    name = "sink"

    def prepare(self) -> Launch:
        return self.launch([sys.executable, "-m", "tapeflow", "sink"])


class ExecutorService(ConsumerService):
    """The paper executor: every signal is paper-traded by default (live trading is never started here)."""

    name = "executor"
    mode = "paper"

    def prepare(self) -> Launch:
        argv = [sys.executable, "-m", "tapeflow", "execute", "--mode", self.mode]
        if self.settings.replay_dir is not None or self.settings.namespace:
            argv += ["--executor-config", str(self.replay_config())]
        return self.launch(argv)

    @property
    def group_id(self) -> str:
        return f"{self.prefix}tapeflow-executor-{self.mode}"

    def replay_config(self) -> Path:
        """Paper settings for a replay (a recording, a rehearsal namespace): no limit on a signal's age.
        Paper runs on event time (``execution.event_clock``), so the stale-data limit keeps its default
        as in the backtest; but a replay's signals still reach the executor late on that clock: its
        inputs are released in event-time order, and the signals topic, at its end while the engine has
        not yet evaluated a second, holds nothing back, so the trades run ahead by the engine's lag times
        the replay speed (minutes of event time at max). The default 60 s would refuse such signals
        (``stale_signal``) depending on the speed; without a limit each is traded at the clock's time.
        Written to TAPEFLOW_HOME/executor/replay.json; everything else keeps its default."""
        path = self.paths.home / "executor" / "replay.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        ten_years_s = 10 * 365 * 86_400.0
        path.write_text(orjson.dumps({"risk": {"max_signal_age_s": ten_years_s}}).decode())
        return path


class EngineService(ConsumerService):
    """The signal engine (one Faust worker): md.* in, bars.1m / features / signals out, exactly once
    (Kafka transactions).

    Up once its endpoint answers: joining the consumer group and restoring state from the changelog
    take a few seconds more, and `status` shows "starting" or "rebalancing" until it runs."""

    name = "engine"
    ready_when_answering = True

    def prepare(self) -> Launch:
        # exactly-once: outputs, state snapshots and input offsets commit in one Kafka transaction per
        # input partition and commit interval; a restarted or zombie worker is fenced by its
        # transactional ids (stream_apps.faust_app.app). Readers of its outputs read committed.
        argv = [sys.executable, "-m", "tapeflow", "engine", "--exactly-once"]
        # a replay needs no lateness allowance: the replay's producer publishes progress markers and the
        # engine (`--wait-for-progress`, the default for a replay source) releases its inputs by them;
        # live, a new group waits for the producer's warm start the same way (its history comes first)
        if self.settings.replay_dir is None and not self.settings.namespace and self.settings.warm_start_hours > 0:
            argv.append("--wait-for-progress")
        from stream_apps.core.strategy import strategy_path

        for path in self.settings.strategies:  # relative to where `up` was run, not the child's cwd
            argv += ["--strategy", str(strategy_path(path).resolve())]
        return self.launch(argv)

    @property
    def app_id(self) -> str:
        return f"{self.prefix}tapeflow-engine"


class LabelsService(HttpHealthService):
    """The outcome-label writer (`tapeflow labels serve`, ``review.label_service``): labels the paper
    executor's signals and trades into ``outcome_labels`` at start and at the top of every hour,
    sleeping in between. Up once its endpoint answers: a first pass against a database still starting
    says `failing` in `status` and is retried at the next hour."""

    name = "labels"
    ready_when_answering = True

    def prepare(self) -> Launch:
        port = free_port(HOST)
        return Launch(
            argv=[sys.executable, "-m", "tapeflow", "labels", "serve", "--metrics-port", str(port)],
            address=f"{HOST}:{port}",
        )


class GuardrailService(HttpHealthService):
    """The canary guardrail controller (`tapeflow strategy guard`, ``tapeflow.rollout_guard``): every
    running canary's closed trades against its guardrails at start and every 10 minutes, asleep in
    between; a breach rolls the canary back. Its own process because it needs the registry and the
    control topic (the top layer) and must not stall the supervisor with database work."""

    name = "guardrail"
    ready_when_answering = True

    def prepare(self) -> Launch:
        port = free_port(HOST)
        return Launch(
            argv=[sys.executable, "-m", "tapeflow", "strategy", "guard", "--metrics-port", str(port)],
            address=f"{HOST}:{port}",
        )


class WatchlistService(HttpHealthService):
    """The cross-venue watchlist (`tapeflow cross-venue`): md.book/md.mark/md.indicators of every venue in,
    xv.features out (and, with ``watchlist_strategies``, each strategy's signals, leg orders, funding and
    pair snapshots); only with the ``watchlist`` setting. Its checkpoint (state and input positions) is
    TAPEFLOW_HOME/watchlist/<group>.json; a replay or rehearsal reads its inputs from the beginning."""

    name = "watchlist"
    concurrent = True
    ready_when_answering = True  # joining its group takes seconds more; `status` shows how it runs

    def prepare(self) -> Launch:
        port = free_port(HOST)
        argv = [sys.executable, "-m", "tapeflow", "cross-venue"]
        if self.settings.replay_dir is not None or self.settings.namespace:
            argv += ["--prime-minutes", "0", "--from-beginning"]
        for path in self.settings.watchlist_strategies:  # relative to where `up` was run, not the child's cwd
            argv += ["--strategy", str(Path(path).resolve())]
        if self.settings.watchlist_instrument_rules is not None:
            argv += ["--instrument-rules", str(self.settings.watchlist_instrument_rules.resolve())]
        return Launch(argv=[*argv, "--metrics-port", str(port)], address=f"{HOST}:{port}")


class UIService(HttpHealthService):
    """The web UI (`tapeflow ui`, package ``tapeflow_ui``): reads the database with the read-only role, on
    ``ui_host``:``ui_port`` (loopback and a free port by default). Every request, its ``/health`` too,
    needs the token of TAPEFLOW_HOME/secrets/ui-token: the probe sends it (``bearer_token_file``)."""

    name = "ui"

    def prepare(self) -> Launch:
        host = self.settings.ui_host
        port = self.settings.ui_port or free_port(host if host not in ("0.0.0.0", "::") else HOST)  # nosec B104 # the configured bind address
        return Launch(
            argv=[sys.executable, "-m", "tapeflow", "ui", "--host", host, "--port", str(port)], address=f"{host}:{port}"
        )

    def bearer_token_file(self) -> Path | None:
        from tapeflow_ui.security import load_token, token_path

        load_token(self.paths)  # created before the child starts, so the probe and the child agree
        return token_path(self.paths)

    def health(self, address: str) -> Health:
        code, body = http_json(self.health_url(address), headers=bearer_headers(self.bearer_token_file()))
        detail = body.get("detail") or body.get("status") or body.get("error") or f"HTTP {code}"
        return Health(code == 200, detail)


def bearer_headers(token_file: str | Path | None) -> dict[str, str]:
    """The Authorization header of a service whose every endpoint needs the token in ``token_file``."""
    if not token_file:
        return {}
    try:
        return {"Authorization": f"Bearer {Path(token_file).read_text().strip()}"}
    except OSError:
        return {}


def consumer_services(settings, paths) -> list[ConsumerService]:
    """The consumers of the stack's topics, in start order."""
    return [SinkService(settings, paths), EngineService(settings, paths), ExecutorService(settings, paths)]


def app_services(settings, paths) -> list[Service]:
    consumers: list[Service] = list(consumer_services(settings, paths))
    consumers.append(LabelsService(settings, paths))
    consumers.append(GuardrailService(settings, paths))
    if settings.watchlist:
        consumers.append(WatchlistService(settings, paths))
    # on an external database the UI needs the read-only login (TAPEFLOW_READONLY_PASSWORD); without it
    # `up` runs without the UI rather than failing (`tapeflow ui` says why when run by hand)
    readable = settings.database_url is None or settings.readonly_password is not None
    ui: list[Service] = [UIService(settings, paths)] if settings.ui and readable else []
    if settings.namespace:  # a rehearsal: `tapeflow replay --to-prefix` supplies the data, no producer
        return consumers + ui
    if settings.replay_dir is not None:
        fake = FakeExchangeService(settings, paths)
        return consumers + [fake, ProducerService(settings, paths, fake)] + ui
    producers = [ProducerService(settings, paths)] + [
        VenueProducerService(settings, paths, venue) for venue in settings.venues if venue != "binance"
    ]
    return consumers + producers + ui
