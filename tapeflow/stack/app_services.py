"""tapeflow's own processes as supervised services: sink, engine, executor, producer (and the fake
exchange for offline replays; the other venues' producers with the ``venues`` setting); the
cross-venue watchlist with the ``watchlist`` setting; the web UI with the ``ui`` setting (on by default).

Each runs as `python -m tapeflow <command>` with its own HTTP port for `/health` and `/metrics`, so
the supervisor, `status` and Prometheus see them the same way.
"""

from __future__ import annotations

import dataclasses
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
        return Launch(argv=[sys.executable, "-m", "tapeflow", "fake-exchange", "--recording", str(self.settings.replay_dir),
                            "--ws-port", str(self.ws_port), "--rest-port", str(self.rest_port),
                            "--speed", self.settings.replay_speed, "--rest-clock", "recording"],
                      address=f"{HOST}:{self.rest_port}")

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
    uses_broker = True

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
            argv += ["--ws-url", ws, "--rest-url", rest, "--spot-url", rest, "--coinbase-url", rest,
                     "--replay-control-url", rest, "--symbols-from-recording"]
        return Launch(argv=argv, address=f"{HOST}:{port}", env=self.epochs_env())

    def checkpoint_path(self) -> Path:
        """The live Binance producer's checkpoint (last delivered agg id per symbol), as
        `producers.service.run_producer` names it."""
        return self.paths.home / "producer" / f"binance-{self.settings.topic_prefix or 'default'}.json"

    def rewind_to_stored(self, conninfo: str) -> dict[str, tuple[int, int]]:
        """After the embedded broker came back empty, with the producer and the sink stopped: move the
        checkpoint back to the last trade the database holds with no hole before it (`_last_contiguous`). The checkpoint says what the broker
        acknowledged, but the trades it held that the sink had not stored died with its memory storage;
        from the rewound checkpoint the restarted producer fills that hole by agg id (REST), as after
        its own downtime. Returns {symbol: (checkpoint, rewound to)} for the symbols moved back."""
        import psycopg

        from tapeflow_runtime.files import atomic_write_text

        path = self.checkpoint_path()
        if self.fake is not None or not path.exists():  # a replay ends by itself: not resumed
            return {}
        saved = orjson.loads(path.read_bytes())
        last: dict[str, int] = saved.get("last_agg_id") or {}
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
            stored = {symbol: _last_contiguous(conn, symbol) for symbol in last}
        rewound = {symbol: (int(agg), int(stored[symbol])) for symbol, agg in last.items()
                   if stored.get(symbol) is not None and stored[symbol] < int(agg)}
        if rewound:
            saved["last_agg_id"] = {**last, **{symbol: to for symbol, (_, to) in rewound.items()}}
            atomic_write_text(path, orjson.dumps(saved).decode())
        return rewound

    def epochs_env(self) -> dict[str, str] | None:
        """On the embedded broker the producer follows the stack's topic epochs (`tapeflow_runtime.epochs`)."""
        return epochs_env(self.settings, self.paths)


class VenueProducerService(HttpHealthService):
    """Another venue's producer in a live stack (``venues``: `tapeflow produce --exchange bybit|okx`):
    the same symbols into the same md.* topics, following the topic epochs like the Binance producer,
    for the cross-venue watchlist. Not rewound after a broker restart (``rewind_to_stored`` is the
    Binance producer's: it fills a hole by aggregate id from REST); books and marks are snapshots, and
    these venues' trades missed while the broker was down are not recovered."""

    uses_broker = True
    ready_when_answering = True  # as the Binance producer: up once it answers, `status` says how it runs

    def __init__(self, settings, paths, exchange: str) -> None:
        super().__init__(settings, paths)
        self.exchange = exchange
        self.name = f"producer-{exchange}"  # the rollover treats every `producer*` as a producer

    def prepare(self) -> Launch:
        port = free_port(HOST)
        argv = [sys.executable, "-m", "tapeflow", "produce", "--exchange", self.exchange, "--metrics-port", str(port)]
        return Launch(argv=argv, address=f"{HOST}:{port}", env=epochs_env(self.settings, self.paths))


#: how far below the database's last trade `rewind_to_stored` looks for a hole: the sink's parallel
#: writers (2) commit batches of up to 50,000 rows out of order, so when the broker dies the table may
#: hold a later batch without an earlier one; older holes are not the lost broker's (a given-up gap is on
#: md.gaps) and are left alone
REWIND_WINDOW_IDS = 200_000


def _last_contiguous(conn, symbol: str) -> int | None:
    """The agg id before the first hole within `REWIND_WINDOW_IDS` of the last stored trade, else the
    last stored trade (None: nothing stored). Rewinding to the plain maximum lost a batch that a
    second writer had overtaken."""
    top = conn.execute("SELECT max(agg_id) FROM trades WHERE exchange = 'binance' AND symbol = %s",
                       (symbol,)).fetchone()[0]
    if top is None:
        return None
    hole = conn.execute(
        "SELECT agg_id FROM (SELECT agg_id, lead(agg_id) OVER (ORDER BY agg_id) AS next FROM trades"
        " WHERE exchange = 'binance' AND symbol = %s AND agg_id >= %s) s"
        " WHERE next > agg_id + 1 ORDER BY agg_id LIMIT 1", (symbol, int(top) - REWIND_WINDOW_IDS)).fetchone()
    return int(hole[0]) if hole else int(top)


def epochs_env(settings, paths) -> dict[str, str] | None:
    """The environment of a process that follows the stack's topic epochs itself (producers, the
    watchlist); None off the embedded broker."""
    from tapeflow_runtime.epochs import EPOCHS_FILE, rollover_enabled

    if not rollover_enabled(settings):
        return None
    return {"TAPEFLOW_EPOCHS_FILE": str(paths.home / EPOCHS_FILE)}


class EpochConsumer(HttpHealthService):
    """A consumer of the stack's topics (sink, engine, executor). On the embedded broker it follows the
    topic epochs itself (``TAPEFLOW_EPOCHS_FILE``; ``tapeflow_runtime.epochs``): one process for the
    stack's life, which a rollover neither stops nor starts; its ``/health`` names the epoch it runs on
    (``topic_prefix``), which the rollover's steps wait for. Elsewhere its topics and group carry the
    stack's prefix (``TAPEFLOW_TOPIC_PREFIX``)."""

    concurrent = True
    uses_broker = True
    restart_when_starving = True

    def __init__(self, settings, paths, prefix: str | None = None) -> None:
        super().__init__(settings, paths)
        self.env = epochs_env(settings, paths)
        # following the epochs: the stack's own prefix (the process finds its epoch), whatever was asked
        self.prefix = settings.topic_prefix if prefix is None or self.env is not None else prefix

    def launch(self, argv: list[str]) -> Launch:
        port = free_port(HOST)
        return Launch(argv=[*argv, "--metrics-port", str(port)], address=f"{HOST}:{port}",
                      env={"TAPEFLOW_TOPIC_PREFIX": self.prefix, **(self.env or {})})


class SinkService(EpochConsumer):
    """Every topic into the database (runs before the producer so nothing waits in the topics long).

    On the embedded broker it follows the chain of topic segments in-process (``sinks.consumer.TopicSink``);
    its group is the stack's ``<prefix>tapeflow-sink`` whatever the epoch."""

    name = "sink"

    def prepare(self) -> Launch:
        return self.launch([sys.executable, "-m", "tapeflow", "sink"])


class ExecutorService(EpochConsumer):
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
        """Paper settings for a replay: a recording's signals and prices are years old on the wall
        clock, so the signal-age and stale-data limits (wall-clock ages) would block every entry.
        Written to TAPEFLOW_HOME/executor/replay.json; everything else keeps its default."""
        path = self.paths.home / "executor" / "replay.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        ten_years_s = 10 * 365 * 86_400.0
        path.write_text(orjson.dumps({"risk": {"max_signal_age_s": ten_years_s,
                                                "stale_market_data_s": ten_years_s}}).decode())
        return path


class EngineService(EpochConsumer):
    """The signal engine (one Faust worker): md.* in, bars.1m / features / signals out.

    Up once its endpoint answers: joining the consumer group and restoring state from the changelog
    take a few seconds more, and `status` shows "starting" or "rebalancing" until it runs."""

    name = "engine"
    ready_when_answering = True

    def prepare(self) -> Launch:
        argv = [sys.executable, "-m", "tapeflow", "engine"]
        # a replay needs no lateness allowance: the replay's producer publishes progress markers and the
        # engine (`--wait-for-progress`, the default for a replay source) releases its inputs by them;
        # live, a new group waits for the producer's warm start the same way (its history comes first)
        if self.settings.replay_dir is None and not self.settings.namespace and self.settings.warm_start_hours > 0:
            argv.append("--wait-for-progress")
        return self.launch(argv)

    @property
    def app_id(self) -> str:
        return f"{self.prefix}tapeflow-engine"


class WatchlistService(HttpHealthService):
    """The cross-venue watchlist (`tapeflow cross-venue`): md.book/md.mark/md.indicators of every venue in,
    xv.features out (and, with ``watchlist_strategies``, each strategy's signals, leg orders, funding and
    pair snapshots); only with the ``watchlist`` setting. It follows the topic epochs in-process
    (``TAPEFLOW_EPOCHS_FILE``: once the current epoch moves on it goes on with the new one's topics;
    no rollover step waits for it). Its checkpoint (state and input positions) is
    TAPEFLOW_HOME/watchlist/<group>.json; a replay or rehearsal reads its inputs from the beginning."""

    name = "watchlist"
    concurrent = True
    uses_broker = True
    restart_when_starving = True
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
        return Launch(argv=[*argv, "--metrics-port", str(port)], address=f"{HOST}:{port}",
                      env=epochs_env(self.settings, self.paths))


class UIService(HttpHealthService):
    """The web UI (`tapeflow ui`, package ``tapeflow_ui``): reads the database with the read-only role, on
    ``ui_host``:``ui_port`` (loopback and a free port by default). Every request, its ``/health`` too,
    needs the token of TAPEFLOW_HOME/secrets/ui-token: the probe sends it (``bearer_token_file``)."""

    name = "ui"

    def prepare(self) -> Launch:
        host = self.settings.ui_host
        port = self.settings.ui_port or free_port(host if host not in ("0.0.0.0", "::") else HOST)  # nosec B104 # the configured bind address
        return Launch(argv=[sys.executable, "-m", "tapeflow", "ui", "--host", host, "--port", str(port)],
                      address=f"{host}:{port}")

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


def consumer_services(settings, paths, prefix: str | None = None) -> list[EpochConsumer]:
    """The consumers of one topic epoch (``prefix``; default the stack's own prefix, epoch 0)."""
    return [SinkService(settings, paths, prefix), EngineService(settings, paths, prefix),
            ExecutorService(settings, paths, prefix)]


def app_services(settings, paths, prefix: str | None = None) -> list[Service]:
    consumers: list[Service] = list(consumer_services(settings, paths, prefix))
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
    producers = [ProducerService(settings, paths)] + [VenueProducerService(settings, paths, venue)
                                                      for venue in settings.venues if venue != "binance"]
    return consumers + producers + ui
