"""`tapeflow ui`: the web application under uvicorn, reading with the read-only role.

The embedded stack's ``tapeflow_readonly`` login (its password in TAPEFLOW_HOME/secrets); on an external
database the same role with ``TAPEFLOW_READONLY_PASSWORD`` (``tapeflow db migrate`` gives it LOGIN).
The UI never falls back to a writing role: without the read-only login it does not start.
"""

from __future__ import annotations

import asyncio
import contextlib

import psycopg

from tapeflow_runtime.endpoints import READONLY_ROLE, resolve_database
from tapeflow_runtime.errors import TapeflowError
from tapeflow_runtime.paths import StackPaths
from tapeflow_runtime.settings import Settings
from tapeflow_ui.security import load_token


class UIError(TapeflowError):
    """The UI cannot start (no read-only login, port taken)."""


def readonly_conninfo(settings: Settings, paths: StackPaths) -> str:
    endpoints = resolve_database(settings, paths)
    if endpoints.readonly is not None:
        return endpoints.readonly
    if settings.readonly_password is None:
        raise UIError(
            "the UI reads with the read-only role: set TAPEFLOW_READONLY_PASSWORD (and run "
            "`tapeflow db migrate`, which gives tapeflow_readonly that password)"
        )
    params = psycopg.conninfo.conninfo_to_dict(endpoints.owner)
    params.update(user=READONLY_ROLE, password=settings.readonly_password.get_secret_value())
    return psycopg.conninfo.make_conninfo(**params)


def desk_actions(settings: Settings, paths: StackPaths):
    """The desk's manual actions (``tapeflow_ui.actions``): the writer login for the audit rows, the
    kill switch published as `tapeflow kill-switch` publishes it (same topic creation, same serde,
    same acknowledged produce), and the pair commands for the watchlist strategies the stack trades
    (``TAPEFLOW_WATCHLIST_STRATEGIES``, loaded as the watchlist service loads them), published on
    xv.commands under the stack's topic prefix, where the watchlist service reads them."""
    from execution.kill_switch import publish_kill_switch
    from execution.watchlist_commands import TOPIC, publish_command
    from schemas.catalogue import topic as topic_spec
    from schemas.registry import registry_from_url
    from schemas.serde import AvroSerde
    from stream_apps.watchlist.strategy import load_watchlist_strategy
    from tapeflow_runtime.endpoints import resolve_broker
    from tapeflow_runtime.kafka_client import ensure_topics
    from tapeflow_ui.actions import Actions

    writer = resolve_database(settings, paths).writer

    def publish(on: bool, modes, flatten: bool) -> list[dict]:
        bootstrap = resolve_broker(settings, paths)
        ensure_topics(bootstrap, prefix=settings.topic_prefix, specs=[topic_spec("risk.events")])
        return publish_kill_switch(
            bootstrap,
            settings.topic_prefix,
            AvroSerde(registry_from_url(settings.schema_registry_url)),
            on,
            modes=list(modes),
            flatten=flatten,
        )

    strategies = {s.name: s for s in (load_watchlist_strategy(p) for p in settings.watchlist_strategies)}

    def command(record: dict) -> None:
        bootstrap = resolve_broker(settings, paths)
        ensure_topics(bootstrap, prefix=settings.topic_prefix, specs=[topic_spec(TOPIC)])
        publish_command(
            bootstrap, settings.topic_prefix, AvroSerde(registry_from_url(settings.schema_registry_url)), record
        )

    return Actions(writer=writer, publish_kill_switch=publish, strategies=strategies, publish_command=command)


def live_follower(settings: Settings, paths: StackPaths):
    """The pages' live updates (``tapeflow_ui.live``): the deployment's broker (resolved when a page
    first listens, so a stack started after the UI is found), the topics under the stack's prefix."""
    from schemas.registry import registry_from_url
    from schemas.serde import AvroSerde
    from tapeflow_runtime.endpoints import resolve_broker
    from tapeflow_ui.live import LiveFollower

    return LiveFollower(
        lambda: resolve_broker(settings, paths),
        AvroSerde(registry_from_url(settings.schema_registry_url)),
        settings.topic_prefix,
    )


def login_url(address: str, token: str) -> str:
    host, port = address.rsplit(":", 1)
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host  # nosec B104 # a bind-all address is not a URL host
    return f"http://{shown}:{port}/?token={token}"


def run_ui(settings: Settings, paths: StackPaths, host: str, port: int, say=print, consumer_lag=None) -> int:
    """Serve the UI; ``consumer_lag`` (the deployment's groups' lag, injected by the CLI) feeds the
    overview's consumer-lag light."""
    import uvicorn

    from tapeflow_ui.app import create_app

    token = load_token(paths)
    app = create_app(
        readonly_conninfo(settings, paths),
        token,
        host=host,
        actions=desk_actions(settings, paths),
        consumer_lag=consumer_lag,
        live=live_follower(settings, paths),
    )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=settings.log_level.lower(),
        access_log=False,
        proxy_headers=False,
        server_header=False,
        date_header=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )  # a backstop: the streams end on their own
    say(f"tapeflow ui on http://{host}:{port}/ (read-only role; token in {paths.secrets_dir}/ui-token)")

    class Server(uvicorn.Server):
        """uvicorn's server with a main loop that sleeps until the exit signal. uvicorn's own wakes
        every 0.1 s to look at its exit flag (and once a second refreshes headers), which was most of
        an idle UI's CPU; this one looks once a second, and at once when the signal comes."""

        _wake: asyncio.Event | None = None
        _loop: asyncio.AbstractEventLoop | None = None

        def handle_exit(self, sig, frame) -> None:  # SIGTERM/SIGINT: end the open pages' streams first
            app.state.closing.set()
            super().handle_exit(sig, frame)
            if self._loop is not None and self._wake is not None:
                self._loop.call_soon_threadsafe(self._wake.set)

        async def main_loop(self) -> None:
            self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
            ticks = 0  # uvicorn's ``on_tick`` counts tenths of a second: once a second is every 10th
            should_exit = await self.on_tick(ticks)
            while not should_exit:
                ticks = (ticks + 10) % 864000
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 1.0)
                should_exit = await self.on_tick(ticks)

    server = Server(config)
    server.run()
    return 0 if server.started else 1
