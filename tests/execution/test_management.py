"""Position management by ROE (`execution.management`) on scripted price paths, against hand computations.

Setup: LONG signal at 100, R = 2 (stop 98), tp2_r 4 (target 108), 200 USDT per R => qty 100; paper broker
with tape fills and no slippage, taker fee 0.05 %; management at leverage 10: add-ons of half the first
quantity at ROE 5 % and 10 %, trailing to break-even net of fees at 10 % and to +10 % net at 20 %,
partial take-profit of the first quantity at 12 %. ROE = (price - average) / average x 10. An order
decided on a trade fills at the next trade (its price, the same in the scripts).
"""

from __future__ import annotations

import pytest

from execution.client_ids import client_order_id
from execution.config import ExecutorConfig, PaperFills, RiskLimits
from execution.management import Management, TrailStep, lock_price, roe, roe_price
from tests.support.execution import T0, Harness

S = 1000
FEE = 0.0005
LEV = 10.0
MANAGED = Management(enabled=True, leverage=LEV)


def harness(**risk) -> Harness:
    return Harness(
        ExecutorConfig(
            paper=PaperFills(fills="tape"),
            management_by_strategy={"v53": MANAGED},
            risk=RiskLimits(**risk),
        )
    )


def run(h: Harness, prices: list[float]) -> None:
    """The signal at T0, then one trade a second at `prices` from T0 on."""
    h.signal(price=100.0, risk=2.0, tp2_r=4.0)
    for i, p in enumerate(prices):
        h.trade(p, T0 + i * S)


def orders(h: Harness) -> list[tuple]:
    """(client id, leg, reason, side, qty) of every order sent, in order."""
    return [
        (o["client_order_id"], o["leg"], o["reason"], o["side"], o["qty"])
        for o in h.of("orders")
        if o["state"] == "PENDING_NEW"
    ]


def test_lock_price_nets_the_locked_roe_after_fees_for_both_directions():
    for direction, sign in (("LONG", 1), ("SHORT", -1)):
        avg, qty, fees = 100.0, 3.0, 0.7
        for lock in (0.0, 0.1):
            s = lock_price(direction, avg, qty, fees, FEE, lock, LEV)
            net = sign * qty * (s - avg) - fees - FEE * s * qty
            assert net == pytest.approx(lock * avg * qty / LEV)
        assert roe(direction, avg, roe_price(direction, avg, 0.12, LEV), LEV) == pytest.approx(0.12)


def test_add_ons_trailing_and_partial_take_profit_on_a_scripted_path():
    h = harness()
    # 0: entry fills at 100; 1: ROE 6 % -> add-on 1; 2: it fills at 100.6; 3: 101.3 -> trail to break-even
    # and add-on 2; 4: it fills; 5: 101.8 -> partial; 6: it fills; 7: 102.6 -> trail to +10 %;
    # 8: 101.5 crosses that stop; 9: the stop's exit fills at 101.5
    run(h, [100.0, 100.6, 100.6, 101.3, 101.3, 101.8, 101.8, 102.6, 101.5, 101.5])
    sid = h.positions("opened")[0]["signal_id"]
    q0 = 100.0
    assert orders(h) == [
        (client_order_id(sid, "entry"), "entry", None, "BUY", q0),
        (client_order_id(sid, "add_on_1"), "entry", "add_on_1", "BUY", 50.0),
        (client_order_id(sid, "add_on_2"), "entry", "add_on_2", "BUY", 50.0),
        (client_order_id(sid, "tp1"), "tp1", "partial_tp", "SELL", q0),
        (client_order_id(sid, "sl"), "sl", "sl_be", "SELL", 100.0),
    ]
    assert [(f["price"], f["qty"]) for f in h.fills()] == [
        (100.0, 100.0),
        (100.6, 50.0),
        (101.3, 50.0),
        (101.8, 100.0),
        (101.5, 100.0),
    ]
    # by hand: the averages, the trailed stops, the partial's level
    fee1, fee2, fee3 = FEE * 100 * 100.0, FEE * 50 * 100.6, FEE * 50 * 101.3
    avg1 = (100 * 100.0 + 50 * 100.6) / 150  # 100.2: ROE at 101.3 is 10.98 % -> trail 1 and add-on 2
    assert roe("LONG", avg1, 101.3, LEV) >= 0.10
    be = (avg1 * 150 + fee1 + fee2) / (150 * (1 - FEE))  # break-even net of fees of the 150 open
    avg2 = (100 * 100.0 + 50 * 100.6 + 50 * 101.3) / 200  # 100.475; R' = 200 / 200 = 1
    assert avg2 - 1.0 < be  # the recomputed stop (avg - 1R') is looser: the trailed one stays
    partial_level = avg2 * (1 + 0.12 / LEV)
    open_fees = (fee1 + fee2 + fee3) * 100 / 200  # entry fees of the 100 still open after the partial
    lock = (avg2 * 100 * (1 + 0.10 / LEV) + open_fees) / (100 * (1 - FEE))
    assert roe("LONG", avg2, 102.6, LEV) >= 0.20 and 101.5 <= lock
    [tp1] = h.positions("tp1")
    assert (tp1["qty"], tp1["sl_price"], tp1["entry_price"]) == pytest.approx((100.0, be, avg2))
    assert tp1["tp1_price"] == pytest.approx(partial_level)
    assert tp1["tp2_price"] == pytest.approx(avg2 + 4 * 1.0)  # target recomputed: avg + tp2_r x R'
    closed = h.closed()
    assert (closed["exit_reason"], closed["sl_price"]) == ("sl_be", pytest.approx(lock))
    entries = 100 * 100.0 + 50 * 100.6 + 50 * 101.3
    gross = (100 * partial_level + 100 * lock - entries) / 200  # exits valued at their levels
    fees = fee1 + fee2 + fee3 + FEE * 100 * 101.8 + FEE * 100 * 101.5
    cash = 100 * 101.8 + 100 * 101.5 - entries - fees
    assert closed["pnl_r_gross"] == pytest.approx(gross)
    assert closed["fees_r"] == pytest.approx(fees / 200)
    assert closed["pnl_r_net"] == pytest.approx(cash / 200)
    assert not h.ex.positions


def test_a_short_adds_on_and_takes_the_target_recomputed_from_the_average():
    h = harness()
    h.signal(price=100.0, risk=2.0, tp1_r=0.5, tp2_r=1.0, direction="SHORT")  # stop 102, target 98
    for i, p in enumerate([100.0, 99.4, 99.4, 98.4, 98.4]):
        h.trade(p, T0 + i * S)
    # add-on 1 at 99.4 (ROE 6 %): avg (100 x 100 + 50 x 99.4) / 150 = 99.8, R' = 4/3, target 99.8 - 4/3
    avg = (100 * 100.0 + 50 * 99.4) / 150
    target = avg - 200 / 150
    assert 98.4 <= target
    assert [o[2] for o in orders(h)] == [None, "add_on_1", "tp"]  # the target is crossed at 98.4 first
    closed = h.closed()
    assert (closed["exit_reason"], closed["tp2_price"], closed["entry_price"]) == (
        "tp",
        pytest.approx(target),
        pytest.approx(avg),
    )
    gross = -(150 * target - (100 * 100.0 + 50 * 99.4)) / 200
    assert closed["pnl_r_gross"] == pytest.approx(gross)


def test_the_guard_refuses_an_add_on_beyond_the_exposure_cap_and_it_is_skipped():
    h = harness(max_exposure_usd=12_000.0)  # 100 x 100.6 open + 50 x 100.6 added = 15,090 > 12,000
    run(h, [100.0, 100.6, 100.6, 101.3, 101.3, 101.3])
    [refused, refused2] = h.risk("max_exposure")
    assert refused["decision"] == "block" and refused["scope"].startswith("strategy:v53:")
    assert refused2["event_time"] == T0 + 3 * S  # the second add-on, at ROE 13 %, refused too
    assert [o[2] for o in orders(h)] == [None, "partial_tp"]  # partial at ROE >= 12 %: the whole first qty
    assert h.closed()["exit_reason"] == "tp"  # no add-on made: the partial closed everything


def test_off_by_default_and_the_ladder_leaves_today_s_exits_alone():
    h = Harness(ExecutorConfig(paper=PaperFills(fills="tape")))
    run(h, [100.0, 100.6, 101.3, 102.1, 102.1])  # TP1 at 102 (1R): half closed, no add-on
    assert [o[1:3] for o in orders(h)] == [("entry", None), ("tp1", "tp1")]
    assert h.positions("tp1")[0]["sl_price"] == 100.0


def test_the_quiet_band_ends_at_the_next_step_of_the_ladder():
    h = harness()
    run(h, [100.0])
    [pos] = h.ex.positions.values()
    low, high, _ = pos.quiet_band()
    assert (low, high) == pytest.approx((98.0, roe_price("LONG", 100.0, 0.05, LEV)))


def test_management_settings_are_checked():
    with pytest.raises(ValueError, match="increasing"):
        Management(trailing=(TrailStep(roe=0.2, lock_roe=0.1), TrailStep(roe=0.1, lock_roe=0.0)))
    with pytest.raises(ValueError, match="lock_roe"):
        Management(trailing=(TrailStep(roe=0.1, lock_roe=0.1),))
    assert ExecutorConfig().management_for("v53").enabled is False


PATH = [100.0, 100.6, 100.6, 101.3, 101.3, 101.8, 101.8, 102.6, 101.5, 101.5]


@pytest.mark.parametrize("cut", [3, 5, 7])  # after add-on 1; after add-on 2 and the break-even trail; after the partial
def test_a_restart_resumes_the_ladder_from_the_events_and_the_add_on_orders(cut):
    whole = harness()
    run(whole, PATH)
    h = harness()
    run(h, PATH[:cut])
    records = list(h.sink.records)
    restarted = Harness(h.config, now=T0 + cut * S, warm=False)
    restarted.ex.restore(
        [r for t, _, r in records if t == "positions"],
        [r for t, _, r in records if t == "orders"],
        [r for t, _, r in records if t == "risk.events"],
        T0 + cut * S,
    )
    for i, p in enumerate(PATH[cut:], start=cut):
        restarted.trade(p, T0 + i * S)
    keys = ("exit_reason", "qty", "entry_price", "sl_price", "tp1_price", "tp2_price", "pnl_r_gross", "pnl_r_net")
    after = restarted.closed()
    assert {k: after[k] for k in keys} == pytest.approx({k: whole.closed()[k] for k in keys})
    sent = [o[2] for o in orders(h) + orders(restarted)]
    assert sent == [o[2] for o in orders(whole)]  # no add-on or partial twice
