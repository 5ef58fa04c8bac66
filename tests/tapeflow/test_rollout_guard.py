"""The guardrail controller: its rules on hand-made trade sequences, and a canary breaching its drawdown
guard in a real migrated database (closed trades of the real executor, written with the sink's row
mappings) rolled back by `tapeflow strategy guard --once`: the rollback state on config.rollouts, an
auto_rollback audit row, and only the canary's own trades counted."""

from __future__ import annotations

import psycopg
import pytest

from execution.config import ExecutorConfig, RiskLimits
from schemas.registry import FileSchemaRegistry
from schemas.serde import AvroSerde
from sinks.tables import table_for_topic, write_rows
from stream_apps.core.rollout import Guardrails
from tapeflow.rollout import audit_rows, read_states
from tapeflow.rollout_guard import breach, drawdown_r, next_run_ms
from tests.support.execution import Harness, signal_record
from tests.tapeflow.test_rollout import _cli, files  # noqa: F401 - files is a fixture

S = 1000
G = Guardrails(max_drawdown_r=3.0, min_net_r=-2.0, window_trades=4, min_win_rate=0.5, min_trades=6)


def test_drawdown_is_the_largest_fall_from_the_running_peak_starting_at_zero():
    assert drawdown_r([]) == 0.0
    assert drawdown_r([-1.0, -0.5]) == 1.5  # from the start (peak 0)
    assert drawdown_r([2.0, -1.0, 1.5, -3.0, 0.5]) == pytest.approx(3.0)  # peak 2.5, trough -0.5
    assert drawdown_r([1.0, 1.0]) == 0.0


@pytest.mark.parametrize(
    ("net_rs", "expected"),
    [
        ([-1.0, -1.0, -1.1], "max drawdown 3.10R > 3R over 3 trades"),
        ([-1.0, -1.0, -1.0], None),  # at the limit is not beyond it
        ([2.0, -1.0, -1.0, -0.5], None),
        ([3.0, -0.6, -0.6, -0.6, -0.6], "net R of the last 4 trades -2.40R < -2R"),
        ([2.0, -0.1, -0.1, 2.0, -0.1, -0.1], "win rate 33 % < 50 % over 6 trades"),
        ([2.0, -0.1, 2.0, -0.1, 2.0], None),  # five trades: the win rate waits for six
    ],
)
def test_the_first_broken_guard_is_the_reason(net_rs, expected):
    assert breach(net_rs, G) == expected


def test_the_controller_wakes_at_ten_minute_boundaries():
    assert next_run_ms(0) == 600_000 and next_run_ms(599_999) == 600_000 and next_run_ms(600_000) == 1_200_000


LOSS = (97.0, 97.0)  # the stop (98) triggers, then fills
WIN = (102.5, 102.5, 104.5, 104.5)  # TP1 (102) and TP2 (104), each triggered, then filled


def _trades(rev: int, symbol: str, start: int, paths: list[tuple[float, ...]], strategy: str = "v53") -> list[dict]:
    """Position events of the real executor: one position per price path in ``paths`` (entry at 100,
    stop at 98, TP1 at 102, TP2 at 104), each opened by a signal carrying ``rev``, one after the other
    from ``start``."""
    cfg = ExecutorConfig(risk=RiskLimits(max_consecutive_losses=1000, daily_loss_limit_r=1000.0))
    h = Harness(cfg, now=start)
    t = start
    for k, path in enumerate(paths):
        rec = {**signal_record(eval_time=t, symbol=symbol, strategy=strategy), "config_rev": rev}
        h.trade(100.0, t - S, symbol=symbol)  # fresh market data for the signal
        assert h.signal_rec(rec).allowed, k
        h.trade(100.0, t + S, symbol=symbol)  # the entry fills
        for i, price in enumerate(path):
            h.trade(price, t + (2 + i) * S, symbol=symbol)
        t += 20 * 60 * S  # past the strategy's cooldown and the executor's own
    events = h.positions()
    assert sum(1 for p in events if p["event"] == "closed") == len(paths)
    return events


def _store(conninfo: str, events: list[dict]) -> list[float]:
    spec = table_for_topic("positions")
    with psycopg.connect(conninfo) as conn:
        write_rows(conn, spec, [spec.to_row(r) for r in events])
        conn.commit()
    return [p["pnl_r_net"] for p in events if p["event"] == "closed"]


def test_a_canary_breaching_its_drawdown_guard_is_rolled_back(
    migrated_database,
    kafka_bootstrap,
    topic_prefix,
    tmp_path,
    files,  # noqa: F811 - the fixture
):
    def cli(*args: str):
        return _cli(tmp_path, kafka_bootstrap, topic_prefix, *args, "--database", migrated_database)

    proc = cli("promote", str(files["slower"]), "--symbols", "BTCUSDT", "--reason", "try 15m", "--as", "ana")
    assert proc.returncode == 0, proc.stderr
    serde = AvroSerde(FileSchemaRegistry())
    canary = read_states(kafka_bootstrap, topic_prefix, serde)["v53"]
    assert canary.guardrails == Guardrails()  # the defaults: 3R of drawdown
    start = canary.requested_time + 60 * S

    # trades the canary is not judged by: the active revision on its symbol, the canary's revision on
    # another symbol, another strategy, and the canary's revision before it started. Each set alone
    # falls 4R or more.
    noise = _trades(1, "BTCUSDT", start, [LOSS] * 4)
    noise += _trades(2, "ETHUSDT", start, [LOSS] * 4)
    noise += _trades(2, "BTCUSDT", start, [LOSS] * 4, strategy="other")
    noise += _trades(2, "BTCUSDT", canary.requested_time - 200 * 60 * S, [LOSS] * 4)
    _store(migrated_database, noise)
    proc = cli("guard", "--once")
    assert proc.returncode == 0, proc.stderr
    assert "1 canaries checked, 0 rolled back" in proc.stdout
    assert read_states(kafka_bootstrap, topic_prefix, serde)["v53"] == canary

    # the canary's own trades: a win, then losses until the fall from the peak passes 3R
    net = _store(migrated_database, _trades(2, "BTCUSDT", start + 500 * 60 * S, [WIN, LOSS, LOSS, LOSS]))
    total = peak = fall = 0.0
    for r in net:  # by hand: the largest fall of the running sum below its peak (0 before any trade)
        total += r
        peak = max(peak, total)
        fall = max(fall, peak - total)
    assert fall > 3.0 and net[0] > 0
    proc = cli("guard", "--once")
    assert proc.returncode == 0, proc.stderr
    reason = f"max drawdown {fall:.2f}R > 3R over 4 trades"
    assert f"v53: canary rolled back ({reason})" in proc.stdout
    assert "ALERT canary rolled back" in proc.stdout + proc.stderr

    state = read_states(kafka_bootstrap, topic_prefix, serde)["v53"]
    assert (state.seq, state.action, state.actor, state.canary, state.active) == (
        canary.seq + 1, "auto_rollback", "guardrail", None, canary.active
    )  # fmt: skip
    assert state.reason == reason
    with psycopg.connect(migrated_database) as conn:
        last = audit_rows(conn, "v53")[-1]
    assert (last["actor"], last["action"], last["from_rev"], last["to_rev"], last["reason"], last["seq"]) == (
        "guardrail", "auto_rollback", 2, 1, reason, state.seq
    )  # fmt: skip
    # nothing left to guard
    assert "0 canaries checked" in cli("guard", "--once").stdout
