"""Routed entries in the backtest: the sparse feed (which holds the books of idle markets, and shows the
router each of them as it holds it: the probe's spread mean reads every book) gives the dense feed's run,
order for order, with the same spread state, and each strategy's own routing table is the one its
entries are worked by."""

from __future__ import annotations

from collections import Counter

import pytest

from backtest.cli import print_summary
from backtest.runner import BacktestRunner
from backtest.sources.synthetic import SyntheticSource
from execution.config import ExecutorConfig
from stream_apps.core.strategy import parse_strategy
from tests.backtest.test_backtest_feed import PER_STRATEGY, RATES, START, recorded, same_run  # noqa: F401 (a fixture)
from tests.backtest.test_backtest_parity import STRATEGIES

END = START + 2 * 3_600_000
# a probe that holds an entry whenever the spread is 1 % over its mean: its decisions read every book
_ROUTING = ExecutorConfig.model_validate(
    {"entry": {"kind": "routed"}, "routing": {"probe": {"spread_ratio": 1.01, "min_books": 1}}}
)
ROUTED = PER_STRATEGY.model_copy(update={"entry": _ROUTING.entry, "routing": _ROUTING.routing})
# the first strategy works its entries with its own table: no maker wait, three slices 1.5 s apart
OWN = {"buckets": [{"up_to": None, "maker_wait_ms": 0, "slices": 3, "slice_interval_ms": 1500}]}


class Widened:
    """The synthetic session (one tick of spread throughout) with a spread that changes each minute,
    one to six ticks: whether an entry's spread is over its hour's mean, and so whether the probe holds
    it, depends on every book of the hour before it."""

    def __init__(self, inner: SyntheticSource) -> None:
        self.inner = inner

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def slices(self):
        for piece in self.inner.slices():
            for book in piece.books:
                if book["bids"] and book["asks"]:
                    tick = book["asks"][0]["price"] - book["bids"][0]["price"]
                    wider = (book["event_time"] * 7 // 60_000) % 6 * tick
                    book["asks"] = [{**level, "price": level["price"] + wider} for level in book["asks"]]
            yield piece


def run(feed: str):
    strategies = [parse_strategy({**STRATEGIES[0], "routing": OWN}), *(parse_strategy(s) for s in STRATEGIES[1:])]
    source = Widened(SyntheticSource(list(RATES), START, END, seed=5, trades_per_s=RATES, slice_ms=3_600_000))
    runner = BacktestRunner(strategies, ROUTED, feed=feed)
    result = runner.run(source)
    outputs = {name: book.sink.__dict__.get("records", []) for name, book in runner._books.items()}
    return runner, result, outputs


@pytest.mark.usefixtures("recorded")
def test_routed_entries_run_the_same_on_the_sparse_and_the_dense_feed(capsys):
    sparse, dense = run("sparse"), run("dense")
    same_run(sparse, dense)
    # the routed entries the result keeps for the routing TCA (backtest.routed_orders), each with its
    # mid at send: the same on both feeds
    kept = sparse[1].routed_orders
    assert kept == dense[1].routed_orders
    sent = [r for records in sparse[2].values() for t, _, r in records if t == "orders" and r["state"] == "PENDING_NEW"]
    routed_ids = [r["client_order_id"] for r in sent if r["leg"] == "entry" and r["reason"].startswith("route ")]
    assert [row[0] for row in kept["orders"]] == routed_ids and all(row[5] is not None for row in kept["orders"])
    for name, book in sparse[0]._books.items():  # the probe saw every book on both feeds
        spreads = {
            key: list(map(tuple, rows)) for key, rows in book.executor.entry_flow.router.spreads._minutes.items()
        }
        other = dense[0]._books[name].executor.entry_flow.router.spreads._minutes
        assert spreads == {key: list(map(tuple, rows)) for key, rows in other.items()}, name
    _, _, outputs = sparse
    first, second = STRATEGIES[0]["name"], STRATEGIES[1]["name"]
    kinds = {
        name: Counter(
            " ".join(r["reason"].split()[3:5])
            for topic, _, r in records
            if topic == "orders" and r["state"] == "PENDING_NEW" and (r["reason"] or "").startswith("route")
        )
        for name, records in outputs.items()
    }
    # its own table: no maker order, three slices (more where the probe found the book thin)
    assert kinds[first]["taker 3/3"] > 0 and all(kind.startswith("taker") for kind in kinds[first])
    # the executor config's table: a maker wait first (its reason "maker 0/n", n the slices after it)
    assert sum(n for kind, n in kinds[second].items() if kind.startswith("maker 0/")) > 0
    held = [
        r for records in outputs.values() for t, _, r in records if t == "orders" and "held=1" in (r["reason"] or "")
    ]
    assert held  # the probe held entries on the wide books
    # the maker-fill-ratio rule on event time (execution.maker_fill_rule): the second strategy's makers
    # fill little, the rule is set and, an hour without makers later, cleared, on both feeds at the same
    # window ends (same_run); the result and the summary report it
    changes = sparse[1].params["degradation_changes"]
    assert [(c["account"], c["rule"], c["active"]) for c in changes] == [
        (second, "maker_fill_ratio_low", True),
        (second, "maker_fill_ratio_low", False),
    ]
    ends = [
        r["event_time"]
        for topic, _, r in outputs[second]
        if topic == "orders" and r["type"] == "LIMIT" and r["state"] in ("FILLED", "CANCELED", "REJECTED", "EXPIRED")
    ]
    last_window_end = max(ends) - max(ends) % 300_000 + 300_000  # the window of the last maker's end
    assert changes[1]["time_ms"] == last_window_end + 3_600_000  # then an hour of windows without one
    print_summary(sparse[1], {})
    assert "  degradation: 2 changes (1 set); first at " in capsys.readouterr().out
