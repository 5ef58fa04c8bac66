"""Backtest speed with the maker-fill-ratio rule on event time (``execution.maker_fill_rule``) against
the same backtest without it (baseline: routed entries, the rule switched off; target: >= 0.97x, the
rule may cost at most 3 %).

What the rule adds to a backtest: a check of every orders record (is it a maker entry's end?), one
``SloMonitor`` window step per clock tick and per entry planned, and a sample per maker entry that
ended. The frame is ``benchmarks.backtest_ab``'s (the cached synthetic session, the shipped strategies,
one paper account per strategy, arms alternated ``--repeat`` times, best wall and median CPU). Both arms
route entries (``entry.kind: routed``); the baseline's executors have no rule (``EntryFlow.maker_rule``
None, the router's ``flags_at`` unset), so where the rule sets ``market_only`` the two arms trade
differently: the rule arm's degradation changes are printed (none: both arms must give the same
trades, else the run stops).

Run: ``.venv/bin/python -m benchmarks.bench_maker_rule [--hours 30] [--repeat 3] [--quick]``
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from benchmarks.backtest_ab import Arms, parse_args, session
from execution import executor_entries
from execution.config import EntryPolicy, ExecutorConfig

TARGET_RATIO = 0.97
RULE, NO_RULE = "rule", "no rule"


@contextmanager
def without_rule() -> Iterator[None]:
    """Executors made inside have no maker rule (the baseline)."""
    init = executor_entries.EntryFlow.__init__

    def bare(self: executor_entries.EntryFlow, ex: executor_entries.Executor) -> None:
        init(self, ex)
        self.maker_rule = None
        self.router.flags_at = None

    executor_entries.EntryFlow.__init__ = bare  # type: ignore[method-assign]
    try:
        yield
    finally:
        executor_entries.EntryFlow.__init__ = init  # type: ignore[method-assign]


def main() -> None:
    hours, repeat = parse_args(__doc__ or "", "runs per arm")
    config = ExecutorConfig().model_copy(update={"entry": EntryPolicy(kind="routed")})
    arms = Arms((NO_RULE, RULE))
    with session(hours) as data:
        for baseline, result, first in arms.alternate(data, config, NO_RULE, RULE, repeat, without_rule):
            if first:
                changes = result.params.get("degradation_changes") or []
                print(f"  rule arm: {result.signals} signals, {len(result.trades)} trades, {len(changes)} changes")
                for c in changes[:6]:
                    print(f"    {c['time_ms']} {c['account']}: {c['detail']}")
                if not changes and result.trades != baseline.trades:  # a rule never set changes nothing
                    raise SystemExit("the rule was never set, yet the trades differ from the baseline's")
        print(f"backtest with and without the maker rule ({data.trades:,} trades, {hours:g} h):")
        arms.report(data.trades, NO_RULE, RULE, TARGET_RATIO)


if __name__ == "__main__":
    main()
