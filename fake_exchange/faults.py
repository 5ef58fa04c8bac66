"""Fault switches: what can go wrong between the exchange and a producer, on demand.

One validated settings model (pydantic, so the CLI, config files and the HTTP control API share the
same names and bounds) plus the runtime countdowns. Counts are *remaining* counts: ``skip_frames=5``
withholds the next five matching frames and then reads 0, so ``GET /_control/status`` shows progress.

Websocket faults:
- ``drop_after_frames``: one-shot; after that many more frames are sent (over all connections),
  every open connection is dropped the way ``drop_mode`` says (``tcp_close``: flush, then close the
  TCP connection without a websocket close frame, the client sees 1006; ``abort``: TCP reset, buffered
  frames lost; ``ws_close``: a clean close frame 1001 as Binance sends at its 24 h cut; ``stall``: a
  half-open connection, the fake keeps it open but never sends on it again nor reads from it, so only the
  client's read timeout can tell; frames keep happening and go to the connections opened later).
- ``skip_frames`` (+ ``skip_stream``, ``None`` = any): the next N frames are never sent to anyone, yet
  they happened at the exchange (REST aggTrades still has them) -> agg-id and depth-chain gaps.
- ``garbage_every``: after every N frames a connection gets one garbage frame (non-JSON text,
  JSON of the wrong shape, a frame with a payload missing its fields).
- ``delay_ms``: every frame leaves that much later than the replay schedule (added latency).
- ``stall_for_s``: for that many seconds from now no frame leaves any connection; they wait in each
  connection's queue and all leave when the window ends (a feed that stalls, then catches up).
- ``duplicate_frames`` (+ ``disorder_stream``, ``None`` = any): the next N matching frames are sent twice,
  the copy right after the original (a retransmitting proxy, a reconnect overlap).
- ``reorder_frames`` (+ ``disorder_stream``): the next N matching frames are each held back and sent right
  after the next frame of the same stream (pairs swapped: out-of-order delivery).

REST faults (control endpoints exempt): ``rest_418_count`` and ``rest_429_count`` (with
``Retry-After: retry_after_s``) for the next N requests, and ``rest_fail_for_s`` seconds of
``rest_fail_status`` (default 503) answers (451 and 403 with the bodies Binance gives a restricted location
and a blocked client); ``vision_delay_ms``: every Vision archive (and checksum)
answer leaves that much later (a slow download link).

A 418/429 answer with ``Retry-After: s`` opens a ban window of ``s`` seconds; every request that arrives
inside it (any client of this exchange: Binance bans the IP) is counted in ``requests_in_ban`` (shown by
``GET /_control/status`` as ``rest_requests_in_ban``), whatever it is answered. A client that honours
Retry-After keeps that count at 0.

The clock is injected so the failure window is testable without sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

DropMode = Literal["tcp_close", "abort", "ws_close", "stall"]


class FaultSettings(BaseModel):
    """Validated fault switches (see module docstring)."""

    model_config = ConfigDict(extra="forbid")

    drop_after_frames: int | None = Field(default=None, ge=1)
    drop_mode: DropMode = "tcp_close"
    skip_frames: int = Field(default=0, ge=0)
    skip_stream: str | None = None
    garbage_every: int = Field(default=0, ge=0)
    delay_ms: float = Field(default=0.0, ge=0.0)
    stall_for_s: float = Field(default=0.0, ge=0.0)
    duplicate_frames: int = Field(default=0, ge=0)
    reorder_frames: int = Field(default=0, ge=0)
    disorder_stream: str | None = None
    rest_429_count: int = Field(default=0, ge=0)
    rest_418_count: int = Field(default=0, ge=0)
    retry_after_s: int = Field(default=1, ge=0)
    rest_fail_for_s: float = Field(default=0.0, ge=0.0)
    rest_fail_status: int = Field(default=503, ge=400, le=599)
    vision_delay_ms: float = Field(default=0.0, ge=0.0)


def parse_fault_assignments(items: list[str]) -> dict[str, Any]:
    """``["skip_frames=5", "skip_stream=btcusdt@aggTrade"]`` -> dict validated by :class:`FaultSettings`."""
    raw: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"fault {item!r}: expected key=value")
        raw[key.strip()] = None if value.strip().lower() in ("", "none", "null") else value.strip()
    return FaultSettings.model_validate(raw).model_dump(include=set(raw))


@dataclass(frozen=True, slots=True)
class RestFault:
    """A REST answer the fault switches impose instead of the real one."""

    status: int
    code: int
    msg: str
    retry_after_s: int | None = None


class FaultState:
    """Current switches plus their countdowns; mutated only from the event loop thread."""

    def __init__(
        self,
        settings: FaultSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._wall_clock = wall_clock
        self.settings = FaultSettings()
        self._fail_until = 0.0
        self._stall_until = 0.0
        self._ban_until = 0.0
        self.requests_in_ban = 0
        self.update((settings or FaultSettings()).model_dump(exclude_defaults=True))

    def update(self, changes: Mapping[str, Any]) -> FaultSettings:
        """Apply a partial update (validated against the current settings)."""
        merged = {**self.settings.model_dump(), **changes}
        for window in ("rest_fail_for_s", "stall_for_s"):  # windows run from their own update
            if window not in changes:
                merged[window] = 0.0
        validated = FaultSettings.model_validate(merged)
        self.settings = validated
        if "rest_fail_for_s" in changes:
            self._fail_until = self._clock() + validated.rest_fail_for_s
        if "stall_for_s" in changes:
            self._stall_until = self._clock() + validated.stall_for_s
        return self.snapshot()

    def clear(self) -> FaultSettings:
        self.settings = FaultSettings()
        self._fail_until = 0.0
        self._stall_until = 0.0
        return self.snapshot()

    def snapshot(self) -> FaultSettings:
        """Settings with the failure and stall windows shown as seconds remaining."""
        now = self._clock()
        return self.settings.model_copy(
            update={
                "rest_fail_for_s": round(max(0.0, self._fail_until - now), 3),
                "stall_for_s": round(max(0.0, self._stall_until - now), 3),
            }
        )

    # -- websocket side -------------------------------------------------------------------------
    def should_skip(self, stream: str) -> bool:
        s = self.settings
        if s.skip_frames > 0 and (s.skip_stream is None or s.skip_stream == stream):
            s.skip_frames -= 1
            return True
        return False

    def duplicate_due(self, stream: str) -> bool:
        """Send this frame twice? (consumes one of ``duplicate_frames``)"""
        s = self.settings
        if s.duplicate_frames > 0 and (s.disorder_stream is None or s.disorder_stream == stream):
            s.duplicate_frames -= 1
            return True
        return False

    def reorder_due(self, stream: str) -> bool:
        """Hold this frame back until the next one of its stream? (consumes one of ``reorder_frames``)"""
        s = self.settings
        if s.reorder_frames > 0 and (s.disorder_stream is None or s.disorder_stream == stream):
            s.reorder_frames -= 1
            return True
        return False

    def stall_remaining_s(self) -> float:
        """Seconds the stall window still holds every frame back (0: none)."""
        return max(0.0, self._stall_until - self._clock())

    def ban_remaining_s(self) -> float:
        """Seconds left in the window of the last 418/429's Retry-After (0: no ban)."""
        return max(0.0, self._ban_until - self._clock())

    def frame_sent(self) -> bool:
        """Count one sent frame; True when the drop countdown just expired (one-shot)."""
        s = self.settings
        if s.drop_after_frames is None:
            return False
        s.drop_after_frames -= 1
        if s.drop_after_frames <= 0:
            s.drop_after_frames = None
            return True
        return False

    def garbage_due(self, frames_sent_on_connection: int) -> bool:
        every = self.settings.garbage_every
        return every > 0 and frames_sent_on_connection % every == 0

    @property
    def delay_s(self) -> float:
        return self.settings.delay_ms / 1000.0

    # -- REST side ------------------------------------------------------------------------------
    def rest_fault(self, client_ip: str) -> RestFault | None:
        """Consume one REST fault if any is armed (418 before 429 before the failure window).

        Counts the request in ``requests_in_ban`` first when it arrives inside the window of an earlier
        418/429's Retry-After."""
        s = self.settings
        now = self._clock()
        if now < self._ban_until:
            self.requests_in_ban += 1
        if s.rest_418_count > 0 or s.rest_429_count > 0:
            self._ban_until = max(self._ban_until, now + s.retry_after_s)
        if s.rest_418_count > 0:
            s.rest_418_count -= 1
            return RestFault(
                418,
                -1003,
                f"Way too many requests; IP({client_ip}) banned until "
                f"{int((self._wall_clock() + s.retry_after_s) * 1000)}. Please use the websocket for live updates "
                "to avoid bans.",
                s.retry_after_s,
            )
        if s.rest_429_count > 0:
            s.rest_429_count -= 1
            return RestFault(
                429,
                -1003,
                f"Too many requests; current limit of IP({client_ip}) is 2400 requests per minute. "
                "Please use the websocket for live updates to avoid polling the API.",
                s.retry_after_s,
            )
        if self._clock() < self._fail_until:
            return RestFault(s.rest_fail_status, *_FAIL_BODIES.get(s.rest_fail_status, _FAIL_BODIES[500]))
        return None


# what Binance answers with a status of the failure window (451 and 403: a restricted location, a blocked
# client; the rest: its internal error)
_FAIL_BODIES = {
    451: (
        0,
        "Service unavailable from a restricted location according to 'b. Eligibility' in "
        "https://www.binance.com/en/terms. Please contact customer service if you believe you received this "
        "message in error.",
    ),
    403: (0, "Forbidden: the request was blocked (WAF)."),
    500: (-1001, "Internal error; unable to process your request. Please try again."),
}
