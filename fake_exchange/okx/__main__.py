"""``python -m fake_exchange.okx``: serve a synthetic OKX session until Ctrl-C (prints its URLs as JSON).

    python -m fake_exchange.okx --symbols BTCUSDT,ETHUSDT --duration 600 --speed 1 --seed 7

then, in another shell, ``tapeflow produce --exchange okx --okx-ws-url WS_URL --okx-rest-url REST_URL``
with ``TAPEFLOW_SYMBOLS`` set to the same symbols (add ``--replay-control-url REST_URL`` to stop at
the end of the replay).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

import orjson

from .exchange import serve_okx
from .synthetic import OkxSyntheticSpec


async def _serve(args: argparse.Namespace) -> None:
    spec = OkxSyntheticSpec(
        seed=args.seed,
        symbols=tuple(s.strip().upper() for s in args.symbols.split(",") if s.strip()),
        duration_s=args.duration,
    )
    speed = None if args.speed == "max" else float(args.speed)
    exchange = await serve_okx(spec, speed=speed, ws_port=args.ws_port, rest_port=args.rest_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    print(
        orjson.dumps(
            {"ws_url": exchange.public_url, "rest_url": exchange.rest_url, "source": exchange.recording.source}
        ).decode(),
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        await exchange.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m fake_exchange.okx",
        description="Serve a synthetic OKX session until Ctrl-C; prints its URLs as JSON.",
    )
    parser.add_argument(
        "--symbols", default="BTCUSDT", help="tapeflow symbols, comma separated (BTCUSDT = BTC-USDT-SWAP)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--duration", type=float, default=600.0, help="session length in seconds")
    parser.add_argument("--speed", default="1", help="1, 10, ... or max")
    parser.add_argument("--ws-port", type=int, default=0)
    parser.add_argument("--rest-port", type=int, default=0)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
