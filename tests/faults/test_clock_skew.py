"""Fault suite, executor clock skew: the testnet executor (real `BinanceBroker`) against the
fake exchange, its wall clock skewed (`tests.support.skewed_clock`, which says why not libfaketime).

It starts 7 s behind the exchange (beyond the 5 s recvWindow): the start-up sync from `/fapi/v1/time`
absorbs that, so the first entry is accepted at once. Then its clock steps 3 s forward twice (beyond
Binance's 1 s tolerance for the future; with 2 s, a full suite run once had step 2's requests
accepted: the fake exchange, a thread of the loaded test process, judged them more than a second
after they were signed, when they were no longer over a second ahead): once holding a position whose stop-loss exit follows, once
flat, when the periodic reconciliation meets the step first. Every refused request (-1021) is resynced
and resent (orders with the same client order id), every order the executor meant to send is placed
exactly once, and the next signal trades.

The second step found a bug: only order POSTs resynced on -1021, so a reconciliation refused after a
clock step kept failing and blocked new entries for good (nothing else resyncs while flat). Now every
signed request resyncs and retries once (`SignedRestClient.signed`).
"""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from execution.binance_broker import BinanceBroker
from fake_exchange.orders import TEST_API_KEY, TEST_API_SECRET
from tests.support.fake_exchange import FakeOnThread
from tests.support.faults_process import executor_clock_skew

pytestmark = pytest.mark.integration


@pytest.mark.timeout(180)
def test_executor_clock_skew_resyncs_and_never_sends_an_order_twice(kafka_bootstrap, tmp_path):
    r = executor_clock_skew(kafka_bootstrap, tmp_path / "skew", start_skew_s=-7.0, step_s=3.0)
    d = r["detail"]
    entry1, entry2 = d["entry1"], d["entry2"]
    exits = [c for c in d["intents"] if c not in (entry1, entry2)]
    assert d["entry2_opened"], (d["blocked"], d["refused_step2"], d["log_tail"])  # entries resumed
    # every intent placed exactly once; nothing rejected, nothing lost
    assert len(exits) == 1 and r["orders_expected"] == 3 and r["orders_sent"] == 3, d
    assert r["duplicates"] == 0 and r["lost"] == 0
    assert d["placements"] == {entry1: 1, exits[0]: 1, entry2: 1}
    for cid in d["intents"]:
        assert d["order_states"][cid] == ["PENDING_NEW", "NEW", "FILLED"], (cid, d["order_states"])
        assert d["posts"][cid] == 1  # accepted POSTs; a refused one is in "refused"
    # started 7 s behind: the start-up sync made everything before the first step acceptable
    assert d["refused_before_steps"] == []
    # each step: refused (-1021), resynced, resent; the operator sees each resync in the log
    assert d["refused_step1"] and d["refused_step2"], d
    assert {code for _, _, code in d["refused_step1"] + d["refused_step2"]} == {-1021}
    assert d["resyncs_logged"] == len(d["refused_step1"]) + len(d["refused_step2"]), d["log_tail"]
    # the reconciliation that met step 2 resynced instead of blocking entries
    assert not [b for b in d["blocked"] if b[0] in ("reconcile_failed", "exchange_down")], d["blocked"]
    assert d["closed"]["exit_reason"] == "sl"
    assert r["trades_in"] == r["trades_out"] == 3
    assert r["recover_s"] is not None and r["recover_s"] < 30


def test_every_signed_request_resyncs_on_1021_not_only_orders():
    """The reconciliation's reads (positions, open orders) after a clock step: resynced and answered,
    where they used to fail with -1021 until an order happened to resync the clock."""
    fake = FakeOnThread()
    try:
        broker = BinanceBroker.connect(
            "testnet", fake.rest_url, fake.ws_url, SecretStr(TEST_API_KEY), SecretStr(TEST_API_SECRET)
        )
        try:
            for step_ms in (+3_000, -8_000):  # ahead of the 1 s tolerance; behind the 5 s recvWindow
                broker.rest.time_offset_ms += step_ms
                assert broker.positions() == {} and broker.open_orders() == []
                assert abs(broker.rest.time_offset_ms) < 1_000
        finally:
            broker.close()
        assert [code for _, _, code in fake.control("state")["refused"]] == [-1021, -1021]
    finally:
        fake.stop()
