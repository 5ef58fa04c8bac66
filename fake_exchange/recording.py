"""Typed view of a recorded (or generated) Binance USD-M session.

The fake exchange replays whatever a :class:`Recording` holds, so recorded sessions (the
cryptofeed-style directory layout under ``data/binance_futures_ws/``) and synthetic ones
(:mod:`.synthetic`) share one shape: frames in receive order with their stream name and the exact
payload text, REST bodies keyed by path + query, and the depth snapshots the book sync needs.

Payload text is kept verbatim (never re-serialised) so a replayed frame is byte-identical to the
recorded one; the parsed payload sits next to it for indexing.

Directory layout::

    ws_frames.txt              line 1: "<ws url> <-> <time>", then "<receive unix time>: <raw JSON frame>"
    rest_responses.txt         "<URL> -> <receive unix time>: <raw JSON body>"  (blank lines ignored)
    session_config_and_rest.txt (optional) same REST lines plus "configuration: <JSON>"
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from tapeflow_runtime.errors import TapeflowError

from .depth_book import BookSnapshot
from .stream_names import (
    infer_stream,
    normalise_stream,
    streams_from_url,
    symbol_of_stream,
)

_FRAME_LINE = re.compile(r"^(\d+(?:\.\d+)?): (.*)$", re.DOTALL)
_ENVELOPE_PREFIX = '{"stream":"'
_ENVELOPE_DATA = '","data":'


class RecordingError(TapeflowError, ValueError):
    """A recording file does not follow the documented line format."""


@dataclass(frozen=True, slots=True)
class RecordedFrame:
    """One websocket frame: when it arrived, which stream it belongs to and its payload text."""

    index: int
    receive_time: float
    stream: str
    data: str
    payload: Any = field(compare=False, repr=False)
    enveloped: bool = True

    def combined_text(self) -> str:
        """The frame as a combined-stream (``/stream``) connection receives it."""
        return f'{{"stream":"{self.stream}","data":{self.data}}}'

    @property
    def event(self) -> str | None:
        """Binance event type (``aggTrade``, ``depthUpdate``...) of a dict payload."""
        return self.payload.get("e") if isinstance(self.payload, dict) else None


@dataclass(frozen=True, slots=True)
class RestResponse:
    """A recorded REST exchange: request URL, receive time and the raw response body."""

    url: str
    path: str
    params: tuple[tuple[str, str], ...]
    receive_time: float
    body: bytes

    @property
    def key(self) -> str:
        return rest_key(self.path, dict(self.params))


def rest_key(path: str, params: Mapping[str, str]) -> str:
    """Order-independent lookup key for a REST request: path plus sorted query parameters."""
    query = "&".join(f"{k}={params[k]}" for k in sorted(params))
    return f"{path}?{query}" if query else path


@dataclass(slots=True)
class Recording:
    """A replayable session: frames in receive order plus the REST state that goes with them."""

    frames: tuple[RecordedFrame, ...]
    rest: dict[str, RestResponse]
    symbols: tuple[str, ...]
    initial_books: dict[str, BookSnapshot]
    stream_url: str | None = None
    configuration: Any = None
    source: str = ""

    @property
    def streams(self) -> tuple[str, ...]:
        """Distinct stream names in order of first appearance."""
        return tuple(dict.fromkeys(f.stream for f in self.frames))

    def frames_of(self, stream: str) -> list[RecordedFrame]:
        return [f for f in self.frames if f.stream == stream]

    def rest_body(self, path: str, params: Mapping[str, str] | None = None) -> bytes | None:
        hit = self.rest.get(rest_key(path, params or {}))
        return hit.body if hit else None

    @property
    def exchange_info(self) -> bytes | None:
        return self.rest_body("/fapi/v1/exchangeInfo")

    @property
    def duration_s(self) -> float:
        if len(self.frames) < 2:
            return 0.0
        return self.frames[-1].receive_time - self.frames[0].receive_time


def parse_frame_text(index: int, receive_time: float, text: str, subscribed: list[str]) -> RecordedFrame:
    """Split a raw frame into stream name and verbatim payload text (enveloped or raw)."""
    if text.startswith(_ENVELOPE_PREFIX) and text.endswith("}"):
        cut = text.find(_ENVELOPE_DATA, len(_ENVELOPE_PREFIX))
        if cut > 0:
            stream = text[len(_ENVELOPE_PREFIX) : cut]
            data = text[cut + len(_ENVELOPE_DATA) : -1]
            try:
                payload = orjson.loads(data)
            except orjson.JSONDecodeError:
                payload = None
            if payload is not None and '"' not in stream:
                return RecordedFrame(index, receive_time, stream, data, payload, True)
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise RecordingError(f"frame {index}: not JSON: {text[:80]!r}") from exc
    if isinstance(obj, dict) and set(obj) == {"stream", "data"}:
        data = orjson.dumps(obj["data"]).decode()
        return RecordedFrame(index, receive_time, str(obj["stream"]), data, obj["data"], True)
    return RecordedFrame(index, receive_time, infer_stream(obj, subscribed), text, obj, False)


def parse_ws_lines(lines: Iterable[str]) -> tuple[str | None, list[RecordedFrame]]:
    """Parse ``ws_frames.txt`` lines; the optional first line names the websocket URL."""
    url: str | None = None
    subscribed: list[str] = []
    frames: list[RecordedFrame] = []
    for lineno, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        match = _FRAME_LINE.match(line)
        if match is None:
            if frames or url is not None:
                raise RecordingError(f"ws_frames line {lineno}: expected '<time>: <frame>'")
            url = line.split(" <-> ", 1)[0].strip()
            subscribed = streams_from_url(url)
            continue
        frames.append(parse_frame_text(len(frames), float(match.group(1)), match.group(2), subscribed))
    return url, frames


def parse_rest_line(line: str) -> RestResponse:
    """Parse ``<URL> -> <receive unix time>: <body>``."""
    url, sep, rest = line.partition(" -> ")
    time_text, sep2, body = rest.partition(": ")
    if not sep or not sep2:
        raise RecordingError(f"REST line does not match '<URL> -> <time>: <body>': {line[:80]!r}")
    parts = urlsplit(url.strip())
    params = tuple(parse_qsl(parts.query, keep_blank_values=True))
    return RestResponse(url.strip(), parts.path, params, float(time_text), body.encode())


def parse_rest_lines(lines: Iterable[str]) -> tuple[list[RestResponse], Any]:
    """REST responses and the optional ``configuration:`` line of a recorder session file."""
    responses: list[RestResponse] = []
    configuration: Any = None
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        if line.startswith("configuration:"):
            configuration = orjson.loads(line.partition(":")[2])
            continue
        responses.append(parse_rest_line(line))
    return responses, configuration


def _snapshots(responses: Iterable[RestResponse]) -> dict[str, BookSnapshot]:
    """First recorded ``/fapi/v1/depth`` snapshot per symbol (the one taken at stream start)."""
    books: dict[str, BookSnapshot] = {}
    for resp in sorted(responses, key=lambda r: r.receive_time):
        if resp.path != "/fapi/v1/depth":
            continue
        symbol = dict(resp.params).get("symbol", "").upper()
        if symbol and symbol not in books:
            books[symbol] = BookSnapshot.from_body(symbol, resp.body)
    return books


def _symbols(frames: Iterable[RecordedFrame], extra: Iterable[str]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for frame in frames:
        symbol = symbol_of_stream(frame.stream)
        if symbol is None and isinstance(frame.payload, dict):
            inner = frame.payload.get("o")
            symbol = (inner or {}).get("s") if isinstance(inner, dict) else frame.payload.get("s")
        if symbol:
            seen.setdefault(str(symbol).upper(), None)
    for symbol in extra:
        seen.setdefault(symbol.upper(), None)
    return tuple(seen)


def build_recording(
    frames: list[RecordedFrame],
    responses: Iterable[RestResponse] = (),
    *,
    initial_books: dict[str, BookSnapshot] | None = None,
    stream_url: str | None = None,
    configuration: Any = None,
    source: str = "",
) -> Recording:
    """Assemble a :class:`Recording`, indexing REST bodies and depth snapshots."""
    responses = list(responses)
    rest: dict[str, RestResponse] = {}
    for resp in responses:
        rest.setdefault(resp.key, resp)
    books = _snapshots(responses)
    books.update(initial_books or {})
    frames = [_canonical(i, f) for i, f in enumerate(frames)]
    return Recording(
        frames=tuple(frames),
        rest=rest,
        symbols=_symbols(frames, books),
        initial_books=books,
        stream_url=stream_url,
        configuration=configuration,
        source=source,
    )


def _canonical(index: int, frame: RecordedFrame) -> RecordedFrame:
    """Frame with its replay position as ``index`` and a normalised stream name."""
    stream = normalise_stream(frame.stream)
    if frame.index == index and frame.stream == stream:
        return frame
    return RecordedFrame(index, frame.receive_time, stream, frame.data, frame.payload, frame.enveloped)


def load_recording(directory: str | Path) -> Recording:
    """Load a recording directory (see module docstring for the layout)."""
    root = Path(directory)
    ws_path = root / "ws_frames.txt"
    if not ws_path.is_file():
        raise RecordingError(f"{root}: no ws_frames.txt")
    with ws_path.open(encoding="utf-8") as fh:
        url, frames = parse_ws_lines(fh)
    responses: list[RestResponse] = []
    configuration: Any = None
    for name in ("rest_responses.txt", "session_config_and_rest.txt"):
        path = root / name
        if path.is_file():
            with path.open(encoding="utf-8") as fh:
                found, config = parse_rest_lines(fh)
            responses.extend(found)
            configuration = config if config is not None else configuration
    return build_recording(frames, responses, stream_url=url, configuration=configuration, source=str(root))
