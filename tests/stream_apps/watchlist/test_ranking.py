"""`tapeflow watchlist` on a seeded xv_features table: each coin at its latest evaluation, pairs ranked
by swept spread with the touch spread, z-score and funding, missing pairs with their reason; a clear
line when there is nothing yet."""

from __future__ import annotations

import math
from urllib.parse import quote

import orjson
import psycopg
import pytest
from typer.testing import CliRunner

from sinks.tables import XV_FEATURES, write_rows
from tapeflow.cli import app
from tests.support.cross_venue import XV_FEATURE, T

pytestmark = pytest.mark.integration


def _row(coin: str, eval_time: int, sell: str, buy: str, **values) -> tuple:
    record = {
        **XV_FEATURE,
        "feature_id": f"{coin}:{eval_time}:{sell}:{buy}",
        "coin": coin,
        "eval_time": eval_time,
        "sell_venue": sell,
        "buy_venue": buy,
        "missing": {},
        **values,
    }
    return XV_FEATURES.to_row(record)


def _watchlist(database: str, tmp_path, *args: str):
    c = psycopg.conninfo.conninfo_to_dict(database)
    url = f"postgresql://{c['user']}:{quote(c['password'], safe='')}@{c['host']}:{c['port']}/{c['dbname']}"
    env = {"TAPEFLOW_DATABASE_URL": url, "TAPEFLOW_HOME": str(tmp_path)}
    return CliRunner().invoke(app, ["watchlist", *args], env=env)


def test_the_ranking_of_the_latest_evaluation_per_coin(migrated_database, tmp_path):
    stats = {"sweep_1h_mean": 0.0001, "sweep_1h_std": 0.0001}
    rows = [
        _row("BTC", T - 15_000, "okx", "binance", spread_sweep=0.0009),  # older: not shown
        _row(
            "BTC", T, "okx", "binance", spread_sweep=0.000301, spread_top=0.000412, funding_diff_8h=0.00005, stats=stats
        ),
        _row("BTC", T, "binance", "okx", spread_sweep=-0.0007, spread_top=-0.0004, funding_diff_8h=-0.00005),
        _row("ETH", T - 5_000, "bybit", "okx", spread_sweep=0.0005, spread_top=0.0006, funding_diff_8h=None),
        _row(
            "ETH",
            T - 5_000,
            "okx",
            "bybit",
            spread_sweep=None,
            spread_top=None,
            missing={"spread_sweep": "stale leg okx: 3.2 s old"},
        ),
    ]
    with psycopg.connect(migrated_database) as conn:
        write_rows(conn, XV_FEATURES, rows)
    result = _watchlist(migrated_database, tmp_path)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == (
        "cross-venue watchlist at 2024-02-01 00:00:00 UTC: 3 pair(s) executable, 1 missing; "
        "spreads in bp before fees, swept for 10,000 USD"
    )
    ranked = [line.split() for line in lines[2:5]]
    assert [r[:5] for r in ranked] == [
        ["1", "ETH", "bybit", "->", "okx"],
        ["2", "BTC", "okx", "->", "binance"],
        ["3", "BTC", "binance", "->", "okx"],
    ]
    # swept 3.01 bp, top 4.12 bp, z = (3.01 - 1) / 1, funding 0.50 bp on 8 h, at 00:00:00
    assert ranked[1][5:] == ["3.01", "4.12", "2.0", "0.50", "00:00:00"]
    assert ranked[0][5:] == ["5.00", "6.00", "-", "-", "23:59:55"]
    assert lines[5] == "  missing ETH okx -> bybit: stale leg okx: 3.2 s old"
    assert len(lines) == 6

    as_json = orjson.loads(_watchlist(migrated_database, tmp_path, "--json", "--limit", "1").output)
    assert len(as_json) == 1 and as_json[0]["coin"] == "ETH" and as_json[0]["spread_sweep"] == 0.0005
    btc = orjson.loads(_watchlist(migrated_database, tmp_path, "--json").output)[1]
    assert btc["z_1h"] == pytest.approx((0.000301 - 0.0001) / 0.0001) and math.isclose(btc["spread_top"], 0.000412)


def test_no_data_says_so_and_how_to_get_some(migrated_database, tmp_path):
    result = _watchlist(migrated_database, tmp_path)
    assert result.exit_code == 0
    assert result.output.startswith("no cross-venue features yet: the watchlist service (`tapeflow cross-venue`")


def test_an_unmigrated_database_is_an_error_that_says_what_to_run(database, tmp_path):
    result = _watchlist(database, tmp_path)
    assert result.exit_code == 1
    assert "run `tapeflow db migrate`" in result.output
