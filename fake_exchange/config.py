"""Configuration of one fake exchange (validated; the CLI and ``tapeflow fake-exchange`` build it).

A session comes from exactly one of: ``recording`` (a directory), ``synthetic`` (generator
parameters) or ``session`` (a :class:`~.recording.Recording` built in code, e.g. by a test).
``speed`` is a positive multiplier of real time or ``"max"`` (stored as ``None``: no sleeping).
Ports 0 pick free ports; the bound ones are reported by :class:`~.exchange.FakeExchange`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_serializer,
    field_validator,
    model_validator,
)

from tapeflow_runtime.speed import parse_speed

from .faults import FaultSettings
from .recording import Recording, load_recording
from .synthetic import SyntheticSpec, generate_session

# session_time: at once, each frame when the wall clock reaches its receive time (a synthetic session
# dated from now plays as live, its event times the wall clock's)
StartMode = Literal["first_subscriber", "immediate", "manual", "session_time"]


class FakeExchangeConfig(BaseModel):
    """Everything :func:`~.exchange.serve` needs."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    recording: Path | None = None
    synthetic: SyntheticSpec | None = None
    session: Recording | None = Field(default=None, exclude=True)
    host: str = "127.0.0.1"
    ws_port: int = Field(default=0, ge=0, le=65535)
    rest_port: int = Field(default=0, ge=0, le=65535)
    speed: float | None = 1.0
    start: StartMode = "first_subscriber"
    faults: FaultSettings = Field(default_factory=FaultSettings)
    aggtrades_visibility: Literal["all", "replayed"] = "all"
    # "recording": REST answers carry the replay's recorded time, so generated indicators do not
    # land years after the recorded trades (the engine would see every trade as late)
    rest_clock: Literal["wall", "recording"] = "wall"
    weight_limit_1m: int = Field(default=2400, ge=1)
    # warm starts: the websocket replay begins this many seconds into the session; everything before
    # is history that only REST and the Vision files serve (as for a producer starting now)
    history_s: float = Field(default=0.0, ge=0)
    # the real-rate profile: this many hours before the session's start (at least back to yesterday's UTC
    # midnight) generated at real_history.REAL_RATES and served by REST aggTrades/klines and Vision
    # (real_history.RealHistory); 0 = off
    real_history_hours: float = Field(default=0.0, ge=0)
    # Binance's keepalive: a ping every 3 minutes, the connection closed if no pong comes within 10
    # (a client reads the ping only after every frame queued before it, so a short timeout would cut
    # a client that is merely behind)
    ping_interval_s: float | None = 180.0
    ping_timeout_s: float | None = 600.0

    @field_validator("speed", mode="before")
    @classmethod
    def _parse_speed(cls, value: Any) -> Any:
        return None if value is None else parse_speed(value)

    @field_serializer("speed")
    def _dump_speed(self, speed: float | None) -> float | str:
        return "max" if speed is None else speed

    @model_validator(mode="after")
    def _one_source(self) -> FakeExchangeConfig:
        sources = [s for s in (self.recording, self.synthetic, self.session) if s is not None]
        if len(sources) != 1:
            raise ValueError("give exactly one of recording, synthetic or session")
        return self

    def load_session(self) -> Recording:
        if self.session is not None:
            return self.session
        if self.recording is not None:
            return load_recording(self.recording)
        assert self.synthetic is not None
        return generate_session(self.synthetic)
