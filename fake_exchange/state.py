"""The fake exchange's shared state: what the replay has reached and what has been sent.

The replay engine advances ``position``; websocket connections count what they send; REST handlers
read ``position`` to answer "as of now" (book snapshots, optionally aggTrades); the control API
reports everything. Keeping it in one plain object (no I/O) lets each of those parts stay small and
be tested alone. Only the event-loop thread touches it.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

from .agg_trades import AggTradeIndex
from .depth_book import BookSnapshot, DepthTimeline, build_timelines
from .faults import DropMode, FaultSettings, FaultState
from .market_state import MarketView
from .recording import RecordedFrame, Recording


class Subscriber(Protocol):
    """What the state, the replay and the control API need of one client connection.

    The websocket server's connection implements it; declaring it here keeps the state free of any
    import of the server (which imports the state), so the two are not a circle.
    """

    conn_id: int
    idle: asyncio.Event

    def wants(self, stream: str) -> bool: ...

    def enqueue_frame(self, frame: RecordedFrame) -> None: ...

    def end_replay(self) -> None: ...

    def describe(self) -> dict[str, Any]: ...

    def drop(self, mode: DropMode) -> None: ...


class ExchangeState:
    """Replay progress, per-stream counters, connections and fault switches of one fake exchange."""

    def __init__(
        self,
        recording: Recording,
        faults: FaultSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        aggtrades_visibility: str = "all",
        rest_clock: str = "wall",
    ) -> None:
        self.recording = recording
        self.clock = clock
        self.wall_clock = wall_clock
        self.aggtrades_visibility = aggtrades_visibility
        self.rest_clock = rest_clock
        self.symbols = set(recording.symbols)
        self.timelines: dict[str, DepthTimeline] = build_timelines(recording)
        self.agg_trades = AggTradeIndex(recording)
        self.market = MarketView(recording)
        self.faults = FaultState(faults, clock=clock, wall_clock=wall_clock)
        self.limiter: Any = None  # the REST app's weights.WeightLimiter, once it serves
        self.history: Any = None  # real_history.RealHistory: the hours before the session (real profile)
        self.connections: set[Subscriber] = set()
        self.position = 0
        self.start_requested = asyncio.Event()
        self.running = asyncio.Event()  # cleared while the replay is paused (pause/resume)
        self.running.set()
        self.pause_before: int | None = None  # a frame index: the replay pauses before dispatching it
        self.finished = asyncio.Event()
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.frames_sent: Counter[str] = Counter()
        self.frames_skipped: Counter[str] = Counter()
        self.frames_duplicated: Counter[str] = Counter()
        self.frames_reordered: Counter[str] = Counter()
        self.held_frames: dict[str, RecordedFrame] = {}  # stream -> frame waiting for the next (reorder)
        self.garbage_sent = 0
        self.drops = 0
        self.connections_total = 0
        self.rest_requests = 0
        self.urls: dict[str, str] = {}
        self.background: set[asyncio.Task[Any]] = set()

    # -- replay progress ---------------------------------------------------------------------------
    def request_start(self) -> None:
        self.start_requested.set()

    def pause(self, before: int | None = None) -> None:
        """Hold the replay before its next frame (``before``: before the frame of that index, once
        the replay gets there); connections stay open and keep answering. A pause now drops a
        pending ``before``."""
        if before is None:
            self.running.clear()
            self.pause_before = None
        else:
            self.pause_before = before

    def resume(self) -> None:
        """Go on from where :meth:`pause` held the replay, the session's clock shifted by the pause."""
        self.running.set()

    @property
    def started(self) -> bool:
        return self.started_at is not None

    def now_ms(self) -> int:
        """ "Now" for REST answers: the wall clock, or with ``rest_clock="recording"`` the recorded
        receive time of the last frame replayed (the first frame's before the replay starts)."""
        frames = self.recording.frames
        if self.rest_clock == "recording" and frames:
            return int(frames[max(min(self.position, len(frames)) - 1, 0)].receive_time * 1000)
        return int(self.wall_clock() * 1000)

    def depth_snapshot(self, symbol: str, as_of_ms: int | None = None) -> BookSnapshot | None:
        """The book now (the replay position), or as of an event time a replaying client names."""
        timeline = self.timelines.get(symbol)
        if timeline is None:
            return None
        return timeline.snapshot_at(self.position) if as_of_ms is None else timeline.snapshot_as_of(as_of_ms)

    def agg_trades_visible_before(self) -> int | None:
        return self.position if self.aggtrades_visibility == "replayed" else None

    async def wait_drained(self) -> None:
        """Return once every open connection has sent everything queued for it."""
        while True:
            pending = [c for c in self.connections if not c.idle.is_set()]
            if not pending:
                return
            waiters = [asyncio.create_task(c.idle.wait()) for c in pending]
            try:
                await asyncio.wait(waiters)
            finally:
                for waiter in waiters:
                    waiter.cancel()

    # -- reporting ---------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        limiter = self.limiter
        return {
            "source": self.recording.source,
            "symbols": list(self.recording.symbols),
            "streams": list(self.recording.streams),
            "started": self.started,
            "finished": self.finished.is_set(),
            "position": self.position,
            "frames_total": len(self.recording.frames),
            "frames_sent": dict(self.frames_sent),
            "frames_sent_total": sum(self.frames_sent.values()),
            "frames_skipped": dict(self.frames_skipped),
            "frames_duplicated": dict(self.frames_duplicated),
            "frames_reordered": dict(self.frames_reordered),
            "garbage_sent": self.garbage_sent,
            "drops": self.drops,
            "connections": [c.describe() for c in sorted(self.connections, key=lambda c: c.conn_id)],
            "connections_total": self.connections_total,
            "rest_requests": self.rest_requests,
            "rest_requests_in_ban": self.faults.requests_in_ban + (limiter.requests_in_ban if limiter else 0),
            "rest_ban_remaining_s": round(
                max(self.faults.ban_remaining_s(), limiter.ban_remaining_s() if limiter else 0.0), 3
            ),
            # the weight limit as applied (weights.WeightLimiter): answers and the busiest wall-clock minute
            "rest_http_429": limiter.http_429 if limiter else 0,
            "rest_http_418": limiter.http_418 if limiter else 0,
            "rest_max_weight_1m": limiter.max_per_minute if limiter else 0,
            "rest_weight_limit_1m": limiter.limit if limiter else 0,
            "faults": self.faults.snapshot().model_dump(),
            **self.urls,
        }
