"""A resilient websocket market-data connection, shared by every venue: reconnects, read timeouts, rotation.

- Reconnect with exponential backoff and full jitter, so many producers do not reconnect in step.
- websockets answers the server's pings and sends its own (`ping_interval`, which keeps idle NAT
  entries open), but never closes a connection for a late pong: on a busy stream the pong waits in
  the socket behind every frame not yet read, so a producer that is merely behind (a loaded machine,
  a replay at max speed) would drop a live connection and lose what was in flight (seen: a 2-hour
  replay cut after 40 s, 43,551 frames lost). Any frame proves the link alive; a read timeout
  (`read_timeout_s` without one) catches a silently dead TCP connection.
- Binance cuts every connection after 24 h: the connection is rotated before that (`max_age_s`)
  by opening the new one first and closing the old one only once the new one delivers, so nothing
  is missed; the overlap produces duplicates that the consumers of this stream drop by id.
- "No network" (DNS failure, connection refused on a machine without internet) is reported once,
  clearly, with the offline alternative, then retried quietly with backoff.
- A replay from the fake exchange (`replay_end`): the fake's last message on a connection is an
  end-of-replay marker carrying how many messages it sent before it (`fake_exchange.ws_server`). It
  goes to `on_replay_end(marker, received)` with the count this connection read, never to `on_frame`:
  with both counts the producer knows it has read everything, rather than guessing from a timer.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson
import structlog
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

log = structlog.get_logger("producer.ws")

OnFrame = Callable[[str, dict, int, bytes], None]
OnStatus = Callable[[str, str], None]
OnReplayEnd = Callable[[dict, int], None]
REPLAY_END_PREFIX = b'{"stream":"tapeflow@replayEnd"'  # the fake exchange's end-of-replay marker


@dataclass
class StreamConfig:
    """Where to connect and how patiently; a venue subclass says how `streams` become the URL."""

    base_url: str  # e.g. wss://fstream.binance.com or ws://127.0.0.1:PORT
    streams: list[str]
    ping_interval_s: float = 20.0
    read_timeout_s: float = 30.0
    max_age_s: float = 23.5 * 3600
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    replay_end: bool = False  # ask the fake exchange for its end-of-replay marker

    @property
    def url(self) -> str:
        return self.base_url


class CombinedStream:
    """Delivers `(stream, data, receive_time_ms, raw)` for every frame until `stop` is set."""

    def __init__(
        self,
        config: StreamConfig,
        on_frame: OnFrame,
        on_bad_frame: Callable[[bytes, str], None],
        on_status: OnStatus,
        on_reconnect: Callable[[str], None],
        on_replay_end: OnReplayEnd | None = None,
        hold: Callable[[], Awaitable[None] | None] | None = None,
    ) -> None:
        """`hold()` before each frame: an awaitable means "not yet" (a replay's lockstep repairs)."""
        self.config = config
        self.on_replay_end = on_replay_end
        self.hold = hold
        self.messages_in = 0  # every message read, on every connection (the end marker excluded)
        self.on_frame = on_frame
        self.on_bad_frame = on_bad_frame
        self.on_status = on_status
        self.on_reconnect = on_reconnect
        self.connected = asyncio.Event()
        self._offline_reported: str | None = None  # the state last reported (unreachable / silent)
        self.connections = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Keep a connection delivering until `stop`; cancelling this coroutine closes them all."""
        self._open: set[asyncio.Task] = set()
        try:
            await self._run(stop)
        finally:
            for task in list(self._open):
                await _cancel(task)

    async def _run(self, stop: asyncio.Event) -> None:
        attempt = 0
        retiring: asyncio.Task | None = None  # the old connection during a rotation
        while not stop.is_set():
            first_frame = asyncio.Event()
            task = asyncio.create_task(self._connection(first_frame, stop))
            self._open.add(task)
            task.add_done_callback(self._open.discard)
            outcome = await _first_of(stop, task, event=first_frame)
            if retiring is not None:  # the replacement delivers (or failed): retire the old one now
                await _cancel(retiring)
                retiring = None
            if outcome == "stop":
                await _cancel(task)
                return
            if outcome == "failed":
                self._lost(task)
                attempt += 1
                delay = random.uniform(
                    0,
                    min(
                        self.config.backoff_max_s,  # nosec B311 # reconnect jitter, not a secret
                        self.config.backoff_initial_s * 2 ** min(attempt, 10),
                    ),
                )
                if await sleep_or_stop(stop, delay):
                    return
                continue
            attempt = 0
            self.connected.set()
            self._offline_reported = None
            self.on_status("connected", self.config.url)
            outcome = await _first_of(stop, task, timeout=self.config.max_age_s)
            if outcome == "stop":
                await _cancel(task)
                return
            if outcome == "failed":
                self._lost(task)
                continue
            log.info("rotating connection before the 24 h limit", age_s=self.config.max_age_s)
            self.on_reconnect("rotation")
            retiring = task  # keeps delivering until the replacement's first frame

    def _lost(self, task: asyncio.Task) -> None:
        reason = _task_reason(task)
        self.connected.clear()
        self.on_reconnect(reason)
        log.debug("connection lost", reason=reason)

    async def _connection(self, first_frame: asyncio.Event, stop: asyncio.Event) -> None:
        cfg = self.config
        opened = False
        try:
            async with websockets.connect(
                cfg.url,
                ping_interval=cfg.ping_interval_s,
                ping_timeout=None,
                max_size=2**24,
                open_timeout=10,
                close_timeout=2,
            ) as ws:
                opened = True
                self.connections += 1
                read_here = 0
                while not stop.is_set():
                    raw = await asyncio.wait_for(ws.recv(decode=False), timeout=cfg.read_timeout_s)
                    received = int(time.time() * 1000)
                    first_frame.set()
                    if cfg.replay_end and raw.startswith(REPLAY_END_PREFIX) and self._replay_ended(raw, read_here):
                        continue
                    read_here += 1
                    self.messages_in += 1
                    if self.hold is not None and (pending := self.hold()) is not None:
                        await pending
                    self._dispatch(raw, received)
        except (TimeoutError, OSError, socket.gaierror, InvalidHandshake, InvalidURI) as exc:
            if not first_frame.is_set():
                self._report_offline(exc, silent=opened and isinstance(exc, TimeoutError))
            raise

    def _dispatch(self, raw: bytes, received: int) -> None:
        """Binance's combined-stream envelope `{"stream": ..., "data": {...}}`; a venue overrides it."""
        msg = self._decode(raw)
        if msg is None:
            return
        if "stream" not in msg or not isinstance(msg.get("data"), dict):
            if "result" in msg and "id" in msg:
                return  # a SUBSCRIBE acknowledgement
            self.on_bad_frame(raw, "unexpected frame shape (no stream/data envelope)")
            return
        self._deliver(msg["stream"], msg["data"], received, raw)

    def _replay_ended(self, raw: bytes, read_here: int) -> bool:
        """The fake's end-of-replay marker: hand it over with this connection's count (True when it was one)."""
        try:
            marker = orjson.loads(raw)["data"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return False
        if self.on_replay_end is not None:
            self.on_replay_end(marker, read_here)
        return True

    def _decode(self, raw: bytes) -> dict | None:
        """The frame as a JSON object, or None after dead-lettering it."""
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            self.on_bad_frame(raw, f"not JSON: {exc}")
            return None
        if not isinstance(msg, dict):
            self.on_bad_frame(raw, "unexpected frame shape (not a JSON object)")
            return None
        return msg

    def _deliver(self, stream: str, data: dict, received: int, raw: bytes) -> None:
        try:
            self.on_frame(stream, data, received, raw)
        except Exception as exc:  # one bad frame must never take the connection down
            log.exception("frame handler failed", stream=stream)
            self.on_bad_frame(raw, f"handler error: {type(exc).__name__}: {exc}")

    def _report_offline(self, exc: BaseException, silent: bool) -> None:
        """Say once (per kind) why no frame arrives: nothing answered at the address (`unreachable`, with
        the offline hint), or the websocket opened but stayed silent for the read timeout (`silent`: a
        stalled upstream, or a fake exchange whose session has ended). Both are retried with backoff."""
        state = "silent" if silent else "unreachable"
        if self._offline_reported == state:
            return
        self._offline_reported = state
        if silent:
            detail = (
                f"the exchange websocket at {self.config.base_url} accepted the connection but sent "
                f"nothing for {self.config.read_timeout_s:g} s. Reconnecting with backoff."
            )
            log.error("exchange silent", read_timeout_s=self.config.read_timeout_s)
            self.on_status(state, detail)
            return
        text = f"{type(exc).__name__}: {exc}"
        hint = (
            "cannot reach the exchange websocket at " + self.config.base_url + f" ({text}). "
            "If this machine has no internet access, run offline from a recording: "
            "tapeflow up --source replay:DIR. Retrying with backoff."
        )
        log.error("exchange unreachable", detail=text, hint="tapeflow up --source replay:DIR")
        self.on_status(state, hint)


class SubscribingStream(CombinedStream):
    """A venue whose channels are chosen after connecting and whose heartbeat is an application message
    (Bybit's JSON `{"op":"ping"}`, OKX's text `ping`): websockets' own pings are off, the subscription
    requests (`_subscribe_requests`) go out on every new connection, `_ping()` every `ping_interval_s`,
    and the live connection is `_ws` (for a venue's re-subscription). A venue gives the two messages and
    its `_dispatch`; reconnects, rotation, the read timeout and the replay's end are the base's."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._ws: ClientConnection | None = None
        self.pongs = 0

    def _subscribe_requests(self) -> list[str | bytes]:
        raise NotImplementedError

    def _ping(self) -> str | bytes:
        raise NotImplementedError

    async def _connection(self, first_frame: asyncio.Event, stop: asyncio.Event) -> None:
        cfg = self.config
        opened = False
        try:
            async with websockets.connect(
                cfg.url, ping_interval=None, max_size=2**24, open_timeout=10, close_timeout=2
            ) as ws:
                opened = True
                self.connections += 1
                for request in self._subscribe_requests():
                    await ws.send(request)
                self._ws = ws
                heartbeat = asyncio.create_task(self._heartbeat(ws), name="venue-ping")
                read_here = 0
                try:
                    while not stop.is_set():
                        raw = await asyncio.wait_for(ws.recv(decode=False), timeout=cfg.read_timeout_s)
                        first_frame.set()
                        if cfg.replay_end and raw.startswith(REPLAY_END_PREFIX) and self._replay_ended(raw, read_here):
                            continue
                        read_here += 1
                        self.messages_in += 1
                        self._dispatch(raw, int(time.time() * 1000))
                finally:
                    heartbeat.cancel()
                    if self._ws is ws:
                        self._ws = None
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
            if not first_frame.is_set():
                self._report_offline(exc, silent=opened and isinstance(exc, TimeoutError))
            raise

    async def _heartbeat(self, ws: ClientConnection) -> None:
        while True:
            await asyncio.sleep(self.config.ping_interval_s)
            try:
                await ws.send(self._ping())
            except ConnectionClosed:
                return


async def _first_of(
    stop: asyncio.Event, task: asyncio.Task, *, event: asyncio.Event | None = None, timeout: float | None = None
) -> str:
    """Wait for whichever comes first: "stop", "failed" (the task ended), "ready" (`event`) or "timeout"."""
    waiters = {asyncio.create_task(stop.wait()): "stop", task: "failed"}
    if event is not None:
        waiters[asyncio.create_task(event.wait())] = "ready"
    done, _ = await asyncio.wait(set(waiters), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    for w in waiters:
        if w is not task:
            w.cancel()
    if stop.is_set():
        return "stop"
    if task in done:
        return "failed"
    return "ready" if done else "timeout"


async def _cancel(task: asyncio.Task) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def _task_reason(task: asyncio.Task) -> str:
    if task.cancelled():
        return "cancelled"
    exc = task.exception()
    if exc is None:
        return "closed"
    if isinstance(exc, ConnectionClosed):
        return "closed by server"
    if isinstance(exc, asyncio.TimeoutError):
        return "read timeout"
    return type(exc).__name__


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to `seconds`; True when `stop` was set meanwhile."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
        return True
    except TimeoutError:
        return False
