"""Start-up safety for exchange modes: explicit opt-in, keys present, the right endpoints, secrets never
printed; and the broker each mode trades through.

Why: `--mode live` places real orders. It refuses to start unless the operator set
TAPEFLOW_LIVE_TRADING=I_UNDERSTAND (a deliberate, greppable act, not a default or a flag one can
copy from shell history by accident) and both Binance keys are configured. Testnet is held to the same
rule, so the first live start is never the first time the checks run. Keys stay `SecretStr`: the echo
of the configuration says only whether they are present.

After the checks pass, paper trades through the in-process `PaperBroker`; testnet and live connect a
`BinanceBroker` (clock sync, exchange filters, user-data stream) to Binance USD-M: testnet
https://testnet.binancefuture.com + wss://stream.binancefuture.com, live https://fapi.binance.com +
wss://fstream.binance.com, unless the executor config's `exchange.rest_url`/`ws_url` point elsewhere
(the fake exchange in tests). A testnet run pointed at the live hosts, or the reverse, is refused: every
record carries the mode, and a "testnet" label on real trades would lie. An exchange that cannot be
reached at start stops the executor with `BrokerUnavailable`, before any order could be sent.

Live mode then asks Binance what the key may do (`GET /sapi/v1/account/apiRestrictions` on the spot
API, `TAPEFLOW_BINANCE_SPOT_REST_URL`, signed with the futures clock offset just synced) and refuses a
key that can withdraw, transfer between accounts, make universal transfers, or has no IP restriction:
a trading bot needs none of that, and a leaked key that can withdraw empties the account. The
operator may accept such a key explicitly (`TAPEFLOW_ALLOW_UNRESTRICTED_KEY=I_UNDERSTAND`; the
executor then logs every permission it accepted). Fail closed: when the permissions cannot be read,
live mode does not start. Testnet has no such endpoint and is not checked.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from execution.broker import Broker
from execution.config import DEFAULT_ENDPOINTS, ExecutorConfig
from execution.domain import MODES
from execution.paper_broker import PaperBroker
from tapeflow_runtime.settings import Settings

LIVE_OPT_IN_ENV = "TAPEFLOW_LIVE_TRADING"
LIVE_OPT_IN_VALUE = "I_UNDERSTAND"
KEY_OVERRIDE_ENV = "TAPEFLOW_ALLOW_UNRESTRICTED_KEY"
KEY_OVERRIDE_VALUE = "I_UNDERSTAND"
SPOT_REST_URL = "https://api.binance.com"
API_RESTRICTIONS_PATH = "/sapi/v1/account/apiRestrictions"
#: permissions a trading key must not have: (field, what it means) - and ipRestrict must be true
RISKY_PERMISSIONS = (
    ("enableWithdrawals", "can withdraw"),
    ("enableInternalTransfer", "can transfer between accounts"),
    ("permitsUniversalTransfer", "can make universal transfers"),
)


class LiveTradingRefused(Exception):
    """The mode may not start: missing opt-in or keys, or endpoints of the other mode (the message says
    which, never a key)."""


class BrokerUnavailable(Exception):
    """No broker for the requested mode: the exchange could not be reached or refused the session."""


def _present(secret: Any) -> bool:
    return secret is not None and bool(secret.get_secret_value().strip())


def check_mode_allowed(mode: str, settings: Settings, environ: Mapping[str, str]) -> None:
    if mode not in MODES:
        raise LiveTradingRefused(f"unknown mode {mode!r}: expected one of {', '.join(MODES)}")
    if mode == "paper":
        return
    if environ.get(LIVE_OPT_IN_ENV) != LIVE_OPT_IN_VALUE:
        raise LiveTradingRefused(
            f"--mode {mode} sends orders to Binance and is refused: set {LIVE_OPT_IN_ENV}={LIVE_OPT_IN_VALUE} "
            "to confirm you understand"
        )
    missing = [
        name
        for name, value in (
            ("TAPEFLOW_BINANCE_API_KEY", settings.binance_api_key),
            ("TAPEFLOW_BINANCE_API_SECRET", settings.binance_api_secret),
        )
        if not _present(value)
    ]
    if missing:
        raise LiveTradingRefused(f"--mode {mode} needs exchange keys: set {' and '.join(missing)} (or *_FILE)")


def exchange_endpoints(mode: str, config: ExecutorConfig, settings: Settings | None = None) -> tuple[str, str]:
    """(REST base, websocket base) for an exchange mode: settings, then executor config, then Binance's.

    `Settings.binance_rest_url`/`binance_ws_url` (TAPEFLOW_BINANCE_REST_URL/_WS_URL) win, then the
    executor config's `exchange` section.
    """
    if mode not in DEFAULT_ENDPOINTS:
        raise ValueError(f"no exchange endpoints for mode {mode!r}")
    rest, ws = DEFAULT_ENDPOINTS[mode]
    rest = (settings.binance_rest_url if settings else None) or config.exchange.rest_url or rest
    ws = (settings.binance_ws_url if settings else None) or config.exchange.ws_url or ws
    return rest.rstrip("/"), ws.rstrip("/")


def check_endpoints(mode: str, rest_url: str, ws_url: str) -> None:
    """Refuse endpoints that belong to the other exchange mode (testnet keys on live hosts or back)."""
    other = "live" if mode == "testnet" else "testnet"
    hosts = {urlsplit(u).hostname for u in DEFAULT_ENDPOINTS[other]}
    for url in (rest_url, ws_url):
        if urlsplit(url).hostname in hosts:
            raise LiveTradingRefused(f"--mode {mode} refused: {url} is the Binance {other} endpoint")


def key_problems(restrictions: Mapping[str, Any]) -> list[str]:
    """What is wrong with a trading key, from Binance's apiRestrictions answer (empty: nothing)."""
    problems = [what for field, what in RISKY_PERMISSIONS if restrictions.get(field) is not False]
    if restrictions.get("ipRestrict") is not True:
        problems.append("has no IP restriction")
    return problems


def check_key_permissions(
    settings: Settings, environ: Mapping[str, str], time_offset_ms: int, timeout_s: float = 5.0
) -> list[str]:
    """Live mode's key check (module docstring). Returns the problems the operator accepted ([] for a
    clean key); raises `LiveTradingRefused` for a risky key without the override, or when the
    permissions cannot be read. A key that cannot trade futures is refused even with the override."""
    from execution.binance_signing import BinanceApiError, SignedRestClient

    url = (settings.binance_spot_rest_url or SPOT_REST_URL).rstrip("/")
    rest = SignedRestClient(url, settings.binance_api_key, settings.binance_api_secret, timeout_s=timeout_s)
    rest.time_offset_ms = time_offset_ms
    try:
        answer = rest.signed("GET", API_RESTRICTIONS_PATH)
    except (BinanceApiError, OSError, ValueError) as exc:
        raise LiveTradingRefused(
            f"--mode live refused: cannot read the key's permissions at {url}{API_RESTRICTIONS_PATH}: {exc}"
        ) from None
    finally:
        rest.close()
    if not isinstance(answer, Mapping):
        raise LiveTradingRefused(
            f"--mode live refused: {url}{API_RESTRICTIONS_PATH} answered {type(answer).__name__}, "
            "not the key's permissions"
        )
    if answer.get("enableFutures") is not True:
        raise LiveTradingRefused("--mode live refused: the API key cannot trade futures (enable Futures for it)")
    problems = key_problems(answer)
    if problems and environ.get(KEY_OVERRIDE_ENV) != KEY_OVERRIDE_VALUE:
        raise LiveTradingRefused(
            f"--mode live refused: the API key {', '.join(problems)}; give it only Reading and Futures with an "
            f"IP restriction, or accept the risk with {KEY_OVERRIDE_ENV}={KEY_OVERRIDE_VALUE}"
        )
    return problems


def build_broker(
    mode: str, config: ExecutorConfig, settings: Settings | None = None, environ: Mapping[str, str] | None = None
) -> Broker:
    """The broker for `mode`: a fresh `PaperBroker`, or a connected `BinanceBroker` (the caller closes it).

    Exchange modes need `settings` with the keys (run `check_mode_allowed` first); live mode also checks
    the key's permissions (`check_key_permissions`, with `environ`, default the process's)."""
    if mode == "paper":
        return PaperBroker(config.fees, config.paper)
    from execution.binance_broker import (
        BinanceBroker,  # websockets client: only exchange modes need it
    )
    from execution.binance_signing import BinanceApiError

    if settings is None or not (_present(settings.binance_api_key) and _present(settings.binance_api_secret)):
        raise LiveTradingRefused(f"--mode {mode} needs exchange keys (TAPEFLOW_BINANCE_API_KEY and _SECRET)")
    rest_url, ws_url = exchange_endpoints(mode, config, settings)
    check_endpoints(mode, rest_url, ws_url)
    venue = config.exchange
    try:
        broker = BinanceBroker.connect(
            mode,
            rest_url,
            ws_url,
            settings.binance_api_key,
            settings.binance_api_secret,
            timeout_s=venue.request_timeout_s,
            stream_timeout_s=venue.connect_timeout_s,
            probe_interval_s=venue.probe_interval_s,
        )
    except (BinanceApiError, OSError, KeyError, TypeError, ValueError) as exc:
        # unreachable, keys refused, no user-data stream, an answer that is not Binance's: never half-connected
        raise BrokerUnavailable(f"cannot reach the exchange at {rest_url} / {ws_url}: {exc}") from None
    if mode == "live":
        try:
            broker.accepted_key_problems = check_key_permissions(
                settings,
                os.environ if environ is None else environ,
                broker.rest.time_offset_ms,
                venue.request_timeout_s,
            )
        except BaseException:
            broker.close()
            raise
    return broker


def startup_echo(settings: Settings, mode: str, config: ExecutorConfig) -> dict[str, Any]:
    """What the log shows at start for the operator to confirm: no secret values, only their presence."""
    echo: dict[str, Any] = {
        "mode": mode,
        "broker": settings.broker or "embedded",
        "topic_prefix": settings.topic_prefix,
        "symbols": list(settings.symbols),
        "binance_api_key": "present" if _present(settings.binance_api_key) else "absent",
        "binance_api_secret": "present" if _present(settings.binance_api_secret) else "absent",
        "executor": config.model_dump(),
    }
    if mode in DEFAULT_ENDPOINTS:
        echo["exchange_rest_url"], echo["exchange_ws_url"] = exchange_endpoints(mode, config, settings)
        echo["orphan_policy"] = config.reconcile.orphans
    return echo
