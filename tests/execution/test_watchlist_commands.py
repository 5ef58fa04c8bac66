"""Operator commands to the watchlist trader (``WatchlistTrader.command``, the desk's xv.commands),
pure and hand-computed on the hand session of tests/backtest/watchlist/test_runner.py (binance rich by
1 %, okx cheap, until T0 + 90 s) under a strategy whose triggers never fire, so every pair is manual:
an open fills both legs at the trader's clock as a strategy's signal would, a duplicate command is one
pair, a close takes the exit path with reason ``manual``, a close of an unknown or closed pair is refused
with the reason, and a trader restored from its plain state with a command's legs in flight emits what
an uninterrupted one does."""

from __future__ import annotations

import math

import orjson
import pytest

from execution.client_ids import client_order_id, pair_id
from execution.watchlist_trader import MAX_COMMAND_AGE_MS, WatchlistTrader, manual_signal_id
from stream_apps.watchlist.strategy import parse_watchlist_strategy
from tests.backtest.watchlist.test_runner import FEE, STRATEGY, T0, hand_session

#: the hand strategy with triggers no spread reaches: the trader opens nothing by itself
QUIET = parse_watchlist_strategy(
    STRATEGY.model_dump(mode="json") | {"name": "xv_quiet", "triggers": {"min_net_spread_bp": 10_000}}
)


def command(cid: str, action: str = "open", strategy=QUIET, **extra) -> dict:
    """A request as the desk publishes it (every field of the schema)."""
    base = {
        "command_id": cid,
        "status": "requested",
        "action": action,
        "strategy": strategy.name,
        "coin": "BTC",
        "sell_venue": None,
        "sell_symbol": None,
        "buy_venue": None,
        "buy_symbol": None,
        "pair_id": None,
        "notional_usd": None,
        "shown_spread": None,
        "shown_time": None,
        "requested_time": 1_800_000_000_000,
        "acted_time": None,
        "who": "ui cookie session from 127.0.0.1",
        "reason": "test",
        "detail": None,
    }
    if action == "open":
        base |= {
            "sell_venue": "binance",
            "sell_symbol": "BTCUSDT",
            "buy_venue": "okx",
            "buy_symbol": "BTC-USDT-SWAP",
            "shown_spread": 0.0099,
            "shown_time": T0,
        }
    return base | extra


def until(ms: int):
    return [e for e in hand_session() if e.time_ms < ms]


def after(ms: int):
    return [e for e in hand_session() if e.time_ms >= ms]


def of(records, kind):
    return [r for k, _, r in records if k == kind]


def test_a_manual_open_is_one_pair_however_often_it_is_sent_and_a_manual_close_exits_with_its_reason():
    trader = WatchlistTrader(QUIET)
    trader.feed(until(T0 + 10_000))  # the clock: the last book, T0 + 9.5 s
    assert trader.take() == [] and trader.clock == T0 + 9_500
    trader.feed([("xv.commands", command("c-open"))])
    trader.command(command("c-open"))  # a double click that reached the topic twice: nothing more
    trader.command(command("c-open", strategy=STRATEGY))  # another strategy's command: not this trader's
    opened = trader.take()
    assert trader.counters["command_duplicate"] == 1
    [signal] = of(opened, "signal")
    sid = manual_signal_id(QUIET, "c-open")
    pid = pair_id(sid)
    assert (signal["signal_id"], signal["status"], signal["reason"], signal["eval_time"]) == (
        sid,
        "signal",
        "manual",
        T0 + 9_500,
    )
    assert sid.startswith(f"xv:{QUIET.name}:")
    # the entry as for a strategy's signal: 1,000 USD into binance's bids is 5 BTC at 101.0 and 495 USD at
    # 100.9; okx's asks give 10 BTC: both legs take the smaller amount
    qty = 5 + 495 / 100.9
    short_entry = 1_000 / qty
    assert signal["entry_spread"] == pytest.approx(math.log(short_entry / 100.0), rel=1e-12)
    assert signal["net_spread"] == pytest.approx(0.0099 - 4 * FEE, rel=1e-12)
    orders = of(opened, "order")
    assert [(o["leg"], o["action"], o["client_order_id"]) for o in orders] == [
        ("short", "entry", client_order_id(sid, "pair_short_entry")),
        ("long", "entry", client_order_id(sid, "pair_long_entry")),
    ]
    assert orders[0]["avg_price"] == pytest.approx(short_entry, rel=1e-12) and orders[1]["avg_price"] == 100.0
    [pair] = of(opened, "pair")
    assert (pair["pair_id"], pair["status"], pair["opened_ms"], pair["seq"]) == (pid, "open", T0 + 9_500, 1)
    assert pair["qty"] == pytest.approx(qty, rel=1e-12)
    [answer] = of(opened, "command")
    assert (answer["status"], answer["acted_time"], answer["pair_id"], answer["detail"]) == (
        "done",
        T0 + 9_500,
        pid,
        f"pair {pid} open",
    )
    assert (answer["who"], answer["reason"], answer["command_id"]) == (
        "ui cookie session from 127.0.0.1",
        "test",
        "c-open",
    )

    # a second open of the same venues (another command): the model refuses it, the pair key is taken
    trader.command(command("c-open-2"))
    [answer2] = of(trader.take(), "command")
    assert answer2["status"] == "rejected" and answer2["detail"].endswith(f"already has an active pair {pid}")

    trader.feed(until(T0 + 20_000)[len(until(T0 + 10_000)) :])
    assert trader.take() == []  # binance still rich: no exit rule holds (closable spread 119 bp > 20 bp)
    trader.command(command("c-close", "close", pair_id=pid))
    closed = trader.take()
    [last] = of(closed, "pair")
    assert (last["status"], last["close_reason"], last["closed_ms"], last["seq"]) == (
        "closed",
        "manual",
        T0 + 19_500,
        2,
    )
    # out: buy back binance's ask 101.1, sell okx's bid 99.9
    assert last["exit_spread"] == pytest.approx(math.log(101.1 / 99.9), rel=1e-12)
    cash = qty * short_entry - qty * 101.1 + qty * 99.9 - qty * 100.0
    fees = FEE * qty * (short_entry + 101.1 + 100.0 + 99.9)
    assert last["net_usd"] == pytest.approx(cash - fees, rel=1e-9)
    assert [(o["leg"], o["action"]) for o in of(closed, "order")] == [("short", "exit"), ("long", "exit")]
    [done] = of(closed, "command")
    assert (done["status"], done["acted_time"], done["detail"]) == ("done", T0 + 19_500, f"pair {pid} closed (manual)")


def test_a_close_of_an_unknown_or_closed_pair_and_a_stale_open_are_refused_with_the_reason():
    trader = WatchlistTrader(QUIET)
    trader.command(command("c-early", "close", pair_id="pair-x"))
    [early] = of(trader.take(), "command")
    assert (early["status"], early["acted_time"], early["detail"]) == (
        "rejected",
        None,
        "the trader has seen no input yet",
    )
    trader.feed(until(T0 + 10_000))
    trader.command(command("c-unknown", "close", pair_id="pair-nope"))
    trader.command(command("c-stale", shown_time=T0 + 9_500 - MAX_COMMAND_AGE_MS - 1))
    trader.command(command("c-venue", sell_venue="bybit"))
    trader.command(command("c-what", "flip"))
    answers = of(trader.take(), "command")
    assert [(a["command_id"], a["status"]) for a in answers] == [
        ("c-unknown", "rejected"),
        ("c-stale", "rejected"),
        ("c-venue", "rejected"),
        ("c-what", "rejected"),
    ]
    assert answers[0]["detail"] == "no pair pair-nope of BTC in strategy xv_quiet"
    assert answers[1]["detail"].startswith(
        f"the spread shown ({T0 + 9_500 - MAX_COMMAND_AGE_MS - 1} ms) is 120 s older"
    )
    assert answers[2]["detail"] == "sell bybit and buy okx: two of the strategy's venues (binance, okx)"
    assert answers[3]["detail"] == "unknown action 'flip': open or close"
    assert trader.counters["pair"] == 0 and trader.counters["order"] == 0  # nothing traded
    trader.command(command("c-open"))
    pid = pair_id(manual_signal_id(QUIET, "c-open"))
    trader.command(command("c-close", "close", pair_id=pid))
    trader.command(command("c-close-again", "close", pair_id=pid))
    answers = of(trader.take(), "command")
    assert [(a["command_id"], a["status"]) for a in answers] == [
        ("c-open", "done"),
        ("c-close", "done"),
        ("c-close-again", "rejected"),
    ]
    assert answers[2]["detail"] == f"pair {pid} is closed, not open"


def test_a_trader_restored_with_a_command_in_flight_emits_what_an_uninterrupted_one_does():
    """The open command is stamped with a time the inputs have not reached (a service catching up after
    a restart): it waits in the state, then acts at the first input at or after it. Legs 300 ms from
    their venues (execution.leg_fills; IOC limits from the legs' 5 bp minimum entry spread, as for a
    strategy's signal) are travelling later on. A trader restored from its plain state (through JSON, as
    the service's checkpoint) at each of those moments emits what an uninterrupted one does, and the same
    command read again after a restart is a duplicate."""
    timed = parse_watchlist_strategy(
        QUIET.model_dump(mode="json") | {"legs": {"default_latency_ms": 300, "min_entry_spread_bp": 5}}
    )
    first, rest = until(T0 + 10_000), after(T0 + 10_000)
    cmd = ("xv.commands", command("c-open", strategy=timed, shown_time=T0 + 10_000))
    pid = pair_id(manual_signal_id(timed, "c-open"))
    close = ("xv.commands", command("c-close", "close", strategy=timed, pair_id=pid))
    items = [*first, cmd, *rest[:40], close, *rest[40:]]
    whole = WatchlistTrader(timed)
    whole.feed(items)
    expected = whole.take()
    pairs = of(expected, "pair")
    assert [p["status"] for p in pairs] == ["opening", "open", "closing", "closed"] and pairs[-1][
        "close_reason"
    ] == "manual"
    assert pairs[0]["opened_ms"] == T0 + 10_000 and {p["pair_id"] for p in pairs} == {pid}
    assert [(a["command_id"], a["status"], a["acted_time"]) for a in of(expected, "command")] == [
        ("c-open", "done", T0 + 10_000),
        ("c-close", "done", T0 + 19_500),
    ]  # 20 ticks of 500 ms later

    n = len(first)
    got, start, trader = [], 0, WatchlistTrader(timed)
    for cut in (n + 1, n + 2, n + 3, n + 42, len(items)):  # pending; legs sent; legs in flight; closing
        trader.feed(items[start:cut])
        got += trader.take()
        if cut == n + 1:
            assert trader.pending and trader.to_dict()["pending_commands"][0]["command_id"] == "c-open"
        trader = WatchlistTrader.from_dict(timed, None, orjson.loads(orjson.dumps(trader.to_dict())))
        if cut == n + 3:
            trader.feed([cmd])  # read again after the restart: a duplicate
        start = cut
    assert got == expected and trader.counters["command_duplicate"] == 1
    assert trader.to_dict() | {"counters": None} == whole.to_dict() | {"counters": None}
