"""Deterministic client order ids and position ids derived from the signal id.

Why: the same signal must never produce two orders, also across restarts and re-deliveries. Deriving
the id from (signal id, leg, attempt) means a re-processed signal produces the same id, which the
executor recognises from its own `orders` topic and an exchange rejects as a duplicate of an open order.

Format: `tf` + 20 base32 characters of BLAKE2b-96(signal id) + `-` + leg code [+ attempt], at most 27
characters, within Binance's `newClientOrderId` rule `^[.A-Z:/a-z0-9_-]{1,36}$`. 96 bits make a
collision between two signals negligible (birthday bound ~2^48 signals). Signal ids themselves are
too long (strategy:config_hash:exchange:symbol:time:direction) and carry characters Binance refuses.
"""

from __future__ import annotations

import base64
import hashlib
import re

BINANCE_CLIENT_ID = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")

# One code per order role; `entry_fallback` is the market order sent after a maker entry timed out,
# and with attempt k the k-th TWAP taker slice of a routed entry (`execution.routing`: -ef, -ef1, ...),
# `add_on_1`/`add_on_2` the add-ons of a managed position (`execution.management`).
# The `pair_*` roles are the two legs of a hedged cross-venue pair (`execution.hedged`): its short and
# long leg's entry, and the order that closes each leg (the exit, or the unwind of a leg whose partner
# failed), so one watchlist signal gives four ids and none of them collides with a directional one.
LEG_CODES = {
    "entry": "en",
    "entry_fallback": "ef",
    "tp1": "t1",
    "tp2": "t2",
    "sl": "sl",
    "exit": "ex",
    "add_on_1": "a1",
    "add_on_2": "a2",
    "pair_short_entry": "se",
    "pair_long_entry": "le",
    "pair_short_exit": "sx",
    "pair_long_exit": "lx",
}


def signal_digest(signal_id: str) -> str:
    if not signal_id:
        raise ValueError("signal id must not be empty")
    digest = hashlib.blake2b(signal_id.encode(), digest_size=12).digest()
    return base64.b32encode(digest).decode().rstrip("=").lower()


def client_order_id(signal_id: str, leg: str, attempt: int = 0) -> str:
    """Order id of `leg` for the position opened by `signal_id`; `attempt` > 0 after a rejected try (for
    `entry_fallback`: the taker slice's number, from 0, of a routed entry)."""
    code = LEG_CODES.get(leg)
    if code is None:
        raise ValueError(f"unknown leg {leg!r}; expected one of {sorted(LEG_CODES)}")
    if not 0 <= attempt < 1000:
        raise ValueError("attempt must be in 0..999")
    return f"tf{signal_digest(signal_id)}-{code}{attempt if attempt else ''}"


def position_id(signal_id: str) -> str:
    """Id of the position opened by `signal_id` (same digest, so orders and position line up)."""
    return f"pos-{signal_digest(signal_id)}"


def pair_id(signal_id: str) -> str:
    """Id of the hedged pair opened by the watchlist signal `signal_id` (same digest as its leg orders)."""
    return f"pair-{signal_digest(signal_id)}"
