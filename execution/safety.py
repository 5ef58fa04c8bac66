"""Start-up safety for exchange modes: explicit opt-in, keys present, secrets never printed.

Why: `--mode live` places real orders. It refuses to start unless the operator set
TAPEFLOW_LIVE_TRADING=I_UNDERSTAND (a deliberate, greppable act, not a default or a flag one can
copy from shell history by accident) and both Binance keys are configured. Testnet is held to the same
rule, so the first live start is never the first time the checks run. Keys stay `SecretStr`: the echo
of the configuration says only whether they are present.

Only the paper broker exists today: after the checks pass, testnet and live stop with a clear
`BrokerUnavailable` instead of pretending to trade.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from execution.config import ExecutorConfig
from execution.domain import MODES
from execution.paper_broker import PaperBroker
from tapeflow.settings import Settings

LIVE_OPT_IN_ENV = "TAPEFLOW_LIVE_TRADING"
LIVE_OPT_IN_VALUE = "I_UNDERSTAND"


class LiveTradingRefused(Exception):
    """The mode may not start: missing opt-in or keys (the message says which, never a key)."""


class BrokerUnavailable(Exception):
    """No broker implementation for the requested mode."""


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
            "to confirm you understand")
    missing = [name for name, value in (("TAPEFLOW_BINANCE_API_KEY", settings.binance_api_key),
                                        ("TAPEFLOW_BINANCE_API_SECRET", settings.binance_api_secret))
               if not _present(value)]
    if missing:
        raise LiveTradingRefused(f"--mode {mode} needs exchange keys: set {' and '.join(missing)} (or *_FILE)")


def build_broker(mode: str, config: ExecutorConfig) -> PaperBroker:
    if mode == "paper":
        return PaperBroker(config.fees, config.paper)
    raise BrokerUnavailable(
        f"Binance broker not available yet: --mode {mode} passed the safety checks, but this version can only "
        "paper trade (use --mode paper)")


def startup_echo(settings: Settings, mode: str, config: ExecutorConfig) -> dict[str, Any]:
    """What the log shows at start for the operator to confirm: no secret values, only their presence."""
    return {
        "mode": mode,
        "broker": settings.broker or "embedded",
        "topic_prefix": settings.topic_prefix,
        "symbols": list(settings.symbols),
        "binance_api_key": "present" if _present(settings.binance_api_key) else "absent",
        "binance_api_secret": "present" if _present(settings.binance_api_secret) else "absent",
        "executor": config.model_dump(),
    }
