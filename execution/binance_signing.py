"""Signed Binance USD-M REST: HMAC-SHA256 request signing, a blocking client, and error classification.

Signing (Binance "SIGNED" endpoints): the parameters are url-encoded in order, `timestamp` and
`recvWindow` appended, and `signature` = hex HMAC-SHA256 of exactly that query string with the API
secret; the key travels in the `X-MBX-APIKEY` header. Parameters always go in the query string (Binance
accepts them there for every method), so what is signed is byte-for-byte what is sent.

Why a blocking client on the standard library (`http.client`, one keep-alive connection): the executor
is a synchronous decision loop running in its own thread (`execution.service`), and the `Broker`
protocol returns the events an order caused. An async client would need a second event loop and a
bridge for no gain; `requests`/`urllib3` are not tapeflow dependencies. Timeouts are explicit, and a
timeout or a dropped connection is reported as `UNKNOWN_STATE`, never as "not sent".

Secrets: the API secret is read from its `SecretStr` only inside `sign`; neither key is logged, put in
an exception message or in a repr.

Error classes (what the broker does about them):
- `RETRYABLE`: the request was refused before it was processed (-1021 timestamp outside recvWindow:
  resync the clock and retry; 429/418/-1003 rate limits).
- `REJECTED`: the exchange processed and refused it (filters, post-only would take, reduce-only...).
- `NOT_FOUND`: the order does not exist (-2011 unknown order on cancel/modify, -2013 on query).
- `DUPLICATE`: the client order id is already used (-4116): the order exists; query it.
- `UNKNOWN_STATE`: 5xx, timeout, connection error: the order may or may not exist; query by client id
  before anything else.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import time
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any
from urllib.parse import urlencode, urlsplit

import orjson
import structlog
from pydantic import SecretStr

DEFAULT_RECV_WINDOW_MS = 5000
log = structlog.get_logger("binance_rest")


class ErrorKind(Enum):
    RETRYABLE = "retryable"
    REJECTED = "rejected"
    NOT_FOUND = "not_found"
    DUPLICATE = "duplicate"
    UNKNOWN_STATE = "unknown_state"


TIMESTAMP_OUTSIDE_RECV_WINDOW = -1021
RATE_LIMITED = -1003
UNKNOWN_ORDER = -2011  # cancel / modify of an order that is not open
ORDER_DOES_NOT_EXIST = -2013  # query
DUPLICATE_CLIENT_ORDER_ID = -4116


def classify(status: int | None, code: int | None) -> ErrorKind:
    """Error class of a failed request (`status` None = no HTTP answer at all: timeout, reset)."""
    if status is None or status >= 500:
        return ErrorKind.UNKNOWN_STATE
    if code == TIMESTAMP_OUTSIDE_RECV_WINDOW or status in (418, 429) or code == RATE_LIMITED:
        return ErrorKind.RETRYABLE
    if code in (UNKNOWN_ORDER, ORDER_DOES_NOT_EXIST):
        return ErrorKind.NOT_FOUND
    if code == DUPLICATE_CLIENT_ORDER_ID:
        return ErrorKind.DUPLICATE
    return ErrorKind.REJECTED


class BinanceApiError(Exception):
    """A failed request: HTTP status (None without an answer), Binance code and message, and its class."""

    def __init__(self, status: int | None, code: int | None, msg: str) -> None:
        super().__init__(f"HTTP {status} code {code}: {msg}")
        self.status, self.code, self.msg = status, code, msg
        self.kind = classify(status, code)


def sign(secret: SecretStr, query: str) -> str:
    """Hex HMAC-SHA256 of `query` with the API secret."""
    return hmac.new(secret.get_secret_value().encode(), query.encode(), hashlib.sha256).hexdigest()


def signed_query(
    params: Mapping[str, Any], secret: SecretStr, timestamp_ms: int, recv_window_ms: int = DEFAULT_RECV_WINDOW_MS
) -> str:
    """`params` + timestamp + recvWindow, url-encoded in that order, with `&signature=` appended."""
    items = [(k, _text(v)) for k, v in params.items() if v is not None]
    items += [("timestamp", str(timestamp_ms)), ("recvWindow", str(recv_window_ms))]
    query = urlencode(items)
    return f"{query}&signature={sign(secret, query)}"


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class SignedRestClient:
    """Blocking Binance REST client with a server-time offset; raises `BinanceApiError`.

    `clock` is the local wall clock in ms (injectable so tests can skew it); `time_offset_ms` is added to
    it for `timestamp`, and `sync_time()` sets it from `GET /fapi/v1/time`.
    """

    def __init__(
        self,
        base_url: str,
        api_key: SecretStr,
        api_secret: SecretStr,
        *,
        timeout_s: float = 5.0,
        recv_window_ms: int = DEFAULT_RECV_WINDOW_MS,
        clock: Callable[[], int] | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base url must be http(s)://host[:port], got {base_url!r}")
        self._scheme, self._host, self._port = parts.scheme, parts.hostname, parts.port
        self._prefix = parts.path.rstrip("/")
        self._key, self._secret = api_key, api_secret
        self.timeout_s = timeout_s
        self.recv_window_ms = recv_window_ms
        self.clock = clock or (lambda: int(time.time() * 1000))
        self.time_offset_ms = 0
        self._conn: http.client.HTTPConnection | None = None
        self.requests = 0

    def __repr__(self) -> str:  # never the keys
        return f"SignedRestClient({self._scheme}://{self._host}:{self._port})"

    def now_ms(self) -> int:
        return self.clock() + self.time_offset_ms

    def sync_time(self) -> int:
        """Set the offset to the exchange clock (half the round trip assumed each way); returns it."""
        t0 = self.clock()
        body = self.request("GET", "/fapi/v1/time")
        t1 = self.clock()
        self.time_offset_ms = int(body["serverTime"]) - (t0 + t1) // 2
        return self.time_offset_ms

    def signed(self, method: str, path: str, params: Mapping[str, Any] | None = None) -> Any:
        """One signed request. A -1021 (timestamp outside recvWindow: refused before it was processed, so
        safe to send again) resyncs the offset from `/fapi/v1/time` and resends it once, whatever the
        endpoint: the clock may have stepped since the last sync, and a read that kept failing (the
        reconciliation's) would block entries with nothing else to resync it."""
        try:
            return self._signed_once(method, path, params)
        except BinanceApiError as exc:
            if exc.code != TIMESTAMP_OUTSIDE_RECV_WINDOW:
                raise
        before = self.time_offset_ms
        self.sync_time()
        ids = {k: v for k, v in (params or {}).items() if k in ("newClientOrderId", "origClientOrderId")}
        log.warning(
            "exchange refused the request time (-1021): clock offset resynced, request resent",
            method=method,
            path=path,
            offset_ms=self.time_offset_ms,
            previous_offset_ms=before,
            **ids,
        )
        return self._signed_once(method, path, params)

    def _signed_once(self, method: str, path: str, params: Mapping[str, Any] | None) -> Any:
        query = signed_query(params or {}, self._secret, self.now_ms(), self.recv_window_ms)
        return self._send(method, f"{path}?{query}", {"X-MBX-APIKEY": self._key.get_secret_value()})

    def keyed(self, method: str, path: str, params: Mapping[str, Any] | None = None) -> Any:
        """API-key-only endpoints (listenKey)."""
        query = urlencode({k: _text(v) for k, v in (params or {}).items()})
        return self._send(method, f"{path}?{query}" if query else path, {"X-MBX-APIKEY": self._key.get_secret_value()})

    def request(self, method: str, path: str, params: Mapping[str, Any] | None = None) -> Any:
        query = urlencode({k: _text(v) for k, v in (params or {}).items()})
        return self._send(method, f"{path}?{query}" if query else path, {})

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # --- transport ------------------------------------------------------------------------------------
    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=self.timeout_s)
        return self._conn

    def _send(self, method: str, target: str, headers: dict[str, str]) -> Any:
        self.requests += 1
        conn = self._connection()
        try:
            conn.request(method, self._prefix + target, headers=headers)
            resp = conn.getresponse()
            status, raw = resp.status, resp.read()
        except (TimeoutError, OSError, http.client.HTTPException) as exc:
            self.close()  # the connection state is unknown; start afresh next time
            raise BinanceApiError(None, None, f"{type(exc).__name__}: no answer") from None
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        if status >= 400 or (isinstance(body, dict) and isinstance(body.get("code"), int) and body["code"] < 0):
            code = body.get("code") if isinstance(body, dict) else None
            msg = body.get("msg", "") if isinstance(body, dict) else raw[:200].decode(errors="replace")
            raise BinanceApiError(status, code, str(msg))
        return body
