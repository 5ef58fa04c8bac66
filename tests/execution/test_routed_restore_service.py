"""A paper executor service stopped inside a routed entry after a taker slice filled and started again
(the service's restore on assignment: ``service_restore.read_outputs`` reads positions, orders and fills
back through Avro, ``Executor.restore`` replays the slice's fills records one by one) publishes, with
the run before it, exactly what the backtest's executor emits over the same session: every float to
the last bit (the entry's filled quantity, the next slices' quantities, the position's entry price,
fees and slippage). The in-process cuts are ``test_event_clock``; this is the one check through the
broker, on the event-clock session (tests/execution/event_clock_session.py) and its ``Run``.

Cost (2026-11-30, loaded machine): ~10 s wall.
"""

from __future__ import annotations

import pytest

from execution.input_order import RANK, TIME_FIELD
from tests.execution.event_clock_session import backtest, session
from tests.execution.test_execution_service_event_clock import Run, by_market

pytestmark = pytest.mark.integration


def test_a_service_restarted_between_two_taker_slices_publishes_what_the_backtest_does(
    kafka_bootstrap, topic_prefix, tmp_path
):
    records = sorted(session(), key=lambda item: (item[1][TIME_FIELD[item[0]]], RANK[item[0]]))
    emitted = backtest(records)
    want = by_market(emitted)
    # the first taker slice that has a slice after it: the cut is right after its fill
    sent = [r for t, r in emitted if t == "orders" and r["state"] == "PENDING_NEW"]
    first = next(r for r in sent if r["client_order_id"].endswith("-ef"))
    assert any(r["client_order_id"] == first["client_order_id"] + "1" for r in sent)
    fill_time = next(
        r["event_time"] for t, r in emitted if t == "fills" and r["client_order_id"] == first["client_order_id"]
    )
    cut = next(i for i, (topic, r) in enumerate(records) if r[TIME_FIELD[topic]] > fill_time)

    run = Run(kafka_bootstrap, topic_prefix + "restart.", tmp_path)
    run.produce(records[:cut], one_by_one=False)
    run.start()
    before = run.finish()  # every input up to the cut handled and committed, the service stopped
    states = {r["client_order_id"]: r["state"] for t, r in before if t == "orders"}
    assert states[first["client_order_id"]] == "FILLED" and first["client_order_id"] + "1" not in states
    assert first["position_id"] not in {r["position_id"] for t, r in before if t == "positions"}

    run.produce(records[cut:], one_by_one=False)
    run.start()
    assert by_market(run.finish()) == want
