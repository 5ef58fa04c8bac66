"""Routing TCA and `tapeflow execution retune`: per-order slippage against the mid at send, the bucket and
day statistics and the proposal, by hand; then once through a real database and the CLI, from the
orders and fills a routed paper entry wrote."""

from __future__ import annotations

from dataclasses import replace

import psycopg
import pytest
import yaml

from backtest.result_io import write_result_json
from backtest.routed_orders import collect, is_routed_entry, order_row
from review.routing_tca import (
    RoutedOrder,
    by_bucket_and_day,
    load_routed,
    order_stats,
    parse_reason,
    percentile,
    propose,
)
from review.tca import Fill
from sinks.tables import table_for_topic, write_rows
from stream_apps.core.routing_table import RoutingTable
from tests.execution.test_routing import routed_entry
from tests.support.backtest_runs import make_run
from tests.support.execution import T0
from tests.tapeflow.test_autopsy_cli import tapeflow

DAY = 86_400_000


def _orders() -> tuple[list[RoutedOrder], list[Fill]]:
    """Entry A (400 USDT, BUY): the maker order fills whole at 99.9 after 800 ms. Entry B (400, BUY): the
    maker fills 1 of 4 after 1500 ms, two taker slices of 1.5 fill at 100.05. Entry C (100, SELL, the
    next day): the maker fills at 100.1. Every mid at send 100."""
    orders = [
        RoutedOrder("a-en", "A", "BUY", 4.0, T0, 100.0, "route 200-500 n=400.00 maker"),
        RoutedOrder("b-en", "B", "BUY", 4.0, T0 + 10_000, 100.0, "route 200-500 n=400.00 maker"),
        RoutedOrder("b-ef", "B", "BUY", 1.5, T0 + 12_000, 100.0, "route 200-500 n=400.00 taker 1/2"),
        RoutedOrder("b-ef1", "B", "BUY", 1.5, T0 + 12_700, 100.0, "route 200-500 n=400.00 taker 2/2 held=1"),
        RoutedOrder("c-en", "C", "SELL", 1.0, T0 + DAY, 100.0, "route 0-200 n=100.00 maker"),
        RoutedOrder("x-en", "X", "BUY", 1.0, T0, 100.0, None),  # not routed: left out
    ]
    fills = [
        Fill("a-en", 99.9, 4.0, 0.08, "maker", T0 + 800),
        Fill("b-en", 99.9, 1.0, 0.02, "maker", T0 + 11_500),
        Fill("b-ef", 100.05, 1.5, 0.075, "taker", T0 + 12_100),
        Fill("b-ef1", 100.05, 1.5, 0.075, "taker", T0 + 12_800),
        Fill("c-en", 100.1, 1.0, 0.02, "maker", T0 + DAY + 300),
    ]
    return orders, fills


def test_a_routed_orders_reason_gives_its_notional_and_role():
    assert parse_reason("route 1000+ n=1234.50 taker 2/4 wide_spread_split 3.10bps") == (1234.5, "taker")
    assert parse_reason("route 0-200 n=12.00 maker") == (12.0, "maker")
    assert parse_reason(None) is None and parse_reason("signal_flip") is None


def test_slippage_per_order_is_signed_by_side_against_the_mid_at_send():
    stats = {s.order.client_order_id: s for s in order_stats(*_orders())}
    assert set(stats) == {"a-en", "b-en", "b-ef", "b-ef1", "c-en"}
    assert stats["a-en"].slip_bps == pytest.approx(-10.0)  # bought 0.1 under the mid
    assert stats["b-ef"].slip_bps == pytest.approx(5.0)  # bought 0.05 over it
    assert stats["c-en"].slip_bps == pytest.approx(-10.0)  # sold 0.1 over it: better for us
    assert (stats["a-en"].first_fill_ms, stats["b-en"].first_fill_ms) == (800, 1500)
    assert stats["b-en"].filled == 1.0 and stats["c-en"].day != stats["a-en"].day


def test_bucket_statistics_per_day_and_the_proposal_by_hand():
    table = RoutingTable()
    daily, totals = by_bucket_and_day(table, order_stats(*_orders()))
    assert [(d.bucket, d.entries) for d in daily] == [("0-200", 1), ("200-500", 2)]  # in the table's order
    mid = totals[1]
    assert (mid.bucket, mid.entries, mid.maker_orders, mid.taker_orders) == ("200-500", 2, 2, 2)
    assert mid.maker_fill_ratio == pytest.approx(5 / 8)  # 4 + 1 of 4 + 4
    assert mid.maker_share == pytest.approx(5 / 8)  # 5 of the 8 filled were maker
    assert mid.maker_slip_bps == pytest.approx(-10.0) and mid.taker_slip_bps == pytest.approx(5.0)
    assert mid.maker_fill_p90_ms == pytest.approx(800 + 0.9 * 700)  # 1430
    assert totals[2].entries == 0 and totals[2].maker_fill_ratio is None
    proposed, changes = propose(table, totals, min_samples=2, target_slip_bps=2.0)
    assert [(c.bucket, c.key, c.old, c.new) for c in changes] == [
        ("200-500", "maker_wait_ms", 2000, 1500),  # 1430 rounded up to 100 ms
        ("200-500", "slices", 2, 3),  # 5 bps over the 2 bps target
    ]
    assert proposed.buckets[1].maker_wait_ms == 1500 and proposed.buckets[1].slices == 3
    assert proposed.buckets[0] == table.buckets[0]  # one maker order: fewer than min_samples, kept
    assert propose(table, totals, min_samples=3)[1] == []


def test_percentile_interpolates_between_ranks():
    assert percentile([], 0.9) is None
    assert percentile([5.0], 0.9) == 5.0
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 0.9) == pytest.approx(4.6)


def test_retune_reads_a_routed_paper_entry_from_the_database(migrated_database, tmp_path):
    h = routed_entry()  # the executor test's routed entry: maker unfilled, two taker slices at 100.0
    with psycopg.connect(migrated_database) as conn:
        for topic in ("orders", "fills"):
            spec = table_for_topic(topic)
            write_rows(conn, spec, [spec.to_row(r) for r in h.of(topic)])
        conn.commit()
        # --revision: the orders of one strategy revision (config_rev; the harness's signal is revision 0)
        window = ("paper", T0 - 60_000, T0 + 60_000, "v53")
        assert len(load_routed(conn, *window, revision=0)[0]) == 3 and load_routed(conn, *window, revision=1)[0] == []
    out = tmp_path / "routing.yaml"
    args = ["--from", str(T0 - 60_000), "--to", str(T0 + 60_000), "--database", migrated_database]
    proc = tapeflow("execution", "retune", *args, "--min-samples", "2", "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    [row] = [line.split() for line in proc.stdout.splitlines() if line.startswith("200-500") and " all " in line]
    # 1 entry, 1 maker order (nothing filled), 2 taker slices filled at 100.0 against the mid 99.95
    assert row[2:6] == ["1", "1", "2", "0.0"]
    assert float(row[-2]) == pytest.approx((100.0 - 99.95) / 99.95 * 1e4, abs=0.01)
    assert "200-500: slices 2 -> 3" in proc.stdout
    proposed = RoutingTable.model_validate(yaml.safe_load(out.read_text())["routing"])
    assert proposed.buckets[1].slices == 3 and proposed.buckets[0] == RoutingTable().buckets[0]
    # the same records kept by a backtest (backtest.routed_orders, with the mid the executor stamped;
    # result.json): retune --backtest reports the same rows and proposes the same table
    run_dir = tmp_path / "run"
    kept = [order_row(r, (r["mid_at_send"], r["mid_source"])) for r in h.of("orders") if is_routed_entry(r)]
    write_result_json(replace(make_run(strategies=("v53",)), routed_orders=collect(kept, h.of("fills"))), run_dir)
    from_run = tmp_path / "from_run.yaml"
    proc2 = tapeflow(
        "execution", "retune", "--backtest", str(run_dir), "--min-samples", "2", "--out", str(from_run), cwd=tmp_path
    )
    assert proc2.returncode == 0, proc2.stderr
    assert from_run.read_text() == out.read_text()
    assert proc2.stdout.splitlines()[1:] == proc.stdout.splitlines()[1:]  # all but the window line
    assert proc2.stdout.startswith("routing TCA backtest ")
    # bad input: one line each
    bad = tapeflow("execution", "retune", "--backtest", str(tmp_path / "home"), cwd=tmp_path, forked=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "not a backtest run" in bad.stderr
    write_result_json(make_run(strategies=("v53",)), tmp_path / "taker_run")  # a run that routed no entry
    none = tapeflow("execution", "retune", "--backtest", str(tmp_path / "taker_run"), cwd=tmp_path, forked=True)
    assert none.returncode == 1 and none.stderr.count("\n") == 1 and "no routed entry orders" in none.stderr
    other = tapeflow("execution", "retune", "--backtest", str(run_dir), "--revision", "1", cwd=tmp_path, forked=True)
    assert other.returncode == 1 and "no routed entry orders of v53 revision 1" in other.stderr


def test_the_service_finds_a_revisions_table_in_its_files_then_in_the_database(migrated_database, tmp_path):
    from execution.routing_source import RevisionTables
    from stream_apps.core.strategy import load_strategy, strategy_path
    from tapeflow_runtime.settings import Settings

    text = strategy_path("v53").read_text() + "\nrouting:\n  jitter_seed: 7\n"
    (tmp_path / "mine.yaml").write_text(text)
    mine = load_strategy(tmp_path / "mine.yaml")
    canary = text.replace("jitter_seed: 7", "jitter_seed: 9")
    with psycopg.connect(migrated_database) as conn:
        conn.execute(
            "INSERT INTO strategy_revisions (name, rev, config_hash, content, created_at, created_by)"
            " VALUES ('v53', 2, 'canaryhash', %s, now(), 'test')",
            (canary,),
        )
    part = psycopg.conninfo.conninfo_to_dict(migrated_database)
    url = f"postgresql://{part['user']}:{part.get('password', '')}@{part['host']}:{part['port']}/{part['dbname']}"
    settings = Settings(home=tmp_path / "home", strategies=[str(tmp_path / "mine.yaml")], database_url=url)
    tables = RevisionTables(settings)
    assert tables(mine.config_hash) == RoutingTable(jitter_seed=7)  # from the file the stack runs
    assert tables("canaryhash") == RoutingTable(jitter_seed=9)  # a registered revision's
    assert tables("nohash") is None and tables(load_strategy("v53").config_hash) is None
    down = RevisionTables(Settings(home=tmp_path / "h2", strategies=[], database_url="postgresql://x@127.0.0.1:1/x"))
    assert down("canaryhash") is None  # no database: the default table, asked again next time
