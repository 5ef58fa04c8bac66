"""The autopsy of trades the real executor made, read back from a migrated PostgreSQL: the replay as
traded reproduces the stored trade, the TCA of a known fill equals a hand computation, autopsies are
stored once per trade however often the job runs."""

from __future__ import annotations

import json
import random

import psycopg
import pytest

from execution.config import ExecutorConfig, PaperFills
from review.autopsy import build_autopsy
from review.autopsy_db import AutopsyError, aggregate, autopsy, load_facts, write_autopsies
from tests.review.planted import S, paper_trade
from tests.review.stored import store, store_bars
from tests.support.execution import T0

MIN = 60 * S


def _with_book(eval_time: int, exit_price: float, *, direction: str = "LONG", strategy: str = "v53"):
    """A book top (99.9 / 100.1) before the signal, the entry at the next trade (100.0), then the path
    to `exit_price` and on past the 10-minute timeout; paper slippage 3 bp. Tape fills: the autopsy is
    the point, not the fill model (the planted book shows 1.0 a level: book fills would take 1 of the
    entry's 100 from it and the rest only once it is stale, a minute later at the path's next price)."""
    steps = [("trade", 100.0, eval_time + S), ("trade", exit_price, eval_time + 2 * S)]
    steps += [("trade", exit_price, eval_time + 3 * S + k * MIN) for k in range(12)]
    return paper_trade(
        steps,
        before=[("book", 99.9, 100.1, eval_time - S // 2)],
        config=ExecutorConfig(paper=PaperFills(slippage_bps=3.0, fills="tape")),
        eval_time=eval_time,
        price=100.0,
        risk=2.0,
        direction=direction,
        strategy=strategy,
        timeout_ms=10 * MIN,
    )


def test_the_autopsy_of_a_stored_paper_trade(migrated_database):
    planted = _with_book(T0, 97.5)  # through the stop at 98
    store(migrated_database, planted)
    closed = planted.closed()
    with psycopg.connect(migrated_database) as conn:
        a = autopsy(conn, closed["position_id"])
    d = a.as_dict()
    assert d["trade"]["exit_reason"] == "sl" == closed["exit_reason"]
    # x1 reproduces the stored trade: same reason, time and net R
    assert a.replay_matches and d["counterfactuals"]["baseline"]["net_r"] == pytest.approx(
        closed["pnl_r_net"], abs=1e-9
    )
    assert all(
        s["delta_net_r"] == pytest.approx(s["net_r"] - d["counterfactuals"]["baseline"]["net_r"])
        for s in d["counterfactuals"]["scenarios"]
    )
    # the entry: a buy at the trade 100.0 moved 3 bp against us, against the book's mid 100.0 at send
    [entry] = [o for o in d["tca"]["orders"] if o["leg"] == "entry"]
    fill = 100.0 * (1 + 3e-4)
    assert entry["mid_source"] == "book" and entry["mid_at_send"] == pytest.approx((99.9 + 100.1) / 2)
    assert entry["slip_bps"] == pytest.approx((fill - 100.0) / 100.0 * 1e4)
    [stop] = [o for o in d["tca"]["orders"] if o["leg"] == "sl"]
    assert stop["mid_at_send"] == pytest.approx(100.0)  # the book top still known when the stop was sent
    assert stop["slip_bps"] == pytest.approx(-(97.5 * (1 - 3e-4) - 100.0) / 100.0 * 1e4)
    assert d["tca"]["maker_share"] == 0.0
    assert d["tca"]["cost_share"] == pytest.approx(
        (closed["fees_r"] + closed["funding_r"]) / abs(closed["pnl_r_gross"])
    )
    assert d["peers"]["count"] == 0 and len(a.narrative) >= 3
    assert "stop" in a.narrative[0] and "the market took the trade" in a.narrative[1]


def test_unknown_trade_is_one_error(migrated_database):
    with psycopg.connect(migrated_database) as conn, pytest.raises(AutopsyError, match="no closed trade"):
        autopsy(conn, "nope")


def test_write_autopsies_stores_each_closed_trade_once(migrated_database):
    first = _with_book(T0, 97.5)
    second = _with_book(T0 + 60 * MIN, 104.5, direction="LONG")  # TP1 and TP2 in one jump
    later = _with_book(T0 + 240 * MIN, 101.0)  # closes outside the window
    store(migrated_database, first, second, later)
    until = T0 + 120 * MIN
    with psycopg.connect(migrated_database) as conn:
        assert write_autopsies(conn, T0, until) == 2
        assert write_autopsies(conn, T0, until) == 2  # recomputed, replaced
        rows = conn.execute(
            "SELECT position_id, exit_reason, net_r, report->'counterfactuals'->>'replay_matches_actual' FROM trade_autopsies ORDER BY exit_time"
        ).fetchall()
    expected = [(p.closed()["position_id"], p.closed()["exit_reason"]) for p in (first, second)]
    assert [(r[0], r[1]) for r in rows] == expected
    assert [r[2] for r in rows] == pytest.approx([p.closed()["pnl_r_net"] for p in (first, second)])
    assert [r[3] for r in rows] == ["true", "true"]
    with psycopg.connect(migrated_database) as conn:
        report = aggregate(conn, "v53", T0, T0 + 300 * MIN)
    closed = [p.closed() for p in (first, second, later)]
    assert report["total"]["trades"] == 3
    for name, col in (("gross_r", "pnl_r_gross"), ("fees_r", "fees_r"), ("net_r", "pnl_r_net")):
        assert report["total"][name] == pytest.approx(sum(c[col] for c in closed))
    assert sum(b["trades"] for b in report["by"]["exit_reason"].values()) == 3
    assert report["worst"][0]["position_id"] == min(closed, key=lambda c: c["pnl_r_net"])["position_id"]


def test_the_path_read_through_bars_replays_exactly_like_every_trade(migrated_database):
    """Of the minutes whose bar touches no watched level only three trades are read; every scenario's
    outcome is the one the whole path gives."""
    rng = random.Random(7)
    price, steps = 100.0, []
    for i in range(40 * 25):  # 40 trades a minute for 25 minutes, drifting up through every take-profit
        price = round(price + rng.choice((-0.05, 0.05)) + 0.008, 3)
        steps.append(("trade", price, T0 + S + i * 1500))
    planted = paper_trade(steps, price=100.0, risk=2.0, tp1_r=1.0, tp2_r=2.0, timeout_ms=20 * MIN)
    store(migrated_database, planted)
    assert store_bars(migrated_database, planted.trades) >= 25
    pid = planted.closed()["position_id"]
    with psycopg.connect(migrated_database) as conn:
        sparse = load_facts(conn, pid)
        conn.execute("DELETE FROM bars_1m")  # no bars: every minute is read whole
        full = load_facts(conn, pid)
        conn.rollback()
    assert len(sparse.path) < 0.8 * len(full.path)
    a, b = build_autopsy(sparse), build_autopsy(full)
    assert a.replay_matches and b.replay_matches
    assert a.counterfactuals.baseline == b.counterfactuals.baseline
    assert [s.outcome for s in a.counterfactuals.scenarios] == [s.outcome for s in b.counterfactuals.scenarios]
    assert len({s.outcome.exit_reason for s in b.counterfactuals.scenarios}) >= 2  # the scenarios differ


def test_a_backtest_trade_is_rebuilt_from_its_row_and_the_runs_model(migrated_database):
    """The row a backtest stores for a trade (no orders or fills) and its run's executor settings give
    the same replay as the paper trade the executor made."""
    config = ExecutorConfig(paper=PaperFills(slippage_bps=3.0, fills="tape"))  # the settings _with_book traded with
    planted = _with_book(T0, 104.5)  # TP1 and TP2 in one jump: exit "tp"
    store(migrated_database, planted)  # the market data (and the paper rows, which the backtest ignores)
    c = planted.closed()
    o = next(e for e in planted.of("positions") if e["event"] == "opened")
    with psycopg.connect(migrated_database) as conn:
        conn.execute(
            "INSERT INTO backtest_runs (run_id, run_group, strategy, strategy_version, config_hash, config, source,"
            " exchange, symbols, from_time, to_time, params, started_at)"
            " VALUES ('run1:v53', 'run1', 'v53', '1.0', 'abc123', %s, 'db', 'binance', '{BTCUSDT}', now(),"
            " now() + interval '1 day', %s, now())",
            (json.dumps({"exits": {"timeout_min": 10}}), json.dumps({"executor": config.model_dump(mode="json")})),
        )
        conn.execute(
            "INSERT INTO backtest_trades (run_id, position_id, signal_id, exchange, symbol, direction, tier, score,"
            " entry_time, exit_time, entry_price, exit_price, sl_price, tp1_price, tp2_price, risk_distance,"
            " exit_reason, tp1_hit, r_usd, pnl_r_gross, pnl_r_net, fees_r, slippage_r, funding_r, pnl_usd_net)"
            " VALUES ('run1:v53', %s, %s, 'binance', 'BTCUSDT', 'LONG', 'standard', 80, to_timestamp(%s / 1000.0),"
            " to_timestamp(%s / 1000.0), %s, %s, %s, %s, %s, 2.0, 'tp', true, %s, %s, %s, %s, %s, %s, 0)",
            (
                c["position_id"],
                c["signal_id"],
                o["event_time"],
                c["event_time"],
                o["entry_price"],
                c["exit_price"],
                o["sl_price"],
                o["tp1_price"],
                o["tp2_price"],
                c["r_usd"],
                c["pnl_r_gross"],
                c["pnl_r_net"],
                c["fees_r"],
                c["slippage_r"],
                c["funding_r"],
            ),
        )
        conn.commit()
        a = autopsy(conn, c["position_id"], run_id="run1").as_dict()  # the run id the backtest printed
    assert a["trade"]["mode"] == "backtest" and a["trade"]["run_id"] == "run1:v53"
    assert a["counterfactuals"]["replay_matches_actual"] is True
    assert a["counterfactuals"]["baseline"]["net_r"] == pytest.approx(c["pnl_r_net"], abs=1e-9)
    assert a["tca"]["orders"] == [] and a["model"]["slippage_bps"] == 3.0


PEER_NETS = [-2.0, -1.6, -1.5, -1.4, -1.0, -0.5, 0.0, 0.4, 0.8, 1.2, 1.6, 2.0]  # LONG, same regime and size


def _plant_peer(conn, k: int, net: float, direction: str, hold_min: int) -> None:
    """One closed v53 trade (opened and closed events and its signal), 1R = 200 like the planted one."""
    sid = f"peer-sig-{k}"
    for event, minutes in (("opened", 0), ("closed", hold_min)):
        conn.execute(
            "INSERT INTO positions (position_id, signal_id, strategy, strategy_version, config_hash, exchange, symbol,"
            " mode, event, direction, tier, entry_price, qty, r_usd, sl_price, tp1_price, tp2_price, exit_price,"
            " exit_reason, pnl_r_gross, pnl_r_net, fees_r, slippage_r, funding_r, event_time)"
            " VALUES (%s, %s, 'v53', '1.0', 'abc123', 'binance', 'BTCUSDT', 'paper', %s, %s, 'standard', 100, 100, 200,"
            " 98, 102, 104, 100, 'timeout', %s, %s, 0.05, 0, 0, to_timestamp(%s / 1000.0))",
            (f"peer-{k}", sid, event, direction, net + 0.05, net, T0 - (k + 1) * 600 * MIN + minutes * MIN),
        )
    conn.execute(
        "INSERT INTO signals (signal_id, strategy, strategy_version, config_hash, exchange, symbol, eval_time,"
        " direction, tier, score, factors, price, atr, risk_distance, sl_price, tp1_price, tp2_price, sl_r, tp1_r,"
        " tp2_r, is_flip) VALUES (%s, 'v53', '1.0', 'abc123', 'binance', 'BTCUSDT', now(), %s, 'standard', 70,"
        " '{\"direction\": 40.0}', 100, 1.3, 2, 98, 102, 104, 1, 1, 2, false)",
        (sid, direction),
    )


def test_peers_percentiles_on_a_planted_set(migrated_database):
    planted = _with_book(T0, 97.5)  # LONG, stopped out: net about -1.33R, held 2 s
    store(migrated_database, planted)
    with psycopg.connect(migrated_database) as conn:
        for k, net in enumerate(PEER_NETS):
            _plant_peer(conn, k, net, "LONG", 10 * (k + 1))
        for k in range(3):  # other direction: not in the group
            _plant_peer(conn, 100 + k, -5.0, "SHORT", 1)
        conn.commit()
        a = autopsy(conn, planted.closed()["position_id"]).as_dict()
    p, net = a["peers"], planted.closed()["pnl_r_net"]
    assert p["group"] == "strategy=v53, direction=LONG, regime=unknown, size=normal" and p["fallback"] is None
    assert p["count"] == 12
    below = sum(1 for v in PEER_NETS if v < net)  # -2.0, -1.6, -1.5, -1.4
    assert below == 4 and p["net_r_percentile"] == pytest.approx(100 * below / 12)
    assert p["holding_percentile"] == pytest.approx(0.0)  # 2 s against 10 to 120 min
    assert p["win_rate"] == pytest.approx(5 / 12)
    # ROI = net cash / entry notional: the same order as net R at one size and price
    assert p["roi_percentile"] == pytest.approx(100 * below / 12)


def test_pending_autopsies_wait_for_the_whole_path_and_are_written_once(migrated_database):
    from review.autopsy_db import write_pending_autopsies
    from sinks.tables import table_for_topic, write_rows
    from tests.support.execution import trade_record

    # both trades time out after 10 minutes: each path must be stored to entry + 10 min + 5 min
    early = _with_book(T0, 101.0)
    late = _with_book(T0 + 60 * MIN, 101.0)
    store(migrated_database, early, late)  # the newest stored trade: late's, 11 minutes after its signal
    with psycopg.connect(migrated_database) as conn:
        assert write_pending_autopsies(conn, T0) == 1  # early's path is complete, late's is not yet
        assert write_pending_autopsies(conn, T0) == 0  # written once
        [(pid,)] = conn.execute("SELECT position_id FROM trade_autopsies").fetchall()
        assert pid == early.closed()["position_id"]
        spec = table_for_topic("md.trades")
        write_rows(conn, spec, [spec.to_row(trade_record(101.0, T0 + 80 * MIN))])
        conn.commit()
        assert write_pending_autopsies(conn, T0) == 1  # the market data now reaches past late's path
        rows = conn.execute("SELECT position_id, net_r FROM trade_autopsies ORDER BY exit_time").fetchall()
    assert [r[0] for r in rows] == [early.closed()["position_id"], late.closed()["position_id"]]
    assert [r[1] for r in rows] == pytest.approx([p.closed()["pnl_r_net"] for p in (early, late)])
