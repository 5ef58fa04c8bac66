"""Replays a session's frames in recording order, on the recording's own clock scaled by a speed.

Frame ``i`` is due at ``start + (t_i - t_0) / speed`` on the injected monotonic clock. Scheduling
against the start (not against the previous frame) keeps the replay from drifting when sleeps
overshoot. ``speed=None`` ("max") never sleeps but yields to the event loop after every frame so
connections keep sending while the replay runs.

With ``history_s`` the frames of the session's first ``history_s`` seconds are not sent: they happened
before the replay (the market view and the replay position move past them at once), and only REST
(``aggTrades``, the history endpoints) and the Vision files serve them: what a producer starting
"now" finds. The replay's clock starts at the first frame after them.

Each frame first updates the market view (it happened at the exchange), then either falls to the
skip fault or is queued on every connection subscribed to its stream. When the last frame is out and
all connections have drained, each connection that asked for it gets the end-of-replay marker
(:mod:`.ws_server`), and once that has gone out too ``state.finished`` is set and the connections
stay open, idle.
A connected client that stops reading therefore holds ``finished`` back, as it would hold back a
real feed.

``state.pause()`` holds the replay before its next frame (``pause(before=i)``: before frame ``i``) until
``state.resume()``: a test stages a fault (a dropped connection, a reconnect) or waits for a client's
REST round trip while the session stands still, so a loaded machine cannot let the session run on
(or out) before the consequences are seen. The frames after the pause keep their spacing (the
schedule moves by the pause's length).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from .recording import RecordedFrame
from .state import ExchangeState

Sleep = Callable[[float], Awaitable[object]]


def due_offsets(frames: tuple[RecordedFrame, ...] | list[RecordedFrame], speed: float | None) -> list[float]:
    """Seconds after replay start at which each frame is due (all zero at max speed)."""
    if not frames or speed is None:
        return [0.0] * len(frames)
    t0 = frames[0].receive_time
    return [max(0.0, (f.receive_time - t0) / speed) for f in frames]


def dispatch(state: ExchangeState, frame: RecordedFrame) -> None:
    """Make one frame happen: update the market view, then skip it or queue it for subscribers.

    The disorder switches act here, exchange-wide: a frame due for reordering waits in
    ``state.held_frames`` and leaves right after the next frame of its stream; a frame due for
    duplication is queued twice."""
    state.market.observe(frame)
    faults = state.faults
    if faults.should_skip(frame.stream):
        state.frames_skipped[frame.stream] += 1
    else:
        held = state.held_frames.pop(frame.stream, None)
        if held is None and faults.reorder_due(frame.stream):
            state.held_frames[frame.stream] = frame
            state.frames_reordered[frame.stream] += 1
        else:
            _queue(state, frame)
            if faults.duplicate_due(frame.stream):
                state.frames_duplicated[frame.stream] += 1
                _queue(state, frame)
            if held is not None:
                _queue(state, held)
    state.position = frame.index + 1


def _queue(state: ExchangeState, frame: RecordedFrame) -> None:
    for conn in state.connections:
        if conn.wants(frame.stream):
            conn.enqueue_frame(frame)


def release_held(state: ExchangeState) -> None:
    """Queue the frames still held back for reordering (the replay has no next frame for them)."""
    held, state.held_frames = state.held_frames, {}
    for frame in sorted(held.values(), key=lambda f: f.index):
        _queue(state, frame)


def history_end(frames: tuple[RecordedFrame, ...] | list[RecordedFrame], history_s: float) -> int:
    """Index of the first frame received ``history_s`` seconds or more after the session's first."""
    if not frames or history_s <= 0:
        return 0
    cut = frames[0].receive_time + history_s
    return next((i for i, f in enumerate(frames) if f.receive_time >= cut), len(frames))


class ReplayEngine:
    """Drives :func:`dispatch` over the recording once the start is requested."""

    def __init__(
        self,
        state: ExchangeState,
        speed: float | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        history_s: float = 0.0,
        at_session_time: bool = False,
    ) -> None:
        if speed is not None and speed <= 0:
            raise ValueError("speed must be positive (or None for max)")
        if at_session_time and speed != 1:
            raise ValueError("a replay at session time plays at speed 1")
        self.at_session_time = at_session_time
        self.state = state
        self.speed = speed
        self._clock = clock
        self._sleep = sleep
        self.first = history_end(state.recording.frames, history_s)
        for frame in state.recording.frames[: self.first]:  # history: it happened before "now"
            state.market.observe(frame)
        state.position = self.first

    async def run(self) -> None:
        state = self.state
        await state.start_requested.wait()
        frames = state.recording.frames[self.first :]
        offsets = due_offsets(frames, self.speed)
        if self.at_session_time and frames:  # the first frame when the wall clock says so (late: now)
            await self._sleep(max(0.0, frames[0].receive_time - state.wall_clock()))
        start = self._clock()
        state.started_at = start
        for frame, offset in zip(frames, offsets, strict=True):
            if state.pause_before is not None and frame.index >= state.pause_before:
                state.pause_before = None
                state.running.clear()
            if not state.running.is_set():  # paused: the frames still to come move by the pause
                held_at = self._clock()
                await state.running.wait()
                start += self._clock() - held_at
            if self.speed is None:
                await self._sleep(0)
            else:
                wait = start + offset - self._clock()
                if wait > 0:
                    await self._sleep(wait)
            dispatch(state, frame)
        release_held(state)
        await state.wait_drained()
        for conn in list(state.connections):
            conn.end_replay()
        await state.wait_drained()
        state.finished_at = self._clock()
        state.finished.set()
