"""The runner's sparse executor feed and hour-long slices change no result.

``BacktestRunner(feed="sparse")`` (the default) holds the marks and books of markets no account is busy
on and skips clock ticks on which ``on_clock`` would do nothing; ``feed="dense"`` feeds every record
and ticks every second (the earlier runner). Both run the same generated sessions and must
give identical signals and identical executor output: every record every account emitted (orders,
fills, positions, risk.events, field for field and in order), hence identical trades and risk-decision
counts in the result.

The sessions (3 symbols, 3 hours from 22:00 UTC, seeds 5 and 6: the 00:00 funding time and a UTC day change inside;
the parity test's two strategies, 30-minute warm-up, low thresholds) make many positions, and the
executor settings make every clock-driven rule act: a pause after two losses (its end resets the
streak), a 3R daily loss limit (flatten, then the reset at midnight), and in the second session a 1 s
staleness limit (books come every 2 s, trades at 2-3/s: thousands of stale/fresh transitions), a
shared account and maker-first entries (maker timeouts on the clock), once as generated and once
thinned to a mark a minute and a book every 10 s (so the clock also ticks between trades of busy
markets, where the sparse feed skips trades inside the positions' bands). The test checks that these
happen, so the sessions keep exercising what the sparse feed must not change.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from backtest.runner import BacktestRunner, BacktestSink, _quiet_tick_run
from backtest.sources.records import RecordSource
from backtest.sources.synthetic import SyntheticSource
from execution.config import ExecutorConfig
from stream_apps.core.strategy import parse_strategy
from tests.backtest.test_backtest_parity import STRATEGIES

H = 3_600_000
START = 1_704_067_200_000 - 2 * H  # 2023-12-31 22:00 UTC
END = START + 3 * H
RATES = {"BTCUSDT": 3.0, "ETHUSDT": 2.5, "SOLUSDT": 2.0}
RISK = {"daily_loss_limit_r": 3, "max_consecutive_losses": 2, "pause_min": 15, "max_open_positions": 4}
PER_STRATEGY = ExecutorConfig.model_validate(
    {
        "timeout_min": 30,
        "timeout_min_by_strategy": {"ws_only": 20},
        "paper": {"slippage_bps": 1.0, "slippage_model": "book"},
        "risk": RISK,
    }
)
PER_STRATEGY_MAKER = PER_STRATEGY.model_copy(
    update={
        "entry": ExecutorConfig.model_validate(
            {"entry": {"kind": "maker_first", "maker_timeout_ms": 3000, "fallback_slippage_cap_bps": 5.0}}
        ).entry
    }
)
SHARED_MAKER = ExecutorConfig.model_validate(
    {
        "timeout_min": 30,
        "paper": {"slippage_bps": 1.0, "limit_queue": "touch"},
        "entry": {"kind": "maker_first", "maker_timeout_ms": 3000, "fallback_slippage_cap_bps": 5.0},
        "risk": {**RISK, "stale_market_data_s": 1.0},
    }
)


@pytest.fixture
def recorded(monkeypatch):
    """Every record every account emits, per sink, in emission order."""
    emit = BacktestSink.emit

    def recording(self, topic, key, record):
        self.__dict__.setdefault("records", []).append((topic, key, dict(record)))
        emit(self, topic, key, record)

    monkeypatch.setattr(BacktestSink, "emit", recording)


class Thinned:
    """The synthetic session with a mark a minute (none at 00:00: funding is settled by a trade) and a
    book every 10 s, like the Vision source: the clock then ticks on trades of busy markets too."""

    def __init__(self, inner: SyntheticSource) -> None:
        self.inner = inner

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def slices(self):
        for piece in self.inner.slices():
            piece.marks = [m for m in piece.marks if m["event_time"] % 60_000 == 0 and m["event_time"] != END - H]
            piece.books = [b for b in piece.books if b["event_time"] % 10_000 == 500]
            yield piece


class FrequentFunding:
    """The synthetic session with a funding time every ``every_ms`` (each mark names the next one) and,
    thinned, a mark every 10 s: positions live across many funding times, so marks of busy markets are
    held across them (a held mark's funding time ends its market's band), settle funding that a trade
    has not, or come after one a trade settled (funding times fall between marks, so trades settle
    most of them). Funding times closer together than the executor's
    staleness limit (where the sparse feed passes everything held anyway) need the band's end."""

    def __init__(self, inner, thinned: bool, every_ms: int) -> None:
        self.inner, self.thinned, self.every = inner, thinned, every_ms

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def slices(self):
        for piece in self.inner.slices():
            marks = []
            for m in piece.marks:
                if self.thinned and m["event_time"] % 10_000:
                    continue
                t = m["event_time"]
                n = (t - 500) // self.every  # funding times at 500 ms past a mark: trades settle them
                marks.append(
                    {
                        **m,
                        "next_funding_time": (n + 1) * self.every + 500,
                        "funding_rate": 0.0005 * (1 + n % 3) * (-1) ** n,
                    }
                )
            piece.marks = marks
            yield piece


def run(
    config: ExecutorConfig,
    feed: str,
    *,
    account: str = "per_strategy",
    slice_ms: int = 3_600_000,
    seed: int = 5,
    thinned: bool = False,
    funding_every_ms: int = 0,
):
    source = SyntheticSource(list(RATES), START, END, seed=seed, trades_per_s=RATES, slice_ms=slice_ms)
    if funding_every_ms:
        source = FrequentFunding(source, thinned, funding_every_ms)
    elif thinned:
        source = Thinned(source)
    runner = BacktestRunner([parse_strategy(s) for s in STRATEGIES], config, account=account, feed=feed)
    result = runner.run(source)
    outputs = {name: book.sink.__dict__.get("records", []) for name, book in runner._books.items()}
    return runner, result, outputs


def same_run(a, b) -> None:
    (runner_a, result_a, out_a), (runner_b, result_b, out_b) = a, b
    by_id = lambda signals: {s["signal_id"]: s for s in signals}  # noqa: E731 (order across symbols follows slicing)
    assert by_id(runner_a.signals) == by_id(runner_b.signals)
    assert len(runner_a.signals) == len(runner_b.signals)
    assert runner_a.position_events() == runner_b.position_events()
    assert out_a.keys() == out_b.keys()
    for name in out_a:
        assert len(out_a[name]) == len(out_b[name]), name
        for n, (x, y) in enumerate(zip(out_a[name], out_b[name], strict=True)):
            assert x == y, (name, n)
    assert result_a.trades == result_b.trades
    assert result_a.params["risk_decisions"] == result_b.params["risk_decisions"]
    assert result_a.params.get("degradation_changes") == result_b.params.get("degradation_changes")
    assert result_a.params["open_positions_at_end"] == result_b.params["open_positions_at_end"]


def reasons(outputs) -> Counter:
    return Counter(r["reason"] for records in outputs.values() for topic, _, r in records if topic == "risk.events")


def test_sparse_feed_equals_dense_with_pauses_daily_limit_and_funding(recorded):
    seen: Counter[str] = Counter()
    exits: set[str] = set()
    funding = 0
    # seed 5 hits the daily limit before midnight (flattened); seed 6 holds over 00:00, maker-first entries
    for seed, config in ((5, PER_STRATEGY), (6, PER_STRATEGY_MAKER)):
        dense = run(config, "dense", seed=seed)
        same_run(dense, run(config, "sparse", seed=seed))
        _, result, outputs = dense
        seen += reasons(outputs)
        exits |= {t.exit_reason for t in result.trades}
        funding += sum(1 for t in result.trades if t.funding_r != 0)  # held over the 00:00 funding time
        assert len(result.trades) >= 15
    assert {"consecutive_losses", "pause_over", "daily_loss_limit", "daily_loss_reset"} <= set(seen), seen
    assert exits >= {"sl", "sl_be", "tp", "timeout", "signal_flip", "risk_flatten"}, exits
    assert funding > 0


def test_sparse_feed_equals_dense_with_stale_data_maker_entries_and_a_shared_account(recorded):
    seen: Counter[str] = Counter()
    cancels: Counter[str | None] = Counter()
    for thinned in (False, True):
        dense = run(SHARED_MAKER, "dense", account="shared", thinned=thinned)
        same_run(dense, run(SHARED_MAKER, "sparse", account="shared", thinned=thinned))
        _, result, outputs = dense
        seen += reasons(outputs)
        cancels += Counter(
            r.get("reason")
            for records in outputs.values()
            for topic, _, r in records
            if topic == "orders" and r["state"] == "CANCELED"
        )
        assert len(result.trades) >= 5
    assert seen["stale_market_data"] > 100 and seen["market_data_fresh"] > 100, seen
    assert {"consecutive_losses", "pause_over"} <= set(seen), seen
    assert cancels["maker_timeout"] > 0, cancels


def test_sparse_feed_equals_dense_for_accounts_idle_on_a_busy_market_with_stale_data(recorded):
    """One account per strategy, a 1 s staleness limit and the thinned session: while one account is
    busy on a market, the others are idle on it and its newest trade is their only fresh data there
    (the sparse feed passes the busy accounts a skipped trade only where one of them decides, but the
    idle ones learn the newest trade at every record, as in the dense feed), so their stale/fresh
    transitions show when they learn it."""
    config = PER_STRATEGY.model_copy(update={"risk": PER_STRATEGY.risk.model_copy(update={"stale_market_data_s": 1.0})})
    dense = run(config, "dense", thinned=True)
    same_run(dense, run(config, "sparse", thinned=True))
    _, result, outputs = dense
    seen = reasons(outputs)
    assert seen["stale_market_data"] > 100 and seen["market_data_fresh"] > 100, seen
    assert len(result.trades) >= 5


@pytest.mark.parametrize(
    ("thinned", "every_ms"),
    [(False, 7_000), (True, 60_000)],
    ids=["mark_every_second_funding_every_7s", "mark_every_10s_funding_every_minute"],
)
def test_sparse_feed_equals_dense_with_frequent_funding_times(recorded, thinned, every_ms):
    """Marks of busy markets are held (as the runner does now): with a funding time every few
    seconds or every minute, every position pays funding many times, so a held mark must never hide a
    funding time (passed before the first trade at or after it) nor be replaced by a mark for a later one."""
    dense = run(PER_STRATEGY, "dense", funding_every_ms=every_ms, thinned=thinned)
    same_run(dense, run(PER_STRATEGY, "sparse", funding_every_ms=every_ms, thinned=thinned))
    _, result, _ = dense
    paid = [t for t in result.trades if t.funding_r != 0]
    assert len(result.trades) >= 15 and len(paid) >= len(result.trades) // 2, (len(result.trades), len(paid))


def test_minute_and_hour_slices_give_the_same_run(recorded):
    same_run(run(PER_STRATEGY, "sparse", slice_ms=60_000), run(PER_STRATEGY, "sparse"))


def test_a_market_first_seen_between_ticks_is_flagged_as_the_dense_feed_flags_it(recorded):
    """A market without books or marks (BTC) whose first trade comes while every account is idle, then
    falls silent for longer than the staleness limit, while the clock ticks on another market's marks
    (ETH, no trades): the dense feed flags BTC fresh at the next tick and publishes its going stale and
    fresh again; the sparse feed must feed it before the first tick after its first trade (nothing
    else would make that tick act)."""
    sec, t0 = 1000, 1_704_067_200_000
    btc = [trade("BTCUSDT", 1000 + k, t0 + k * sec, 40_000.0) for k in (10, *range(100, 300))]
    marks = [
        {
            "exchange": "binance",
            "symbol": "ETHUSDT",
            "mark_price": 2000.0,
            "index_price": 2000.0,
            "funding_rate": 0.0001,
            "next_funding_time": t0 + 8 * H,
            "event_time": t0 + k * sec,
            "receive_time": t0 + k * sec + 15,
        }
        for k in range(300)
    ]
    outputs = []
    for feed in ("dense", "sparse"):
        source = RecordSource("hand", "binance", ["BTCUSDT", "ETHUSDT"], t0, t0 + 300 * sec, trades=btc, marks=marks)
        runner = BacktestRunner([parse_strategy(STRATEGIES[0])], ExecutorConfig(), feed=feed)
        runner.run(source)
        outputs.append([r for book in runner._books.values() for r in book.sink.__dict__.get("records", [])])
    dense, sparse = outputs
    assert dense == sparse
    scopes = [(r["scope"], r["reason"]) for _, _, r in dense]
    assert scopes == [("symbol:binance:BTCUSDT", "stale_market_data"), ("symbol:binance:BTCUSDT", "market_data_fresh")]


def trade(symbol: str, agg_id: int, t: int, price: float) -> dict:
    return {
        "exchange": "binance",
        "symbol": symbol,
        "agg_id": agg_id,
        "price": price,
        "qty": 1.0,
        "first_trade_id": agg_id,
        "last_trade_id": agg_id,
        "event_time": t,
        "trade_time": t,
        "receive_time": t + 5,
        "taker_side": "BUY",
    }


def test_the_idle_run_ticks_a_second_after_the_last_tick_and_stops_where_a_tick_may_act():
    """``_quiet_tick_run`` (the compiled idle loop) by hand: a tick at the first control at or after the
    last tick + 1000 ms (999 ms later is not due), the executor time as the latest control time (or
    the executor's, if later), and a stop at a control that may not be held or at a due tick at or
    after the accounts' quiet end, before taking it."""
    times = np.array([5_000, 5_999, 6_000, 6_400, 6_999, 7_000, 9_500, 9_600], dtype=np.int64)
    ok = np.ones(len(times), dtype=bool)
    # last tick at 5_000: due again at 6_000, then 7_000, then 9_500 (the first control at or after 8_000)
    assert _quiet_tick_run(times, ok, 1, 5_000, 6_000, np.inf) == (8, 9_500, 9_600)
    # the quiet end at 9_000: the tick due at 9_500 may act, so the run stops there, before it
    assert _quiet_tick_run(times, ok, 1, 5_000, 6_000, 9_000.0) == (6, 7_000, 7_000)
    # a control that may not be held stops the run before it, whatever the clock
    ok[3] = False
    assert _quiet_tick_run(times, ok, 0, 4_000, 5_000, np.inf) == (3, 6_000, 6_000)
    # the executor ahead of the controls: ticks and executor time at its time
    assert _quiet_tick_run(times, np.ones(len(times), dtype=bool), 0, 8_000, 6_000, np.inf) == (8, 9_500, 9_600)
