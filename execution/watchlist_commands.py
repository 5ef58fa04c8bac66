"""Operator commands to the watchlist traders: open a hedged pair by hand, close one.

The web UI's desk asks; ``publish_command`` puts the request on ``xv.commands`` (key: the coin) and
waits for the broker's acknowledgement, as ``execution.kill_switch`` does for the kill switch: a command
that silently did not arrive is worse than an error. The watchlist trading service reads the topic and
hands each command to its traders; the trader of the named strategy applies it through its own pair
model and publishes its answer on the same topic (``execution.watchlist_trader``, "Operator
commands"). Nothing here trades: the request is data, the trader is the only code path that opens or
closes a pair, manual or not (paper unless the trader's executor is live).

Why a topic rather than a call into the service: the service is a consumer of event-time inputs whose
state is checkpointed with its input positions; a command read from a topic has a position too, so
the checkpoint taken after applying it says it was applied, and a restart neither loses nor repeats it.
Why not compacted: the key is the coin, and a request and its answer (or two requests for one coin)
share it; compaction would drop requests a restarted service still has to read. Idempotency comes from
the command id (the desk's action id, from the form's nonce), not from the log.
"""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import KafkaError, Producer

from schemas.serde import AvroSerde
from tapeflow_runtime.kafka_client import producer_config

TOPIC = "xv.commands"
ACTIONS = ("open", "close")


class CommandNotDelivered(RuntimeError):
    """The broker did not acknowledge the command."""


def command_record(
    command_id: str,
    action: str,
    strategy: str,
    coin: str,
    who: str,
    reason: str,
    *,
    sell_venue: str | None = None,
    sell_symbol: str | None = None,
    buy_venue: str | None = None,
    buy_symbol: str | None = None,
    pair_id: str | None = None,
    notional_usd: float | None = None,
    shown_spread: float | None = None,
    shown_time: int | None = None,
    requested_time: int | None = None,
) -> dict[str, Any]:
    """A request (status ``requested``) with every field of the schema; ValueError when it cannot be one."""
    if action not in ACTIONS:
        raise ValueError(f"action: one of {', '.join(ACTIONS)}")
    if action == "open" and not (sell_venue and buy_venue and sell_venue != buy_venue):
        raise ValueError("open: a sell venue and a different buy venue")
    if action == "close" and not pair_id:
        raise ValueError("close: the pair's id")
    if not reason.strip():
        raise ValueError("reason: say why")
    return {
        "command_id": command_id,
        "status": "requested",
        "action": action,
        "strategy": strategy,
        "coin": coin,
        "sell_venue": sell_venue,
        "sell_symbol": sell_symbol,
        "buy_venue": buy_venue,
        "buy_symbol": buy_symbol,
        "pair_id": pair_id,
        "notional_usd": notional_usd,
        "shown_spread": shown_spread,
        "shown_time": shown_time,
        "requested_time": int(time.time() * 1000) if requested_time is None else requested_time,
        "acted_time": None,
        "who": who,
        "reason": reason.strip(),
        "detail": None,
    }


def publish_command(
    bootstrap: str, topic_prefix: str, serde: AvroSerde, record: dict[str, Any], timeout_s: float = 10.0
) -> None:
    """Produce one command keyed by its coin and wait until the broker has it."""
    errors: list[str] = []

    def delivered(err: KafkaError | None, _msg) -> None:
        if err is not None:
            errors.append(err.str())

    producer = Producer(producer_config(bootstrap, **{"message.timeout.ms": int(timeout_s * 1000)}))
    producer.produce(
        topic_prefix + TOPIC, key=record["coin"].encode(), value=serde.encode(TOPIC, record), on_delivery=delivered
    )
    remaining = producer.flush(timeout_s + 1)
    if remaining or errors:
        raise CommandNotDelivered(f"command not acknowledged: {remaining} pending, errors {errors}")
