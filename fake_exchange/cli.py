"""Command line of the fake exchange (``python -m fake_exchange``, ``tapeflow fake-exchange``).

Runs a fake Binance USD-M exchange until interrupted.

Examples::

    python -m fake_exchange --recording data/binance_futures_ws --speed 10
    python -m fake_exchange --synthetic-seed 7 --synthetic-symbols BTCUSDT,ETHUSDT \\
        --synthetic-duration 600 --speed max --fault garbage_every=100 --fault skip_frames=3

It prints one JSON line with the bound ``ws_url`` and ``rest_url`` (ports 0 pick free ports).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from tapeflow_runtime.logs import configure_logging

from .config import FakeExchangeConfig
from .exchange import run
from .faults import FaultSettings, parse_fault_assignments
from .real_history import REAL_RATES
from .synthetic import SyntheticSpec


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fake_exchange", description="Run a fake Binance USD-M exchange.")
    _add_session_arguments(parser)
    _add_serving_arguments(parser)
    _add_history_arguments(parser)
    parser.add_argument("--log-level", default="INFO")
    return parser


def _add_session_arguments(parser: argparse.ArgumentParser) -> None:
    """What is replayed: a recording, or a synthetic session and its shape."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--recording", help="recording directory (ws_frames.txt, rest_responses.txt, ...)")
    source.add_argument("--synthetic-seed", type=int, help="generate a synthetic session with this seed")
    parser.add_argument("--synthetic-symbols", default="BTCUSDT", help="comma-separated symbols (synthetic)")
    parser.add_argument("--synthetic-duration", type=float, default=300.0, help="seconds (synthetic)")
    parser.add_argument("--synthetic-trades-per-s", type=float, default=5.0, help="per symbol (synthetic)")
    parser.add_argument(
        "--synthetic-rates",
        default=None,
        metavar="SYMBOL=RATE,...",
        help="per-symbol trades/s instead of --synthetic-trades-per-s (synthetic), e.g. BTCUSDT=30,ETHUSDT=20",
    )
    parser.add_argument(
        "--synthetic-burstiness",
        type=float,
        default=0.0,
        help="std of the log trade intensity (synthetic; 0 = constant-rate Poisson, 1 = BTC-like bursts)",
    )
    parser.add_argument(
        "--synthetic-depth-interval-ms",
        type=int,
        default=100,
        help="a depth diff per symbol this often (synthetic; the stream keeps Binance's name)",
    )
    parser.add_argument(
        "--synthetic-mark-interval-s",
        type=int,
        default=1,
        help="a mark price per symbol this often (synthetic; the stream keeps Binance's name)",
    )
    parser.add_argument("--synthetic-no-book-ticker", action="store_true", help="no bookTicker frames (synthetic)")
    parser.add_argument(
        "--synthetic-start", type=float, default=1_700_000_000.0, help="session start, Unix seconds (synthetic)"
    )


def _add_serving_arguments(parser: argparse.ArgumentParser) -> None:
    """How the session is served: address, speed, start, fault switches and the REST answers' clock."""
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--ws-port", type=int, default=0)
    parser.add_argument("--rest-port", type=int, default=0)
    parser.add_argument(
        "--speed", default="1", help="1x = real time, 10x = ten times faster, max = no sleeping (the x is optional)"
    )
    parser.add_argument(
        "--start",
        default="first_subscriber",
        choices=["first_subscriber", "immediate", "manual", "session_time"],
        help="when the replay starts (manual: POST /_control/start; session_time: each frame at its own "
        "receive time on the wall clock, as live)",
    )
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"fault switch, repeatable; keys: {', '.join(FaultSettings.model_fields)}",
    )
    parser.add_argument("--aggtrades-visibility", default="all", choices=["all", "replayed"])
    parser.add_argument(
        "--rest-clock",
        default="wall",
        choices=["wall", "recording"],
        help="time in REST answers (open interest, funding, Coinbase, serverTime): the wall clock, "
        "or the recorded time of the frame the replay has reached (consistent with the "
        "recorded websocket event times)",
    )


def _add_history_arguments(parser: argparse.ArgumentParser) -> None:
    """History before the live part (a warm start's), and the real profile that generates it."""
    parser.add_argument(
        "--history-s",
        type=float,
        default=0.0,
        help="the websocket replay starts this many seconds into the session; earlier data is "
        "history served only by REST and the Vision archives (a warm start's)",
    )
    parser.add_argument(
        "--profile",
        default="synthetic",
        choices=["synthetic", "real"],
        help="real: a generated session at real rates (BTC/ETH/SOL/XRP-like, bursty, a depth diff "
        "every 10 ms) whose live part starts at --utc-hour, with --real-history-hours of "
        "history before it (REST aggTrades and 1m klines, Vision files up to yesterday)",
    )
    parser.add_argument(
        "--utc-hour",
        type=float,
        default=12.0,
        help="real profile: the UTC hour the live session starts at (the fake's clock)",
    )
    parser.add_argument(
        "--real-history-hours",
        type=float,
        default=26.0,
        help="real profile: hours of history (at least back to yesterday's UTC midnight)",
    )


REAL_PROFILE_DAY_S = 1_795_651_200.0  # 2026-11-26 00:00 UTC: the real profile's "today"


def real_profile_spec(seed: int, symbols: tuple[str, ...], duration_s: float, utc_hour: float) -> SyntheticSpec:
    """The live part of the real profile: real rates per symbol (``REAL_RATES``), BTC-like bursts, a depth
    diff every 10 ms (the generator's finest step: Binance's 0 ms stream at these rates), a mark a second."""
    return SyntheticSpec(
        seed=seed,
        symbols=symbols,
        duration_s=duration_s,
        rates=dict(REAL_RATES),
        burstiness=1.0,
        depth_interval_ms=10,
        mark_interval_s=1,
        book_ticker=False,
        binance_stream_names=True,
        start_time=REAL_PROFILE_DAY_S + utc_hour * 3600,
    )


def config_from_args(argv: Sequence[str] | None = None) -> FakeExchangeConfig:
    args = build_parser().parse_args(argv)
    synthetic = None
    real = args.profile == "real"
    if real:
        symbols = tuple(s.strip().upper() for s in args.synthetic_symbols.split(",") if s.strip())
        synthetic = real_profile_spec(args.synthetic_seed or 0, symbols, args.synthetic_duration, args.utc_hour)
    elif args.synthetic_seed is not None:
        synthetic = SyntheticSpec(
            seed=args.synthetic_seed,
            symbols=tuple(s.strip().upper() for s in args.synthetic_symbols.split(",") if s.strip()),
            duration_s=args.synthetic_duration,
            trades_per_s=args.synthetic_trades_per_s,
            rates={
                k.strip().upper(): float(v)
                for k, _, v in (item.partition("=") for item in args.synthetic_rates.split(","))
            }
            if args.synthetic_rates
            else None,
            burstiness=args.synthetic_burstiness,
            depth_interval_ms=args.synthetic_depth_interval_ms,
            mark_interval_s=args.synthetic_mark_interval_s,
            book_ticker=not args.synthetic_no_book_ticker,
            start_time=args.synthetic_start,
            binance_stream_names=True,
        )
    configure_logging(args.log_level.upper())
    return FakeExchangeConfig(
        recording=args.recording,
        synthetic=synthetic,
        host=args.host,
        ws_port=args.ws_port,
        rest_port=args.rest_port,
        speed=args.speed,
        start=args.start,
        faults=FaultSettings.model_validate(parse_fault_assignments(args.fault)),
        aggtrades_visibility=args.aggtrades_visibility,
        rest_clock="recording" if real else args.rest_clock,
        history_s=args.history_s,
        real_history_hours=args.real_history_hours if real else 0.0,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Parse ``argv`` (default ``sys.argv[1:]``) and serve until SIGINT/SIGTERM."""
    run(config_from_args(argv))
