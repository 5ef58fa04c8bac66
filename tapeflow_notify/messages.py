"""What is worth a message, and its text: one short line per event, readable on a phone.

Pure functions of the decoded records (no I/O), so the wording is unit-tested without a network.
Risk events that concern a single signal (a blocked entry: scope `strategy:...`) and routine
`allow` decisions are not sent; guard-level changes (pause, halt, flatten, resume, stale data,
exchange down) are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

KINDS = {"signals": "signal", "fills": "fill", "positions": "position", "risk.events": "risk"}


@dataclass(frozen=True)
class Note:
    kind: str  # signal | fill | position | risk | summary
    text: str
    record: dict[str, Any] | None = None


def _num(value: Any, digits: int = 6) -> str:
    return "-" if value is None else f"{float(value):.{digits}g}"


def _r(value: Any) -> str:
    return "-" if value is None else f"{float(value):+.2f}R"


def note_for(topic: str, record: dict[str, Any]) -> Note | None:
    """The message for a record of catalogue topic `topic`, or None when it is not worth one."""
    kind = KINDS.get(topic)
    if kind == "signal":
        return Note(
            kind,
            f"signal {record['direction']} {record['symbol']} ({record['exchange']}): "
            f"{record['strategy']} {record['tier']}, score {record['score']:.1f}, "
            f"price {_num(record['price'])}, SL {_num(record['sl_price'])}, "
            f"TP1 {_num(record['tp1_price'])}, TP2 {_num(record['tp2_price'])}"
            f"{' (flip)' if record.get('is_flip') else ''}",
            record,
        )
    if kind == "fill":
        return Note(
            kind,
            f"fill {record['mode']} {record['side']} {_num(record['qty'])} {record['symbol']} "
            f"@ {_num(record['price'])} ({record['liquidity']}, fee {_num(record['fee'], 4)} "
            f"{record['fee_asset']}, order {record['client_order_id']})",
            record,
        )
    if kind == "position":
        if record["event"] != "closed":
            return None
        return Note(
            kind,
            f"closed {record['mode']} {record['direction']} {record['symbol']} {record['strategy']}: "
            f"{record['exit_reason']}, net {_r(record['pnl_r_net'])} "
            f"(gross {_r(record['pnl_r_gross'])}), "
            f"entry {_num(record['entry_price'])} -> exit {_num(record['exit_price'])}",
            record,
        )
    if kind == "risk":
        if record["decision"] == "allow" or record["scope"].startswith("strategy:"):
            return None
        daily = record.get("daily_pnl_r")
        return Note(
            kind,
            f"risk {record['mode']} {record['scope']}: {record['decision']} ({record['reason']}), "
            f"state {record['state']}{f', day {_r(daily)}' if daily is not None else ''}",
            record,
        )
    return None


def summary_note(held: dict[str, int], rate_per_minute: int) -> Note:
    """The message sent when the rate limit lets one through again after holding some back."""
    total = sum(held.values())
    parts = ", ".join(f"{n} {kind}{'s' if n != 1 else ''}" for kind, n in sorted(held.items(), key=lambda kv: -kv[1]))
    return Note(
        "summary",
        f"tapeflow: {total} notification{'s' if total != 1 else ''} held back (limit {rate_per_minute}/min): {parts}",
        {"held": dict(held)},
    )
