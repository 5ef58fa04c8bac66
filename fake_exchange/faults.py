"""Fault switches: what can go wrong between the exchange and a producer, on demand.

One validated settings model (pydantic, so the CLI, config files and the HTTP control API share the
same names and bounds) plus the runtime countdowns. Counts are *remaining* counts: ``skip_frames=5``
withholds the next five matching frames and then reads 0, so ``GET /_control/status`` shows progress.

Websocket faults:
- ``drop_after_frames``: one-shot; after that many more frames are sent (over all connections),
  every open connection is dropped the way ``drop_mode`` says (``tcp_close``: flush, then close the
  TCP connection without a websocket close frame, the client sees 1006; ``abort``: TCP reset, buffered
  frames lost; ``ws_close``: a clean close frame 1001 as Binance sends at its 24 h cut).
- ``skip_frames`` (+ ``skip_stream``, ``None`` = any): the next N frames are never sent to anyone, yet
  they happened at the exchange (REST aggTrades still has them) -> agg-id and depth-chain gaps.
- ``garbage_every``: after every N frames a connection gets one garbage frame (non-JSON text,
  JSON of the wrong shape, a frame with a payload missing its fields).
- ``delay_ms``: every frame leaves that much later than the replay schedule (added latency).

REST faults (control endpoints exempt): ``rest_418_count`` and ``rest_429_count`` (with
``Retry-After: retry_after_s``) for the next N requests, and ``rest_fail_for_s`` seconds of
``rest_fail_status`` (default 503) answers; ``vision_delay_ms``: every Vision archive (and checksum)
answer leaves that much later (a slow download link).

The clock is injected so the failure window is testable without sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

DropMode = Literal["tcp_close", "abort", "ws_close"]


class FaultSettings(BaseModel):
    """Validated fault switches (see module docstring)."""

    model_config = ConfigDict(extra="forbid")

    drop_after_frames: int | None = Field(default=None, ge=1)
    drop_mode: DropMode = "tcp_close"
    skip_frames: int = Field(default=0, ge=0)
    skip_stream: str | None = None
    garbage_every: int = Field(default=0, ge=0)
    delay_ms: float = Field(default=0.0, ge=0.0)
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
        self.update((settings or FaultSettings()).model_dump(exclude_defaults=True))

    def update(self, changes: Mapping[str, Any]) -> FaultSettings:
        """Apply a partial update (validated against the current settings)."""
        merged = {**self.settings.model_dump(), **changes}
        if "rest_fail_for_s" not in changes:
            merged["rest_fail_for_s"] = 0.0
        validated = FaultSettings.model_validate(merged)
        self.settings = validated
        if "rest_fail_for_s" in changes:
            self._fail_until = self._clock() + validated.rest_fail_for_s
        return self.snapshot()

    def clear(self) -> FaultSettings:
        self.settings = FaultSettings()
        self._fail_until = 0.0
        return self.snapshot()

    def snapshot(self) -> FaultSettings:
        """Settings with the failure window shown as seconds remaining."""
        remaining = max(0.0, self._fail_until - self._clock())
        return self.settings.model_copy(update={"rest_fail_for_s": round(remaining, 3)})

    # -- websocket side -------------------------------------------------------------------------
    def should_skip(self, stream: str) -> bool:
        s = self.settings
        if s.skip_frames > 0 and (s.skip_stream is None or s.skip_stream == stream):
            s.skip_frames -= 1
            return True
        return False

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
        """Consume one REST fault if any is armed (418 before 429 before the failure window)."""
        s = self.settings
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
            return RestFault(
                s.rest_fail_status, -1001, "Internal error; unable to process your request. Please try again."
            )
        return None
