"""The Binance user-data stream: its websocket thread, and the listen key that keeps it open.

`UserDataStream` reads the websocket on a thread of its own and queues each event for the broker.
`UserDataSession` owns the listen key behind it: created at start (`open`), extended every 30 min,
and replaced once Binance dropped it (60 min without a keepalive: an outage longer than that, a
suspended host), which Binance says with a ``listenKeyExpired`` event or, if that was missed, with
-1125 to the keepalive.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

import orjson
import structlog
from websockets.exceptions import WebSocketException
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from execution.binance_signing import BinanceApiError, SignedRestClient

log = structlog.get_logger("binance_broker")

LISTEN_KEY_KEEPALIVE_MS = 30 * 60_000
LISTEN_KEY_UNKNOWN = -1125  # "This listenKey does not exist." (expired: 60 min without a keepalive)


class UserDataStream:
    """The user-data websocket on a thread of its own: raw events into a queue, read by the broker.

    Why a thread with the blocking `websockets` client: the broker is called from the executor's thread
    and must see events without owning an event loop; the queue is the only thing shared.
    """

    def __init__(self, url: str, reconnect_s: float = 1.0) -> None:
        self.url = url
        self.reconnect_s = reconnect_s
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.connected = threading.Event()
        self.connections = 0  # successful connects so far (a second one means events may have been missed)
        self._stop = threading.Event()
        self._ws: ClientConnection | None = None
        self._thread = threading.Thread(target=self._run, name="binance-user-stream", daemon=True)

    def start(self, timeout_s: float = 5.0) -> None:
        self._thread.start()
        if not self.connected.wait(timeout_s):
            raise ConnectionError("user-data stream did not connect")

    def stop(self) -> None:
        self._stop.set()
        ws = self._ws
        if ws is not None:
            ws.close()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with ws_connect(self.url, open_timeout=5, close_timeout=1) as ws:
                    self._ws = ws
                    self.connections += 1
                    self.connected.set()
                    for raw in ws:
                        self.events.put(orjson.loads(raw))
            except (OSError, WebSocketException, orjson.JSONDecodeError) as exc:
                if not self._stop.is_set():
                    log.warning("user-data stream dropped", error=type(exc).__name__)
            finally:
                self._ws = None
                self.connected.clear()
            self._stop.wait(self.reconnect_s)


class UserDataSession:
    """One listen key and the `UserDataStream` opened with it (`ws_base` + ``/ws/<listenKey>``).

    REST errors of the keepalive and the renewal go to `on_error` (the broker's reachability); a stream
    down for `stream_check_after_s` triggers a keepalive at once instead of waiting out the 30 min,
    since the stream thread cannot reconnect with a dead key."""

    def __init__(
        self,
        rest: SignedRestClient,
        *,
        stream: UserDataStream | None,
        retry_s: float,
        stream_check_after_s: float,
        monotonic: Callable[[], float],
        on_error: Callable[[BinanceApiError], None],
    ) -> None:
        self.rest = rest
        self.stream = stream
        self.ws_base: str | None = None  # where a renewed listen key's stream is opened
        self.retry_s = retry_s  # between failed renewals
        self.stream_check_after_s = stream_check_after_s
        self.renewals = 0
        self.expired = False  # the listen key expired: open a new one at the next keep_alive
        self._monotonic = monotonic
        self._on_error = on_error
        self._listen_key: str | None = None
        self._listen_key_at = 0
        self._connections = 0  # connects of the stream already accounted for
        self._next_renewal = 0.0  # monotonic time of the next attempt after a failed renewal
        self._down_since: float | None = None

    @property
    def connected(self) -> bool:
        """The stream is up (or there is none: nothing to wait for)."""
        return self.stream is None or self.stream.connected.is_set()

    def open(self, timeout_s: float = 5.0) -> None:
        """A new listen key and its user-data stream (at start, and when the old key expired)."""
        self._listen_key = self.rest.keyed("POST", "/fapi/v1/listenKey")["listenKey"]
        self._listen_key_at = self.rest.now_ms()
        self.stream = UserDataStream(f"{self.ws_base}/ws/{self._listen_key}")
        try:
            self.stream.start(timeout_s)
        except ConnectionError:
            self.stream.stop()  # no thread left retrying in the background
            raise
        self._connections = self.stream.connections
        self._down_since = None

    def close(self) -> None:
        if self.stream is not None:
            self.stream.stop()

    def reconnected(self) -> bool:
        """Whether the stream connected again since the last call (events sent meanwhile are lost)."""
        if self.stream is not None and self.stream.connections > self._connections:
            self._connections = self.stream.connections
            return True
        return False

    def keep_alive(self, now_ms: int) -> bool:
        """Extend the listen key every 30 min (or at once when the stream seems stuck); replace it once it
        expired. True when a new key's stream was opened: every open order's events may have been missed."""
        if self._listen_key is None or self.stream is None:
            return False
        stuck = self._stream_stuck()
        if not self.expired and (stuck or now_ms - self._listen_key_at >= LISTEN_KEY_KEEPALIVE_MS):
            self._extend(now_ms, stuck)
        if not self.expired or self._monotonic() < self._next_renewal:
            return False
        return self._renew()

    def _stream_stuck(self) -> bool:
        """The stream has been down for `stream_check_after_s` (its key may be dead)."""
        assert self.stream is not None
        if self.stream.connected.is_set():
            self._down_since = None
        elif self._down_since is None:
            self._down_since = self._monotonic()
        return self._down_since is not None and self._monotonic() - self._down_since >= self.stream_check_after_s

    def _extend(self, now_ms: int, stuck: bool) -> None:
        try:
            self.rest.keyed("PUT", "/fapi/v1/listenKey")
            self._listen_key_at = now_ms
            if stuck:
                self._down_since = self._monotonic()  # the key is fine: check again later
        except BinanceApiError as exc:
            self._on_error(exc)
            self.expired = exc.code == LISTEN_KEY_UNKNOWN

    def _renew(self) -> bool:
        assert self.stream is not None
        log.warning("user-data listen key expired: opening a new one")
        self.stream.stop()
        try:
            self.open()
        except (BinanceApiError, ConnectionError) as exc:
            if isinstance(exc, BinanceApiError):
                self._on_error(exc)
            log.warning("user-data stream not renewed yet", error=type(exc).__name__)
            self._next_renewal = self._monotonic() + self.retry_s
            return False
        self.expired = False
        self.renewals += 1
        return True
