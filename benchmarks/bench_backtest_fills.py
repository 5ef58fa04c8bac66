"""Backtest speed with the book-based paper broker against the trade-tape one (target: book >= 0.8x tape).

What runs is ``benchmarks.bench_backtest``'s re-run on cached data (the synthetic session, 100 trades/s
over 4 symbols, 10-level books every 2 s, the three shipped strategies, one paper account per
strategy): the session's slices are generated once, then ``BacktestRunner.run`` over them is timed end
to end with ``PaperFills(fills="tape")`` (the baseline: the paper broker before the book model, the
default until book replaced it) and ``PaperFills(fills="book")`` (``execution.paper_broker`` / ``tapeflow_runtime.matching``),
alternating tape/book ``--repeat`` times so both see the same machine load. Printed per model: the
best (least disturbed) and median wall time and the median CPU time; the ratio is taken of the best
wall times (on a shared 2-core machine the median wall time swings by 2x with the neighbours' load) and
of the median CPU times (the work itself). Twice: with ``entry.kind: taker`` (market orders: the book model walks the
levels; pinned, the executor's default being ``routed``) and with ``entry.kind: maker_first`` (post-only limits at the touch: the book model queues
them behind the level and fills them from the trades), where the models' fills differ most.

Also printed per model: signals, closed positions, their net R, fills and the orders with more than
one fill (levels walked, or filled by several trades), so the speed is read next to what the model
changed. Every repeat of a
model must give the same trades (deterministic), else the run stops. The frame (arguments, session, timed
runs, summary) is ``benchmarks.backtest_ab``'s, shared with ``bench_routing``.

Run: ``.venv/bin/python -m benchmarks.bench_backtest_fills [--hours 30] [--repeat 3] [--quick]``
"""

from __future__ import annotations

from collections import Counter
from typing import Literal

from backtest.runner import BacktestRunner
from benchmarks.backtest_ab import Arms, Session, parse_args, session
from execution.config import EntryPolicy, ExecutorConfig, PaperFills

TARGET_RATIO = 0.8
MODELS: tuple[Literal["tape", "book"], ...] = ("tape", "book")


def fill_counts(runner: BacktestRunner) -> tuple[int, int]:
    """(fills, orders filled in more than one fill) over every account."""
    per_order: Counter[str] = Counter()
    for book in runner.accounts.books.values():
        for rec in book.sink.fills:
            per_order[rec["client_order_id"]] += 1
    return sum(per_order.values()), sum(1 for n in per_order.values() if n > 1)


def compare(data: Session, entry: EntryPolicy, repeat: int) -> float:
    arms = Arms(MODELS)
    for _ in range(repeat):
        for model in MODELS:
            config = ExecutorConfig(paper=PaperFills(fills=model), entry=entry)
            result, runner, first = arms.run(model, data, config)
            if first:
                fills, partial = fill_counts(runner)
                print(
                    f"  {model}: {result.signals} signals, {len(result.trades)} closed positions "
                    f"(net {sum(t.pnl_r_net for t in result.trades):+.2f} R), {fills} fills, "
                    f"{partial} orders with more than one fill"
                )
    return arms.report(data.trades, "tape", "book", TARGET_RATIO)


def main() -> None:
    hours, repeat = parse_args(__doc__ or "", "runs per model (median reported)")
    with session(hours) as data:
        print("entry: taker (market orders)")
        taker = compare(data, EntryPolicy(kind="taker"), repeat)
        print("entry: maker_first (post-only limits at the touch, then the market fallback)")
        maker = compare(data, EntryPolicy(kind="maker_first"), repeat)
        print(
            f"book / tape (the lower of best wall and median CPU): {taker:.3f} (taker entries), {maker:.3f} "
            f"(maker_first); target >= {TARGET_RATIO}"
        )


if __name__ == "__main__":
    main()
